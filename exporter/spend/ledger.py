"""Counters from time buckets that keep changing: each amount counted once, by its growth.

The costs and usage endpoints answer with time buckets whose amounts go on changing for
hours after they first appear. A counter must move by what is new, never by a bucket twice,
and never down. The ledger keeps, per (bucket, group, measure), the highest amount any poll
has seen (its high-water mark). A poll that sees more counts the difference; one that sees
less reports a downward revision and counts nothing. Buckets that fall out of the look-back
window are final and forgotten, so the ledger holds a window's worth of marks, not history.

Amounts are Decimals: costs arrive as strings of up to 28 decimal places, and a float sum
over months of buckets would drift from the upstream's own total.

With a state file the marks and the counters' totals are saved, so a restart neither loses
nor counts again. Without one, a fresh ledger takes the first poll's amounts as its marks
(`baseline`): the counters start at zero and count only what grows from then on, so what
grew while the exporter was down, and the buckets' amounts before the start, are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

Group = tuple[str, ...]  # the counter's label values, in the feed's label order
_ZERO = Decimal(0)


class Reading(NamedTuple):
    """One amount of one poll: a bucket, the group it belongs to, and what it measures."""

    bucket: int  # the bucket's start, Unix seconds
    group: Group
    measure: str  # "cost", "input", "output", "requests", ...
    amount: Decimal


class Revision(NamedTuple):
    """An amount lower than one an earlier poll saw; never subtracted from a counter."""

    bucket: int
    group: Group
    measure: str
    was: Decimal
    now: Decimal


@dataclass
class Outcome:
    """What one poll's readings changed: the counters' growth and the revisions downwards."""

    grown: dict[tuple[Group, str], Decimal]
    revisions: list[Revision]


class Ledger:
    """High-water marks per (bucket, group, measure) and the counters' totals; not thread-safe."""

    def __init__(self) -> None:
        self.marks: dict[tuple[int, Group, str], Decimal] = {}
        self.totals: dict[tuple[Group, str], Decimal] = {}
        self.started = False  # whether the marks hold a poll (or a saved state) yet
        # Counters created or grown since take_moved(): all a renderer needs to format again.
        self.moved: set[tuple[Group, str]] = set()
        # One tuple per group, shared by its marks of every bucket and its counter: a parsed page's
        # label strings are new objects at every poll, and a mark would otherwise keep its own.
        self._groups: dict[Group, Group] = {}

    def record(self, readings: Iterable[tuple[int, Group, str, Decimal]], *, baseline: bool = False) -> Outcome:
        """Count the growth of each reading over its mark; with `baseline`, only take the marks."""
        grown: dict[tuple[Group, str], Decimal] = {}
        revisions: list[Revision] = []
        marks, totals, moved, groups, zero = self.marks, self.totals, self.moved, self._groups, _ZERO
        for bucket, group, measure, amount in readings:
            key = (bucket, group, measure)
            mark = marks.get(key)
            if mark is None:
                group = groups.setdefault(group, group)
                key = (bucket, group, measure)
                mark = amount if baseline else zero
                marks[key] = mark
                if (group, measure) not in totals:
                    totals[(group, measure)] = zero
                    moved.add((group, measure))
            if amount > mark:
                marks[key] = amount
                growth = amount - mark
                # The ledger's own tuple, not the reading's: the counter's every later lookup, here
                # and in the renderer, then finds its labels the same objects and compares no text.
                counter = (groups.get(group, group), measure)
                grown[counter] = grown.get(counter, zero) + growth
                totals[counter] = totals.get(counter, zero) + growth
                moved.add(counter)
            elif amount < mark:
                revisions.append(Revision(bucket, group, measure, mark, amount))
        self.started = True
        return Outcome(grown, revisions)

    def take_moved(self) -> set[tuple[Group, str]]:
        """The counters created or grown since the last call."""
        moved, self.moved = self.moved, set()
        return moved

    def forget_before(self, start: int) -> None:
        """Buckets that began before `start` are out of the window: final, and never read again."""
        self.marks = {key: mark for key, mark in self.marks.items() if key[0] >= start}

    # -- the state file -----------------------------------------------------------------------

    def dump(self) -> dict[str, object]:
        """The ledger as JSON-ready data: amounts as strings, so that no digit is lost."""
        return {
            "marks": [
                [bucket, list(group), measure, str(mark)] for (bucket, group, measure), mark in self.marks.items()
            ],
            "totals": [[list(group), measure, str(total)] for (group, measure), total in self.totals.items()],
        }

    @classmethod
    def load(cls, data: Mapping[str, object]) -> Ledger:
        """A ledger from `dump()`'s data; ValueError, TypeError or KeyError for anything else."""
        ledger = cls()
        marks, totals = data["marks"], data["totals"]
        if not isinstance(marks, list) or not isinstance(totals, list):
            raise TypeError("marks and totals must be lists")
        shared = ledger._groups
        for bucket, group, measure, mark in marks:
            labels = _group(group)
            ledger.marks[(int(bucket), shared.setdefault(labels, labels), str(measure))] = _amount(mark)
        for group, measure, total in totals:
            labels = _group(group)
            ledger.totals[(shared.setdefault(labels, labels), str(measure))] = _amount(total)
        ledger.moved = set(ledger.totals)
        ledger.started = True
        return ledger


def _group(values: object) -> Group:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError("a group is a list of strings")
    return tuple(values)


def _amount(text: object) -> Decimal:
    if not isinstance(text, str):
        raise TypeError("an amount is a string")
    amount = Decimal(text)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not an amount: {text!r}")
    return amount
