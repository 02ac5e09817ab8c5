"""`--config.file`: the organizations to poll, each with its own key and settings.

    organizations:
      - alias: production
        admin_key_file: /run/secrets/openai-production   # or admin_key_env: VARIABLE
        poll_interval: 5m                                 # optional: flags give the defaults
      - alias: staging
        admin_key_env: OPENAI_ADMIN_KEY_STAGING
        base_url: https://api.openai.com/v1
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

import structlog
import yaml

from exporter.settings import AdminKey, Settings, SettingsError, parse_bool, parse_duration

log = structlog.get_logger("exporter.organizations")  # the logger its warning has always had
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class OrganizationConfig:
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
    state_file: Path | None = None
    key_source: str = ""  # where the key comes from, to tell a changed source on reload

    def same_as(self, other: "OrganizationConfig") -> bool:
        """Equal but for the AdminKey object itself, whose source `key_source` names."""
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name != "admin_key")


def from_settings(settings: Settings) -> OrganizationConfig:
    return OrganizationConfig(
        alias=None, base_url=settings.base_url, admin_key=settings.admin_key,
        api_timeout=settings.api_timeout, api_max_retries=settings.api_max_retries,
        poll_interval=settings.poll_interval, poll_timeout=settings.poll_timeout,
        poll_max_pages=settings.poll_max_pages, poll_concurrency=settings.poll_concurrency,
        per_project_metrics=settings.per_project_metrics, state_file=settings.state_file,
    )


_OPTIONAL = {
    "base_url": str, "api_timeout": parse_duration, "api_max_retries": int, "poll_interval": parse_duration,
    "poll_timeout": parse_duration, "poll_max_pages": int, "poll_concurrency": int,
    "per_project_metrics": parse_bool,
}
_KEY_FIELDS = ("admin_key_file", "admin_key_env", "admin_key")


def load_config(path: Path, defaults: Settings, environ: dict[str, str] | None = None) -> list[OrganizationConfig]:
    """The organizations of a config file; SettingsError with one line on any problem."""
    environ = os.environ if environ is None else environ
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"--config.file: cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--config.file: {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    entries = document.get("organizations") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SettingsError(f"--config.file: {path} needs a non-empty `organizations` list")
    configs: list[OrganizationConfig] = []
    for number, entry in enumerate(entries, start=1):
        configs.append(_organization(entry, number, path.parent, defaults, environ))
    aliases = [c.alias for c in configs]
    duplicates = sorted({a for a in aliases if aliases.count(a) > 1})
    if duplicates:
        raise SettingsError(f"--config.file: alias {duplicates[0]!r} appears more than once")
    return configs


def _organization(entry, number: int, base: Path, defaults: Settings, environ) -> OrganizationConfig:
    where = f"--config.file: organization #{number}"
    if not isinstance(entry, dict):
        raise SettingsError(f"{where} is not a mapping")
    alias = entry.get("alias")
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise SettingsError(f"{where}: `alias` must be letters, digits, '_', '.' or '-'")
    where = f"--config.file: organization {alias!r}"
    unknown = set(entry) - {"alias", *_KEY_FIELDS, *_OPTIONAL}
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)}")
    given = [k for k in _KEY_FIELDS if entry.get(k)]
    if len(given) != 1:
        raise SettingsError(f"{where}: give exactly one of admin_key_file, admin_key_env, admin_key")
    if given[0] == "admin_key_file":
        key = AdminKey(path=base / str(entry["admin_key_file"]))
        source = f"file:{key.path}"
    elif given[0] == "admin_key_env":
        name = str(entry["admin_key_env"])
        if not environ.get(name, "").strip():
            raise SettingsError(f"{where}: environment variable {name} is unset or empty")
        key, source = AdminKey(value=environ[name].strip()), f"env:{name}"
    else:
        log.warning("inline_admin_key", organization=alias,
                    advice="prefer admin_key_file or admin_key_env; the config file now holds a secret")
        inline = str(entry["admin_key"]).strip()
        # A digest, not the key, tells a changed inline key on reload.
        key, source = AdminKey(value=inline), "inline:" + hashlib.sha256(inline.encode()).hexdigest()[:16]
    try:
        key.read()  # a key that cannot be read is a bad config, caught now rather than at the first poll
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    values = {}
    for name, parse in _OPTIONAL.items():
        if entry.get(name) is None:
            continue
        try:
            values[name] = parse(str(entry[name]))
        except ValueError as exc:
            raise SettingsError(f"{where}: {name}: {exc}") from None
    config = replace(from_settings(defaults), alias=alias, admin_key=key, state_file=None, key_source=source,
                     **values)
    if config.poll_interval < 1 or config.poll_timeout <= 0 or config.api_timeout <= 0:
        raise SettingsError(f"{where}: intervals and timeouts must be positive (poll_interval at least 1s)")
    if config.api_max_retries < 0 or config.poll_max_pages < 1 or config.poll_concurrency < 1:
        raise SettingsError(f"{where}: api_max_retries, poll_max_pages and poll_concurrency are out of range")
    if "poll_timeout" not in values and "poll_interval" in values and defaults.poll_timeout == defaults.poll_interval:
        config = replace(config, poll_timeout=config.poll_interval)
    return config
