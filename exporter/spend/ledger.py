"""Counters from time buckets that keep changing: each amount counted once, by its growth.

The costs and usage endpoints answer with time buckets whose amounts go on changing for
hours after they first appear. A counter must move by what is new, never by a bucket twice,
and never down. The ledger keeps, per row (a result's grouping values) and bucket, the
highest amount of each cell any poll has seen (its high-water mark). A poll that sees more
counts the difference toward the cell's series; one that sees less reports a downward
revision and counts nothing. Marks are a row's, not a series': several rows may count
toward one series (an image's requests, whatever its size), and each grows on its own.
Buckets that fall out of the look-back window are final and forgotten, so the ledger holds
a window's worth of marks, not history.

Money is a Decimal: costs arrive as strings of up to 28 decimal places, and a float sum over
months of buckets would drift from the upstream's own total. Counts (tokens, requests,
images) are ints, exact too, and several times cheaper to compare, add and write out.

With a state file the marks and the counters' totals are saved, so a restart neither loses
nor counts again. Without one, a fresh ledger takes the first poll's amounts as its marks
(`baseline`): the counters start at zero and count only what grows from then on, so what
grew while the exporter was down, and the buckets' amounts before the start, are not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from itertools import compress
from operator import ne
from typing import NamedTuple

Group = tuple[str, ...]  # a series: the family's name, then its label values in the family's order
Key = tuple[str, ...]  # a row: a result's grouping values
Number = Decimal | int  # money, or a count
Cells = tuple[Number | None, ...]  # a row's amounts, one per column; None: the result omits it


class Revision(NamedTuple):
    """An amount lower than one an earlier poll saw; never subtracted from a counter."""

    bucket: int
    group: Group
    was: Number
    now: Number


class Series:
    """One counter: its labels and its total."""

    __slots__ = ("group", "total")

    def __init__(self, group: Group, total: Number = 0):
        self.group = group
        self.total = total


class _Row:
    """A row's series, one per column (None until the column has a value), and its marks by bucket."""

    __slots__ = ("series", "marks")

    def __init__(self, columns: int):
        self.series: list[Series | None] = [None] * columns
        self.marks: dict[int, Cells] = {}


class _Nones(dict[int, Cells]):
    """A row of n cells none of which a poll has seen yet, by n."""

    def __missing__(self, columns: int) -> Cells:
        self[columns] = (None,) * columns
        return self[columns]


_NONE = _Nones()


def _alone(key: Key) -> tuple[Group, ...]:
    return (key,)


class Ledger:
    """High-water marks per row and bucket, and the counters' totals; not thread-safe.

    `series_of` names the series of each column of a row (by default one column, the row
    itself). `whole`: every amount is an int, so a renderer may format the totals in bulk;
    the ledger then keeps the series that grew to itself and tells only that some did
    (`grew`), and the new ones.
    """

    def __init__(self, series_of: Callable[[Key], tuple[Group, ...]] = _alone, *, whole: bool = False):
        self.series_of = series_of
        self.whole = whole
        self.rows: dict[Key, _Row] = {}
        self.series: dict[Group, Series] = {}
        self.started = False  # whether the marks hold a poll (or a saved state) yet
        # Counters created, or grown (not with `whole`), since take_moved(): what a renderer formats again.
        self.moved: set[Series] = set()
        self.grew = False  # whether a counter grew since take_moved()

    @property
    def totals(self) -> dict[Group, Number]:
        return {group: series.total for group, series in self.series.items()}

    def record(self, readings: Iterable[tuple[int, Key, Cells]], *, baseline: bool = False) -> list[Revision]:
        """Count each cell's growth over its mark; with `baseline`, only take the marks.

        Returns the cells below their marks: revisions downwards, counted nowhere."""
        revisions: list[Revision] = []
        rows, moved, track = self.rows, self.moved, not self.whole
        grew = False
        for bucket, key, cells in readings:
            row = rows.get(key)
            if row is None:
                row = rows[key] = _Row(len(cells))
            old = row.marks.get(bucket)
            if old is None:
                old, places = _NONE[len(cells)], iter(range(len(cells)))
            elif old == cells:
                continue
            else:  # the columns that changed, found in C: a row of 15 usually changes in two or three
                places = compress(range(len(cells)), map(ne, cells, old))
            marks = list(old)
            groups: tuple[Group, ...] | None = None  # the row's series' labels, built once if needed
            for place in places:
                value = cells[place]
                if value is None:
                    continue
                was = old[place]
                if was is None:
                    growth = value  # a cell new to this bucket: all of it is growth
                elif value > was:
                    growth = value - was
                else:
                    groups = groups or self.series_of(key)
                    revisions.append(Revision(bucket, groups[place], was, value))
                    continue
                marks[place] = value
                series = row.series[place]
                if series is None:
                    groups = groups or self.series_of(key)
                    series = row.series[place] = self._open(groups[place])
                if growth and not baseline:
                    series.total += growth
                    grew = True
                    if track:
                        moved.add(series)
            row.marks[bucket] = tuple(marks)
        self.grew |= grew
        self.started = True
        return revisions

    def _open(self, group: Group) -> Series:
        """A series a row's column counts toward; a new one starts at zero, and has moved."""
        series = self.series.get(group)
        if series is None:
            series = self.series[group] = Series(group)
            self.moved.add(series)
        return series

    def take_moved(self) -> set[Series]:
        """The counters created (or, without `whole`, grown) since the last call."""
        moved, self.moved, self.grew = self.moved, set(), False
        return moved

    def forget_before(self, start: int) -> None:
        """Buckets that began before `start` are out of the window: final, and never read again."""
        for row in self.rows.values():
            if any(bucket < start for bucket in row.marks):
                row.marks = {bucket: cells for bucket, cells in row.marks.items() if bucket >= start}

    # -- the state file -----------------------------------------------------------------------

    def dump(self) -> dict[str, object]:
        """The ledger as JSON-ready data: amounts as strings, so that no digit is lost."""
        return {
            "started": self.started,
            "rows": [
                [
                    list(key),
                    [
                        [bucket, [None if cell is None else str(cell) for cell in cells]]
                        for bucket, cells in row.marks.items()
                    ],
                ]
                for key, row in self.rows.items()
                if row.marks
            ],
            "series": [[list(series.group), str(series.total)] for series in self.series.values()],
        }

    @classmethod
    def load(
        cls, data: Mapping[str, object], series_of: Callable[[Key], tuple[Group, ...]] = _alone, *, whole: bool = False
    ) -> Ledger:
        """A ledger from `dump()`'s data; ValueError, TypeError or KeyError for anything else.

        From an earlier version's ledger (`marks` of each series, `totals`), the totals alone:
        its marks were a series', not a row's. The next poll then takes the marks as a fresh
        ledger's first does, so what grew between that save and that poll is not counted.
        """
        ledger = cls(series_of, whole=whole)
        if "rows" not in data:
            totals = data["totals"]
            if not isinstance(totals, list):
                raise TypeError("totals must be a list")
            for group, _measure, total in totals:
                ledger._load_series(group, total)
            ledger.moved = set(ledger.series.values())
            return ledger
        rows, series, started = data["rows"], data["series"], data["started"]
        if not isinstance(rows, list) or not isinstance(series, list) or not isinstance(started, bool):
            raise TypeError("rows and series must be lists")
        for group, total in series:
            ledger._load_series(group, total)
        for key, marks in rows:
            labels = _strings(key)
            row = ledger.rows[labels] = _Row(len(series_of(labels)))
            for bucket, cells in marks:
                if not isinstance(cells, list) or len(cells) != len(row.series):
                    raise ValueError("a row's cells are not its columns")
                row.marks[int(bucket)] = tuple(None if cell is None else ledger._amount(cell) for cell in cells)
            for place, group in enumerate(series_of(labels)):
                if any(cells[place] is not None for cells in row.marks.values()):
                    row.series[place] = ledger._open(group)
        ledger.moved = set(ledger.series.values())
        ledger.started = started
        return ledger

    def _load_series(self, group: object, total: object) -> None:
        labels = _strings(group)
        self.series[labels] = Series(labels, self._amount(total))

    def _amount(self, text: object) -> Number:
        """A saved amount: an int in a ledger of counts, else a Decimal."""
        if not isinstance(text, str):
            raise TypeError("an amount is a string")
        try:
            amount: Number = int(text) if self.whole else Decimal(text)
        except ArithmeticError:
            raise ValueError(f"not an amount: {text[:40]!r}") from None
        if isinstance(amount, Decimal) and not amount.is_finite() or amount < 0:
            raise ValueError(f"not an amount: {text[:40]!r}")
        return amount


def _texts(cells: Cells) -> list[str | None]:
    return [None if cell is None else str(cell) for cell in cells]


def _strings(values: object) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError("a group is a list of strings")
    return tuple(values)
