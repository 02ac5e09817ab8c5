"""The spend's share of a scrape: counters from the ledgers' totals, and the month-to-date gauges.

Rendered once per poll that moved something, and then only what moved: each series' line is
kept, its `name{labels} ` prefix formatted once, so a poll formats the values that changed,
and a family none of whose values changed keeps its bytes, plain and deflated. Counter
families carry two headers: the text format's TYPE names the family `x_total`, OpenMetrics'
names it `x` (exporter.exposition.Part).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from exporter import redaction
from exporter.collectors.base import sample
from exporter.exposition import SOURCE, Buffer, Part, Piece, deflate
from exporter.redaction import scrub_bytes
from exporter.spend.feeds import COST, FAMILIES, VECTOR_BYTES, Family
from exporter.spend.ledger import Group, Ledger

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
# Most of the spend's series move at every poll, so each family is compressed again at each:
# zlib's fastest level, about a fifth more bytes than the default for a third of its CPU.
DEFLATE_LEVEL = 1


def amount_text(amount: Decimal) -> str:
    """A Decimal written out in full: never an exponent, never a float's rounding."""
    text = str(amount)  # the same as format(amount, "f") unless it has an exponent, and faster
    if "E" in text:
        text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _headers(family: Family) -> tuple[bytes, bytes]:
    help_line = f"{family.help}, {SOURCE}."
    text = f"# HELP {family.name} {help_line}\n# TYPE {family.name} {family.kind}\n".encode()
    if family.kind != "counter":
        return text, text
    bare = family.name.removesuffix("_total")
    return text, f"# HELP {bare} {help_line}\n# TYPE {bare} counter\n".encode()


class _Rendered:
    """One family as last rendered: each series' value and line, and the body they make.

    A series has a place in `values` and `lines`, kept in the series' sorted order, so the
    body is one join; its `name{labels} ` prefix is the line up to its last space (a value has
    none). Two lists and an index: at hundreds of thousands of series, an object per series
    would cost more than the lines.
    """

    def __init__(self, family: Family):
        self.family = family
        text, bare = _headers(family)
        self.header = Piece.of(text)
        self.bare = Piece.of(bare) if bare != text else None
        self.index: dict[Labels, int] = {}
        self.values: list[Decimal] = []
        self.lines: list[bytes] = []
        self.sorted = True  # whether the places follow the series' order
        self.body: Piece | None = Piece(b"", b"")  # None: to join and deflate again

    def set(self, labels: Labels, value: Decimal) -> None:
        place = self.index.get(labels)
        if place is None:
            line = sample(self.family.name, dict(zip(self.family.labels, labels, strict=True)), "")
            # Label values are upstream's text: one that quotes the admin key must not publish it.
            prefix = scrub_bytes(line[:-1].encode())
            self.index[labels] = len(self.lines)
            self.values.append(value)
            self.lines.append(prefix + amount_text(value).encode() + b"\n")
            self.sorted, self.body = False, None
            return
        values = self.values
        if values[place] == value:
            return
        values[place] = value
        lines = self.lines
        old = lines[place]
        lines[place] = old[: old.rindex(b" ") + 1] + amount_text(value).encode() + b"\n"
        self.body = None

    def replace(self, values: Mapping[Labels, Decimal]) -> None:
        """A gauge family's values, whole: series not among them are gone."""
        if any(labels not in values for labels in self.index):
            kept = [(labels, place) for labels, place in self.index.items() if labels in values]
            self.values = [self.values[place] for _, place in kept]
            self.lines = [self.lines[place] for _, place in kept]
            self.index = {labels: place for place, (labels, _) in enumerate(kept)}
            self.sorted, self.body = False, None
        for labels, value in values.items():
            self.set(labels, value)

    def pieces(self) -> Piece:
        if self.body is None or not self.sorted:
            if not self.sorted:  # new series: every line to its sorted place
                order = sorted(self.index)
                places = [self.index[labels] for labels in order]
                self.values = [self.values[place] for place in places]
                self.lines = [self.lines[place] for place in places]
                self.index = {labels: place for place, labels in enumerate(order)}
                self.sorted = True
            raw = b"".join(self.lines)
            self.body = Piece(raw, deflate(raw, DEFLATE_LEVEL))
        return self.body


class SpendRenderer:
    """Not thread-safe: the poller holds its lock."""

    def __init__(self) -> None:
        self._generation = 0
        self._families: dict[str, _Rendered] = {}
        self._ledgers: list[Ledger] = []  # those the counters were last taken from
        # A series' counter: (ledger, measure), the first source of its value; `_more` holds any others.
        self._sources: dict[Group, tuple[Ledger, str]] = {}
        self._more: dict[Group, list[tuple[Ledger, str]]] = {}
        self._secrets = -1  # redaction.generation() the prefixes were scrubbed at

    def render(
        self,
        ledgers: Iterable[Ledger],
        month: Mapping[Labels, Decimal],
        vector_bytes: Mapping[Labels, Decimal],
    ) -> Part:
        ledgers = list(ledgers)
        if [id(ledger) for ledger in ledgers] != [id(ledger) for ledger in self._ledgers] or (
            redaction.generation() != self._secrets
        ):
            self._families = {family.name: _Rendered(family) for family in (*FAMILIES, MONTH, ORGANIZATION_MONTH)}
            self._ledgers, self._sources, self._more = ledgers, {}, {}
            self._secrets = redaction.generation()
            for ledger in ledgers:
                ledger.take_moved()
                self._count(ledger, ledger.totals)
        else:
            for ledger in ledgers:
                self._count(ledger, ledger.take_moved())
        self._families[VECTOR_BYTES.name].replace(vector_bytes)
        self._families[MONTH.name].replace(month)
        organization: dict[Labels, Decimal] = {}
        for (_project, _line_item, currency), amount in month.items():
            organization[(currency,)] = organization.get((currency,), Decimal(0)) + amount
        self._families[ORGANIZATION_MONTH.name].replace(organization)
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

    def _count(self, ledger: Ledger, moved: Iterable[tuple[Group, str]]) -> None:
        """The counters a ledger moved (or all of them): each series' value again, from its sources."""
        families, sources, more, totals = self._families, self._sources, self._more, ledger.totals
        for counter in moved:
            group, measure = counter
            first = sources.get(group)
            if first is None:
                first = sources[group] = (ledger, measure)
            if first[0] is ledger and first[1] == measure and group not in more:
                families[group[0]].set(group[1:], totals[counter])  # a series of one counter, the usual
                continue
            several = more.setdefault(group, [first])
            if (ledger, measure) not in several:
                several.append((ledger, measure))
            value = Decimal(0)
            for source, part in several:
                value += source.totals.get((group, part), Decimal(0))
            families[group[0]].set(group[1:], value)
