"""The spend's share of a scrape: counters from the ledgers' totals, and the month-to-date gauges.

Rendered once per poll that changed something. Counter families carry two headers: the text
format's TYPE names the family `x_total`, OpenMetrics' names it `x` (exporter.exposition.Part).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from exporter.collectors.base import sample
from exporter.exposition import SOURCE, Buffer, Part, Piece
from exporter.spend.feeds import COST, FAMILIES, VECTOR_BYTES, Family
from exporter.spend.ledger import Ledger

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


def amount_text(amount: Decimal) -> str:
    """A Decimal written out in full: never an exponent, never a float's rounding."""
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


class SpendRenderer:
    def __init__(self) -> None:
        self._generation = 0

    def render(
        self,
        ledgers: Iterable[Ledger],
        month: Mapping[tuple[str, ...], Decimal],
        vector_bytes: Mapping[tuple[str, ...], Decimal],
    ) -> Part:
        totals: dict[str, dict[tuple[str, ...], Decimal]] = {family.name: {} for family in FAMILIES}
        for ledger in ledgers:
            for (group, _measure), total in ledger.totals.items():
                series = totals[group[0]]
                series[group[1:]] = series.get(group[1:], Decimal(0)) + total
        totals[VECTOR_BYTES.name] = dict(vector_bytes)
        totals[MONTH.name] = dict(month)
        organization: dict[tuple[str, ...], Decimal] = {}
        for (_project, _line_item, currency), amount in month.items():
            organization[(currency,)] = organization.get((currency,), Decimal(0)) + amount
        totals[ORGANIZATION_MONTH.name] = organization
        raw: list[Buffer] = []
        deflated: list[Buffer] = []
        openmetrics: dict[int, Piece] = {}
        for family in (*FAMILIES, MONTH, ORGANIZATION_MONTH):
            series = totals[family.name]
            if not series:
                continue
            text, bare = _headers(family)
            header = Piece.of(text)
            if bare != text:
                openmetrics[len(raw)] = Piece.of(bare)
            body = Piece.of(
                "".join(
                    sample(family.name, dict(zip(family.labels, labels, strict=True)), amount_text(amount))
                    for labels, amount in sorted(series.items())
                ).encode()
            )
            raw += [header.raw, body.raw]
            deflated += [header.deflated, body.deflated]
        self._generation += 1
        return Part(raw, deflated, (), self._generation, openmetrics)
