"""A page of buckets read again: what came back byte for byte is not parsed, the rest reads as a whole parse."""

from __future__ import annotations

import json

import pytest

from exporter.spend.feeds import FEEDS
from exporter.spend.fetch import _page

DAY = 86_400
COSTS = next(feed for feed in FEEDS if feed.endpoint == "costs")


def bucket(day: int, value: str, **extra) -> dict:
    result = {"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"}}
    result |= {"line_item": "gpt-4o, input", "project_id": f"proj_{day}", **extra}
    return {"object": "bucket", "start_time": day * DAY, "end_time": (day + 1) * DAY, "results": [result]}


def body(buckets: list[dict], indent: int | None = None) -> bytes:
    return json.dumps({"object": "page", "data": buckets, "has_more": False, "next_page": None}, indent=indent).encode()


def read(raw: bytes, last=None):
    into: list = []
    page = _page(raw, COSTS, into, {}, last)
    return into, page


def rows(buckets) -> list:
    return [(b.start, b.end, b.rows) for b in buckets]


@pytest.mark.parametrize("indent", [None, 2])
def test_the_buckets_before_the_first_change_are_the_last_readings_and_the_rest_is_parsed(indent):
    days = [bucket(0, "1.5"), bucket(1, "2"), bucket(2, "0.25")]
    first, page = read(body(days, indent))
    assert len(page.keys) == 3
    days[2] = bucket(2, "0.75")
    again, _ = read(body(days, indent), page)
    assert again[0] is page.buckets[0] and again[1] is page.buckets[1]  # not parsed
    assert rows(again[2:]) == rows(read(body(days, indent))[0][2:])  # as a whole parse reads it
    same, kept = read(body(days, indent), _)
    assert kept is _ and all(b is k for b, k in zip(same, kept.buckets, strict=True))  # the page as it was


def test_a_change_in_an_earlier_bucket_parses_from_there():
    days = [bucket(0, "1.5"), bucket(1, "2"), bucket(2, "0.25")]
    _, page = read(body(days))
    days[1] = bucket(1, "3")
    again, _ = read(body(days), page)
    assert again[0] is page.buckets[0] and again[1] is not page.buckets[1]
    assert rows(again[1:]) == rows(read(body(days))[0][1:])


def test_a_start_time_within_a_result_leaves_the_page_to_be_parsed_whole():
    days = [bucket(0, "1.5", start_time=7), bucket(1, "2"), bucket(2, "0.25")]
    _, page = read(body(days))
    assert page.keys == ()
    days[2] = bucket(2, "1")
    again, _ = read(body(days), page)
    assert not any(b is p for b in again for p in page.buckets)
    assert rows(again) == rows(read(body(days))[0])


def test_a_rest_that_does_not_parse_on_its_own_is_parsed_with_the_whole_page():
    """Keys in another order: the last brace before a bucket's `start_time` is within its results."""
    days = [{"object": "bucket", **{k: v for k, v in bucket(day, "1").items() if k != "object"}} for day in range(3)]
    reordered = [
        {"results": b["results"], "object": "bucket", "start_time": b["start_time"], "end_time": b["end_time"]}
        for b in days
    ]
    _, page = read(body(reordered))
    assert len(page.keys) == 3
    reordered[2]["results"][0]["amount"]["value"] = "2"
    again, _ = read(body(reordered), page)
    assert rows(again) == rows(read(body(reordered))[0])
