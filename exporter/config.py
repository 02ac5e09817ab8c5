"""`--config.file`: the organizations to poll, each built from the per-organization rows of
the settings table (exporter/settings.py), as the single organization of the flags is.

    organizations:
      - alias: production
        admin_key_file: /run/secrets/openai-production   # or admin_key_env: VARIABLE, or admin_key
        poll_interval: 5m                                 # optional: flags give the defaults

An organization's key for a setting is the row's `key`; its value is parsed and checked by
the row, as the flag's is. A key the organization leaves out takes what the flags or
variables gave, and then the table's default; a derived default (poll_timeout follows
poll_interval) is derived again from the organization's own values.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import structlog

from exporter.inputs import UnusableFile, load_yaml
from exporter.settings import PER_ORGANIZATION, AdminKey, Setting, Settings, SettingsError, resolve

log = structlog.get_logger("exporter.organizations")  # the logger its warning has always had
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_KEY_FIELDS = ("admin_key_file", "admin_key_env", "admin_key")
_COLLECTOR_ROWS = {row.name.removeprefix("collector."): row for row in PER_ORGANIZATION if row.group == "collectors"}


@dataclass(frozen=True)
class OrganizationConfig:
    """One organization's settings.

    Besides alias, admin_key, state_file and key_source, the fields are the keys of the
    per-organization rows, named here once more only for their types. `_build` passes them
    by keyword, so a row without its field, or a field without its row, fails at the start.
    """

    alias: str | None  # None: the single organization of the flags
    base_url: str
    admin_key: AdminKey
    api_timeout: float
    api_max_retries: int
    poll_interval: float
    poll_timeout: float
    poll_max_pages: int
    poll_concurrency: int
    per_project_metrics: bool
    api_requests_per_second: float
    poll_details_interval: float
    log_emails: bool
    usage_endpoints: tuple[str, ...]
    poll_spend_interval: float
    poll_spend_lookback: float
    collectors: tuple[str, ...]  # the names of the collectors switched on, in the table's order
    state_file: Path | None = None
    key_source: str = ""  # where the key comes from, to tell a changed source on reload

    def same_as(self, other: OrganizationConfig) -> bool:
        """Equal but for the AdminKey object itself, whose source `key_source` names."""
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name != "admin_key")


def _build(
    defaults: Settings,
    texts: Mapping[str, str],
    where: str | None,
    *,
    alias: str | None,
    admin_key: AdminKey,
    state_file: Path | None = None,
    key_source: str = "",
) -> OrganizationConfig:
    """An organization from its texts over the flags' texts; `where` prefixes a bad key's error
    (None: every text is a flag's, and a bad one names its flag)."""
    known = {f.name: getattr(defaults, f.name) for f in fields(defaults)}  # what derived defaults may read

    def named(row: Setting[Any]) -> str:
        if where is None:
            return row.flag
        return f"{where}: collectors.{row.name.removeprefix('collector.')}" if row.group else f"{where}: {row.key}"

    values = resolve(PER_ORGANIZATION, {**defaults.organization_texts, **texts}, named, known)
    return OrganizationConfig(
        alias=alias,
        admin_key=admin_key,
        state_file=state_file,
        key_source=key_source,
        collectors=tuple(name for name, row in _COLLECTOR_ROWS.items() if values[row.key]),
        **{row.key: values[row.key] for row in PER_ORGANIZATION if not row.group},
    )


def from_settings(settings: Settings) -> OrganizationConfig:
    """The single organization of the flags, used without --config.file: a fleet of one."""
    if settings.admin_key is None:
        raise SettingsError("the flags name no organization with --config.file; use load_config")
    return _build(settings, {}, None, alias=None, admin_key=settings.admin_key, state_file=settings.state_file)


def load_config(path: Path, defaults: Settings, environ: Mapping[str, str] | None = None) -> list[OrganizationConfig]:
    """The organizations of a config file; SettingsError with one line on any problem."""
    environ = os.environ if environ is None else environ
    try:
        document = load_yaml(path)
    except UnusableFile as exc:
        raise SettingsError(f"--config.file: {exc}") from None
    entries = document.get("organizations") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SettingsError(f"--config.file: {path} needs a non-empty `organizations` list")
    configs: list[OrganizationConfig] = []
    for number, entry in enumerate(entries, start=1):
        configs.append(_organization(entry, number, path.parent, defaults, environ))
    aliases = [c.alias for c in configs]
    duplicates = sorted({a for a in aliases if a is not None and aliases.count(a) > 1})
    if duplicates:
        raise SettingsError(f"--config.file: alias {duplicates[0]!r} appears more than once")
    return configs


def _organization(
    entry: object, number: int, base: Path, defaults: Settings, environ: Mapping[str, str]
) -> OrganizationConfig:
    where = f"--config.file: organization #{number}"
    if not isinstance(entry, dict):
        raise SettingsError(f"{where} is not a mapping")
    alias = entry.get("alias")
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise SettingsError(f"{where}: `alias` must be letters, digits, '_', '.' or '-'")
    where = f"--config.file: organization {alias!r}"
    unknown = set(entry) - {
        "alias",
        "collectors",
        *_KEY_FIELDS,
        *(row.key for row in PER_ORGANIZATION if not row.group),
    }
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)}")
    key, source = _admin_key(entry, alias, where, base, environ)
    # YAML has already typed the values (5 is an int, true a bool); the rows parse text, as from a flag.
    texts = {
        row.key: _scalar(entry[row.key], f"{where}: {row.key}")
        for row in PER_ORGANIZATION
        if not row.group and entry.get(row.key) is not None
    }
    texts |= _collectors(entry.get("collectors"), where)
    return _build(defaults, texts, where, alias=alias, admin_key=key, key_source=source)


def _collectors(mapping: object, where: str) -> dict[str, str]:
    """`collectors: {api-keys: false, rate-limits: true}` as the texts of the collectors' rows."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise SettingsError(f"{where}: collectors must be a mapping of collector names to true or false")
    unknown = sorted(str(name) for name in mapping if name not in _COLLECTOR_ROWS)
    if unknown:
        raise SettingsError(f"{where}: unknown collectors {unknown}; known: {', '.join(_COLLECTOR_ROWS)}")
    return {
        _COLLECTOR_ROWS[name].key: _scalar(value, f"{where}: collectors.{name}")  # checked by the row in _build
        for name, value in mapping.items()
        if value is not None
    }


def _scalar(value: object, where: str) -> str:
    """A YAML scalar as the text a flag would give; a list or a mapping is refused, not printed."""
    if not isinstance(value, (str, int, float, bool)):
        raise SettingsError(f"{where}: must be a single value, not a {type(value).__name__}")
    return str(value)


def _admin_key(
    entry: dict[Any, Any], alias: str, where: str, base: Path, environ: Mapping[str, str]
) -> tuple[AdminKey, str]:
    """The organization's key and its source, from exactly one of admin_key_file, admin_key_env, admin_key."""
    given = [k for k in _KEY_FIELDS if entry.get(k)]
    if len(given) != 1:
        raise SettingsError(f"{where}: give exactly one of admin_key_file, admin_key_env, admin_key")
    if given[0] == "admin_key_file":
        key = AdminKey(path=base / _scalar(entry["admin_key_file"], f"{where}: admin_key_file"))
        source = f"file:{key.path}"
    elif given[0] == "admin_key_env":
        name = _scalar(entry["admin_key_env"], f"{where}: admin_key_env")
        if not environ.get(name, "").strip():
            raise SettingsError(f"{where}: environment variable {name} is unset or empty")
        key, source = AdminKey(value=environ[name].strip()), f"env:{name}"
    else:
        log.warning(
            "inline_admin_key",
            organization=alias,
            advice="prefer admin_key_file or admin_key_env; the config file now holds a secret",
        )
        inline = _scalar(entry["admin_key"], f"{where}: admin_key").strip()
        # A digest, not the key, tells a changed inline key on reload.
        key, source = AdminKey(value=inline), "inline:" + hashlib.sha256(inline.encode()).hexdigest()[:16]
    try:
        key.read()  # a key that cannot be read is a bad config, caught now rather than at the first poll
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    return key, source
