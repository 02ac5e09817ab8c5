"""The audit-log collector: each list poll reads the events after the last one seen.

What it does with them:
- counts them by type (`openai_audit_events_total`), exactly: the counts and the position
  are saved together in the state file, and a count is published only once saved, so a
  restart (even in the middle of a read) neither loses nor repeats an event;
- keeps them for a while (exporter/audit/attribution.py), to name the actor of each change
  the list poll and the collectors log;
- puts the project an event names first in the details queue, for the collectors whose
  resource it changed, so that the change is logged within a list poll rather than a round.

Two reads, each with its own position: the organization's events, and the tenant-scoped
ones, which the log lists only when asked for alone.

An organization without audit logging (or a key without the scope) answers 400, 403 or 404:
the collector turns itself off with one log line and `openai_collector_up 0`, and tries
again every RETRY_UNAVAILABLE seconds. Nothing else changes: changes are still found by
comparison, without an actor. The same answer to the tenant read alone only says that the
organization belongs to no tenant: one info line, and the same retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import redaction
from exporter.audit import NAME
from exporter.audit.attribution import Attribution
from exporter.audit.events import ALL_EVENT_TYPES, KNOWN, Event
from exporter.audit.reader import Position, read_since
from exporter.collectors.base import Collector
from exporter.details.health import CollectorHealth
from exporter.exposition import SOURCE
from exporter.upstream import ApiClient, PollCancelled, PollError

log = structlog.get_logger("exporter.audit")
RETRY_UNAVAILABLE = 3600.0  # seconds: audit logging is switched on by hand, and rarely
UNAVAILABLE = (400, 403, 404)


@dataclass
class _Stream:
    """One read of the log and where it stands."""

    tenant: bool
    position: Position | None = None  # None: never read; the first read starts from now
    unavailable_since: float | None = None


class AuditLog:
    def __init__(
        self,
        client: ApiClient,
        *,
        collectors: Sequence[Collector],
        ask: Callable[[str, str], None],
        health: CollectorHealth,
        registry: CollectorRegistry,
        max_pages: int,
        retention: float,
        emails: bool,
        clock: Callable[[], float] = time.time,
    ):
        self._client = client
        self._ask = ask
        self._health = health
        self._max_pages = max_pages
        self._clock = clock
        self.attribution = Attribution(retention, emails, clock)
        # Event type -> the collectors whose resource it changes (their `audited_by`).
        self._refreshes: dict[str, list[str]] = {}
        for collector in collectors:
            for audited in collector.audited_by.values():
                for type_ in audited.event_types:
                    if collector.name not in self._refreshes.setdefault(type_, []):
                        self._refreshes[type_].append(collector.name)
        self._lock = threading.Lock()  # the spend poll's thread saves the state too
        self._organization, self._tenant = _Stream(tenant=False), _Stream(tenant=True)
        self._counts = dict.fromkeys(ALL_EVENT_TYPES, 0)  # read, and saved with the positions
        self.published: Mapping[str, int] = MappingProxyType(dict(self._counts))
        self.published_at: int | None = None  # the newest organization event counted in `published`
        registry.register(_Families(self))

    # -- the state file ---------------------------------------------------------------------------

    def restore(self, saved: Mapping[str, Any]) -> None:
        """The position and counts of the state file (ValueError when they are not ours)."""
        if not saved:
            return
        organization, counts = _position(saved), saved["counts"]
        tenant = _position(saved["tenant"]) if saved.get("tenant") else None
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()):
            raise ValueError("the audit log's counts are not whole numbers")
        with self._lock:
            self._organization.position, self._tenant.position = organization, tenant
            self._counts.update({t: n for t, n in counts.items() if t in KNOWN})
            self.published = MappingProxyType(dict(self._counts))
            self.published_at = organization.at

    def dump(self) -> dict[str, Any]:
        """What the state file keeps: where the next read starts, and the counts up to there."""
        with self._lock:
            organization, tenant = self._organization.position, self._tenant.position
            if organization is None:
                return {}
            return {
                "position": organization.at,
                "ids": sorted(organization.ids),
                "tenant": {"position": tenant.at, "ids": sorted(tenant.ids)} if tenant is not None else None,
                "counts": {t: n for t, n in self._counts.items() if n},
            }

    def saved(self, ok: bool) -> None:
        """The list poll saved its state (or has no state file): the counts read so far may be served."""
        if not ok:
            return  # served once a later save succeeds; a restart reads these events again meanwhile
        with self._lock:
            self.published = MappingProxyType(dict(self._counts))
            position = self._organization.position
            self.published_at = position.at if position is not None else None

    # -- the list poll's side ---------------------------------------------------------------------

    def poll(self, deadline: float) -> None:
        """Read what is new, each read whole or not at all; never raises (a failure stays in this collector)."""
        up = self._read(self._organization, deadline)
        if up is not None:  # not turned off: the tenant's events too
            up = self._read(self._tenant, deadline) is not False and up
            self._health.up.labels(NAME).set(1 if up else 0)

    def _read(self, stream: _Stream, deadline: float) -> bool | None:
        """One read: True if it succeeded, False if it failed, None if it was not tried."""
        now = self._clock()
        if stream.unavailable_since is not None and now - stream.unavailable_since < RETRY_UNAVAILABLE:
            return None
        with self._lock:
            position = stream.position or Position(int(now))  # history from before the first start is not ours
        requests: list[int] = []
        try:
            read = read_since(
                self._client, position, deadline, self._max_pages, on_request=requests.append, tenant=stream.tenant
            )
        except PollCancelled:
            raise  # stopping: the poll gives up as a whole, without a verdict
        except PollError as exc:
            return self._failed(stream, exc)
        except Exception as exc:  # a bug must not fail the list poll nor print a traceback
            return self._failed(stream, PollError("internal", f"{type(exc).__name__}: {exc}"))
        finally:
            self._health.requests.labels(NAME).inc(len(requests))
        if stream.unavailable_since is not None:
            log.info("audit_log_available", tenant=stream.tenant)
            stream.unavailable_since = None
        with self._lock:
            for event in read.events:
                if event.type in KNOWN:
                    self._counts[event.type] += 1
            stream.position = read.position
        self.attribution.add(read.events)
        self._refresh(read.events)
        if read.events:
            log.debug("audit_events_read", events=len(read.events), requests=read.requests, tenant=stream.tenant)
        return True

    def _refresh(self, events: Iterable[Event]) -> None:
        """Each project an event names goes first in the queue, once per poll, for each collector it concerns."""
        asked: set[tuple[str, str]] = set()
        for event in events:
            # A project event's resource is the project itself; others say which project they were in.
            project_id = event.resource_id if event.type.startswith("project.") else event.project_id
            for collector in self._refreshes.get(event.type, ()):
                if project_id is not None and (collector, project_id) not in asked:
                    asked.add((collector, project_id))
                    self._ask(collector, project_id)

    def _failed(self, stream: _Stream, exc: PollError) -> bool | None:
        """False: the collector is down; None: turned off (a read it will not try for a while)."""
        message = redaction.scrub(exc.message)
        if exc.status in UNAVAILABLE:
            stream.unavailable_since = self._clock()
            if stream.tenant:  # an organization outside any tenant: nothing to read there
                log.info("audit_log_tenant_unavailable", reason=exc.reason, message=message, retry_in=RETRY_UNAVAILABLE)
                return None
            self._health.up.labels(NAME).set(0)
            self._health.failures.labels(NAME, exc.reason).inc()
            log.warning(
                "audit_log_unavailable",
                reason=exc.reason,
                message=message,
                retry_in=RETRY_UNAVAILABLE,
                effect="changes are logged without an actor",
            )
            return None
        self._health.failures.labels(NAME, exc.reason).inc()
        log.warning(
            "audit_log_read_failed", reason=exc.reason, message=message, request_id=exc.request_id, tenant=stream.tenant
        )
        return False


def _position(saved: Mapping[str, Any]) -> Position:
    at, ids = saved["position"], saved["ids"]
    if isinstance(at, bool) or not isinstance(at, int) or not all(isinstance(i, str) for i in ids):
        raise ValueError("the audit log's position is not a time and ids")
    return Position(at, frozenset(ids))


class _Families:
    """openai_audit_events_total and the newest event's time, from what the last save made servable."""

    def __init__(self, audit: AuditLog):
        self._audit = audit

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        counts, at = self._audit.published, self._audit.published_at
        events = CounterMetricFamily(
            "openai_audit_events", f"Audit log events of the organization by type, {SOURCE}.", labels=["type"]
        )
        for type_ in ALL_EVENT_TYPES:
            events.add_metric([type_], counts[type_])
        yield events
        if at is not None:
            yield GaugeMetricFamily(
                "openai_audit_last_event_timestamp_seconds",
                f"Unix time of the newest audit log event read (or of the first read), {SOURCE}.",
                value=at,
            )
