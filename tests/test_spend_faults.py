"""The costs feed's fault matrix, injected into a running exporter process.

The exporter polls the costs and usage every second against a simulated organization whose
clock stands still, so that only the fault changes what the upstream says. Each row's fault
holds for a few polls; the test checks the costs collector's health, which failure reason
moved, the counters (never down, nothing counted twice), the month-to-date gauges, the log,
and that the usage collector and the project list are untouched.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.support.metrics import Metrics
from tests.support.process import NO_DETAILS, ExporterProcess, upstream_args
from tests.support.spend_faults import INJECTED, SPEND_ARGS, SPEND_INTERVAL, SpendFaultRow
from tests.support.upstream import start_simulator, stop_simulator

pytestmark = pytest.mark.slow
HOLD = 4 * SPEND_INTERVAL


def money(metrics: Metrics, name: str) -> dict[str, Decimal]:
    """A family's series, as their label text, with every digit."""
    return {
        line.rsplit(" ", 1)[0]: Decimal(line.rsplit(" ", 1)[1])
        for line in metrics.text.splitlines()
        if line.startswith(name + "{")
    }


class Costs:
    """The simulator's fault hook: the armed row's fault on the costs endpoint, nothing elsewhere."""

    def __init__(self, server):
        self.server = server
        self.row: SpendFaultRow | None = None
        server.fault = self

    def __call__(self, request):
        row = self.row
        if row is None or row.fault is None or not request.path.rstrip("/").endswith("/organization/costs"):
            return None
        return row.fault(self.server, request)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    server = start_simulator(10, seed=13, now=time.time())
    costs = Costs(server)
    process = ExporterProcess.start(
        [*upstream_args(server, *SPEND_ARGS, *NO_DETAILS)], tmp_path_factory.mktemp("spend-faults")
    )
    try:
        process.wait_ready()
        process.wait_metric(lambda m: m.samples("openai_project_cost_total"), timeout=30, what="the costs")
        yield server, costs, process
    finally:
        process.kill()
        stop_simulator(server)


@pytest.mark.parametrize("row", INJECTED, ids=[row.id for row in INJECTED])
def test_spend_fault_row(rig, row: SpendFaultRow):
    server, costs, process = rig
    costs.row = None
    time.sleep(2 * SPEND_INTERVAL)
    before = process.metrics()
    counters = money(before, "openai_project_cost_total")
    month = money(before, "openai_project_cost_month_to_date")
    failures = before.value("openai_collector_failures_total", collector="costs", reason=row.reason or "auth")
    usage_polls = before.value("openai_collector_requests_total", collector="usage")
    since = time.time()
    costs.row = row
    time.sleep(HOLD)
    during = process.metrics()

    assert during.value("openai_collector_up", collector="costs") == (1 if row.up else 0)
    assert during.value("openai_collector_up", collector="usage") == 1
    assert during.value("openai_collector_requests_total", collector="usage") > usage_polls
    assert during.value("openai_up") == 1
    moved = during.value("openai_collector_failures_total", collector="costs", reason=row.reason or "auth")
    assert (moved > failures) if row.reason else moved == failures
    now = money(during, "openai_project_cost_total")
    for series, value in counters.items():
        assert now.get(series, Decimal(0)) >= value, series  # never down
    if row.event:
        assert process.events(row.event, since)
    if row.id == "string-amounts":
        assert now == counters and money(during, "openai_project_cost_month_to_date") == month
    if row.id == "null-project":
        added = [s for s in now if 'project_id=""' in s and "fault: organization support" in s]
        assert added and now[added[0]] == Decimal("1.25")
        organization = Decimal(str(during.value("openai_organization_cost_month_to_date", currency="usd")))
        assert abs(organization - (sum(month.values()) + Decimal("1.25"))) < Decimal("0.000001")
    if row.id == "revised-down":
        assert now == counters  # the halving is never subtracted
        assert during.value("openai_usage_revisions_total", collector="costs", endpoint="costs") > 0
    if not row.up:
        assert now == counters  # a failed window counts nothing

    costs.row = None
    process.wait_metric(lambda m: m.value("openai_collector_up", collector="costs") == 1, what="costs up again")
