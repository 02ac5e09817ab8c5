"""One poll of an organization's spend and usage: every feed's window, counted, then published.

Each poll reads each feed's daily buckets from the start of the look-back window, through
the organization's request budget behind the project list. Costs are read from the first of
the UTC month once (at start without a saved month, or after days without a poll), for the
month-to-date gauges; after that the month's final buckets are one sum per series
(exporter/spend/month.py). Readings go to the feed's Ledger,
which counts each bucket's growth once; a revision downwards is logged and counted, never
subtracted. A feed that fails keeps its counters as they were and fails its collector
(`costs` or `usage`) alone. The ledgers are saved before the new counters are published, so
that a crash between the two never shows a counter higher than the state a restart resumes.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter import redaction
from exporter.details.health import CollectorHealth
from exporter.exposition import Part
from exporter.priority import lower_thread_priority
from exporter.spend.feeds import Feed
from exporter.spend.fetch import Digest, Sizing, Window, fetch_window, rows_of
from exporter.spend.ledger import Cells, Key, Ledger, Number
from exporter.spend.month import MonthToDate
from exporter.spend.pages import Page
from exporter.spend.render import SpendRenderer
from exporter.upstream import ApiClient, PollCancelled, PollError

log = structlog.get_logger("exporter.spend")
DAY = 86_400


MONTH_KEY = "month_to_date"  # beside the feeds' ledgers in the state file's `spend`


@contextmanager
def paused_collector() -> Iterator[None]:
    """The cyclic garbage collector paused: a page's parse allocates enough objects to start
    several full collections, each walking every ledger's marks, and finds no cycle to free.

    Paused for a whole poll, not one feed at a time: a feed's parsed pages live until the next
    feed's replace them, and a collection between the two would walk them all, to free nothing
    that reference counting does not free anyway."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _ledger(feed: Feed, saved: Mapping[str, Any] | None = None) -> Ledger:
    """A feed's ledger, fresh or from the state file: the series of its columns, and whether its amounts are ints."""
    if saved is None:
        return Ledger(feed.series, whole=feed.whole)
    return Ledger.load(saved, feed.series, whole=feed.whole)


def _costs(rows: Iterable[tuple[Key, Cells]]) -> list[tuple[Key, Number]]:
    """A costs bucket's rows as the month's sums take them: each series and its amount (never null)."""
    return [(key, amount) for key, (amount,) in rows if amount is not None]


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
        self.ledgers: dict[str, Ledger] = {feed.endpoint: _ledger(feed) for feed in self.feeds}
        self._months = MonthToDate()  # (project, line item, currency) -> this month's cost
        self._digests: dict[str, dict[int, Digest]] = {}  # per feed and bucket, the last poll's hashes
        self._pages: dict[str, dict[int, Page]] = {}  # per feed, what each page of the last poll's walk held
        first = int(lookback // DAY) + 1  # the window's buckets: a page every poll reads
        self._sizing = {feed.endpoint: Sizing(client.max_response_size, first) for feed in self.feeds}
        self._forgot: dict[str, int] = {}  # per feed, the window start its ledger last forgot before
        self._unsaved = False  # counted since the last save
        self._unpublished = False  # a counter or a gauge moved since the last publication
        self._vector_bytes: dict[tuple[str, ...], Number] = {}
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

    def _feed(self, endpoint: str) -> Feed:
        return next(feed for feed in self.feeds if feed.endpoint == endpoint)

    def dump(self) -> dict[str, Any]:
        with self._lock:
            dumped: dict[str, Any] = {
                endpoint: ledger.dump() for endpoint, ledger in self.ledgers.items() if ledger.started or ledger.series
            }
            if self._months.month:
                dumped[MONTH_KEY] = self._months.dump()
            return dumped

    def restore(self, saved: Mapping[str, Any]) -> None:
        """The ledgers of the state file: the counters go on from their saved totals.

        And the month's final sums, if saved: the first poll then reads costs from the window
        (or from the first day not summed), not from the first of the month.
        """
        with self._lock:
            for endpoint in self.ledgers:
                if endpoint in saved:
                    self.ledgers[endpoint] = _ledger(self._feed(endpoint), saved[endpoint])
            if MONTH_KEY in saved and "costs" in self.ledgers:
                self._months = MonthToDate.load(saved[MONTH_KEY])
        self._publish(self.compose())

    # -- a poll ---------------------------------------------------------------------------------

    def poll(self) -> None:
        lower_thread_priority()
        try:
            with paused_collector():
                self._poll()
        except PollCancelled:
            return
        except Exception as exc:  # a bug must not kill the schedule nor print a traceback
            for collector in {feed.collector for feed in self.feeds}:
                self._failed(collector, "-", PollError("internal", f"{type(exc).__name__}: {exc}"))

    def _poll(self) -> None:
        now = self._clock()
        try:
            self._client.authorize()
        except PollError as exc:
            for collector in {feed.collector for feed in self.feeds}:
                self._failed(collector, "-", exc)
            return
        failed: set[str] = set()
        for feed in self.feeds:
            start = self.start_of(feed, now)
            try:
                read = self.fetch(feed, start)
                self.count(feed, read, start, now)
            except PollCancelled:
                return
            except PollError as exc:
                failed.add(feed.collector)
                self._failed(feed.collector, feed.endpoint, exc)
                continue
            self._health.requests.labels(feed.collector).inc(read.requests)
        for collector in {feed.collector for feed in self.feeds} - failed:
            self._health.up.labels(collector).set(1)
        if self._unsaved:
            # Saved before published: a restart never resumes below what Prometheus has seen, which
            # it would read as a reset and count again. Unsaved, the counters wait for a save.
            if not self._save():
                log.warning("spend_not_published", reason="the state file could not be written")
                return
            self._unsaved = False
        if self._unpublished:  # a poll that moved nothing publishes nothing: the last part stands
            self._publish(self.compose())
            self._unpublished = False

    # -- a poll's steps, one feed at a time (also timed one by one by bench/spend.py) -------------

    def window(self, now: float) -> int:
        """The start of the look-back window: the first bucket a poll reads of every feed."""
        return int(now) // DAY * DAY - int(self._lookback // DAY) * DAY

    def start_of(self, feed: Feed, now: float) -> int:
        """Where this poll reads `feed` from: the window's start, or for costs the first day of the
        month not summed yet (exporter/spend/month.py). Moves the month's final buckets into its sums."""
        if feed.endpoint != "costs":
            return self.window(now)
        with self._lock:
            start = self._months.read_from(month_start(now), self.window(now))
            self._unpublished |= not self._months.complete  # a new month: its gauges start again
            return start

    def fetch(self, feed: Feed, start: int) -> Window:
        """The feed's buckets from `start`, only the results new since the last poll counted, and the requests."""
        deadline = time.monotonic() + self._deadline
        known, read = self._digests.get(feed.endpoint), self._pages.get(feed.endpoint)
        sizing = self._sizing[feed.endpoint]
        return fetch_window(self._client, feed, start, deadline, self._max_pages, known, sizing, read)

    def count(self, feed: Feed, window: Window, start: int, now: float) -> None:
        with self._lock:
            self._count(feed, window, self.window(now), start, int(now) // DAY * DAY)

    def compose(self) -> Part:
        with self._lock:
            return self._compose()

    def _count(self, feed: Feed, read: Window, window: int, start: int, day: int) -> None:
        """Under the lock: one feed's changed results into its ledger and the gauges.

        A result that came back unchanged has nothing to count: its amounts are the marks
        already, and its share of the month is already in the month's sums. What was read is
        kept for the next poll's reading only now that it is counted: a window that failed
        half-way, or was never counted, must be read again as new.
        """
        buckets = read.buckets
        ledger = self.ledgers[feed.endpoint]
        costs = feed.endpoint == "costs"
        month = self._months
        readings: list[tuple[int, Key, Cells]] = []
        for bucket in buckets:
            if bucket.rows is None:
                continue
            self._unsaved = self._unpublished = True
            if not feed.level:  # a level, not a flow: the newest bucket's is a gauge, not counted
                began = bucket.start
                readings += [(began, key, cells) for key, cells in bucket.rows]
            if costs and bucket.start >= month.month:
                if bucket.whole:
                    month.replace(bucket.start, _costs(bucket.rows))
                elif not month.update(bucket.start, _costs(bucket.rows), bucket.gone):
                    month.replace(bucket.start, _costs(rows_of(bucket.every(), feed)))
        if costs:
            month.read(start, day)
        if feed.level:
            newest = max(buckets, key=lambda b: b.start, default=None)
            if newest is not None and newest.rows is not None:
                rows = newest.rows if newest.whole else rows_of(newest.every(), feed)
                self._vector_bytes = {key: cells[0] for key, cells in rows if cells[0] is not None}
        # Only the window's buckets are read again: a month's older ones are final.
        self._digests[feed.endpoint] = {bucket.start: bucket.digest for bucket in buckets if bucket.start >= window}
        self._pages[feed.endpoint] = read.pages
        revisions = ledger.record(readings, baseline=not ledger.started)
        if self._forgot.get(feed.endpoint) != window:  # marks leave the window once a day, not at each poll
            ledger.forget_before(window)
            self._forgot[feed.endpoint] = window
        for revision in revisions:
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
        moved = self._months.take_moved()
        if not self._months.complete:
            return self._renderer.render(self.ledgers.values(), {}, self._vector_bytes)
        months = self._months
        return self._renderer.render(self.ledgers.values(), months.totals, self._vector_bytes, moved, months.currencies)
