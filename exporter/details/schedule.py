"""When each project's details are due: rounds spread evenly over the details interval.

A unit of work is one collector for one project (or for the organization). Three queues,
taken in this order:
- **asked**: units something asked for at once (an audit event names the project);
- **due**: the current round, unit k of n due at `start + k * interval / n`, so that the
  requests of a round are spread evenly over it, never fired in a burst;
- **backfill**: units never fetched yet, taken as soon as the budget allows, and only
  when no due unit is waiting.
The first round begins half an interval after the first backfill ends; each next one an
interval after the last one began, or at once when the budget made it run longer. Units that went away (an
archived project) are skipped when their turn comes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple


class Unit(NamedTuple):
    collector: str
    project_id: str | None  # None: the organization's own resource (the organization's spend limit)


class Schedule:
    """Not thread-safe: the engine holds its lock around every call."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._units: dict[Unit, None] = {}  # the current units, in the order rounds take them
        self._asked: deque[Unit] = deque()
        self._backfill: deque[Unit] = deque()
        self._round: list[Unit] = []
        self._position = 0
        self._round_start: float | None = None
        self._next_round: float | None = None
        self.rounds = 0  # rounds begun
        self.round_started = self.round_ended = 0.0

    def replace(self, units: Iterable[Unit], fetched: Callable[[Unit], bool]) -> None:
        """The units from now on; those never fetched go to the backfill."""
        self._units = dict.fromkeys(units)
        queued = set(self._backfill)
        self._backfill = deque(u for u in self._backfill if u in self._units)
        self._backfill.extend(u for u in self._units if not fetched(u) and u not in queued)

    def ask(self, unit: Unit) -> None:
        if unit in self._units and unit not in self._asked:
            self._asked.append(unit)

    def take(self) -> Unit | None:
        """The next unit to fetch now, or None: next_wake() says when to ask again."""
        now = self._clock()
        while self._asked:
            unit = self._asked.popleft()
            if unit in self._units:
                return unit
        self._advance(now)
        while self._position < len(self._round) and self._due(self._position) <= now:
            unit = self._round[self._position]
            self._position += 1
            if self._position == len(self._round):
                self.round_ended = now
            if unit in self._units:
                return unit
        while self._backfill:
            unit = self._backfill.popleft()
            if unit in self._units:
                return unit
        return None

    def next_wake(self) -> float:
        """The clock time at which take() may return a unit, if nothing is asked or added before."""
        if self._asked or self._backfill:
            return self._clock()
        if self._position < len(self._round):
            return self._due(self._position)
        if self._next_round is not None:
            return self._next_round
        return self._clock() + self.interval

    @property
    def in_round(self) -> bool:
        return self._position < len(self._round)

    def _due(self, position: int) -> float:
        assert self._round_start is not None
        return self._round_start + position * self.interval / len(self._round)

    def _advance(self, now: float) -> None:
        """Begin the next round when the current one is done, the backfill is empty and its time has come."""
        if self._position < len(self._round) or self._backfill or not self._units:
            return
        if self._next_round is None:
            # Out of the first backfill, every unit was just fetched: the first round begins half
            # an interval later, so that no unit is fetched twice in a row nor waits two intervals.
            self._next_round = now + self.interval / 2
        if now < self._next_round:
            return
        # A round that the budget held up past its successor's start is followed at once, not by
        # rounds that are already over: no unit is fetched twice back to back to catch up.
        start = max(self._next_round, now)
        self._round = list(self._units)
        self._position = 0
        self._round_start = start
        self._next_round = start + self.interval
        self.rounds += 1
        self.round_started = start
