"""The ledger: each bucket's amount counted once, by its growth, across revisions and restarts."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.spend.ledger import Ledger, Reading

DAY = 86_400
GROUP = ("proj_a", "gpt-4o, input", "usd")


def reading(bucket: int, amount: str, group=GROUP, measure: str = "cost") -> Reading:
    return Reading(bucket * DAY, group, measure, Decimal(amount))


def test_growth_is_counted_once_and_a_revision_down_never_subtracts():
    ledger = Ledger()
    first = ledger.record([reading(0, "1.10"), reading(1, "0.20")])
    assert first.grown == {(GROUP, "cost"): Decimal("1.30")}
    again = ledger.record([reading(0, "1.10"), reading(1, "0.50")])  # bucket 1 grew by 0.30
    assert again.grown == {(GROUP, "cost"): Decimal("0.30")}
    down = ledger.record([reading(0, "1.00"), reading(1, "0.50")])
    assert down.grown == {} and [(r.was, r.now) for r in down.revisions] == [(Decimal("1.10"), Decimal("1.00"))]
    back = ledger.record([reading(0, "1.15"), reading(1, "0.50")])  # up again: only past the old mark
    assert back.grown == {(GROUP, "cost"): Decimal("0.05")}
    assert ledger.totals[(GROUP, "cost")] == Decimal("1.65")


def test_a_baseline_counts_nothing_that_was_there_before_the_start():
    ledger = Ledger()
    assert ledger.record([reading(0, "5"), reading(1, "2")], baseline=True).grown == {}
    assert ledger.totals[(GROUP, "cost")] == 0  # present from the start, at zero
    assert ledger.record([reading(1, "3"), reading(2, "1")]).grown == {(GROUP, "cost"): Decimal("2")}


def test_amounts_keep_every_digit():
    ledger = Ledger()
    ledger.record([reading(0, "0.1739150000000000000000000000")])
    ledger.record([reading(0, "0.1739150000000000000000000001")])
    assert ledger.totals[(GROUP, "cost")] == Decimal("0.1739150000000000000000000001")


def test_buckets_out_of_the_window_are_forgotten_and_never_counted_again():
    ledger = Ledger()
    ledger.record([reading(0, "1"), reading(5, "1")])
    ledger.forget_before(3 * DAY)
    assert [key[0] for key in ledger.marks] == [5 * DAY]
    assert ledger.totals[(GROUP, "cost")] == 2


def test_a_restart_from_the_state_neither_loses_nor_counts_twice():
    before = Ledger()
    before.record([reading(0, "1.25"), reading(1, "0.75")])
    saved = json.loads(json.dumps(before.dump()))
    after = Ledger.load(saved)
    assert after.totals == before.totals and after.marks == before.marks
    assert after.record([reading(0, "1.25"), reading(1, "1.00")]).grown == {(GROUP, "cost"): Decimal("0.25")}


@pytest.mark.parametrize(
    "data",
    [
        {"marks": [[0, ["a"], "cost", "-1"]], "totals": []},
        {"marks": [[0, ["a"], "cost", "NaN"]], "totals": []},
        {"marks": [[0, "a", "cost", "1"]], "totals": []},
        {"marks": [], "totals": [[["a"], "cost", 1.5]]},
        {"marks": {}, "totals": []},
        {"totals": []},
    ],
)
def test_a_state_that_is_not_a_ledger_is_refused(data):
    with pytest.raises((ValueError, TypeError, KeyError)):
        Ledger.load(data)


amounts = st.decimals(min_value=0, max_value=10_000, places=6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 4), amounts), max_size=8), min_size=1, max_size=8))
def test_the_total_is_the_sum_of_each_buckets_highest_amount(polls):
    """Whatever the order of growth and revisions, each bucket counts its highest amount once."""
    ledger = Ledger()
    highest: dict[int, Decimal] = {}
    for poll in polls:
        ledger.record([reading(bucket, str(amount)) for bucket, amount in poll])
        for bucket, amount in poll:
            highest[bucket] = max(highest.get(bucket, Decimal(0)), amount)
    assert ledger.totals.get((GROUP, "cost"), Decimal(0)) == sum(highest.values(), Decimal(0))
