"""The spend's share of a scrape: counters from the ledgers' totals, and the month-to-date gauges.

Rendered once per poll that moved something, and then only the families that moved; a
family none of whose values changed keeps its bytes, plain and deflated. Counts (tokens,
requests, images, ...) are whole numbers: a family of them is one template of its series'
`name{labels} %d` lines, formatted at once in C from the totals, so a poll costs no Python
per series however many moved. Money and the gauges keep one line per series, and format
again the ones that changed. Counter families carry two headers: the text format's TYPE
names the family `x_total`, OpenMetrics' names it `x` (exporter.exposition.Part).
"""

from __future__ import annotations

from bisect import bisect, insort
from collections.abc import Collection, Iterable, Mapping
from operator import attrgetter

from exporter import redaction
from exporter.collectors.base import sample
from exporter.exposition import SOURCE, Buffer, Part, Piece, deflate_fast
from exporter.redaction import scrub_bytes
from exporter.spend.feeds import COST, FAMILIES, VECTOR_BYTES, Family
from exporter.spend.ledger import Group, Ledger, Number, Series

MONTH = Family(
    "openai_project_cost_month_to_date",
    "This UTC month's cost so far, in currency units, the upstream's own figure",
    COST.labels,
    "gauge",
)
ORGANIZATION_MONTH = Family(
    "openai_organization_cost_month_to_date",
    "This UTC month's cost of the whole organization so far, in currency units, unattributed costs included",
    ("currency",),
    "gauge",
)
Labels = tuple[str, ...]


def amount_text(amount: Number) -> bytes:
    """An amount written out in full: a count as it is, money never with an exponent nor a float's rounding."""
    if type(amount) is int:
        return b"%d" % amount
    text = str(amount)  # the same as format(amount, "f") unless it has an exponent, and faster
    if "E" in text:
        text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return (text or "0").encode()


def _prefix(family: Family, labels: Labels, index: Collection[Labels]) -> bytes:
    """A new series' `name{labels} `, scrubbed: label values are upstream's text, and one that
    quotes the admin key must not publish it."""
    if labels in index:  # each family fed by several feeds has their endpoint as a label
        raise ValueError(f"{family.name}: two feeds count the series {labels}")
    return scrub_bytes(sample(family.name, dict(zip(family.labels, labels, strict=True)), "")[:-1].encode())


def _headers(family: Family) -> tuple[bytes, bytes]:
    help_line = f"{family.help}, {SOURCE}."
    text = f"# HELP {family.name} {help_line}\n# TYPE {family.name} {family.kind}\n".encode()
    if family.kind != "counter":
        return text, text
    bare = family.name.removesuffix("_total")
    return text, f"# HELP {bare} {help_line}\n# TYPE {bare} counter\n".encode()


class _Rendered:
    """A family of money or of gauges as last rendered: each series' value and line, and the body they make.

    A series has a place in the lists, given when it first appears and kept; `order` lists
    the places in the series' sorted order, so the body is one join; its `name{labels} `
    prefix is formatted once. Lists and an index: at hundreds of thousands of series, an
    object per series would cost more than the lines.
    """

    def __init__(self, family: Family):
        self.family = family
        text, bare = _headers(family)
        self.header = Piece.of(text)
        self.bare = Piece.of(bare) if bare != text else None
        self.index: dict[Labels, int] = {}
        self.labels: list[Labels] = []
        self.values: list[Number] = []
        self.prefixes: list[bytes] = []
        self.lines: list[bytes] = []
        self.order: list[int] = []  # the places, in the order of their labels
        self.unordered: list[int] = []  # places not in `order` yet
        self.body: Piece | None = Piece(b"", b"")  # None: to join and deflate again

    def add(self, labels: Labels, value: Number) -> int:
        """A new series, at the next place."""
        prefix = _prefix(self.family, labels, self.index)
        place = len(self.lines)
        self.index[labels] = place
        self.labels.append(labels)
        self.values.append(value)
        self.prefixes.append(prefix)
        self.lines.append(prefix + amount_text(value) + b"\n")
        self.unordered.append(place)
        self.body = None
        return place

    def set_at(self, place: int, value: Number) -> None:
        if self.values[place] != value:
            self.values[place] = value
            self.lines[place] = self.prefixes[place] + amount_text(value) + b"\n"
            self.body = None

    def set(self, labels: Labels, value: Number) -> None:
        place = self.index.get(labels)
        if place is None:
            self.add(labels, value)
        else:
            self.set_at(place, value)

    def replace(self, values: Mapping[Labels, Number]) -> None:
        """A gauge family's values, whole: series not among them are gone."""
        if any(labels not in values for labels in self.index):
            kept = [place for place, labels in enumerate(self.labels) if labels in values]
            self.labels = [self.labels[place] for place in kept]
            self.values = [self.values[place] for place in kept]
            self.prefixes = [self.prefixes[place] for place in kept]
            self.lines = [self.lines[place] for place in kept]
            self.index = {labels: place for place, labels in enumerate(self.labels)}
            self.order, self.unordered = [], list(range(len(self.lines)))
            self.body = None
        for labels, value in values.items():
            self.set(labels, value)

    def pieces(self) -> Piece:
        if self.unordered:
            # A few new series each go to their place; many (the first render) are sorted at once.
            if len(self.unordered) * 16 > len(self.order):
                self.order = sorted(range(len(self.labels)), key=self.labels.__getitem__)
            else:
                for place in self.unordered:
                    insort(self.order, place, key=self.labels.__getitem__)
            self.unordered = []
        if self.body is None:
            raw = b"".join(map(self.lines.__getitem__, self.order))
            self.body = Piece(raw, deflate_fast(raw))
        return self.body


class _Counts:
    """A counter family of whole numbers: its series in order, and the template of their lines.

    The template is rebuilt only when a series is added; each render that moved the family
    formats every total into it in one `%` (a few hundredths of a microsecond a series, in C),
    rather than a line for each series that moved (about a microsecond each, in Python).
    """

    def __init__(self, family: Family):
        self.family = family
        text, bare = _headers(family)
        self.header = Piece.of(text)
        self.bare = Piece.of(bare) if bare != text else None
        self.index: set[Labels] = set()
        self.members: list[Series] = []  # in the order of their labels
        self.lines: list[bytes] = []  # each member's `name{labels} %d\n`, its other % escaped
        self.unordered: list[tuple[Series, bytes]] = []
        self.template: bytes | None = None
        self.body: Piece | None = Piece(b"", b"")

    def add(self, series: Series) -> int:
        labels = series.group[1:]
        self.unordered.append((series, _prefix(self.family, labels, self.index).replace(b"%", b"%%") + b"%d\n"))
        self.index.add(labels)
        self.template = self.body = None
        return -1  # no place of its own: the family is formatted whole

    def set_at(self, place: int, value: Number) -> None:
        self.body = None

    def pieces(self) -> Piece:
        if self.unordered:
            if len(self.unordered) * 16 > len(self.members):
                pairs = sorted([*zip(self.members, self.lines, strict=True), *self.unordered], key=_first_group)
                self.members, self.lines = [series for series, _ in pairs], [line for _, line in pairs]
            else:
                for series, line in self.unordered:
                    place = bisect(self.members, series.group, key=_GROUP)
                    self.members.insert(place, series)
                    self.lines.insert(place, line)
            self.unordered = []
        if self.template is None:
            self.template = b"".join(self.lines)
        if self.body is None:
            # Ints, each one: a ledger of counts (`Ledger.whole`) reads and loads nothing else.
            raw = self.template % tuple(map(_TOTAL, self.members))
            self.body = Piece(raw, deflate_fast(raw))
        return self.body


def _first_group(pair: tuple[Series, bytes]) -> Group:
    return pair[0].group


_GROUP = attrgetter("group")
_TOTAL = attrgetter("total")


class SpendRenderer:
    """Not thread-safe: the poller holds its lock."""

    def __init__(self) -> None:
        self._generation = 0
        self._ledgers: list[Ledger] = []  # those the counters were last taken from
        self._families: dict[str, _Rendered | _Counts] = {}
        # Each counter's family and place in it (-1 in a family of counts): found once, then a move
        # costs no lookup of labels.
        self._places: dict[Series, tuple[_Rendered | _Counts, int]] = {}
        self._fed: dict[int, set[_Counts]] = {}  # by id(ledger), the families of counts it feeds
        self._secrets = -1  # redaction.generation() the prefixes were scrubbed at

    def render(
        self,
        ledgers: Iterable[Ledger],
        month: Mapping[Labels, Number],
        vector_bytes: Mapping[Labels, Number],
        month_moved: Collection[Labels] | None = None,
        currencies: Mapping[str, Number] | None = None,
    ) -> Part:
        """The spend's part of a scrape; `month_moved`: the month's series that changed since the
        last render (None: any may have, or be gone); `currencies`: the month's sums by currency,
        if kept (else summed here)."""
        ledgers = list(ledgers)
        if [id(ledger) for ledger in ledgers] != [id(ledger) for ledger in self._ledgers] or (
            redaction.generation() != self._secrets
        ):
            self._families = {
                family.name: _Counts(family) if family.kind == "counter" and family is not COST else _Rendered(family)
                for family in (*FAMILIES, MONTH, ORGANIZATION_MONTH)
            }
            self._ledgers, self._places, self._fed = ledgers, {}, {}
            self._secrets = redaction.generation()
            for ledger in ledgers:
                ledger.take_moved()
                self._count(ledger, ledger.series.values())
        else:
            for ledger in ledgers:
                grew = ledger.grew
                self._count(ledger, ledger.take_moved())
                if grew:  # a ledger of counts tells that some grew, not which: its families are formatted whole
                    for family in self._fed.get(id(ledger), ()):
                        family.body = None
        self._gauge(VECTOR_BYTES).replace(vector_bytes)
        shown = self._gauge(MONTH)
        if month_moved is None or not shown.index:
            shown.replace(month)
        else:  # only what changed: most of the month's series are its final days' sums
            for labels in month_moved:
                shown.set(labels, month[labels])
        if currencies is None:
            summed: dict[str, Number] = {}
            for (_project, _line_item, currency), amount in month.items():
                summed[currency] = summed.get(currency, 0) + amount
            currencies = summed
        self._gauge(ORGANIZATION_MONTH).replace({(currency,): amount for currency, amount in currencies.items()})
        raw: list[Buffer] = []
        deflated: list[Buffer] = []
        openmetrics: dict[int, Piece] = {}
        for rendered in self._families.values():
            if not rendered.index:
                continue
            if rendered.bare is not None:
                openmetrics[len(raw)] = rendered.bare
            body = rendered.pieces()
            raw += [rendered.header.raw, body.raw]
            deflated += [rendered.header.deflated, body.deflated]
        self._generation += 1
        return Part(raw, deflated, (), self._generation, openmetrics)

    def _gauge(self, family: Family) -> _Rendered:
        rendered = self._families[family.name]
        assert isinstance(rendered, _Rendered)
        return rendered

    def _count(self, ledger: Ledger, moved: Iterable[Series]) -> None:
        """The counters that moved (or all of them): each one's line again, or its family's."""
        places = self._places
        for series in moved:
            entry = places.get(series)
            if entry is None:
                family = self._families[series.group[0]]
                if isinstance(family, _Counts):
                    entry = places[series] = (family, family.add(series))
                    self._fed.setdefault(id(ledger), set()).add(family)
                else:
                    entry = places[series] = (family, family.add(series.group[1:], series.total))
            entry[0].set_at(entry[1], series.total)
