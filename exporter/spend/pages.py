"""What a page of buckets held when last read, so that a poll parses only what changed.

Most of a window comes back as it was, and the buckets are in time order, so a page's
changes are at its end: in its newest bucket, and there in some of its results. A page
keeps, from its last counted reading:

- where each bucket's `"start_time"` key was, and the hash of the bytes before it. Bytes
  equal up to a key mean the buckets before it are those found there, as they were
  (`same_start`); the bucket with that key begins at the last brace before it;
- for its last bucket, what each result begins with (its `"object"` key and value) and the
  hash of each result's bytes. Of a newest bucket read again, only the results whose bytes
  are new are parsed (`changed_results`).

Both are shortcuts that a whole parse would agree with, or that fail to parse: a key or a
result's beginning is found by its bytes, which JSON lets appear only where a key is (a
quote within a string is escaped), and a wrong cut leaves a text that is not JSON. A page
where a key is found anywhere but in a bucket, or a result's beginning anywhere but at a
result, keeps no shortcut and is parsed whole.
"""

from __future__ import annotations

import re
from array import array
from typing import TYPE_CHECKING, Any, NamedTuple

from exporter.collectors.base import Invalid, page_of

if TYPE_CHECKING:
    from exporter.spend.fetch import Bucket

KEY = b'"start_time"'
_KEY_VALUE = re.compile(rb'"start_time"\s*:\s*(\d{1,12})[\s,}]')
_RESULTS = re.compile(rb'"results"\s*:\s*\[\s*')
_MARKER = re.compile(rb'\{\s*"object"\s*:\s*"[^"\\]*"')
OPEN = b'{"data": ['  # a page's tail, from a bucket's brace on, made a page again


class Results(NamedTuple):
    """A page's last bucket's results as last read: what each begins with, and the hashes of their bytes."""

    marker: bytes
    hashes: frozenset[int]


class Page(NamedTuple):
    """What a page's reading found, for the next reading of the page at the same place in the walk."""

    size: int
    whole: int  # the hash of the whole body
    keys: tuple[int, ...]  # each bucket's `"start_time"` key; none if any is not a bucket's
    before: tuple[int, ...]  # the hash of the bytes before each key
    buckets: tuple[Bucket, ...]  # as found, without their results
    results: Results | None
    more: bool
    page: str | None


class Changed(NamedTuple):
    """A page's newest bucket read again, only its results whose bytes are new parsed (and its last)."""

    item: Any  # the bucket as parsed, its `results` those parsed
    fresh: list[bool]  # of each parsed result, whether its bytes are new
    hashes: array[int]  # of every result's bytes
    gone: int  # results of the last reading whose bytes are not among these
    results: Results
    more: bool
    page: str | None


def same_start(body: bytes, last: Page | None) -> int:
    """How many buckets begin the page as they began it at `last`: its bytes equal up to the next one's key."""
    if last is None or len(last.keys) < 2:
        return 0
    view = memoryview(body)
    # The answer is in [low, high]: bytes equal up to a key are equal up to every earlier one.
    low, high = 0, len(last.keys) - 1
    while low < high:
        middle = (low + high + 1) // 2
        key = last.keys[middle]
        if body.startswith(KEY, key) and hash(view[:key]) == last.before[middle]:
            low = middle
        else:
            high = middle - 1
    return low


def changed_results(body: bytes, brace: int, key: int, last: Results) -> Changed | None:
    """The newest bucket (at `brace`, its key at `key`) with only its new results parsed; None: parse it whole."""
    if body.find(KEY, key + len(KEY)) >= 0:
        return None  # more than one bucket to read
    cuts = _cuts(body, key, last.marker)
    if cuts is None:
        return None
    pieces = _pieces(body, cuts)
    hashes = array("q", map(hash, pieces))
    seen = list(map(last.hashes.__contains__, hashes))
    seen[-1] = False  # parsed whatever it holds: it ends the text
    kept = [piece for piece, old in zip(pieces, seen, strict=True) if not old]
    try:
        data, more, page = page_of(OPEN + body[brace : cuts[0]] + b"".join(kept), "next_page")
    except Invalid:
        return None
    if len(data) != 1 or not isinstance(data[0], dict) or not isinstance(data[0].get("results"), list):
        return None
    if len(data[0]["results"]) != len(kept):
        return None  # a piece that was not one result
    now = frozenset(hashes)
    fresh = [True] * (len(kept) - 1) + [hashes[-1] not in last.hashes]
    gone = sum(1 for old in last.hashes if old not in now)
    return Changed(data[0], fresh, hashes, gone, Results(last.marker, now), more, page)


def remember(
    body: bytes,
    buckets: list[Bucket],
    last: Page | None,
    same: int,
    more: bool,
    page: str | None,
    results: Results | None = None,
) -> Page:
    """What the next reading of this page may take as it was; `results`: its last bucket's, if known."""
    keys = list(last.keys[:same]) if last is not None else []
    at = keys[-1] + len(KEY) if keys else 0
    while (at := body.find(KEY, at)) >= 0:
        keys.append(at)
        at += len(KEY)
    found = [_KEY_VALUE.match(body, key) for key in keys[same:]]
    if len(keys) != len(buckets) or not all(
        match is not None and int(match[1]) == bucket.start for match, bucket in zip(found, buckets[same:], strict=True)
    ):
        keys = []  # a `"start_time"` within a result, or spelled otherwise
    view = memoryview(body)
    before = [*(last.before[:same] if last is not None and keys else ()), *(hash(view[:key]) for key in keys[same:])]
    if not keys:
        results = None
    elif results is None:
        results = _results(body, keys[-1], buckets[-1])
    found_buckets = tuple(bucket._replace(rows=None, results=(), gone=0, whole=False, tail=None) for bucket in buckets)
    return Page(len(body), hash(body), tuple(keys), tuple(before), found_buckets, results, more, page)


def _results(body: bytes, key: int, bucket: Bucket) -> Results | None:
    """The last bucket's results as `changed_results` will look for them, if each is found by its beginning."""
    if not bucket.results:
        return None
    opening = _RESULTS.search(body, key)
    marker = _MARKER.match(body, opening.end()) if opening is not None else None
    if marker is None:
        return None
    cuts = _cuts(body, key, marker[0])
    if cuts is None or len(cuts) != len(bucket.results):
        return None  # the beginning is also found within a result
    return Results(marker[0], frozenset(map(hash, _pieces(body, cuts))))


def _cuts(body: bytes, key: int, marker: bytes) -> list[int] | None:
    """Where each result of the bucket whose key is at `key` begins; the first just after `"results": [`."""
    opening = _RESULTS.search(body, key)
    if opening is None or not body.startswith(marker, opening.end()):
        return None
    cuts = [opening.end()]
    at = cuts[0] + len(marker)
    while (at := body.find(marker, at)) >= 0:
        cuts.append(at)
        at += len(marker)
    return cuts


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    """Each result's bytes, up to the next one's; the last one's run to the page's end."""
    return [body[at:to] for at, to in zip(cuts, [*cuts[1:], len(body)], strict=True)]
