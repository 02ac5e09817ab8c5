"""One or several organizations, each with its own client, schedule, snapshot and health.

Without `--config.file` the exporter runs one organization from its flags and serves it
on /metrics, exactly as a single-target exporter. With it, each organization in the
file is polled on its own schedule and served on `/probe?organization=ALIAS`, the
multi-target pattern of blackbox_exporter and snmp_exporter; /metrics keeps the
exporter's own metrics, with poll health labelled `organization`.

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
import threading
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import structlog
import yaml
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from exporter.exposition import EMPTY, Exposition, LiveTail, SnapshotRenderer
from exporter.pipeline import Poller, Published
from exporter.selfmetrics import HealthMetrics, OrganizationMetrics
from exporter.settings import AdminKey, Settings, SettingsError, parse_bool, parse_duration
from exporter.upstream import ProjectsClient

log = structlog.get_logger("exporter.organizations")
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


class Organization:
    """The running parts of one organization."""

    def __init__(self, config: OrganizationConfig, health: HealthMetrics, registry: CollectorRegistry):
        self.config = config
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._polling = False
        self.published = Published()
        self.metrics = OrganizationMetrics(health, config.alias, registry, lambda: self.published.current)
        self.tail = LiveTail(registry, lambda: (self.published.generation,))  # for /probe
        self.client = ProjectsClient(
            base_url=config.base_url, admin_key=config.admin_key, timeout=config.api_timeout,
            max_retries=config.api_max_retries, max_pages=config.poll_max_pages, stop=self.stop,
            on_response=self.metrics.record_response, concurrency=config.poll_concurrency,
        )
        self.poller = Poller(self.client, SnapshotRenderer(config.per_project_metrics), self.metrics,
                             self.published, config.poll_timeout, config.state_file)

    @property
    def job_id(self) -> str:
        return f"poll:{self.config.alias or 'default'}"

    def poll(self) -> None:
        with self._lock:
            if self.stop.is_set():
                return
            self._polling = True
        try:
            if self.config.alias is None:
                self.poller.poll()
            else:
                with structlog.contextvars.bound_contextvars(organization=self.config.alias):
                    self.poller.poll()
        finally:
            with self._lock:
                self._polling = False
                if self.stop.is_set():
                    self.client.close()  # removed while polling: the poll is over now

    def retire(self) -> None:
        """Stop polling for good: a running poll gives up at its next step and closes the client."""
        with self._lock:
            self.stop.set()
            if not self._polling:
                self.client.close()


class Fleet:
    """All organizations, their jobs on one scheduler, and what each endpoint serves."""

    def __init__(self, scheduler: BackgroundScheduler, registry: CollectorRegistry, multi: bool):
        self.scheduler = scheduler
        self.registry = registry
        self.multi = multi
        self.health = HealthMetrics(registry, by_organization=multi)
        self.organizations: dict[str | None, Organization] = {}
        self._applied = 0  # counts the changes of the set of organizations
        # /metrics holds every organization's poll health: a poll ending anywhere, or an
        # organization coming or going, renews it.
        self.tail = LiveTail(registry, lambda: [self._applied,
                                                *(o.published.generation for o in list(self.organizations.values()))])
        self._lock = threading.Lock()

    def apply(self, configs: list[OrganizationConfig]) -> None:
        """Start, stop or restart organizations so that the running set matches `configs`."""
        with self._lock:
            wanted = {c.alias: c for c in configs}
            for alias in list(self.organizations):
                current = self.organizations[alias]
                if alias not in wanted or not current.config.same_as(wanted[alias]):
                    self._remove(alias)
                    log.info("organization_removed" if alias not in wanted else "organization_changed",
                             organization=alias)
            for alias, config in wanted.items():
                if alias not in self.organizations:
                    self._add(config)
            self._applied += 1

    def _add(self, config: OrganizationConfig) -> None:
        registry = CollectorRegistry(auto_describe=True) if self.multi else self.registry
        organization = Organization(config, self.health, registry)
        organization.poller.restore()
        self.organizations[config.alias] = organization
        self.scheduler.add_job(organization.poll, "interval", seconds=config.poll_interval,
                               id=organization.job_id, name=organization.job_id,
                               next_run_time=datetime.now(timezone.utc))
        if self.multi:
            log.info("organization_added", organization=config.alias, base_url=config.base_url,
                     poll_interval=config.poll_interval)

    def _remove(self, alias: str | None) -> None:
        organization = self.organizations.pop(alias)
        if self.scheduler.get_job(organization.job_id):
            self.scheduler.remove_job(organization.job_id)
        organization.metrics.forget()
        organization.retire()

    def get(self, alias: str | None) -> Organization | None:
        return self.organizations.get(alias)

    def metrics_page(self) -> tuple[Exposition, LiveTail]:
        """What /metrics serves: the flags' organization with the exporter's own metrics or,
        with several organizations (each on /probe), the exporter's own metrics alone."""
        single = None if self.multi else self.organizations.get(None)
        return (single.published.current if single is not None else EMPTY), self.tail

    def retire_all(self) -> None:
        for organization in list(self.organizations.values()):
            organization.retire()

    @property
    def ready(self) -> bool:
        return bool(self.organizations) and all(o.published.ready for o in self.organizations.values())
