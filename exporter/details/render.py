"""The details' share of a scrape: every collector's families, rendered per project, cached per run.

Each project's block for a collector is rendered once, when its records change
(exporter/details/engine.py). Publishing joins those blocks family by family in runs of
CHUNK_PROJECTS projects: a run whose blocks are the very same objects as at the last
publication costs a dictionary lookup; a run with a changed project is joined and
deflated again. The result is a list of buffers, as the projects' exposition is, so a
scrape writes them out as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from prometheus_client.core import Metric

from exporter import redaction
from exporter.collectors.base import Collector, Details
from exporter.exposition import Buffer, Part, Piece

CHUNK_PROJECTS = 250


class Entry(NamedTuple):
    """One project's last good details for one collector."""

    details: Details
    blocks: tuple[bytes, ...]  # one per family of the collector
    fetched_at: float  # wall-clock time of the refresh that last confirmed them


DetailsPart = Part
EMPTY_PART = Part()


class DetailsRenderer:
    def __init__(self, per_item: bool):
        self.per_item = per_item
        self._runs: dict[tuple[bytes, ...], Piece] = {}
        self._headers: dict[bytes, Piece] = {}
        self._secrets = redaction.generation()
        self._generation = 0

    def compose(
        self,
        collectors: Sequence[Collector],
        order: Sequence[str],
        entries: Mapping[str, Mapping[str, Entry]],
        organization: Mapping[str, Details],
    ) -> DetailsPart:
        """The part of every enabled collector, projects in `order` (the project list's)."""
        if self._secrets != redaction.generation():  # a new key: scrub everything again
            self._runs, self._headers, self._secrets = {}, {}, redaction.generation()
        runs: dict[tuple[bytes, ...], Piece] = {}
        raw: list[Buffer] = []
        deflated: list[Buffer] = []
        live: list[Callable[[float], Iterable[Metric]]] = []

        def add(piece: Piece) -> None:
            if piece.raw:
                raw.append(piece.raw)
                deflated.append(piece.deflated)

        for collector in collectors:
            mine = entries.get(collector.name, {})
            present = [mine[p] for p in order if p in mine]
            for index, family in enumerate(collector.families):
                if family.per_item and not self.per_item:
                    continue
                add(self._header(family.header))
                blocks = [entry.blocks[index] for entry in present]
                for start in range(0, len(blocks), CHUNK_PROJECTS):
                    key = tuple(blocks[start : start + CHUNK_PROJECTS])
                    piece = runs.get(key) or self._runs.get(key) or Piece.of(b"".join(key))
                    runs[key] = piece
                    add(piece)
            if collector.render_organization is not None and collector.name in organization:
                add(Piece.of(collector.render_organization(organization[collector.name])))
            if collector.aggregate is not None:
                aggregate = collector.aggregate((entry.details for entry in present), self.per_item)
                add(Piece.of(aggregate.static))
                if aggregate.live is not None:
                    live.append(aggregate.live)
        self._runs = runs
        self._generation += 1
        return DetailsPart(raw, deflated, live, self._generation)

    def _header(self, header: bytes) -> Piece:
        piece = self._headers.get(header)
        if piece is None:
            piece = self._headers[header] = Piece.of(header)
        return piece
