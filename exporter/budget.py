"""One request budget per organization, shared by the project list and every collector.

Every upstream request takes a slot first. Slots are spaced 1/rate apart with no burst, and
no half-open second holds more than floor(rate) slots, whoever asks (a rate of 7.5 gives 7 in
every second). The upstream sees each request a little after its slot, and not always by the
same delay: while that delay varies by less than a slot, it counts at most one more in any
second, rate + 1 at worst.

Waiters are served by priority: the project list before details, so detail work delays a
list poll by at most the one slot already given out.

A 429 anywhere slows everyone: the rate halves (down to MIN_RATE_SHARE of the configured
one) and no slot is given before its Retry-After has passed. Each success then wins back
a twentieth of the configured rate, so a storm that ends is forgotten within a minute or so
at typical rates, and one that goes on keeps the exporter at the rate it can sustain.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

LIST = 0  # the project list: never waits behind details
AUDIT = 1  # a refresh an audit event asked for
DETAILS = 2  # a collector's due refresh
MIN_RATE_SHARE = 1 / 16
RECOVERY_SHARE = 1 / 20
LATE_SHARE = 0.04


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
        self._waiting = [0, 0, 0]  # waiters by priority
        self._condition = threading.Condition()
        self.granted = 0

    def acquire(
        self, priority: int, stop: threading.Event, deadline: float | None = None, not_before: float = 0.0
    ) -> bool:
        """Wait for a slot; False when `deadline` (a clock time) passes first.

        A retry waits out its backoff here, `not_before`, rather than beside the budget: a
        list poll waiting to retry then still holds back the details waiting behind it.
        BudgetCancelled when `stop` is set: the daemon is stopping.
        """
        with self._condition:
            self._waiting[priority] += 1
            try:
                while True:
                    if stop.is_set():
                        raise BudgetCancelled()
                    now = self._clock()
                    ahead = any(self._waiting[:priority])
                    wake = now + 0.5 if ahead else self._ready(not_before)
                    if not ahead and now >= wake:
                        self._grant(now)
                        self._condition.notify_all()  # the next waiter computes its own wait
                        return True
                    if deadline is not None and now >= deadline:
                        return False
                    wait = wake - now if deadline is None else min(wake, deadline) - now
                    # Bounded: a stop or a higher-priority waiter leaving wakes us by notify, but
                    # a fake clock in tests moves without one.
                    self._condition.wait(min(wait, 0.5) if wait > 0 else 0.001)
            finally:
                self._waiting[priority] -= 1
                self._condition.notify_all()  # lower priorities may go now

    def _ready(self, not_before: float) -> float:
        """The earliest time a slot may be given: spaced from the last, within the second's share, after a backoff."""
        recent = self._recent
        # The oldest of a full second's slots must be a whole second old: a half-open second
        # then never holds more than floor(rate), however the spacing caught up after a late waiter.
        window = recent[0] + 1.0 if len(recent) == recent.maxlen else 0.0
        return max(self._next_slot, window, not_before)

    def _grant(self, now: float) -> None:
        # Spaced 1/rate from the last slot, not from now: a waiter woken a little late does not
        # push every later slot back. Never from further back than LATE_SHARE of a slot, so no
        # burst follows a lull; the second's share above bounds what the catching up may add.
        self._next_slot = self._after(now)
        self._recent.append(now)
        self.granted += 1

    def _after(self, now: float) -> float:
        """When the next slot may be given if one is given at `now`."""
        return max(self._next_slot, now - LATE_SHARE / self.rate) + 1 / self.rate

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: halve the rate and give no slot before Retry-After has passed."""
        with self._condition:
            self._set_rate(max(self.configured * MIN_RATE_SHARE, self.rate / 2))
            if retry_after:
                self._next_slot = max(self._next_slot, self._clock() + retry_after)
            rate = self.rate
        self.on_rate_change(rate)

    def succeeded(self) -> None:
        """A response that was not a 429: win back part of the rate a storm took."""
        if self.rate >= self.configured:
            return
        with self._condition:
            self._set_rate(min(self.configured, self.rate + self.configured * RECOVERY_SHARE))
            rate = self.rate
        self.on_rate_change(rate)

    def _set_rate(self, rate: float) -> None:
        self.rate = rate
        if per_second(rate) != self._recent.maxlen:
            self._recent = deque(self._recent, maxlen=per_second(rate))  # keeps the latest slots
