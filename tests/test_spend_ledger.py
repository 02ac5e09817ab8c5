"""The ledger: each cell of each bucket counted once, by its growth, across revisions and restarts."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.spend.ledger import Ledger

DAY = 86_400
GROUP = ("proj_a", "gpt-4o, input", "usd")


def reading(bucket: int, amount: str, key=GROUP) -> tuple[int, tuple[str, ...], tuple[Decimal]]:
    return (bucket * DAY, key, (Decimal(amount),))


def grown(ledger: Ledger, readings, **options) -> dict:
    """What one poll's readings added to each counter."""
    before = ledger.totals
    ledger.record(readings, **options)
    return {
        group: total - before.get(group, 0) for group, total in ledger.totals.items() if total != before.get(group, 0)
    }


def test_growth_is_counted_once_and_a_revision_down_never_subtracts():
    ledger = Ledger()
    assert grown(ledger, [reading(0, "1.10"), reading(1, "0.20")]) == {GROUP: Decimal("1.30")}
    assert grown(ledger, [reading(0, "1.10"), reading(1, "0.50")]) == {GROUP: Decimal("0.30")}  # bucket 1 grew
    revisions = ledger.record([reading(0, "1.00"), reading(1, "0.50")])
    assert [(r.group, r.was, r.now) for r in revisions] == [(GROUP, Decimal("1.10"), Decimal("1.00"))]
    assert grown(ledger, [reading(0, "1.15"), reading(1, "0.50")]) == {GROUP: Decimal("0.05")}  # only past the mark
    assert ledger.totals[GROUP] == Decimal("1.65")


def test_a_baseline_counts_nothing_that_was_there_before_the_start():
    ledger = Ledger()
    assert grown(ledger, [reading(0, "5"), reading(1, "2")], baseline=True) == {}
    assert ledger.totals[GROUP] == 0  # present from the start, at zero
    assert grown(ledger, [reading(1, "3"), reading(2, "1")]) == {GROUP: Decimal("2")}


def test_amounts_keep_every_digit():
    ledger = Ledger()
    ledger.record([reading(0, "0.1739150000000000000000000000")])
    ledger.record([reading(0, "0.1739150000000000000000000001")])
    assert ledger.totals[GROUP] == Decimal("0.1739150000000000000000000001")


def test_buckets_out_of_the_window_are_forgotten_and_never_counted_again():
    ledger = Ledger()
    ledger.record([reading(0, "1"), reading(5, "1")])
    ledger.forget_before(3 * DAY)
    assert [bucket for row in ledger.rows.values() for bucket in row.marks] == [5 * DAY]
    assert ledger.totals[GROUP] == 2


def images(key: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """As the images feed: a row per size, its images by size, its requests by model alone."""
    project, model, size = key
    return (("images", project, model, size), ("requests", project, model))


def test_rows_that_count_toward_one_series_each_grow_on_their_own():
    ledger = Ledger(images, whole=True)
    ledger.record([(0, ("p", "m", "1024"), (2, 10)), (0, ("p", "m", "512"), (1, 4))])
    assert ledger.totals[("requests", "p", "m")] == 14
    # Only the small images grew: their requests count by their own growth, not against the large ones'.
    revisions = ledger.record([(0, ("p", "m", "512"), (3, 6))])
    assert revisions == [] and ledger.totals[("requests", "p", "m")] == 16
    assert ledger.totals[("images", "p", "m", "512")] == 3 and ledger.totals[("images", "p", "m", "1024")] == 2


def test_a_cell_the_result_omits_has_no_series_until_it_is_reported_and_keeps_its_mark():
    tokens = lambda key: ((*key, "input"), (*key, "input_audio"))  # noqa: E731
    ledger = Ledger(tokens, whole=True)
    ledger.record([(0, ("p",), (5, None))])
    assert set(ledger.totals) == {("p", "input")}
    ledger.record([(0, ("p",), (7, 3))])
    assert ledger.totals == {("p", "input"): 7, ("p", "input_audio"): 3}
    assert ledger.record([(0, ("p",), (7, None))]) == [] and ledger.totals[("p", "input_audio")] == 3
    ledger.record([(0, ("p",), (7, 4))])  # past the mark it kept: 1 more, not 4
    assert ledger.totals[("p", "input_audio")] == 4


def test_a_restart_from_the_state_neither_loses_nor_counts_twice():
    before = Ledger(images, whole=True)
    before.record([(0, ("p", "m", "1024"), (2, 10)), (DAY, ("p", "m", "512"), (1, 4))])
    saved = json.loads(json.dumps(before.dump()))
    after = Ledger.load(saved, images, whole=True)
    assert after.totals == before.totals and all(type(total) is int for total in after.totals.values())
    assert {key: row.marks for key, row in after.rows.items()} == {key: row.marks for key, row in before.rows.items()}
    after.record([(0, ("p", "m", "1024"), (2, 12)), (DAY, ("p", "m", "512"), (1, 4))])
    assert after.totals[("requests", "p", "m")] == 16


def test_a_ledger_saved_before_its_first_poll_still_takes_that_poll_as_its_baseline():
    earlier = {"marks": [[0, list(GROUP), "", "1.5"]], "totals": [[list(GROUP), "", "7.25"]]}  # an earlier version's
    ledger = Ledger.load(earlier)
    assert ledger.totals == {GROUP: Decimal("7.25")} and not ledger.started
    again = Ledger.load(json.loads(json.dumps(ledger.dump())))  # saved again before any poll
    assert grown(again, [reading(0, "2.5")], baseline=not again.started) == {}
    assert grown(again, [reading(0, "3")]) == {GROUP: Decimal("0.5")}


@pytest.mark.parametrize(
    "data",
    [
        {"started": True, "rows": [[["a"], [[0, ["-1"]]]]], "series": []},
        {"started": True, "rows": [[["a"], [[0, ["NaN"]]]]], "series": []},
        {"started": True, "rows": [[["a"], [[0, ["1", "2"]]]]], "series": []},
        {"started": True, "rows": [["a", [[0, ["1"]]]]], "series": []},
        {"started": True, "rows": [], "series": [[["a"], 1.5]]},
        {"started": "yes", "rows": [], "series": []},
        {"rows": {}, "series": [], "started": True},
        {"marks": [], "totals": [[["a"], "", "x"]]},
        {"totals": {}},
        {},
    ],
)
def test_a_state_that_is_not_a_ledger_is_refused(data):
    with pytest.raises((ValueError, TypeError, KeyError)):
        Ledger.load(data)


def test_a_ledger_of_counts_refuses_a_saved_fraction():
    with pytest.raises(ValueError):
        Ledger.load({"started": True, "rows": [], "series": [[["a"], "1.5"]]}, whole=True)


amounts = st.decimals(min_value=0, max_value=10_000, places=6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 4), st.sampled_from("xy"), amounts), max_size=8), min_size=1, max_size=8)
)
def test_the_total_is_the_sum_of_each_rows_highest_amount_in_each_bucket(polls):
    """Whatever the order of growth and revisions, each row's cell counts its highest amount once."""
    ledger = Ledger(lambda key: (("series",),))  # two rows, one series
    highest: dict[tuple[int, str], Decimal] = {}
    for poll in polls:
        latest = {(bucket, row): amount for bucket, row, amount in poll}  # one reading per row and bucket
        ledger.record([(bucket * DAY, (row,), (amount,)) for (bucket, row), amount in latest.items()])
        for place, amount in latest.items():
            highest[place] = max(highest.get(place, Decimal(0)), amount)
    assert ledger.totals.get(("series",), 0) == sum(highest.values(), Decimal(0))
