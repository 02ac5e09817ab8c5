"""The month's costs per series: final buckets summed once, the window's replaced as they are read."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exporter.spend.fetch import Sizing
from exporter.spend.month import DAY, MonthToDate

MONTH = 1_767_225_600  # the first of a month, 00:00 UTC
A, B = ("proj_a", "gpt-4o, input", "usd"), ("proj_b", "gpt-4o, input", "usd")


def cost(labels, amount):
    return (labels, Decimal(amount))


def test_buckets_that_leave_the_window_join_the_final_sums_once():
    month = MonthToDate()
    assert month.read_from(MONTH, MONTH + 10 * DAY) == MONTH  # nothing summed yet: from the first
    for day in range(12):
        month.replace(MONTH + day * DAY, [cost(A, "1.01")])
    month.read(MONTH, MONTH + 11 * DAY)
    assert month.read_from(MONTH, MONTH + 10 * DAY) == MONTH + 10 * DAY
    assert (month.until, month.final) == (MONTH + 10 * DAY, {A: Decimal("10.10")})
    assert month.totals == {A: Decimal("12.12")}
    assert month.read_from(MONTH, MONTH + 11 * DAY) == MONTH + 11 * DAY  # a day on: one more bucket final


def test_a_day_with_no_bucket_is_an_empty_share_not_a_gap():
    month = MonthToDate()
    month.read_from(MONTH, MONTH + 5 * DAY)
    month.replace(MONTH + 6 * DAY, [cost(A, "2")])
    month.read(MONTH, MONTH + 6 * DAY)
    assert month.read_from(MONTH, MONTH + 6 * DAY) == MONTH + 6 * DAY


def test_a_changed_result_replaces_its_series_share_and_a_vanished_one_asks_for_the_whole_bucket():
    month = MonthToDate()
    month.read_from(MONTH, MONTH)
    month.replace(MONTH, [cost(A, "1"), cost(B, "2")])
    assert month.update(MONTH, [cost(A, "1.5")], gone=1)
    assert month.totals == {A: Decimal("1.5"), B: Decimal(2)}
    assert month.update(MONTH, [cost(("proj_c", "x", "usd"), "3")], gone=0)  # a new series
    assert not month.update(MONTH, [], gone=1)  # a result vanished: which one, only the whole bucket says
    month.replace(MONTH, [cost(A, "1.5"), cost(B, "2")])
    assert month.totals == {A: Decimal("1.5"), B: Decimal(2), ("proj_c", "x", "usd"): Decimal(0)}


def test_a_bucket_with_two_results_of_one_series_is_always_read_whole():
    month = MonthToDate()
    month.read_from(MONTH, MONTH)
    month.replace(MONTH, [cost(A, "1"), cost(A, "2")])
    assert month.totals == {A: Decimal(3)}
    assert not month.update(MONTH, [cost(A, "4")], gone=1)


def test_a_new_month_starts_empty():
    month = MonthToDate()
    month.read_from(MONTH, MONTH + 3 * DAY)
    month.replace(MONTH + 3 * DAY, [cost(A, "1")])
    month.read(MONTH, MONTH + 3 * DAY)
    later = MONTH + 31 * DAY
    assert month.read_from(later, later - 2 * DAY) == later - 2 * DAY  # the window, partly last month
    assert (month.totals, month.complete) == ({}, False)


def test_the_final_sums_go_through_the_state_file_and_refuse_what_is_not_a_sum():
    month = MonthToDate()
    month.read_from(MONTH, MONTH + 3 * DAY)
    month.replace(MONTH, [cost(A, "0.1000000000000000000000000001")])
    month.read(MONTH, MONTH + 4 * DAY)
    month.read_from(MONTH, MONTH + 3 * DAY)
    loaded = MonthToDate.load(month.dump())
    assert (loaded.month, loaded.until, loaded.final, loaded.complete) == (
        MONTH,
        MONTH + 3 * DAY,
        {A: Decimal("0.1000000000000000000000000001")},
        False,
    )
    for damaged in (
        {"month": MONTH, "until": MONTH, "final": [[["a"], 1.5]]},
        {"month": MONTH, "until": MONTH, "final": [[["a"], "NaN"]]},
        {"month": MONTH, "until": MONTH, "final": [[["a"], "x"]]},
        {"month": MONTH, "until": MONTH - DAY, "final": []},
        {"month": MONTH, "final": []},
    ):
        with pytest.raises((ValueError, TypeError, KeyError)):
            MonthToDate.load(damaged)


def test_a_page_asks_for_as_many_buckets_as_fit_in_half_the_bound():
    from exporter.spend.feeds import FEEDS

    costs = FEEDS[0]
    sizing = Sizing(16 << 20, first=3)
    assert sizing.limit(costs) == 3  # before any bucket is seen: the look-back window's
    sizing.saw(3_900_000, 3)
    assert sizing.limit(costs) == (8 << 20) // 1_300_000
    sizing.saw(40 << 20, 1)  # a bucket larger than the bound: one a page, the most that can be done
    assert sizing.limit(costs) == 1
