"""A page of buckets read again: what came back byte for byte is not parsed, the rest reads as a whole parse."""

from __future__ import annotations

import json
from decimal import Decimal

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


def costs(day: int, values: list[str], **extra) -> dict:
    """A bucket of one result per project, each its own value."""
    results = [
        {
            "object": "organization.costs.result",
            "amount": {"value": value, "currency": "usd"},
            "line_item": "gpt-4o, input",
            "project_id": f"proj_{n}",
            **extra,
        }
        for n, value in enumerate(values)
    ]
    return {"object": "bucket", "start_time": day * DAY, "end_time": (day + 1) * DAY, "results": results}


def whole(raw: bytes) -> list:
    """The rows a first, whole reading finds: every result's."""
    return [row for b in read(raw)[0] for row in b.rows]


@pytest.mark.parametrize("indent", [None, 2])
def test_of_the_newest_bucket_only_the_results_whose_bytes_changed_are_parsed(indent):
    days = [costs(0, ["1"] * 3), costs(1, ["1", "2", "3", "4", "5"])]
    _, page = read(body(days, indent))
    assert page.results is not None and len(page.results.hashes) == 5
    days[1] = costs(1, ["1", "2.5", "3", "4", "6"])
    again, _ = read(body(days, indent), page)
    newest = again[-1]
    assert newest.tail is not None and len(newest.results) == 2  # the two that changed, the last among them
    assert [amount for (_key, (amount,)) in newest.rows] == [Decimal("2.5"), Decimal("6")]
    assert newest.gone == 2
    assert newest.every() == days[1]["results"]  # every result, when the month's sums need them all


def test_a_result_that_vanished_or_came_is_gone_or_read():
    """The last result's bytes run to the page's end: one that is last no more reads as changed, which the
    ledger counts as nothing and the month's sums answer by reading every result (`Bucket.every`)."""
    days = [costs(0, ["1"]), costs(1, ["1", "2", "3"])]
    _, page = read(body(days))
    days[1]["results"] = [days[1]["results"][0], days[1]["results"][2], {**days[1]["results"][0], "project_id": "new"}]
    again, _ = read(body(days), page)
    assert again[-1].gone == 2  # proj_1's result, and proj_2's as the last
    assert [key[0] for key, _cells in again[-1].rows] == ["proj_2", "new"]
    assert again[-1].every() == days[1]["results"]


def test_a_result_beginning_found_within_a_result_leaves_the_bucket_to_be_parsed_whole():
    nested = {"object": "organization.costs.result", "note": "nested"}
    days = [costs(0, ["1"]), costs(1, ["1", "2"], detail=nested)]
    _, page = read(body(days))
    assert page.results is None and len(page.keys) == 2
    days[1] = costs(1, ["1", "3"], detail=nested)
    again, _ = read(body(days), page)
    assert again[-1].tail is None and again[-1].rows == read(body(days))[0][-1].rows


def test_a_page_of_one_bucket_is_as_it_was_only_when_its_bytes_before_the_key_are_too():
    _, page = read(body([bucket(0, "1.5")]))
    again, kept = read(body([bucket(0, "1.5")]), page)
    assert kept is page
    other = body([bucket(0, "1.5")]).replace(b'"object": "page"', b'"object": "pagf"')  # same size, other bytes
    again, changed = read(other, page)
    assert changed is not page and again[0] is not page.buckets[0]
