"""The details of each active project, one collector at a time, refreshed in the background.

The list poll tells the engine which projects are active (`sync`); worker threads take
due units from the Schedule, fetch them within the organization's request budget, and
replace that project's records for that collector whole, or keep the last good ones on
any failure. A changed project is rendered at once and its changes logged; the
publisher then joins every block into a DetailsPart (exporter/details/render.py) and
swaps it into what scrapes serve, at most once per PUBLISH_INTERVAL.

The list poll's own sync drops archived and removed projects and publishes in the same
swap as its projects, so their details go with them in one render.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from exporter import redaction
from exporter.collectors.base import Audited, Change, Collector, Details, Invalid
from exporter.details.fetch import Memo, ProjectGone, RefreshFetcher
from exporter.details.health import CollectorHealth
from exporter.details.render import EMPTY_PART, DetailsPart, DetailsRenderer, Entry
from exporter.details.schedule import Schedule, Unit
from exporter.priority import lower_thread_priority
from exporter.snapshot import ACTIVE, Snapshot
from exporter.upstream import KEEPALIVE_EXPIRY, ApiClient, PollCancelled, PollError

log = structlog.get_logger("exporter.details")
PUBLISH_INTERVAL = 1.0  # seconds: refreshes that land together are published together
MAINTENANCE_INTERVAL = 10.0  # seconds between recounts of stale projects
MAX_WORKERS = 32


def workers_for(rate: float) -> int:
    """Requests in flight: enough for the budget at a 400 ms round trip, and never more than it grants."""
    return max(2, min(MAX_WORKERS, math.ceil(rate * 0.4)))


class DetailsEngine:
    def __init__(
        self,
        *,
        client: ApiClient,
        collectors: Sequence[Collector],
        interval: float,
        deadline: float,
        max_pages: int,
        per_item: bool,
        emails: bool,
        registry: CollectorRegistry,
        health: CollectorHealth,
        publish: Callable[[DetailsPart], None],
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.collectors = tuple(collectors)
        self._by_name = {c.name: c for c in collectors}
        self._client = client
        self._interval = interval
        self._deadline = deadline
        self._max_pages = max_pages
        self._emails = emails
        self._publish = publish
        self._stop = stop
        self._clock = clock
        self.health = health
        registry.register(_LiveFamilies(lambda: self.part))
        self._renderer = DetailsRenderer(per_item)
        self._lock = threading.Condition()
        self._schedule = Schedule(interval, clock)
        self._order: tuple[str, ...] = ()
        self._synced: Mapping[str, object] | None = None  # the projects of the last sync (only the list poll syncs)
        self._active: frozenset[str] = frozenset()
        self._entries: dict[str, dict[str, Entry]] = {c.name: {} for c in self.collectors}
        self._organization: dict[str, Details] = {}
        self._memos: dict[Unit, Memo] = {}
        self._failed_round: set[str] = set()  # collectors with a failed fetch in the current round
        self._failed_last_round: set[str] = set()  # ... and in the last complete one
        self._blocked: set[str] = set()  # collectors refused for auth: skipped until the next round
        self._first: dict[str, list[int]] = defaultdict(list)  # first refreshes since the last publication
        self._rounds_seen = 0
        self._previous_start = 0.0
        self._dirty_since: float | None = None  # when a refresh first changed something not yet published
        self._busy = 0  # units being refreshed
        self._connected = False  # whether a refresh may have left a connection open
        self._counted_at = 0.0  # when the stale projects were last counted
        self.part: DetailsPart = EMPTY_PART
        # Who made a change, from the audit log when its collector runs (exporter/audit): the log line's `actor`.
        self.actor: Callable[[Audited | None, Mapping[str, object]], dict[str, object] | None] = lambda a, f: None

    # -- the list poll's side -------------------------------------------------------------------

    def sync(self, snapshot: Snapshot) -> DetailsPart:
        """The active projects are those of `snapshot`: the part without any other, composed now."""
        if snapshot.projects is self._synced:
            # A poll that changed nothing shares the last one's mapping: the same active projects.
            # Without the lock, which a worker may hold, this costs the list poll nothing.
            return self.part
        self._synced = snapshot.projects
        order = tuple(p.id for p in snapshot.projects.values() if p.status == ACTIVE)
        with self._lock:
            if order == self._order:
                return self.part
            self._order, self._active = order, frozenset(order)
            for entries in self._entries.values():
                for project_id in [p for p in entries if p not in self._active]:
                    del entries[project_id]
            self._memos = {u: m for u, m in self._memos.items() if u.project_id is None or u.project_id in self._active}
            self._schedule.replace(self._units(), self._fetched)
            self._lock.notify_all()
            return self._compose()

    def _units(self) -> Iterable[Unit]:
        for collector in self.collectors:
            if collector.fetch_organization is not None:
                yield Unit(collector.name, None)
        for project_id in self._order:
            for collector in self.collectors:
                yield Unit(collector.name, project_id)

    def _fetched(self, unit: Unit) -> bool:
        if unit.project_id is None:
            return unit.collector in self._organization
        return unit.project_id in self._entries[unit.collector]

    def ask(self, collector: str, project_id: str) -> None:
        """Refresh this project's details for this collector before anything else due."""
        with self._lock:
            self._schedule.ask(Unit(collector, project_id))
            self._lock.notify_all()

    # -- threads --------------------------------------------------------------------------------

    def start(self, workers: int) -> None:
        for number in range(workers):
            threading.Thread(target=self._work, name=f"details-{number}", daemon=True).start()

    def _work(self) -> None:
        lower_thread_priority()
        while not self._stop.is_set():
            unit = self._next_unit()
            if unit is None:
                return
            try:
                self._refresh(unit)
            except PollCancelled:
                return
            except Exception as exc:  # a bug must not kill a worker nor print a traceback
                self._failed(unit, "internal", f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._busy -= 1

    def _next_unit(self) -> Unit | None:
        """The next unit due, or None when stopping; between units a worker also publishes, so
        that the engine needs no thread of its own for it."""
        while not self._stop.is_set():
            self._housekeeping()
            with self._lock:
                unit = self._schedule.take()
                self._round_bookkeeping()
                if unit is not None:
                    if unit.collector not in self._blocked:
                        self._busy += 1
                        self._connected = True
                        return unit
                    continue
                wait = self._schedule.next_wake() - self._clock()
                if wait > KEEPALIVE_EXPIRY and self._connected and not self._busy:
                    # Nothing in flight and nothing due before the connections expire: close them
                    # rather than hold their descriptors until the next refresh (httpx reaps idle
                    # connections only when the pool is next used).
                    self._client.release_connections()
                    self._connected = False
                if self._dirty_since is not None:
                    wait = min(wait, self._dirty_since + PUBLISH_INTERVAL - time.monotonic())
                self._lock.wait(min(max(wait, 0.01), 1.0))
        return None

    def _round_bookkeeping(self) -> None:
        """A new round began: the last one's verdict per collector, and 403s may be tried again."""
        if self._schedule.rounds == self._rounds_seen:
            return
        if self._rounds_seen:  # the round that just ended was a whole one
            for collector in self.collectors:
                self.health.up.labels(collector.name).set(0 if collector.name in self._failed_round else 1)
            self.health.round_duration.set(max(self._schedule.round_ended - self._previous_start, 0.0))
        self._previous_start = self._schedule.round_started
        self._rounds_seen = self._schedule.rounds
        self._failed_last_round, self._failed_round = self._failed_round, set()
        self._blocked.clear()

    def _refresh(self, unit: Unit) -> None:
        collector = self._by_name[unit.collector]
        with self._lock:
            memo = self._memos.get(unit, {})
        fetcher = RefreshFetcher(self._client, time.monotonic() + self._deadline, self._max_pages, memo)
        try:
            self._authorize()
            if unit.project_id is None:
                assert collector.fetch_organization is not None
                details = collector.fetch_organization(fetcher)
            else:
                details = collector.fetch(fetcher, unit.project_id)
        except ProjectGone:
            log.debug("details_project_gone", collector=unit.collector, project_id=unit.project_id)
            return
        except PollError as exc:
            if not self._stop.is_set():  # stopping closes the connections under a request: no failure
                self._failed(unit, exc.reason, exc.message, exc.status)
            return
        except Invalid as exc:
            self._failed(unit, "invalid_response", str(exc))
            return
        finally:
            self.health.requests.labels(unit.collector).inc(fetcher.requests)
        self._complete(unit, collector, details, fetcher.memo)

    def _authorize(self) -> None:
        """Read the key before each refresh, as the list poll does before each poll: a rotated or
        emptied key file takes effect at once, for the details too."""
        self._client.authorize()

    def _complete(self, unit: Unit, collector: Collector, details: Details, memo: Memo) -> None:
        now = time.time()
        with self._lock:
            self._memos[unit] = memo
            if unit.project_id is None:
                if self._organization.get(unit.collector, object()) != details:
                    self._organization[unit.collector] = details
                    self._changed()
                self._succeeded(unit.collector)
                return
            if unit.project_id not in self._active:
                return  # archived or removed while in flight: its series are gone already
            entries = self._entries[unit.collector]
            old = entries.get(unit.project_id)
            if old is not None and (old.details is details or old.details == details):
                entries[unit.project_id] = old._replace(fetched_at=now)  # unchanged: no render
                self._succeeded(unit.collector)
                return
            blocks = tuple(collector.render(unit.project_id, details, self._renderer.per_item))
            entries[unit.project_id] = Entry(details, blocks, now)
            changes = collector.diff(old.details, details, self._emails) if old is not None else None
            if changes is None:
                self._first[unit.collector].append(collector.count(details))
            self._succeeded(unit.collector)
            self._changed()
        for change in changes or ():
            self._log_change(unit, change)

    def _log_change(self, unit: Unit, change: Change) -> None:
        self.health.changes.labels(change.resource, change.change).inc()
        fields = {"project_id": unit.project_id, "collector": unit.collector, **change.fields}
        actor = self.actor(self._by_name[unit.collector].audited_by.get(change.event), fields)
        if actor is not None:
            fields["actor"] = actor
        log.info(change.event, **fields)

    def _succeeded(self, collector: str) -> None:
        """Up, unless a fetch of this round or of the last whole one failed (the last verdict stands)."""
        if collector not in self._failed_round and collector not in self._failed_last_round:
            self.health.up.labels(collector).set(1)

    def _failed(self, unit: Unit, reason: str, message: str, status: int | None = None) -> None:
        message = redaction.scrub(message)
        with self._lock:
            self._failed_round.add(unit.collector)
            if reason == "auth":
                # A key without this scope, a feature the organization lacks, or no key at all:
                # the same answer for every project, so the rest of the round is not spent on it.
                self._blocked.add(unit.collector)
        self.health.up.labels(unit.collector).set(0)
        self.health.failures.labels(unit.collector, reason).inc()
        log.warning(
            "details_fetch_failed",
            collector=unit.collector,
            project_id=unit.project_id,
            reason=reason,
            message=message,
            skipped_until_next_round=reason == "auth",
        )

    # -- publication ----------------------------------------------------------------------------

    def _changed(self) -> None:
        """Under the lock: something to publish; refreshes landing within PUBLISH_INTERVAL go together."""
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def _housekeeping_due(self) -> bool:
        """Under the lock."""
        now = time.monotonic()
        publish = self._dirty_since is not None and now - self._dirty_since >= PUBLISH_INTERVAL
        return publish or now - self._counted_at >= MAINTENANCE_INTERVAL

    def _housekeeping(self) -> None:
        """Publish what changed, and count the stale projects now and then."""
        part = None
        with self._lock:
            if not self._housekeeping_due():
                return
            if self._dirty_since is not None and time.monotonic() - self._dirty_since >= PUBLISH_INTERVAL:
                part = self._compose()
            count = time.monotonic() - self._counted_at >= MAINTENANCE_INTERVAL
            if count:
                self._counted_at = time.monotonic()
        if part is not None:
            self._publish(part)
        if count:
            self.count_stale()

    def _compose(self) -> DetailsPart:
        """Under the lock: the part of the current entries; logs the first refreshes it holds."""
        self.part = self._renderer.compose(self.collectors, self._order, self._entries, self._organization)
        self._dirty_since = None
        for name, counts in self._first.items():
            log.info("details_first_refresh", collector=name, projects=len(counts), items=sum(counts))
        self._first.clear()
        return self.part

    def count_stale(self) -> None:
        limit = time.time() - 2 * self._interval
        with self._lock:
            for collector in self.collectors:
                entries = self._entries[collector.name]
                fresh = sum(1 for p in self._order if p in entries and entries[p].fetched_at >= limit)
                self.health.stale.labels(collector.name).set(len(self._order) - fresh)


class _LiveFamilies:
    """The families that move with the clock (the API keys' idle histogram), from the current part."""

    def __init__(self, part: Callable[[], DetailsPart]):
        self._part = part

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        now = time.time()
        for live in self._part().live:
            yield from live(now)
