"""A bucket feed's window, page by page: `page` = the previous `next_page`, until `has_more` is false.

All or nothing, as a list walk is: a page that fails fails the whole window, so that a
poll never counts a part of a window (its other buckets would be counted at the next poll
against marks that never saw them, which is right, but a month-to-date gauge of half a
month would be published as the month's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

from exporter.collectors.base import Invalid
from exporter.spend.feeds import Amount, Feed
from exporter.upstream import ApiClient, PollError


class Bucket(NamedTuple):
    start: int
    end: int
    digest: bytes  # of the bucket's results, to tell an unchanged bucket at the next poll
    amounts: tuple[Amount, ...] | None  # None: the same results as the last poll's, not read again


def fetch_window(
    client: ApiClient,
    feed: Feed,
    start: int,
    deadline: float,
    max_pages: int,
    known: Mapping[int, bytes] | None = None,
) -> tuple[list[Bucket], int]:
    """The feed's daily buckets from `start` to now, and the requests it took.

    Most buckets of a window are final and come back as they were: a bucket whose results
    digest to what `known` holds for its start is not read again. Serialising the parsed
    results and hashing them runs in C, at a fraction of the cost of reading each amount.
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
            ("limit", feed.limit),
        ]
        # As the official SDK writes an array: group_by[]=project_id&group_by[]=model.
        params += [("group_by[]", field) for field in feed.group_by]
        if page is not None:
            params.append(("page", page))
        requests += 1
        answer = client.get(client.base_url + feed.path, params, deadline, where={"path": feed.path, "page": page})
        try:
            more, page = _page(answer.content, feed, buckets, known or {})
        except Invalid as exc:
            raise PollError("invalid_response", f"{feed.path}: {exc}", answer.headers.get("x-request-id")) from None
        if not more:
            return buckets, requests
        if page is None:
            raise PollError("pagination", f"{feed.path}: `has_more` is true but there is no `next_page`")


def _page(body: bytes, feed: Feed, into: list[Bucket], known: Mapping[int, bytes]) -> tuple[bool, str | None]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Invalid("the response is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise Invalid("`data` is not a list")
    more, page = document.get("has_more"), document.get("next_page")
    if not isinstance(more, bool):
        raise Invalid("`has_more` is not a boolean")
    if page is not None and not isinstance(page, str):
        raise Invalid("`next_page` is not a string")
    for bucket in document["data"]:
        into.append(_bucket(bucket, feed, known))
    return more, page


def _bucket(item: Any, feed: Feed, known: Mapping[int, bytes]) -> Bucket:
    if not isinstance(item, dict):
        raise Invalid("a bucket is not a JSON object")
    start, end, results = item.get("start_time"), item.get("end_time"), item.get("results")
    if not isinstance(start, int) or not isinstance(end, int) or not _whole(start) or end <= start:
        raise Invalid("a bucket's `start_time` and `end_time` are not a time range")
    if not isinstance(results, list):
        raise Invalid(f"bucket {start}: `results` is not a list")
    digest = hashlib.blake2b(orjson.dumps(results, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
    if known.get(start) == digest:
        return Bucket(start, end, digest, None)
    try:
        amounts = tuple(amount for result in results for amount in _amounts(result, feed))
    except Invalid as exc:
        raise Invalid(f"bucket {start}: {exc}") from None
    return Bucket(start, end, digest, amounts)


def _amounts(result: Any, feed: Feed) -> Iterable[Amount]:
    if not isinstance(result, dict):
        raise Invalid("a result is not a JSON object")
    return feed.amounts(result)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
