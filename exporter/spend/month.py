"""This UTC month's costs per series, for the month-to-date gauges, without the month read at every poll.

A costs bucket older than the look-back window is final, as the ledger takes it to be
(exporter/spend/ledger.py): its share of the month is added once to `final`, one sum per
series, and the bucket is not asked for again. The buckets of the window, which each poll
reads anew, are kept one share each (`parts`) until they leave it. So a poll asks costs from
the window's start, as it asks usage, except when buckets of this month before the window
are not summed yet: at start without a saved month, after days without a poll, and never at
a new month (its first buckets are in the window).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from exporter.spend.ledger import Number

DAY = 86_400
Labels = tuple[str, ...]  # (project, line item, currency)
Part = dict[Labels, Number]
Amount = tuple[Labels, Number]  # a cost result's series and amount


class MonthToDate:
    """Not thread-safe: the poller holds its lock."""

    def __init__(self) -> None:
        self.month = 0  # the start of the month the sums are of
        self.until = 0  # `final` holds the buckets of [month, until)
        self.final: Part = {}
        self.parts: dict[int, Part] = {}  # buckets from `until` on: each one's share, as last read
        self.totals: Part = {}  # final and parts together: the gauges
        self.currencies: dict[str, Number] = {}  # the totals' sum by currency: the organization's gauge
        self.complete = False  # whether the parts were read since the month began or was loaded
        # The series whose totals changed since take_moved(); None: any may have, or gone.
        self.moved: set[Labels] | None = None
        self._summed: set[int] = set()  # buckets with two results of one series: never updated in part
        self._labels: dict[Labels, Labels] = {}  # one tuple per series, shared by every bucket's share

    def read_from(self, month: int, window: int) -> int:
        """Where this poll's costs read must start: the window's start, or the first bucket not yet summed."""
        if month != self.month:
            self.month, self.until, self.final, self.complete = month, month, {}, False
            self._summed, self._labels = set(), {}
            self.parts = {bucket: part for bucket, part in self.parts.items() if bucket >= month}
            self._total()
        # Buckets that left the window are final: their last reading joins the month's sums.
        while self.until < window and self.until in self.parts:
            for labels, amount in self.parts.pop(self.until).items():
                self.final[labels] = self.final.get(labels, Decimal(0)) + amount
            self._summed.discard(self.until)
            self.until += DAY
        return min(window, self.until)

    def read(self, start: int, newest: int) -> None:
        """A poll read every bucket from `start` to `newest`: a day it did not return has no costs."""
        for bucket in range(max(start, self.until), newest + 1, DAY):
            self.parts.setdefault(bucket, {})
        self.complete = True

    def replace(self, bucket: int, amounts: Iterable[Amount]) -> None:
        """A bucket read anew, every result: its old share leaves the sums, the new one joins them."""
        if bucket < self.until or bucket < self.month:
            return
        part: Part = {}
        count = 0
        shared = self._labels
        for labels, amount in amounts:
            labels = shared.setdefault(labels, labels)
            part[labels] = part.get(labels, Decimal(0)) + amount
            count += 1
        self._move(self.parts.get(bucket, {}), -1)
        self._move(part, 1)
        self.parts[bucket] = part
        if len(part) < count:
            self._summed.add(bucket)

    def update(self, bucket: int, amounts: Iterable[Amount], gone: int) -> bool:
        """Only a bucket's changed results: each replaces its series' share.

        True when that is the whole change: every result of the last reading that is not
        among the new ones (`gone`) is one whose series has a new result, so none vanished;
        and the bucket holds one result per series. False: replace() with every result.
        """
        if bucket < self.until or bucket < self.month:
            return True
        if bucket in self._summed or bucket not in self.parts:
            return False
        part = self.parts[bucket]
        fresh = amounts if isinstance(amounts, list) else list(amounts)
        shares = dict(fresh)
        if len(shares) != len(fresh) or len(shares.keys() & part.keys()) != gone:
            return False
        shared, totals, currencies, zero = self._labels, self.totals, self.currencies, Decimal(0)
        for labels, amount in shares.items():
            labels = shared.setdefault(labels, labels)
            was = part.get(labels)
            change = amount if was is None else amount - was
            totals[labels] = totals.get(labels, zero) + change
            currencies[labels[-1]] = currencies.get(labels[-1], zero) + change
            part[labels] = amount
        if self.moved is not None:
            self.moved.update(shares)
        self.parts[bucket] = part
        return True

    def take_moved(self) -> set[Labels] | None:
        """The series whose totals changed since the last call; None: any may have, or gone."""
        moved, self.moved = self.moved, set()
        return moved

    def _move(self, part: Mapping[Labels, Number], sign: int) -> None:
        for labels, amount in part.items():
            self.totals[labels] = self.totals.get(labels, Decimal(0)) + sign * amount
            self.currencies[labels[-1]] = self.currencies.get(labels[-1], Decimal(0)) + sign * amount
        if self.moved is not None:
            self.moved.update(part)

    def _total(self) -> None:
        self.moved = None
        self.totals, self.currencies = {}, {}
        self._move(self.final, 1)
        for part in self.parts.values():
            self._move(part, 1)

    # -- the state file -----------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The final sums only: the window's buckets are read again at the first poll after a start."""
        return {
            "month": self.month,
            "until": self.until,
            "final": [[list(labels), str(amount)] for labels, amount in self.final.items()],
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> MonthToDate:
        """From dump(); ValueError, TypeError or KeyError for anything else."""
        month, until, final = data["month"], data["until"], data["final"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (month, until)) or not month <= until:
            raise ValueError("the month's bounds are not times")
        if not isinstance(final, list):
            raise TypeError("the month's sums are not a list")
        loaded = cls()
        loaded.month, loaded.until = month, until
        for labels, amount in final:
            if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
                raise TypeError("a series is a list of strings")
            loaded.final[tuple(labels)] = _amount(amount)
        loaded._total()
        return loaded


def _amount(text: object) -> Decimal:
    if not isinstance(text, str):
        raise TypeError("an amount is a string")
    try:
        amount = Decimal(text)
    except ArithmeticError:
        raise ValueError(f"not an amount: {text[:40]!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount: {text[:40]!r}")
    return amount
