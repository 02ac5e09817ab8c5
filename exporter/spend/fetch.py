"""A bucket feed's window, page by page: `page` = the previous `next_page`, until `has_more` is false.

All or nothing, as a list walk is: a page that fails fails the whole window, so that a
poll never counts a part of a window (its other buckets would be counted at the next poll
against marks that never saw them, which is right, but a month-to-date gauge of half a
month would be published as the month's).

Each page asks for as many buckets as fit in half the response-size bound, judged by the
largest bucket seen so far (`Sizing`): a month of an organization's costs can be many times
the bound, a page of it must not be.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from exporter.collectors.base import Invalid, page_of
from exporter.spend.feeds import Amount, Feed
from exporter.upstream import ApiClient, PollError

# The hash of a bucket's results, and of each one: Python's hash of the serialised JSON. A
# collision between two readings of one bucket is as likely as one of 64-bit random numbers.
Digest = tuple[int, "array[int]"]  # 8 bytes a result, not an int object each


class Bucket(NamedTuple):
    start: int
    end: int
    digest: Digest  # to tell at the next poll the bucket, or its results, that came back unchanged
    amounts: tuple[Amount, ...] | None  # of the results new since the last poll; None: the bucket as it was
    results: Sequence[Any]  # parsed, for a reader that needs every result's amounts (amounts_of)
    gone: int  # results of the last poll's bucket that are not among these (changed or vanished)
    whole: bool  # whether `amounts` are every result's: the bucket was not known


class Sizing:
    """The `limit` of a feed's next page: as many buckets as fit in half the response-size bound.

    Half, because a bucket may be larger than the ones seen so far (the month's newest buckets
    hold its newest projects). Before any bucket is seen, `first` buckets: as many as the
    look-back window holds, a page that every poll reads anyway.
    """

    def __init__(self, room: int, first: int):
        self.room = room // 2
        self.first = first
        self.largest = 0  # bytes of the largest bucket seen, by page: the page's bytes / its buckets

    def limit(self, feed: Feed) -> int:
        if self.largest == 0:
            return max(1, min(feed.limit, self.first))
        return max(1, min(feed.limit, self.room // self.largest))

    def saw(self, size: int, buckets: int) -> None:
        if buckets:
            self.largest = max(self.largest, -(-size // buckets))


def fetch_window(
    client: ApiClient,
    feed: Feed,
    start: int,
    deadline: float,
    max_pages: int,
    known: Mapping[int, Digest] | None = None,
    sizing: Sizing | None = None,
) -> tuple[list[Bucket], int]:
    """The feed's daily buckets from `start` to now, and the requests it took.

    Most results of a window come back as they were: a bucket whose hash is the one `known`
    holds for it has no amounts, and in a bucket that changed, a result whose hash is among
    those of its last reading is not read again. Serialising parsed results and hashing them
    runs in C, at a fraction of the cost of reading their amounts.
    """
    buckets: list[Bucket] = []
    page: str | None = None
    seen: set[str | None] = set()
    requests = 0
    while True:
        if page in seen:
            raise PollError("pagination", f"{feed.path}: `next_page` {page!r} came back: a loop")
        if len(seen) >= max_pages:
            raise PollError("pagination", f"{feed.path}: more than {max_pages} pages (--poll.max-pages)")
        seen.add(page)
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("start_time", start),
            ("bucket_width", "1d"),
            ("limit", sizing.limit(feed) if sizing is not None else feed.limit),
        ]
        # As the official SDK writes an array: group_by[]=project_id&group_by[]=model.
        params += [("group_by[]", field) for field in feed.group_by]
        if page is not None:
            params.append(("page", page))
        requests += 1
        answer = client.get(client.base_url + feed.path, params, deadline, where={"path": feed.path, "page": page})
        had = len(buckets)
        try:
            more, page = _page(answer.content, feed, buckets, known or {})
        except Invalid as exc:
            raise PollError("invalid_response", f"{feed.path}: {exc}", answer.headers.get("x-request-id")) from None
        if sizing is not None:
            sizing.saw(len(answer.content), len(buckets) - had)
        if not more:
            return buckets, requests
        if page is None:
            raise PollError("pagination", f"{feed.path}: `has_more` is true but there is no `next_page`")


def amounts_of(results: Iterable[Any], feed: Feed) -> tuple[Amount, ...]:
    """Every amount of a bucket's results (already read once by fetch_window, so valid)."""
    amounts: list[Amount] = []
    read = feed.amounts
    for result in results:
        if not isinstance(result, dict):
            raise Invalid("a result is not a JSON object")
        amounts.extend(read(result))
    return tuple(amounts)


def _page(body: bytes, feed: Feed, into: list[Bucket], known: Mapping[int, Digest]) -> tuple[bool, str | None]:
    data, more, page = page_of(body, "next_page")
    for bucket in data:
        into.append(_bucket(bucket, feed, known))
    return more, page


def _bucket(item: Any, feed: Feed, known: Mapping[int, Digest]) -> Bucket:
    if not isinstance(item, dict):
        raise Invalid("a bucket is not a JSON object")
    start, end, results = item.get("start_time"), item.get("end_time"), item.get("results")
    if not isinstance(start, int) or not isinstance(end, int) or not _whole(start) or end <= start:
        raise Invalid("a bucket's `start_time` and `end_time` are not a time range")
    if not isinstance(results, list):
        raise Invalid(f"bucket {start}: `results` is not a list")
    whole = hash(orjson.dumps(results))  # one call for the bucket: most come back unchanged
    last = known.get(start)
    if last is not None and last[0] == whole:
        return Bucket(start, end, last, None, results, 0, False)
    hashes = array("q", map(hash, map(orjson.dumps, results)))
    before = last[1] if last is not None else None
    if before is None:
        new, gone = results, 0
    else:
        old, now = set(before), set(hashes)
        new = [result for result, fresh in zip(results, map(old.__contains__, hashes), strict=True) if not fresh]
        gone = sum(1 for h in before if h not in now)
    try:
        amounts = amounts_of(new, feed)
    except Invalid as exc:
        raise Invalid(f"bucket {start}: {exc}") from None
    return Bucket(start, end, (whole, hashes), amounts, results, gone, before is None)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
