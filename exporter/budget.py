"""One request budget per organization, shared by the project list and every collector.

Every upstream request takes a slot first. Slots are spaced 1/rate apart with no burst, and
no half-open second holds more than floor(rate) slots, whoever asks (a rate of 7.5 gives 7 in
every second). The upstream sees each request a little after its slot, and not always by the
same delay: while that delay varies by less than a slot, it counts at most one more in any
second, rate + 1 at worst.

Waiters are served by priority: the project list, then a refresh an audit event asked for,
then the details; within a priority, in the order they became ready, and each slot wakes only
the waiter whose turn it is, and only if its own timer would be late. A list poll also declares
itself (`listing`), so that the others leave it the slots it is about to need rather than only
those it waits for: while one of its pages is in flight, and before its next poll is due, a
lower priority takes a slot only if the slot after it is free again by the time the list asks.
The list poll then waits for no slot the details took, and a detail held back for it sleeps
until its own turn can come, so the list's asking wakes no other thread while the list thread
sends its request.

A 429 anywhere slows everyone: the rate halves (down to MIN_RATE_SHARE of the configured
one) and no slot is given before its Retry-After has passed. Each success then wins back
a twentieth of the configured rate, so a storm that ends is forgotten within a minute or so
at typical rates, and one that goes on keeps the exporter at the rate it can sustain.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LIST = 0  # the project list: never waits behind details
AUDIT = 1  # a refresh an audit event asked for
DETAILS = 2  # a collector's due refresh
MIN_RATE_SHARE = 1 / 16
RECOVERY_SHARE = 1 / 20
LATE_SHARE = 0.04
# A page is expected back one round trip after its slot: the quickest of its poll's pages so
# far, or of the last poll's, so it is seldom sooner; this covers the timer's own slack.
PAGE_MARGIN = 0.002
# The scheduler starts a poll a few milliseconds after its time, more on a busy host, and
# not always by the same delay: the next poll may ask this much before one interval is up.
START_MARGIN = 0.05
# A list request this late is not waited for any longer (a slow page, a skipped poll): when
# it comes, it waits one slot at most, as it would without the forecast.
HOLD_LATE = 0.5


class _Waiter:
    """A thread waiting for a slot; waiters are served in the order of `key`."""

    __slots__ = ("key", "not_before", "turn", "until")

    def __init__(self, priority: int, ready: float, arrival: int, not_before: float, turn: threading.Condition):
        # Priority, then since when it may go (when it came, or when its backoff ends), then
        # a unique count: waiters never compare by `turn`.
        self.key = (priority, ready, arrival)
        self.not_before = not_before
        self.turn = turn  # notified when it becomes first in line, if its own timer would be late
        self.until = math.inf  # when its wait ends if nobody notifies it

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class BudgetCancelled(Exception):
    """The stop event was set while waiting for a slot."""


def per_second(rate: float) -> int:
    """The most slots any half-open second may hold at this rate."""
    return max(1, math.floor(rate + 1e-9))  # 1e-9: a rate won back in steps of a twentieth


class RequestBudget:
    """A token bucket of depth one, with priorities, and multiplicative decrease on 429."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_rate_change: Callable[[float], None] = lambda rate: None,
    ):
        self.configured = rate
        self.rate = rate
        self._clock = clock
        self.on_rate_change = on_rate_change
        self._next_slot = 0.0  # the earliest time the next slot may be given
        self._recent: deque[float] = deque(maxlen=per_second(rate))  # the last slots' times
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []  # the waiters, in the order they are served
        self._arrivals = itertools.count()
        self.granted = 0
        self._listing = False
        self._next_poll: float | None = None  # when the next list poll is expected to ask
        self._pages_out: dict[int, float] = {}  # list thread -> when its page in flight got its slot
        self._page_rtt: float | None = None  # the quickest page round trip of the last list poll
        self._poll_rtt: float | None = None  # ... and of the one running

    def acquire(
        self, priority: int, stop: threading.Event, deadline: float | None = None, not_before: float = 0.0
    ) -> bool:
        """Wait for a slot; False when `deadline` (a clock time) passes first.

        A retry waits out its backoff here, `not_before`, rather than beside the budget: a
        list poll waiting to retry then still holds back the details waiting behind it.
        BudgetCancelled when `stop` is set: the daemon is stopping.
        """
        with self._lock:
            if priority == LIST:
                self._list_asks()
            # Served in order of priority, then of readiness: a retry takes its place when its
            # backoff is over, so it neither holds back the details behind it nor waits for ever.
            ready = max(not_before, self._clock())
            me = _Waiter(priority, ready, next(self._arrivals), not_before, threading.Condition(self._lock))
            bisect.insort(self._queue, me)
            try:
                while True:
                    if stop.is_set():
                        raise BudgetCancelled()
                    now = self._clock()
                    # Only the first in line waits for the slot; the others wait to be first, so
                    # a slot wakes one thread rather than all of them, the list's included.
                    first = self._queue[0] is me
                    wake = self._ready(not_before) if first else now + 0.5
                    if first and now >= wake:
                        wake = 0.0 if priority == LIST else self._held_until(now)
                        if not wake:
                            self._grant(priority, now)
                            return True
                    if deadline is not None and now >= deadline:
                        return False
                    wait = wake - now if deadline is None else min(wake, deadline) - now
                    # Bounded: a stop does not notify, and a fake clock in tests moves without one.
                    wait = min(wait, 0.5) if wait > 0 else 0.001
                    me.until = now + wait
                    me.turn.wait(wait)
                    me.until = math.inf
            finally:
                self._queue.remove(me)
                self._wake_next()

    def _wake_next(self) -> None:
        """The next in line computes its own wait, woken now only if its timer would be late for its turn.

        A detail held back for a list page sleeps until the earliest turn it can have after the
        page's next slot (`_held_until`): when the page is back and takes that slot, the detail
        is not woken to take the GIL while the list thread sends its next request.
        """
        if self._queue:
            waiter = self._queue[0]
            if waiter.until > self._ready(waiter.not_before):
                waiter.turn.notify()

    def _wake_first(self) -> None:
        if self._queue:
            self._queue[0].turn.notify()

    def _ready(self, not_before: float) -> float:
        """The earliest time a slot may be given: spaced from the last, within the second's share, after a backoff."""
        recent = self._recent
        # The oldest of a full second's slots must be a whole second old: a half-open second
        # then never holds more than floor(rate), however the spacing caught up after a late waiter.
        window = recent[0] + 1.0 if len(recent) == recent.maxlen else 0.0
        return max(self._next_slot, window, not_before)

    def _grant(self, priority: int, now: float) -> None:
        # Spaced 1/rate from the last slot, not from now: a waiter woken a little late does not
        # push every later slot back. Never from further back than LATE_SHARE of a slot, so no
        # burst follows a lull; the second's share above bounds what the catching up may add.
        self._next_slot = self._after(now)
        self._recent.append(now)
        self.granted += 1
        if priority == LIST and self._listing:
            self._pages_out[threading.get_ident()] = now

    def _after(self, now: float) -> float:
        """When the next slot may be given if one is given at `now`."""
        return max(self._next_slot, now - LATE_SHARE / self.rate) + 1 / self.rate

    @contextmanager
    def listing(self, every: float) -> Iterator[None]:
        """Around one whole list poll, of a list polled every `every` seconds: the others leave it its slots.

        While a page of it is in flight, it is expected back one round trip after its slot
        (the quickest of this poll's pages, or of the last poll's: a fast page must not find
        its slot taken); after the poll, the next one is expected one interval after this one
        began, or at the first interval after it ended, as the scheduler skips a run that
        would overlap. A lower priority takes a slot only if the slot after it is free again
        by then: at a fast upstream the details take nothing while the list pages, at a slow
        one they take the slots that fit inside each page's round trip. They give up at most
        one slot a page for it, and a slot and START_MARGIN before each poll: little when the
        list is polled minutes apart.
        One list poll at a time: the scheduler never runs a job beside itself.
        """
        with self._lock:
            started = self._clock()
            self._listing, self._poll_rtt = True, None
        try:
            yield
        finally:
            with self._lock:
                now = self._clock()
                self._listing = False
                self._pages_out.clear()
                if self._poll_rtt is not None:
                    self._page_rtt = self._poll_rtt
                self._next_poll = started + every * max(1, math.ceil((now - started) / every))
                self._wake_first()  # the hold is another one now

    def _list_asks(self) -> None:
        """A list request comes for a slot: its priority holds the others back now, not a forecast."""
        self._next_poll = None
        granted = self._pages_out.pop(threading.get_ident(), None)
        if granted is not None:
            rtt = self._clock() - granted
            self._poll_rtt = rtt if self._poll_rtt is None else min(self._poll_rtt, rtt)

    def _held_until(self, now: float) -> float:
        """0.0 if a lower priority may take the slot at `now`; else when to look again.

        That is the earliest the slot after the list's next one may be given, so that the list
        taking its slot need not wake the waiter (`_wake_next`); or, once the list is later than
        that, the end of the hold, and the list's asking then wakes the waiter.
        """
        dues = [] if self._next_poll is None else [self._next_poll - START_MARGIN]
        known = [rtt for rtt in (self._page_rtt, self._poll_rtt) if rtt is not None]
        if known:
            dues += [granted + min(known) - PAGE_MARGIN for granted in self._pages_out.values()]
        after = self._after(now)
        holding = [due for due in dues if after > due and now < due + HOLD_LATE]
        if not holding:
            return 0.0
        due = max(holding)
        # The list asks at `due` or after; the slot after its own is then (1 - LATE_SHARE)/rate
        # later or more (`_after`), so a timer set to that is never late for the next turn.
        look = due + (1 - LATE_SHARE) / self.rate
        return look if now < look else due + HOLD_LATE

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: halve the rate and give no slot before Retry-After has passed."""
        with self._lock:
            self._set_rate(max(self.configured * MIN_RATE_SHARE, self.rate / 2))
            if retry_after:
                self._next_slot = max(self._next_slot, self._clock() + retry_after)
            rate = self.rate
        self.on_rate_change(rate)

    def succeeded(self) -> None:
        """A response that was not a 429: win back part of the rate a storm took."""
        if self.rate >= self.configured:
            return
        with self._lock:
            self._set_rate(min(self.configured, self.rate + self.configured * RECOVERY_SHARE))
            rate = self.rate
        self.on_rate_change(rate)

    def _set_rate(self, rate: float) -> None:
        self.rate = rate
        share = per_second(rate)
        if self._recent.maxlen is not None and share < self._recent.maxlen:
            # Slowed by a 429: the slots already given kept the old rate's bound; the new one
            # counts from here, beside the spacing and the Retry-After, which a retry waits for
            # rather than for slots given before the upstream asked us to slow down.
            self._recent = deque(maxlen=share)
        elif share != self._recent.maxlen:
            self._recent = deque(self._recent, maxlen=share)  # faster again: keeps the latest slots
