"""A bucket feed's window, page by page: `page` = the previous `next_page`, until `has_more` is false.

All or nothing, as a list walk is: a page that fails fails the whole window, so that a
poll never counts a part of a window (its other buckets would be counted at the next poll
against marks that never saw them, which is right, but a month-to-date gauge of half a
month would be published as the month's).

Each page asks for as many buckets as fit in half the response-size bound, judged by the
largest bucket seen so far (`Sizing`): a month of an organization's costs can be many times
the bound, a page of it must not be.

Most of a window comes back as it was: a page read again parses only what changed since
its last counted reading (exporter/spend/pages.py). Parsing is most of what a read costs
beyond the bytes themselves.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from exporter.collectors.base import Invalid, page_of
from exporter.spend.feeds import Feed
from exporter.spend.ledger import Cells, Key
from exporter.spend.pages import OPEN, Changed, Page, changed_results, remember, same_start, unchanged
from exporter.upstream import ApiClient, PollError

# The hash of each of a bucket's results (Python's hash of its serialised JSON), and of
# them all. A collision between two readings of one bucket is as likely as one of 64-bit
# random numbers.
Digest = tuple[int, "array[int]"]  # 8 bytes a result, not an int object each


class Bucket(NamedTuple):
    start: int
    end: int
    digest: Digest  # to tell at the next poll the bucket, or its results, that came back unchanged
    rows: tuple[tuple[Key, Cells], ...] | None  # the results new since the last poll; None: the bucket as it was
    results: Sequence[Any]  # parsed, for a reader that needs every result's row (rows_of)
    gone: int  # results of the last poll's bucket that are not among these (changed or vanished)
    whole: bool  # whether `rows` are every result's: the bucket was not known
    tail: bytes | None = None  # when only the changed results were parsed: the bucket's bytes on

    def every(self) -> Sequence[Any]:
        """Every result of the bucket: `results`, or its bytes parsed whole when they hold only the changed ones."""
        if self.tail is None:
            return self.results
        data, _, _ = page_of(OPEN + self.tail, "next_page")
        return _checked(data[0])[2]


class Window(NamedTuple):
    buckets: list[Bucket]
    requests: int
    pages: dict[int, Page]  # each page's reading by its place in the walk, for the next poll's


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
    read: Mapping[int, Page] | None = None,
) -> Window:
    """The feed's daily buckets from `start` to now, the requests it took, and what each page held.

    Most results of a window come back as they were: a bucket whose hash is the one `known`
    holds for it has no rows, and in a bucket that changed, a result whose hash is among
    those of its last reading is not read again. Serialising parsed results and hashing them
    runs in C, at a fraction of the cost of reading their rows. `read` holds the pages of
    the last poll's walk.
    """
    buckets: list[Bucket] = []
    pages: dict[int, Page] = {}
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
        place = len(pages)
        try:
            pages[place] = _page(answer.content, feed, buckets, known or {}, (read or {}).get(place))
            more, page = pages[place].more, pages[place].page
        except Invalid as exc:
            raise PollError("invalid_response", f"{feed.path}: {exc}", answer.headers.get("x-request-id")) from None
        if sizing is not None:
            sizing.saw(len(answer.content), len(buckets) - had)
        if not more:
            return Window(buckets, requests, pages)
        if page is None:
            raise PollError("pagination", f"{feed.path}: `has_more` is true but there is no `next_page`")


def rows_of(results: Sequence[Any], feed: Feed) -> tuple[tuple[Key, Cells], ...]:
    """Each result of a bucket as a row: its key and its cells."""
    read = feed.read
    if not all(type(result) is dict for result in results):
        raise Invalid("a result is not a JSON object")
    return tuple(map(read, results))


def _page(body: bytes, feed: Feed, into: list[Bucket], known: Mapping[int, Digest], last: Page | None) -> Page:
    """A page's buckets into `into`; parsed from the first one whose bytes are not as `last` found them."""
    same = same_start(body, last)
    if unchanged(body, last, same):
        assert last is not None
        into.extend(last.buckets)  # the page as it was: nothing to parse
        return last
    data: list[Any] | None = None
    changed: Changed | None = None
    if same:
        assert last is not None
        key = last.keys[same]
        brace = body.rfind(b"{", 0, key)
        if same == len(last.keys) - 1 and last.results is not None:
            changed = changed_results(body, brace, key, last.results)
        if changed is not None:
            data, more, page = [changed.item], changed.more, changed.page
        else:
            try:  # the rest, as the page's tail: `{"data": [` and the buckets from there on
                data, more, page = page_of(OPEN + body[brace:], "next_page")
            except Invalid:
                data = None
    if data is None:
        same = 0
        data, more, page = page_of(body, "next_page")
    reused = last.buckets[:same] if last is not None else ()
    if changed is not None:
        read = [_changed(changed, feed, body[brace:])]
    else:
        read = [_bucket(item, feed, known) for item in data]
    buckets = [*reused, *read]
    into.extend(buckets)
    return remember(body, buckets, last, same, more, page, changed.results if changed is not None else None)


def _changed(changed: Changed, feed: Feed, tail: bytes) -> Bucket:
    """The newest bucket of which only the results whose bytes are new were parsed."""
    start, end, results = _checked(changed.item)
    new = [result for result, fresh in zip(results, changed.fresh, strict=True) if fresh]
    try:
        rows = rows_of(new, feed)
    except Invalid as exc:
        raise Invalid(f"bucket {start}: {exc}") from None
    digest = (hash(changed.hashes.tobytes()), changed.hashes)
    return Bucket(start, end, digest, rows, results, changed.gone, False, tail)


def _checked(item: Any) -> tuple[int, int, list[Any]]:
    """A parsed bucket's start, end and results, each of the type the contract gives it."""
    if not isinstance(item, dict):
        raise Invalid("a bucket is not a JSON object")
    start, end, results = item.get("start_time"), item.get("end_time"), item.get("results")
    if not isinstance(start, int) or not isinstance(end, int) or not _whole(start) or end <= start:
        raise Invalid("a bucket's `start_time` and `end_time` are not a time range")
    if not isinstance(results, list):
        raise Invalid(f"bucket {start}: `results` is not a list")
    return start, end, results


def _bucket(item: Any, feed: Feed, known: Mapping[int, Digest]) -> Bucket:
    """A parsed bucket, checked, and the rows of its results new since the `known` reading."""
    start, end, results = _checked(item)
    # Each result's hash, and the bucket's from them: the buckets that came back as they were
    # are mostly found by their page's bytes (_page), so most buckets parsed have changed.
    hashes = array("q", map(hash, map(orjson.dumps, results)))
    whole = hash(hashes.tobytes())
    last = known.get(start)
    if last is not None and last[0] == whole:
        return Bucket(start, end, last, None, results, 0, False)
    before = last[1] if last is not None else None
    if before is None:
        new, gone = results, 0
    else:
        old, now = set(before), set(hashes)
        new = [result for result, fresh in zip(results, map(old.__contains__, hashes), strict=True) if not fresh]
        gone = sum(1 for h in before if h not in now)
    try:
        rows = rows_of(new, feed)
    except Invalid as exc:
        raise Invalid(f"bucket {start}: {exc}") from None
    return Bucket(start, end, (whole, hashes), rows, results, gone, before is None)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
