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
from collections.abc import Sequence
from itertools import compress
from operator import not_
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
    rest: int  # the hash of the bytes from the last key on (of the whole body, without keys)
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
    # The last is tried first: the usual change is in the newest bucket alone.
    low, high = 0, len(last.keys) - 1
    if body.startswith(KEY, last.keys[high]) and hash(view[: last.keys[high]]) == last.before[high]:
        return high
    high -= 1
    while low < high:
        middle = (low + high + 1) // 2
        key = last.keys[middle]
        if body.startswith(KEY, key) and hash(view[:key]) == last.before[middle]:
            low = middle
        else:
            high = middle - 1
    return low


def rest(body: bytes, keys: Sequence[int]) -> int:
    """The hash of the bytes from the last key on: with those before it, the whole page's."""
    return hash(memoryview(body)[keys[-1] if keys else 0 :])


def unchanged(body: bytes, last: Page | None, same: int) -> bool:
    """Whether the page is byte for byte as `last` found it, `same` buckets at its start found so."""
    if last is None or len(body) != last.size:
        return False
    if not last.keys:
        return rest(body, ()) == last.rest
    if len(last.keys) == 1:  # same_start compares no bytes before a first key
        first = last.keys[0]
        if not body.startswith(KEY, first) or hash(memoryview(body)[:first]) != last.before[0]:
            return False
    return same == len(last.keys) - 1 and rest(body, last.keys) == last.rest


def changed_results(body: bytes, brace: int, key: int, last: Results) -> Changed | None:
    """The newest bucket (at `brace`, its key at `key`) with only its new results parsed; None: parse it whole."""
    if body.find(KEY, key + len(KEY)) >= 0:
        return None  # more than one bucket to read
    cut = _cut(body, key, last.marker)
    if cut is None:
        return None
    start, pieces = cut
    hashes = array("q", map(hash, pieces))
    kept = list(compress(pieces[:-1], map(not_, map(last.hashes.__contains__, hashes[:-1]))))
    kept.append(pieces[-1])  # parsed whatever it holds: it ends the text
    try:
        data, more, page = page_of(OPEN + body[brace:start] + last.marker + last.marker.join(kept), "next_page")
    except Invalid:
        return None
    if len(data) != 1 or not isinstance(data[0], dict) or not isinstance(data[0].get("results"), list):
        return None
    if len(data[0]["results"]) != len(kept):
        return None  # a piece that was not one result
    now = frozenset(hashes)
    fresh = [True] * (len(kept) - 1) + [hashes[-1] not in last.hashes]
    gone = len(last.hashes - now)
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
    # Up to the key at `same` the bytes are those same_start found equal: their hashes are known.
    known = (
        last.before[: same + 1] if last is not None and same and keys[: same + 1] == list(last.keys[: same + 1]) else ()
    )
    before = [*known, *(hash(view[:key]) for key in keys[len(known) :])]
    if not keys:
        results = None
    elif results is None:
        results = _results(body, keys[-1], buckets[-1])
    found_buckets = tuple(bucket._replace(rows=None, results=(), gone=0, whole=False, tail=None) for bucket in buckets)
    return Page(len(body), rest(body, keys), tuple(keys), tuple(before), found_buckets, results, more, page)


def _results(body: bytes, key: int, bucket: Bucket) -> Results | None:
    """The last bucket's results as `changed_results` will look for them, if each is found by its beginning."""
    if not bucket.results:
        return None
    opening = _RESULTS.search(body, key)
    marker = _MARKER.match(body, opening.end()) if opening is not None else None
    if marker is None:
        return None
    cut = _cut(body, key, marker[0])
    if cut is None or len(cut[1]) != len(bucket.results):
        return None  # the beginning is also found within a result
    return Results(marker[0], frozenset(map(hash, cut[1])))


def _cut(body: bytes, key: int, marker: bytes) -> tuple[int, list[bytes]] | None:
    """The bucket whose key is at `key` cut at each result's beginning: where the first begins
    (just after `"results": [`), and each one's bytes after its beginning, the last one's to the
    page's end. Cut in C: the beginning is the same bytes for every result."""
    opening = _RESULTS.search(body, key)
    if opening is None or not body.startswith(marker, opening.end()):
        return None
    start = opening.end()
    return start, body[start + len(marker) :].split(marker)
