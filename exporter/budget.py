"""One request budget per organization, shared by the project list and every collector.

Every upstream request takes a slot first. Slots are spaced 1/rate apart with no burst, so
no one-second window holds more than rate + 1 requests, whoever asks (LATE_SHARE below). Waiters are served
by priority: the project list before details, so detail work delays a list poll by at most
the one slot already given out.

A 429 anywhere slows everyone: the rate halves (down to MIN_RATE_SHARE of the configured
one) and no slot is given before its Retry-After has passed. Each success then wins back
a twentieth of the configured rate, so a storm that ends is forgotten within a minute or so
at typical rates, and one that goes on keeps the exporter at the rate it can sustain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LIST = 0  # the project list: never waits behind details
AUDIT = 1  # a refresh an audit event asked for
DETAILS = 2  # a collector's due refresh
MIN_RATE_SHARE = 1 / 16
RECOVERY_SHARE = 1 / 20
LATE_SHARE = 0.04


class BudgetCancelled(Exception):
    """The stop event was set while waiting for a slot."""


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
                    if not ahead and now >= self._next_slot and now >= not_before:
                        # Spaced 1/rate from the last slot, not from now: a waiter woken a little
                        # late does not push every later slot back. Never from further back than
                        # LATE_SHARE of a slot, so no burst follows a lull: any two slots are at
                        # least (1 - LATE_SHARE)/rate apart.
                        self._next_slot = max(self._next_slot, now - LATE_SHARE / self.rate) + 1 / self.rate
                        self.granted += 1
                        self._condition.notify_all()  # the next waiter computes its own wait
                        return True
                    if deadline is not None and now >= deadline:
                        return False
                    wait = max(self._next_slot - now, not_before - now, 0.0) if not ahead else 0.5
                    if deadline is not None:
                        wait = min(wait, max(deadline - now, 0.0))
                    # Bounded: a stop or a higher-priority waiter leaving wakes us by notify, but
                    # a fake clock in tests moves without one.
                    self._condition.wait(min(wait, 0.5) if wait > 0 else 0.001)
            finally:
                self._waiting[priority] -= 1
                self._condition.notify_all()  # lower priorities may go now

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: halve the rate and give no slot before Retry-After has passed."""
        with self._condition:
            self.rate = max(self.configured * MIN_RATE_SHARE, self.rate / 2)
            if retry_after:
                self._next_slot = max(self._next_slot, self._clock() + retry_after)
            rate = self.rate
        self.on_rate_change(rate)

    def succeeded(self) -> None:
        """A response that was not a 429: win back part of the rate a storm took."""
        if self.rate >= self.configured:
            return
        with self._condition:
            self.rate = min(self.configured, self.rate + self.configured * RECOVERY_SHARE)
            rate = self.rate
        self.on_rate_change(rate)
