"""Snapshots become exposition bytes once per poll; a scrape only concatenates them.

As in kube-state-metrics' metrics store, the series of the projects are rendered when
the data changes, never per scrape. The per-poll result, an Exposition, is immutable
and holds the snapshot's exposition both plain and deflated, in pieces. A scrape appends
the small, live part (the exporter's own metrics and the age histogram, which moves with
the clock) and writes the pieces out in one system call.

Sample of the snapshot block:

    # HELP openai_projects Projects by status, from the last successful background poll.
    # TYPE openai_projects gauge
    openai_projects{status="active"} 271
    openai_projects{status="archived"} 29
    # HELP openai_project_info Project metadata, from the last successful background poll; always 1.
    # TYPE openai_project_info gauge
    openai_project_info{project_id="proj_abc",name="Search",status="active",external_key_id="",residency=""} 1
    # HELP openai_project_created_timestamp_seconds ...
    openai_project_created_timestamp_seconds{project_id="proj_abc"} 1711471533
"""

from __future__ import annotations

import bisect
import copy
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from isal import isal_zlib
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from exporter import redaction
from exporter.redaction import scrub_bytes
from exporter.snapshot import ACTIVE, ARCHIVED, Project, Snapshot

# Rendered bytes, or a read-only view into a larger rendered buffer (see SnapshotRenderer).
Buffer: TypeAlias = bytes | bytearray | memoryview

AGE_BUCKETS = tuple(days * 86400.0 for days in (1, 7, 30, 90, 180, 365, 730))
FAST_LEVEL = 2  # ISA-L's levels are 0 to 3; 3 takes several times the CPU of 2
GZIP_LEVEL = 6  # zlib's default: only changed runs of projects are compressed again at each poll
SOURCE = "from the last successful background poll of the OpenAI Admin API"


def escape_label_value(value: str | None) -> str:
    if not value:
        return ""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def format_value(value: float) -> str:
    if type(value) is int:
        return str(value)
    if value == int(value):
        return str(int(value))
    return repr(float(value))


def _header(name: str, help_text: str) -> bytes:
    return f"# HELP {name} {help_text}\n# TYPE {name} gauge\n".encode()


PROJECTS_HEADER = _header("openai_projects", f"Projects by status, {SOURCE}.")
INFO_HEADER = _header("openai_project_info", f"Project metadata, {SOURCE}; always 1.")
CREATED_HEADER = _header("openai_project_created_timestamp_seconds", f"Unix time the project was created, {SOURCE}.")
ARCHIVED_HEADER = _header("openai_project_archived_timestamp_seconds", f"Unix time the project was archived, {SOURCE}.")


def info_line(project: Project) -> bytes:
    project_id, status = project.id, project.status
    name, key_id, residency = project.name or "", project.external_key_id or "", project.residency or ""
    # One scan of all label values instead of five escape calls: almost none need escaping.
    values = f"{project_id}{name}{status}{key_id}{residency}"
    if "\\" in values or '"' in values or "\n" in values:
        project_id, name, status, key_id, residency = map(
            escape_label_value, (project_id, name, status, key_id, residency)
        )
    return (
        f'openai_project_info{{project_id="{project_id}",name="{name}",status="{status}",'
        f'external_key_id="{key_id}",residency="{residency}"}} 1\n'
    ).encode()


def created_line(project: Project) -> bytes:
    return (
        f'openai_project_created_timestamp_seconds{{project_id="{escape_label_value(project.id)}"}} '
        f"{format_value(project.created_at)}\n"
    ).encode()


def archived_line(project: Project) -> bytes:
    """The archive time's line; nothing for a project that was never archived."""
    if project.archived_at is None:
        return b""
    return (
        f'openai_project_archived_timestamp_seconds{{project_id="{escape_label_value(project.id)}"}} '
        f"{format_value(project.archived_at)}\n"
    ).encode()


@dataclass(frozen=True)
class AgeIndex:
    """Creation times sorted per status, so the age histogram costs O(buckets x log N)."""

    created_sorted: dict[str, list[float]]
    created_sum: dict[str, float]

    @classmethod
    def build(cls, projects: Iterable[Project]) -> AgeIndex:
        by_status: dict[str, list[float]] = {ACTIVE: [], ARCHIVED: []}
        for project in projects:
            by_status.setdefault(project.status, []).append(project.created_at)
        for values in by_status.values():
            values.sort()
        return cls(by_status, {status: float(sum(v)) for status, v in by_status.items()})

    def histogram(self, now: float) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "openai_project_age_seconds",
            f"Age of the projects at scrape time, by status, {SOURCE}.",
            labels=["status"],
        )
        return elapsed_histogram(family, self.created_sorted, self.created_sum, now, AGE_BUCKETS)


def elapsed_histogram(
    family: HistogramMetricFamily,
    since: Mapping[str, Sequence[float]],
    sums: Mapping[str, float],
    now: float,
    bounds: Sequence[float],
) -> HistogramMetricFamily:
    """The time elapsed at `now` since each moment of `since` (sorted, per label value), in O(buckets x log N)."""
    for label, moments in since.items():
        total = len(moments)
        # elapsed <= bound  <=>  moment >= now - bound
        buckets = [(floatToGoString(bound), total - bisect.bisect_left(moments, now - bound)) for bound in bounds]
        buckets.append(("+Inf", total))
        family.add_metric([label], buckets, total * now - sums[label])
    return family


class Piece(NamedTuple):
    """Exposition bytes, and the same bytes deflated on their own (see `deflate`)."""

    raw: Buffer
    deflated: Buffer

    @classmethod
    def of(cls, raw: bytes) -> Piece:
        # Label values are upstream's text: one that quotes the admin key must not publish it.
        raw = scrub_bytes(raw)
        return cls(raw, deflate(raw))


def deflate(data: bytes) -> bytes:
    """Raw deflate of `data` alone, byte-aligned and without a final block.

    A fresh compressor never refers back before its own input, so such pieces concatenate
    into one valid deflate stream: a gzip body is a header, the cached pieces, the live tail
    (with the final block) and a trailer. Only pieces whose bytes changed are compressed again.
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def deflate_fast(data: bytes) -> bytes:
    """Like `deflate`, for bodies compressed again at nearly every poll, as most of the spend's are.

    ISA-L's deflate at its level 2: about a fifth of the CPU of zlib's fastest level, for
    about as many bytes. Its pieces concatenate with zlib's as zlib's do with each other.
    """
    compressor = isal_zlib.compressobj(FAST_LEVEL, isal_zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(isal_zlib.Z_SYNC_FLUSH)


def deflate_final(data: bytes) -> bytes:
    """Like `deflate`, but ends the stream: the last piece of a gzip body."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS


class Exposition:
    """Everything a scrape serves from one snapshot, rendered once; never mutated after publish.

    The rendered bytes sit in a few large buffers, plain and deflated: the counts, then one
    per per-project family. The kernel sends a few large buffers for less CPU than the same
    bytes in hundreds of pieces.
    """

    def __init__(
        self,
        snapshot: Snapshot | None,
        raw: Sequence[Buffer] = (),
        deflated: Sequence[Buffer] = (),
        age_index: AgeIndex | None = None,
    ):
        self.snapshot = snapshot
        self.age_index = age_index or AgeIndex.build(())
        self.raw = list(raw)
        self.deflated = list(deflated)  # the raw bytes as one deflate stream without a final block
        self.openmetrics: dict[int, Piece] = {}  # buffers that OpenMetrics scrapes get instead, by position
        self._crc, self._size = _crc(self.raw)
        self._openmetrics_crc, self._openmetrics_size = self._crc, self._size

    def extended(self, parts: Iterable[Part]) -> Exposition:
        """These bytes followed by more: the projects' exposition, the details, the spend.

        The CRC goes on from this exposition's own, so only the new bytes are read. A part's
        OpenMetrics variants (a counter's header, see `Part`) are kept by their position here.
        """
        parts = [part for part in parts if part.raw]
        if not parts:
            return self
        again = copy.copy(self)
        again.raw, again.deflated = list(self.raw), list(self.deflated)
        again.openmetrics = dict(self.openmetrics)
        for part in parts:
            offset = len(again.raw)
            again.openmetrics.update({offset + index: piece for index, piece in part.openmetrics.items()})
            again.raw += part.raw
            again.deflated += part.deflated
        swaps = bool(again.openmetrics)
        crc, size = self._crc, self._size
        openmetrics_crc, openmetrics_size = self._openmetrics_crc, self._openmetrics_size
        for part in parts:
            for index, buffer in enumerate(part.raw):
                crc = zlib.crc32(buffer, crc)
                size += len(buffer)
                if swaps:  # the same bytes but for the variants: a second pass only when there are any
                    variant = part.openmetrics.get(index)
                    chosen = variant.raw if variant else buffer
                    openmetrics_crc = zlib.crc32(chosen, openmetrics_crc)
                    openmetrics_size += len(chosen)
        again._crc, again._size = crc, size
        again._openmetrics_crc, again._openmetrics_size = (openmetrics_crc, openmetrics_size) if swaps else (crc, size)
        return again

    def _swapped(self, buffers: list[Buffer], which: int) -> list[Buffer]:
        """The buffers with the OpenMetrics variants in place: `which` 0 for raw, 1 for deflated."""
        swapped = list(buffers)
        for index, piece in self.openmetrics.items():
            swapped[index] = piece[which]
        return swapped

    def republish(self, snapshot: Snapshot) -> Exposition:
        """The same bytes for a newer snapshot of the very same projects."""
        again = copy.copy(self)
        again.snapshot = snapshot
        return again

    def body(self, tail: bytes, openmetrics: bool = False) -> list[Buffer]:
        raw = self._swapped(self.raw, 0) if openmetrics and self.openmetrics else self.raw
        return [*raw, tail]

    def gzip_body(self, tail: bytes, deflated_tail: bytes | None = None, openmetrics: bool = False) -> list[Buffer]:
        """A gzip stream: header, cached deflated bytes, the tail as the final block, CRC and size."""
        if deflated_tail is None:
            deflated_tail = deflate_final(tail)
        swap = openmetrics and bool(self.openmetrics)
        crc, size = (self._openmetrics_crc, self._openmetrics_size) if swap else (self._crc, self._size)
        deflated = self._swapped(self.deflated, 1) if swap else self.deflated
        trailer = struct.pack("<II", zlib.crc32(tail, crc), (size + len(tail)) & 0xFFFFFFFF)
        return [GZIP_HEADER, *deflated, deflated_tail, trailer]


def _crc(buffers: Iterable[Buffer]) -> tuple[int, int]:
    crc = size = 0
    for buffer in buffers:
        crc = zlib.crc32(buffer, crc)
        size += len(buffer)
    return crc, size


class Part(NamedTuple):
    """A share of a scrape beside the projects' exposition: the details, or the spend.

    A counter's family is named `x_total` in the text format's TYPE line and `x` in
    OpenMetrics', while its samples read the same in both: `openmetrics` holds, by position
    in `raw`, the buffer (plain and deflated) an OpenMetrics scrape gets instead.
    """

    raw: Sequence[Buffer] = ()
    deflated: Sequence[Buffer] = ()
    live: Sequence[Callable[[float], Iterable[Metric]]] = ()  # families that move with the clock
    # Composed in this order: a part composed before another is never published after it.
    generation: int = 0
    openmetrics: Mapping[int, Piece] = {}


CHUNK_PROJECTS = 1000
_FAMILY_HEADERS = (Piece.of(INFO_HEADER), Piece.of(CREATED_HEADER), Piece.of(ARCHIVED_HEADER))
_NO_PIECE = Piece(b"", b"")


def _render_chunk(projects: tuple[Project, ...]) -> tuple[Piece, Piece, Piece]:
    archived = b"".join(archived_line(p) for p in projects if p.archived_at is not None)
    return (
        Piece.of(b"".join(map(info_line, projects))),
        Piece.of(b"".join(map(created_line, projects))),
        Piece.of(archived) if archived else _NO_PIECE,
    )


class SnapshotRenderer:
    """Turns each new snapshot into an Exposition, re-rendering only what changed.

    As kube-state-metrics caches each object's series, this caches the series of each run
    of CHUNK_PROJECTS consecutive projects, plain and deflated, keyed by the projects
    themselves. Upstream lists projects in creation order, so between two polls most runs
    are equal and cost a dictionary lookup and a copy; a created, archived or renamed
    project costs one run's rendering and compression. A snapshot that shares its
    projects with the last one (Snapshot.build found no change) costs nothing at all.

    Each family's runs are appended to one buffer as they come, and the cache keeps
    read-only views into those buffers rather than bytes of its own: the rendered
    organization is in memory once, and during a render at most twice (last and next).
    """

    def __init__(self, per_project: bool):
        self.per_project = per_project
        # Per run of projects, one Piece per per-project family (_FAMILY_HEADERS' order).
        self._chunks: dict[tuple[Project, ...], Sequence[Piece]] = {}
        self._last: Exposition | None = None
        self._secrets = redaction.generation()

    def render(self, snapshot: Snapshot) -> Exposition:
        if self._secrets != redaction.generation():  # a new key: what was rendered is scrubbed again
            self._chunks, self._last, self._secrets = {}, None, redaction.generation()
        last = self._last
        if last is not None and last.snapshot is not None and last.snapshot.projects is snapshot.projects:
            self._last = last.republish(snapshot)
            return self._last
        statuses = dict.fromkeys((ACTIVE, ARCHIVED), 0) | dict(snapshot.counts)
        counts = "".join(f'openai_projects{{status="{escape_label_value(s)}"}} {n}\n' for s, n in statuses.items())
        head = Piece.of(PROJECTS_HEADER + counts.encode())
        raw, deflated = [head.raw], [head.deflated]
        if self.per_project:
            families = [(bytearray(header.raw), bytearray(header.deflated)) for header in _FAMILY_HEADERS]
            previous, placed = self._chunks, []
            projects = list(snapshot.projects.values())
            for start in range(0, len(projects), CHUNK_PROJECTS):
                key = tuple(projects[start : start + CHUNK_PROJECTS])
                spans = []
                for (plain, packed), piece in zip(families, previous.get(key) or _render_chunk(key), strict=True):
                    spans.append((len(plain), len(piece.raw), len(packed), len(piece.deflated)))
                    plain += piece.raw
                    packed += piece.deflated
                placed.append((key, spans))
            views = [(memoryview(plain).toreadonly(), memoryview(packed).toreadonly()) for plain, packed in families]
            self._chunks = {
                key: tuple(
                    Piece(views[f][0][r : r + r_len], views[f][1][d : d + d_len])
                    for f, (r, r_len, d, d_len) in enumerate(spans)
                )
                for key, spans in placed
            }
            raw += [plain for plain, _ in families]
            deflated += [packed for _, packed in families]
        self._last = Exposition(snapshot, raw, deflated, AgeIndex.build(snapshot.projects.values()))
        return self._last


EMPTY = Exposition(None)  # before the first poll, and /metrics of a multi-target exporter


class AgeHistogram:
    """openai_project_age_seconds, from the current exposition's AgeIndex at scrape time."""

    def __init__(self, current_exposition: Callable[[], Exposition]):
        self._current = current_exposition

    def describe(self) -> list[HistogramMetricFamily]:
        return []

    def collect(self) -> Iterator[HistogramMetricFamily]:
        exposition = self._current()
        if exposition.snapshot is not None:
            yield exposition.age_index.histogram(time.time())


TAIL_TTL = 1.0  # seconds a scrape may reuse the live tail another scrape rendered


class _Tail:
    """A rendered live tail, and its compressed form made on the first gzip scrape that needs it."""

    def __init__(self, raw: bytes, expires: float, version: Iterable[int]):
        self.raw, self.expires, self.version = raw, expires, tuple(version)
        self._deflated: bytes | None = None

    @property
    def deflated(self) -> bytes:
        if self._deflated is None:
            self._deflated = deflate_final(self.raw)
        return self._deflated


class LiveTail:
    """The live part of a scrape: one registry's metrics, rendered at most once per TAIL_TTL.

    Scrapes from several Prometheus replicas, or a storm of them, then cost a write each:
    only process counters and request counts may lag by up to a second. A tail is also
    tied to the `version` it was rendered at, the generations of the polls whose health the
    registry holds, so a poll's verdict and its change counters show at the next scrape.
    The version is read before rendering: a poll that ends during a render makes that
    tail stale at once rather than letting it pass for the new state.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        version: Callable[[], Iterable[int]],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.registry = registry
        self._version = version
        self._clock = clock
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    def scrape(self, exposition: Exposition, accept: str | None, gzip: bool) -> tuple[list[Buffer], str]:
        """The body chunks and content type of one scrape: the cached block plus this tail."""
        encoder, content_type = choose_encoder(accept or "")
        tail = self._tail(encoder, content_type)
        openmetrics = content_type.startswith("application/openmetrics-text")
        if gzip:
            return exposition.gzip_body(tail.raw, tail.deflated, openmetrics), content_type
        return exposition.body(tail.raw, openmetrics), content_type

    def _tail(self, encoder: Callable[[CollectorRegistry], bytes], content_type: str) -> _Tail:
        version = tuple(self._version())
        now = self._clock()
        with self._lock:
            cached = self._tails.get(content_type)
        if cached is not None and cached.expires > now and cached.version == version:
            return cached
        tail = _Tail(encoder(self.registry), now + TAIL_TTL, version)
        with self._lock:
            self._tails[content_type] = tail
        return tail
