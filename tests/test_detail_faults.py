"""The detail endpoints' fault matrix, injected into a running exporter process.

One exporter refreshes every project's details every few seconds (tests/support/detail_faults.py,
DETAIL_ARGS). Each row's fault holds for longer than a round; then the test checks the faulted
collector's health, which failure reason moved, that no other collector and not the project
list failed, what /metrics serves, that the upstream never saw more requests in a second than
the budget allows, and that the collector recovers once the fault is removed.
"""

from __future__ import annotations

import time

import pytest

from exporter.collectors import COLLECTORS
from exporter.upstream import POLL_FAILURE_REASONS
from tests.support.detail_faults import (
    DETAIL_ARGS,
    DETAIL_PROJECTS,
    DETAIL_ROWS,
    REQUESTS_PER_SECOND,
    DetailBoard,
    DetailFaultRow,
    prepare,
)
from tests.support.metrics import Metrics
from tests.support.process import ExporterProcess
from tests.support.upstream import most_in_one_second, start_simulator, stop_simulator

pytestmark = pytest.mark.slow
DEFAULTS = [c.name for c in COLLECTORS if c.default]


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    server = start_simulator(DETAIL_PROJECTS, seed=9)
    many = prepare(server)
    board = DetailBoard(server)
    process = ExporterProcess.start(
        ["--api.base-url", server.base_url, *DETAIL_ARGS], tmp_path_factory.mktemp("detail-faults")
    )
    try:
        process.wait_ready()
        process.wait_metric(lambda m: all(_up(m, c) == 1 for c in DEFAULTS), timeout=30, what="every collector up")
        yield server, board, process, many
    finally:
        process.kill()
        stop_simulator(server)


def _up(metrics: Metrics, collector: str) -> float | None:
    return metrics.get("openai_collector_up", collector=collector)


def _failures(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (c, r): metrics.get("openai_collector_failures_total", collector=c, reason=r) or 0.0
        for c in DEFAULTS
        for r in POLL_FAILURE_REASONS
    }


@pytest.mark.parametrize("row", DETAIL_ROWS, ids=[row.id for row in DETAIL_ROWS])
def test_detail_fault_row(rig, row: DetailFaultRow):
    server, board, process, many = rig
    board.disarm()
    process.wait_metric(lambda m: all(_up(m, c) == 1 for c in DEFAULTS), timeout=30, what="every collector up")
    before = process.metrics()
    good_polls = before.value("openai_polls_total")
    failures_before = _failures(before)
    board.arm(row)
    row.state["many"] = many
    since = time.monotonic()
    time.sleep(row.hold)
    during = process.metrics()

    assert _up(during, row.collector) == (1 if row.up else 0)
    moved = {key for key, value in _failures(during).items() if value > failures_before[key]}
    if row.reason is None:
        assert moved == set()
    else:
        assert (row.collector, row.reason) in moved
        assert {reason for _, reason in moved} == {row.reason}
    for other in DEFAULTS:
        if other != row.collector:
            assert _up(during, other) == 1, other
    # The project list is never failed by a collector, and keeps being polled.
    assert during.value("openai_up") == 1
    assert during.value("openai_polls_total") > good_polls
    assert during.value("openai_poll_failures_total", reason="auth") == before.value(
        "openai_poll_failures_total", reason="auth"
    )
    if row.check is not None:
        row.check(during, row.state)
    with board._lock:
        arrivals = [t for t in board.arrivals if t >= since]
    assert most_in_one_second(arrivals) <= REQUESTS_PER_SECOND + 1

    board.disarm()
    process.wait_metric(lambda m: _up(m, row.collector) == 1, timeout=30, what=f"{row.collector} up again")
    assert not process.events("Traceback")
