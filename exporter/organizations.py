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

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from exporter.audit import NAME as AUDIT_NAME
from exporter.audit.collector import AuditLog
from exporter.budget import DETAILS, RequestBudget
from exporter.collectors import BY_NAME
from exporter.collectors.base import Collector
from exporter.config import OrganizationConfig
from exporter.details.engine import DetailsEngine, workers_for
from exporter.details.health import CollectorHealth
from exporter.exposition import EMPTY, Exposition, LiveTail, SnapshotRenderer
from exporter.pipeline import Poller, Published
from exporter.selfmetrics import HealthMetrics, OrganizationMetrics
from exporter.spend.feeds import FEEDS, Feed
from exporter.spend.poller import SpendPoller
from exporter.upstream import KEEPALIVE_EXPIRY, MAX_RESPONSE_SIZE, ApiClient, ProjectsClient

log = structlog.get_logger("exporter.organizations")


class Organization:
    """The running parts of one organization."""

    def __init__(
        self,
        config: OrganizationConfig,
        health: HealthMetrics,
        registry: CollectorRegistry,
        max_response_size: int = MAX_RESPONSE_SIZE,
    ):
        self.config = config
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._polling = False
        self.published = Published()
        self.metrics = OrganizationMetrics(health, config.alias, registry, lambda: self.published.current)
        self.tail = LiveTail(registry, lambda: (self.published.generation,))  # for /probe
        self.budget = RequestBudget(config.api_requests_per_second)
        common: dict[str, Any] = dict(
            base_url=config.base_url,
            admin_key=config.admin_key,
            timeout=config.api_timeout,
            max_retries=config.api_max_retries,
            stop=self.stop,
            on_response=self.metrics.record_response,
            max_response_size=max_response_size,
            budget=self.budget,
        )
        self.client = ProjectsClient(max_pages=config.poll_max_pages, concurrency=config.poll_concurrency, **common)
        details = [BY_NAME[name] for name in config.collectors if name in BY_NAME]
        feeds = [
            f for f in FEEDS if f.collector in config.collectors and f.endpoint in (*config.usage_endpoints, "costs")
        ]
        audit = AUDIT_NAME in config.collectors
        own = sorted({feed.collector for feed in feeds} | ({AUDIT_NAME} if audit else set()))
        self.health = CollectorHealth(registry, details, own)
        self.health.budget_rate.set(self.budget.rate)
        self.budget.on_rate_change = self.health.budget_rate.set
        self.details = self._details_engine(config, registry, details, common) if details else None
        self.spend = self._spend_poller(config, registry, feeds, common) if feeds else None
        # Polls further apart than a connection may idle would never reuse one: close it after each.
        self._keep_connections = config.poll_interval <= KEEPALIVE_EXPIRY
        self.poller = Poller(
            self.client,
            SnapshotRenderer(config.per_project_metrics),
            self.metrics,
            self.published,
            config.poll_timeout,
            config.state_file,
            self.details,
        )
        self.audit = self._audit_log(config, registry, details) if audit else None
        self.poller.audit = self.audit

    def _details_engine(
        self,
        config: OrganizationConfig,
        registry: CollectorRegistry,
        collectors: list[Collector],
        common: dict[str, Any],
    ) -> DetailsEngine:
        workers = workers_for(config.api_requests_per_second)
        self.details_client = ApiClient(priority=DETAILS, concurrency=workers, **common)
        engine = DetailsEngine(
            client=self.details_client,
            collectors=collectors,
            interval=config.poll_details_interval,
            # Each request's own timeout and retries bound a refresh; not the list poll's deadline,
            # which follows the list's interval.
            deadline=max(config.poll_timeout, config.api_timeout * (config.api_max_retries + 1)),
            max_pages=config.poll_max_pages,
            per_item=config.per_project_metrics,
            emails=config.log_emails,
            registry=registry,
            health=self.health,
            publish=lambda part: self.published.publish(details=part),
            stop=self.stop,
        )
        self._workers = workers
        return engine

    def _audit_log(self, config: OrganizationConfig, registry: CollectorRegistry, details: list[Collector]) -> AuditLog:
        engine = self.details
        audit = AuditLog(
            self.client,  # the list poll's: its reads are part of that poll
            collectors=details,
            ask=engine.ask if engine is not None else lambda collector, project_id: None,
            health=self.health,
            registry=registry,
            max_pages=config.poll_max_pages,
            # Long enough for a change to be found by the collector's next round even if the
            # refresh an event asked for failed; then forgotten.
            retention=2 * max(config.poll_details_interval, config.poll_interval),
            emails=config.log_emails,
        )
        if engine is not None:
            engine.actor = audit.attribution.actor
        return audit

    def _spend_poller(
        self, config: OrganizationConfig, registry: CollectorRegistry, feeds: list[Feed], common: dict[str, Any]
    ) -> SpendPoller:
        self.spend_client = ApiClient(priority=DETAILS, **common)
        poller = SpendPoller(
            client=self.spend_client,
            feeds=feeds,
            lookback=config.poll_spend_lookback,
            deadline=max(config.poll_timeout, config.api_timeout * (config.api_max_retries + 1)),
            max_pages=config.poll_max_pages,
            health=self.health,
            registry=registry,
            publish=lambda part: self.published.publish(spend=part),
            save=lambda: self.poller.save_current(),
        )
        return poller

    @property
    def spend_job_id(self) -> str:
        return f"spend:{self.config.alias or 'default'}"

    def poll_spend(self) -> None:
        if self.spend is None or self.stop.is_set():
            return
        try:
            if self.config.alias is None:
                self.spend.poll()
            else:
                with structlog.contextvars.bound_contextvars(organization=self.config.alias):
                    self.spend.poll()
        finally:
            if self.config.poll_spend_interval > KEEPALIVE_EXPIRY and not self.stop.is_set():
                self.spend_client.release_connections()  # as the list's: nothing held between polls

    def start(self) -> None:
        """Start the background refreshes of the details; the list and spend polls run on the scheduler."""
        if self.spend is not None:
            self.poller.spend = self.spend.dump
            try:
                self.spend.restore(self.poller.restored_spend)
            except (ValueError, TypeError, KeyError) as exc:  # a damaged ledger: the spend starts afresh
                log.warning("state_file_spend_ignored", reason=" ".join(str(exc).split())[:200])
        if self.audit is not None:
            try:
                self.audit.restore(self.poller.restored_audit)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a damaged position: start from now
                log.warning("state_file_audit_ignored", reason=" ".join(str(exc).split())[:200])
        if self.details is not None:
            self.details.start(self._workers)

    @property
    def job_id(self) -> str:
        return f"poll:{self.config.alias or 'default'}"

    def poll(self) -> None:
        with self._lock:
            if self.stop.is_set():
                return
            self._polling = True
        try:
            # Declared to the budget, so that the details leave the list the slots it is about to need.
            with self.budget.listing(self.config.poll_interval):
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
                elif not self._keep_connections:
                    self.client.release_connections()

    def retire(self) -> None:
        """Stop polling for good: a running poll gives up at its next step and closes the client."""
        with self._lock:
            self.stop.set()
            if not self._polling:
                self.client.close()
        # Workers in a request notice the stop at their next step; closing their pool ends the rest.
        if self.details is not None:
            self.details_client.close()
        if self.spend is not None:
            self.spend_client.close()


class Fleet:
    """All organizations, their jobs on one scheduler, and what each endpoint serves."""

    def __init__(
        self,
        scheduler: BackgroundScheduler,
        registry: CollectorRegistry,
        multi: bool,
        max_response_size: int = MAX_RESPONSE_SIZE,
    ):
        self.scheduler = scheduler
        self.registry = registry
        self.multi = multi
        self.max_response_size = max_response_size
        self.health = HealthMetrics(registry, by_organization=multi)
        self.organizations: dict[str | None, Organization] = {}
        self._applied = 0  # counts the changes of the set of organizations
        # /metrics holds every organization's poll health: a poll ending anywhere, or an
        # organization coming or going, renews it.
        self.tail = LiveTail(
            registry, lambda: [self._applied, *(o.published.generation for o in list(self.organizations.values()))]
        )
        self._lock = threading.Lock()

    def apply(self, configs: list[OrganizationConfig]) -> None:
        """Start, stop or restart organizations so that the running set matches `configs`."""
        with self._lock:
            wanted = {c.alias: c for c in configs}
            for alias in list(self.organizations):
                current = self.organizations[alias]
                if alias not in wanted or not current.config.same_as(wanted[alias]):
                    self._remove(alias)
                    log.info(
                        "organization_removed" if alias not in wanted else "organization_changed", organization=alias
                    )
            for alias, config in wanted.items():
                if alias not in self.organizations:
                    self._add(config)
            self._applied += 1

    def _add(self, config: OrganizationConfig) -> None:
        registry = CollectorRegistry(auto_describe=True) if self.multi else self.registry
        organization = Organization(config, self.health, registry, self.max_response_size)
        organization.poller.restore()
        organization.start()
        self.organizations[config.alias] = organization
        self.scheduler.add_job(
            organization.poll,
            "interval",
            seconds=config.poll_interval,
            id=organization.job_id,
            name=organization.job_id,
            next_run_time=datetime.now(UTC),
        )
        if organization.spend is not None:
            self.scheduler.add_job(
                organization.poll_spend,
                "interval",
                seconds=config.poll_spend_interval,
                id=organization.spend_job_id,
                name=organization.spend_job_id,
                # After the first list poll has begun: its requests go first anyway.
                next_run_time=datetime.now(UTC) + timedelta(seconds=1),
            )
        if self.multi:
            log.info(
                "organization_added",
                organization=config.alias,
                base_url=config.base_url,
                poll_interval=config.poll_interval,
            )

    def _remove(self, alias: str | None) -> None:
        organization = self.organizations.pop(alias)
        for job in (organization.job_id, organization.spend_job_id):
            if self.scheduler.get_job(job):
                self.scheduler.remove_job(job)
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
