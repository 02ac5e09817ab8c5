"""The spend poller against a loopback upstream whose buckets the test writes: counters, gauges, faults."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.budget import DETAILS, RequestBudget
from exporter.details.health import CollectorHealth
from exporter.exposition import Exposition, Part
from exporter.settings import AdminKey
from exporter.snapshot import Snapshot
from exporter.spend.feeds import FEEDS
from exporter.spend.poller import SpendPoller, month_start
from exporter.upstream import ApiClient
from tests.support.keys import KEY
from tests.support.upstream import error, ok

DAY = 86_400
NOW = 1_767_225_600 + 14 * DAY + 3600  # the 15th of a month, 01:00 UTC
COSTS = next(feed for feed in FEEDS if feed.endpoint == "costs")
COMPLETIONS = next(feed for feed in FEEDS if feed.endpoint == "completions")


class Buckets:
    """What the upstream answers: per endpoint, per bucket start, the results; pages of `per_page` buckets."""

    def __init__(self) -> None:
        self.results: dict[str, dict[int, list[dict]]] = {"costs": {}, "completions": {}}
        self.per_page = 2
        self.requests: list[dict] = []
        self.fault = None

    def cost(self, day: int, project: str | None, amount, line_item: str = "gpt-4o, input") -> None:
        start = month_start(NOW) + day * DAY
        self.results["costs"].setdefault(start, []).append(
            {
                "object": "organization.costs.result",
                "amount": {"value": amount, "currency": "usd"},
                "line_item": line_item,
                "project_id": project,
            }
        )

    def set_cost(self, day: int, amount) -> None:
        self.results["costs"][month_start(NOW) + day * DAY][0]["amount"]["value"] = amount

    def __call__(self, request):
        endpoint = request.path.rstrip("/").split("/")[-1]
        if endpoint not in self.results:
            return None
        self.requests.append(dict(request.query))
        if self.fault is not None and (answer := self.fault(request)) is not None:
            return answer
        start = int(request.query["start_time"])
        days = sorted(b for b in self.results[endpoint] if b >= start)
        first = int(request.query.get("page", "0"))
        per_page = min(self.per_page, int(request.query["limit"]))
        chunk = days[first : first + per_page]
        more = first + per_page < len(days)
        data = [
            {"object": "bucket", "start_time": b, "end_time": b + DAY, "results": self.results[endpoint][b]}
            for b in chunk
        ]
        return ok(
            {
                "object": "page",
                "data": data,
                "has_more": more,
                "next_page": str(first + per_page) if more else None,
            }
        )


class Rig:
    def __init__(self, server, feeds=(COSTS, COMPLETIONS), max_response_size=16 << 20):
        self.server = server
        self.buckets = Buckets()
        server.fault = self.buckets
        self.registry = CollectorRegistry()
        self.parts: list[Part] = []
        self.saved = 0
        self.now = NOW
        self.client = ApiClient(
            base_url=server.base_url,
            admin_key=AdminKey(value=KEY),
            timeout=5.0,
            max_retries=0,
            stop=threading.Event(),
            budget=RequestBudget(500),
            priority=DETAILS,
            max_response_size=max_response_size,
        )
        self.health = CollectorHealth(self.registry, [], ["costs", "usage"])
        self.poller = SpendPoller(
            client=self.client,
            feeds=feeds,
            lookback=2 * DAY,
            deadline=10.0,
            max_pages=50,
            health=self.health,
            registry=self.registry,
            publish=self.parts.append,
            save=self._save,
            clock=lambda: self.now,
        )

    def _save(self) -> bool:
        self.saved += 1
        return self.saving

    saving = True

    def text(self, openmetrics: bool = False) -> str:
        exposition = Exposition(Snapshot({}, 0, 0, 0)).extended([self.parts[-1]])
        return b"".join(bytes(b) for b in exposition.body(b"", openmetrics)).decode()

    def value(self, name: str, **labels) -> float | None:
        for family in text_string_to_metric_families(self.text()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    def metric(self, name: str, **labels) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def rig(simulator):
    made = []

    def make(**options) -> Rig:
        made.append(Rig(simulator(0), **options))
        return made[-1]

    yield make
    for r in made:
        r.client.close()


COST = {"project_id": "proj_a", "line_item": "gpt-4o, input", "currency": "usd"}


def test_the_first_poll_is_a_baseline_and_later_growth_is_counted_to_the_digit(rig):
    r = rig(feeds=(COSTS,))
    r.buckets.cost(13, "proj_a", "1.10")
    r.buckets.cost(14, "proj_a", "0.1739150000000000000000000000")  # as a string, as the API sometimes sends
    r.poller.poll()
    assert r.value("openai_project_cost_total", **COST) == 0  # nothing before the start is counted
    assert r.value("openai_project_cost_month_to_date", **COST) == pytest.approx(1.273915)
    r.buckets.set_cost(14, "0.5000000000000000000000000001")
    r.poller.poll()
    text = r.text()
    series = 'openai_project_cost_total{project_id="proj_a",line_item="gpt-4o, input",currency="usd"}'
    assert f"{series} 0.3260850000000000000000000001\n" in text  # every digit, no float rounding
    assert r.metric("openai_collector_up", collector="costs") == 1
    assert r.saved == 2  # saved before each publication


def test_the_month_to_date_is_the_upstreams_sum_to_the_cent_and_restarts_with_the_month(rig):
    r = rig(feeds=(COSTS,))
    amounts = ["0.01", "0.02", "0.07", 12.34, "100.005"]
    for day, amount in enumerate(amounts):
        r.buckets.cost(day, "proj_a", amount)
    r.buckets.cost(0, None, "3.00", line_item="support")  # an organization-level cost
    r.buckets.cost(-3, "proj_a", "50")  # last month: in the look-back window only if it is in reach
    r.poller.poll()
    total = sum(Decimal(str(a)) for a in amounts)
    assert (
        f'openai_project_cost_month_to_date{{project_id="proj_a",line_item="gpt-4o, input",currency="usd"}} {total}'
        in r.text()
    )
    assert r.value("openai_organization_cost_month_to_date", currency="usd") == pytest.approx(float(total + 3))
    assert r.value("openai_project_cost_month_to_date", project_id="", line_item="support", currency="usd") == 3


def test_a_revision_down_is_logged_and_counted_never_subtracted(rig):
    r = rig(feeds=(COSTS,))
    r.buckets.cost(14, "proj_a", "2.00")
    r.poller.poll()
    r.buckets.set_cost(14, "3.00")
    r.poller.poll()
    with structlog.testing.capture_logs() as logs:
        r.buckets.set_cost(14, "2.50")
        r.poller.poll()
    [revised] = [e for e in logs if e["event"] == "usage_revised_down"]
    assert (revised["was"], revised["now"], revised["endpoint"]) == ("3.00", "2.50", "costs")
    assert revised["bucket"].endswith("-15")
    assert r.value("openai_project_cost_total", **COST) == 1
    assert r.metric("openai_usage_revisions_total", collector="costs", endpoint="costs") == 1


def test_a_failed_page_counts_nothing_of_the_window_and_fails_its_collector_alone(rig):
    r = rig()
    r.buckets.per_page = 1  # the window's three buckets on three pages
    for day in range(12, 15):
        r.buckets.cost(day, "proj_a", "1")
    r.poller.poll()
    for day in range(12, 15):
        r.buckets.set_cost(day, "2")
    r.buckets.fault = lambda request: error(500, "broken") if "page" in request.query else None
    r.poller.poll()
    assert r.value("openai_project_cost_total", **COST) == 0  # not the first page's growth alone
    assert r.metric("openai_collector_up", collector="costs") == 0
    assert r.metric("openai_collector_failures_total", collector="costs", reason="http_error") == 1
    assert r.metric("openai_collector_up", collector="usage") == 1
    r.buckets.fault = None
    r.poller.poll()
    assert r.value("openai_project_cost_total", **COST) == 3
    assert r.metric("openai_collector_up", collector="costs") == 1


def test_a_next_page_that_comes_back_is_a_pagination_failure(rig):
    r = rig(feeds=(COSTS,))
    for day in range(10, 15):
        r.buckets.cost(day, "proj_a", "1")
    r.buckets.fault = lambda request: ok({"object": "page", "data": [], "has_more": True, "next_page": "same"})
    r.poller.poll()
    assert r.metric("openai_collector_failures_total", collector="costs", reason="pagination") == 1


def test_a_restart_from_the_saved_ledgers_neither_loses_nor_counts_twice(rig):
    r = rig(feeds=(COSTS,))
    r.buckets.cost(14, "proj_a", "1")
    r.poller.poll()
    r.buckets.set_cost(14, "4")
    r.poller.poll()
    saved = r.poller.dump()
    again = rig(feeds=(COSTS,))
    again.buckets.results = r.buckets.results
    again.poller.restore(saved)
    assert again.value("openai_project_cost_total", **COST) == 3  # where it was, not zero
    again.buckets.set_cost(14, "4.5")
    again.poller.poll()
    assert again.value("openai_project_cost_total", **COST) == 3.5


def test_group_by_and_the_window_are_asked_for(rig):
    r = rig()
    r.buckets.cost(14, "proj_a", "1")
    r.poller.poll()
    costs = [q for q in r.buckets.requests if "line_item" in str(q)]
    assert costs and int(costs[0]["start_time"]) == month_start(NOW)  # the whole month, once, for its gauge
    completions = [q for q in r.buckets.requests if "model" in str(q)]
    assert int(completions[0]["start_time"]) == NOW // DAY * DAY - 2 * DAY
    r.buckets.requests.clear()
    r.poller.poll()
    costs = [q for q in r.buckets.requests if "line_item" in str(q)]
    assert [int(q["start_time"]) for q in costs] == [NOW // DAY * DAY - 2 * DAY]  # then the window, as usage


def test_counters_read_as_counters_in_both_formats(rig):
    r = rig(feeds=(COSTS,))
    r.buckets.cost(14, "proj_a", "1")
    r.poller.poll()
    assert "# TYPE openai_project_cost_total counter" in r.text()
    openmetrics = r.text(openmetrics=True)
    assert "# TYPE openai_project_cost counter" in openmetrics and "openai_project_cost_total{" in openmetrics


def test_counters_that_could_not_be_saved_are_not_published_until_they_are(rig):
    r = rig(feeds=(COSTS,))
    r.buckets.cost(14, "proj_a", "1")
    r.poller.poll()
    r.buckets.set_cost(14, "2")
    r.saving = False  # a full disk, say
    r.poller.poll()
    assert r.value("openai_project_cost_total", **COST) == 0  # what was saved, not more
    r.saving = True
    r.poller.poll()
    assert r.value("openai_project_cost_total", **COST) == 1


def test_a_bucket_that_came_back_unchanged_is_not_read_again(rig):
    from exporter.spend.fetch import fetch_window

    r = rig(feeds=(COSTS,))
    for day in range(0, 15):
        r.buckets.cost(day, "proj_a", "1.5")
        r.buckets.cost(day, "proj_b", "1")
    first = fetch_window(r.client, COSTS, month_start(NOW), 1e12, 10)
    assert all(bucket.rows for bucket in first.buckets)
    r.buckets.set_cost(14, "2")
    known = {b.start: b.digest for b in first.buckets}
    again = fetch_window(r.client, COSTS, month_start(NOW), 1e12, 10, known)
    assert [b.rows is not None for b in again.buckets] == [False] * 14 + [True]  # only the one that changed
    [(labels, (amount,))] = again.buckets[-1].rows  # and of it, only the result that changed
    assert (labels[0], amount, again.buckets[-1].gone) == ("proj_a", Decimal(2), 1)
    # With the pages of the first reading, the 14 buckets whose bytes came back the same are not parsed:
    # they are the ones that reading found, and the rest is what a whole parse finds.
    paged = fetch_window(r.client, COSTS, month_start(NOW), 1e12, 10, known, read=first.pages)
    found = [bucket for page in first.pages.values() for bucket in page.buckets]
    assert all(b is f for b, f in zip(paged.buckets[:14], found, strict=False)) and len(first.pages) > 1
    assert [(b.start, b.end, b.rows) for b in paged.buckets] == [(b.start, b.end, b.rows) for b in again.buckets]
    # And the month's sums follow the one bucket read again.
    r.poller.poll()
    r.buckets.set_cost(14, "2.5")
    r.poller.poll()
    assert r.value("openai_project_cost_month_to_date", **COST) == 14 * 1.5 + 2.5


# -- the month's costs: its final buckets read once ------------------------------------------------


def costs_starts(r: Rig) -> list[int]:
    """The start_time of each costs window asked since the last call (first pages only)."""
    starts = [int(q["start_time"]) for q in r.buckets.requests if "line_item" in str(q) and "page" not in q]
    r.buckets.requests.clear()
    return starts


def month_to_date(r: Rig) -> str:
    [line] = [x for x in r.text().splitlines() if x.startswith("openai_project_cost_month_to_date{")]
    return line.rsplit(" ", 1)[1]


def test_the_months_final_buckets_are_read_once_and_summed_to_the_cent(rig):
    r = rig(feeds=(COSTS,))
    amounts = {day: f"{day}.{day:02d}00000000000000000000000007" for day in range(15)}  # 28 decimals
    for day, amount in amounts.items():
        r.buckets.cost(day, "proj_a", amount)
    r.poller.poll()
    window = NOW // DAY * DAY - 2 * DAY
    assert costs_starts(r) == [month_start(NOW)]
    assert Decimal(month_to_date(r)) == sum(map(Decimal, amounts.values()))
    for step in range(1, 4):  # three days on, a poll a day: each reads the window alone
        r.now += DAY
        r.buckets.cost(14 + step, "proj_a", "0.01")
        amounts[14 + step] = "0.01"
        r.buckets.set_cost(14 + step - 1, "1.005")  # yesterday grew before it settled
        amounts[14 + step - 1] = "1.005"
        r.poller.poll()
        assert costs_starts(r) == [window + step * DAY]
        assert Decimal(month_to_date(r)) == sum(map(Decimal, amounts.values()))
    r.buckets.set_cost(3, "999")  # a final bucket is not read again: its sum stands
    r.poller.poll()
    assert costs_starts(r) == [window + 3 * DAY]
    assert Decimal(month_to_date(r)) == sum(map(Decimal, amounts.values()))


def test_a_new_month_starts_its_sums_again_from_the_window(rig):
    r = rig(feeds=(COSTS,))
    for day in range(15):
        r.buckets.cost(day, "proj_a", "1")
    r.poller.poll()
    next_month = month_start(month_start(NOW) + 40 * DAY)
    r.now = next_month + 3600  # the first of the next month, 01:00
    days = (next_month - month_start(NOW)) // DAY
    r.buckets.cost(days, "proj_a", "0.25")
    costs_starts(r)
    r.poller.poll()
    assert costs_starts(r) == [next_month - 2 * DAY]  # the window, partly last month's
    assert month_to_date(r) == "0.25"
    r.now += 2 * DAY
    r.buckets.cost(days + 2, "proj_a", "0.5")
    r.poller.poll()
    assert costs_starts(r) == [next_month]
    assert month_to_date(r) == "0.75"


def test_a_restart_with_the_saved_month_reads_only_what_it_has_not_summed(rig):
    r = rig(feeds=(COSTS,))
    for day in range(15):
        r.buckets.cost(day, "proj_a", "1.1")
    r.poller.poll()
    r.now += DAY
    r.buckets.cost(15, "proj_a", "2")
    r.poller.poll()
    saved = json.loads(json.dumps(r.poller.dump()))  # through the state file's JSON
    assert "month_to_date" in saved
    window = r.now // DAY * DAY - 2 * DAY
    again = rig(feeds=(COSTS,))
    again.buckets.results = r.buckets.results
    again.now = r.now
    again.poller.restore(saved)
    assert "openai_project_cost_month_to_date" not in again.text()  # not before the window is read
    again.poller.poll()
    assert costs_starts(again) == [window]
    assert Decimal(month_to_date(again)) == Decimal("1.1") * 15 + 2
    assert again.value("openai_project_cost_total", **COST) == 2  # the 16th's, counted once
    # Down for three days: the days it has not summed are read, and their growth counted.
    later = rig(feeds=(COSTS,))
    later.buckets.results = r.buckets.results
    later.now = r.now + 3 * DAY
    r.buckets.set_cost(15, "2.5")
    for day in range(16, 19):
        r.buckets.cost(day, "proj_a", "1")
    later.poller.restore(saved)
    later.poller.poll()
    assert costs_starts(later) == [window]
    assert Decimal(month_to_date(later)) == Decimal("1.1") * 15 + Decimal("2.5") + 3
    assert later.value("openai_project_cost_total", **COST) == 5.5  # and 0.5 grown on the 16th, three new days


def test_a_restart_without_the_saved_month_reads_the_month_again(rig):
    r = rig(feeds=(COSTS,))
    for day in range(15):
        r.buckets.cost(day, "proj_a", "1")
    r.poller.poll()
    saved = r.poller.dump()
    del saved["month_to_date"]  # a state file of an earlier version: the ledgers alone
    again = rig(feeds=(COSTS,))
    again.buckets.results = r.buckets.results
    again.poller.restore(saved)
    again.poller.poll()
    assert costs_starts(again) == [month_start(NOW)]
    assert month_to_date(again) == "15"
    fresh = rig(feeds=(COSTS,))  # and with no state at all
    fresh.buckets.results = r.buckets.results
    fresh.poller.poll()
    assert costs_starts(fresh) == [month_start(NOW)]
    assert month_to_date(fresh) == "15"


def test_the_months_first_read_pages_under_the_response_size_bound(rig):
    bound = 64 << 10
    r = rig(feeds=(COSTS,), max_response_size=bound)
    r.buckets.per_page = 180
    for day in range(15):
        for project in range(60):  # about 8 KiB of results a day
            r.buckets.cost(day, f"proj_{project:03d}", "1.25")
    r.poller.poll()
    assert r.metric("openai_collector_up", collector="costs") == 1
    limits = [int(q["limit"]) for q in r.buckets.requests]
    assert limits[0] == 3  # the look-back window's buckets, before any size is known
    assert max(limits[1:]) <= bound // 2 // (8 << 10) and len(limits) == 1 + -(-12 // limits[1])
    assert month_to_date_of(r, "proj_000") == "18.75"
    costs_starts(r)
    r.poller.poll()  # then the window, in one page
    assert costs_starts(r) == [NOW // DAY * DAY - 2 * DAY] and len(r.buckets.requests) == 0


def month_to_date_of(r: Rig, project: str) -> str:
    labels = {"project_id": project, "line_item": "gpt-4o, input", "currency": "usd"}
    value = r.value("openai_project_cost_month_to_date", **labels)
    assert value is not None
    return format(Decimal(str(value)).normalize(), "f")


def test_a_poll_that_changes_nothing_publishes_and_saves_nothing(rig):
    r = rig(feeds=(COSTS,))
    r.buckets.cost(14, "proj_a", "1")
    r.poller.poll()
    published, saved = len(r.parts), r.saved
    r.poller.poll()
    assert (len(r.parts), r.saved) == (published, saved)
    r.buckets.set_cost(14, "2")
    r.poller.poll()
    assert (len(r.parts), r.saved) == (published + 1, saved + 1)
