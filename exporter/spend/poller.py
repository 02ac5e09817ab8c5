"""One poll of an organization's spend and usage: every feed's window, counted, then published.

Each poll reads each feed's daily buckets from the start of the look-back window (costs
also from the first of the UTC month, for the month-to-date gauges), through the
organization's request budget behind the project list. Readings go to the feed's Ledger,
which counts each bucket's growth once; a revision downwards is logged and counted, never
subtracted. A feed that fails keeps its counters as they were and fails its collector
(`costs` or `usage`) alone. The ledgers are saved before the new counters are published, so
that a crash between the two never shows a counter higher than the state a restart resumes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter import redaction
from exporter.details.health import CollectorHealth
from exporter.exposition import Part
from exporter.priority import lower_thread_priority
from exporter.spend.feeds import COST, VECTOR_BYTES, Feed
from exporter.spend.fetch import Bucket, fetch_window
from exporter.spend.ledger import Ledger, Reading
from exporter.spend.render import SpendRenderer
from exporter.upstream import ApiClient, PollCancelled, PollError

log = structlog.get_logger("exporter.spend")
DAY = 86_400


def month_start(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())


class SpendPoller:
    def __init__(
        self,
        *,
        client: ApiClient,
        feeds: Sequence[Feed],
        lookback: float,
        deadline: float,
        max_pages: int,
        health: CollectorHealth,
        registry: CollectorRegistry,
        publish: Callable[[Part], None],
        save: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ):
        self.feeds = tuple(feeds)
        self._client = client
        self._lookback = lookback
        self._deadline = deadline
        self._max_pages = max_pages
        self._health = health
        self._publish = publish
        self._save = save
        self._clock = clock
        self._lock = threading.Lock()
        self.ledgers: dict[str, Ledger] = {feed.endpoint: Ledger() for feed in self.feeds}
        self._month: dict[tuple[str, ...], Decimal] = {}  # (project, line item, currency) -> this month's cost
        self._month_parts: dict[int, dict[tuple[str, ...], Decimal]] = {}  # each bucket's share of it
        self._month_of = 0  # the month they are of
        self._digests: dict[str, dict[int, bytes]] = {}  # per feed, the last poll's buckets
        self._vector_bytes: dict[tuple[str, ...], Decimal] = {}
        self._renderer = SpendRenderer()
        self.revisions = Counter(
            "openai_usage_revisions",
            "Bucket amounts found lower than an earlier background poll saw them; never subtracted from a counter.",
            ["collector", "endpoint"],
            registry=registry,
        )
        self.last_bucket = Gauge(
            "openai_usage_last_bucket_timestamp_seconds",
            "End of the newest bucket counted, from the last successful background poll of the feed.",
            ["collector", "endpoint"],
            registry=registry,
        )
        for feed in self.feeds:
            self.revisions.labels(feed.collector, feed.endpoint)

    # -- the state file -------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        with self._lock:
            return {endpoint: ledger.dump() for endpoint, ledger in self.ledgers.items() if ledger.started}

    def restore(self, saved: Mapping[str, Any]) -> None:
        """The ledgers of the state file: the counters go on from their saved totals."""
        with self._lock:
            for endpoint in self.ledgers:
                if endpoint in saved:
                    self.ledgers[endpoint] = Ledger.load(saved[endpoint])
            self._publish(self._compose())

    # -- a poll ---------------------------------------------------------------------------------

    def poll(self) -> None:
        lower_thread_priority()
        try:
            self._poll()
        except PollCancelled:
            return
        except Exception as exc:  # a bug must not kill the schedule nor print a traceback
            for collector in {feed.collector for feed in self.feeds}:
                self._failed(collector, "-", PollError("internal", f"{type(exc).__name__}: {exc}"))

    def _poll(self) -> None:
        now = self._clock()
        day = int(now) // DAY * DAY
        window = day - int(self._lookback // DAY) * DAY
        changed = False
        try:
            self._client.authorize()
        except PollError as exc:
            for collector in {feed.collector for feed in self.feeds}:
                self._failed(collector, "-", exc)
            return
        failed: set[str] = set()
        for feed in self.feeds:
            start = min(window, month_start(now)) if feed.endpoint == "costs" else window
            try:
                buckets, requests = fetch_window(
                    self._client,
                    feed,
                    start,
                    time.monotonic() + self._deadline,
                    self._max_pages,
                    self._digests.get(feed.endpoint),
                )
            except PollCancelled:
                return
            except PollError as exc:
                failed.add(feed.collector)
                self._failed(feed.collector, feed.endpoint, exc)
                continue
            self._health.requests.labels(feed.collector).inc(requests)
            with self._lock:
                self._count(feed, buckets, window, month_start(now))
            changed = True
        for collector in {feed.collector for feed in self.feeds} - failed:
            self._health.up.labels(collector).set(1)
        if changed:
            # Saved before published: a restart never resumes below what Prometheus has seen, which
            # it would read as a reset and count again. Unsaved, the counters wait for a save.
            if not self._save():
                log.warning("spend_not_published", reason="the state file could not be written")
                return
            with self._lock:
                part = self._compose()
            self._publish(part)

    def _count(self, feed: Feed, buckets: list[Bucket], window: int, month: int) -> None:
        """Under the lock: one feed's changed buckets into its ledger and the gauges.

        A bucket that came back unchanged (`amounts` None) has nothing to count: its amounts
        are the marks already, and its share of the month is already in the month's sums.
        """
        ledger = self.ledgers[feed.endpoint]
        readings = []
        if month != self._month_of:  # a new month: its gauges start again
            self._month, self._month_parts, self._month_of = {}, {}, month
        newest = max(buckets, key=lambda b: b.start, default=None)
        for bucket in buckets:
            if bucket.amounts is None:
                continue
            part: dict[tuple[str, ...], Decimal] = {}
            for family, labels, amount in bucket.amounts:
                if family == VECTOR_BYTES.name:  # a level, not a flow: the newest bucket's
                    continue
                readings.append(Reading(bucket.start, (family, *labels), "", amount))
                if family == COST.name and bucket.start >= month:
                    part[labels] = part.get(labels, Decimal(0)) + amount
            if feed.endpoint == "costs" and bucket.start >= month:
                self._replace_month_part(bucket.start, part)
        if feed.endpoint == "vector_stores" and newest is not None and newest.amounts is not None:
            self._vector_bytes = {labels: amount for family, labels, amount in newest.amounts}
        self._digests[feed.endpoint] = {bucket.start: bucket.digest for bucket in buckets}
        outcome = ledger.record(readings, baseline=not ledger.started)
        ledger.forget_before(window if feed.endpoint != "costs" else min(window, month))
        for revision in outcome.revisions:
            self.revisions.labels(feed.collector, feed.endpoint).inc()
            log.info(
                "usage_revised_down",
                collector=feed.collector,
                endpoint=feed.endpoint,
                bucket=datetime.fromtimestamp(revision.bucket, UTC).date().isoformat(),
                series=revision.group[0],
                labels=list(revision.group[1:]),
                was=str(revision.was),
                now=str(revision.now),
            )
        if buckets:
            self.last_bucket.labels(feed.collector, feed.endpoint).set(max(b.end for b in buckets))

    def _replace_month_part(self, bucket: int, part: dict[tuple[str, ...], Decimal]) -> None:
        """A month's bucket read anew: the month's sums lose its old share and gain the new one."""
        for labels, amount in self._month_parts.get(bucket, {}).items():
            self._month[labels] -= amount
        for labels, amount in part.items():
            self._month[labels] = self._month.get(labels, Decimal(0)) + amount
        self._month_parts[bucket] = part

    def _failed(self, collector: str, endpoint: str, exc: PollError) -> None:
        self._health.up.labels(collector).set(0)
        self._health.failures.labels(collector, exc.reason).inc()
        log.warning(
            "spend_fetch_failed",
            collector=collector,
            endpoint=endpoint,
            reason=exc.reason,
            message=redaction.scrub(exc.message),
        )

    def _compose(self) -> Part:
        return self._renderer.render(self.ledgers.values(), self._month, self._vector_bytes)
