"""The fault matrix: each upstream fault injected for real into a running exporter process.

One exporter process polls one simulated organization on loopback every second. Each row
arms its fault at the first page of the next poll, then checks what the poll did, what
/metrics serves while the fault holds, which openai_poll_failures_total{reason} moved,
the log events, how many upstream requests the faulted poll made, and that the first poll
after the fault is removed succeeds on its own. docs/fault-matrix.md, generated from the
table (tests/support/faults.py), tabulates the outcomes.

Settings (tests/support/faults.py, MATRIX_ARGS): poll interval 1 s, poll deadline 2.5 s, request timeout
1 s, 3 retries per page; the organization has 250 projects, three pages of 100.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from exporter.simulator import OrganizationServer
from exporter.upstream import POLL_FAILURE_REASONS
from tests.support.faults import MATRIX_ARGS, MATRIX_PROJECTS, POLL_INTERVAL, POLL_TIMEOUT, ROW_IDS, ROWS, FaultRow
from tests.support.keys import KEY
from tests.support.metrics import Metrics, snapshot_series
from tests.support.net import ReservedPort
from tests.support.process import NO_COLLECTORS, ExporterProcess
from tests.support.upstream import Switchboard, start_simulator, stop_simulator

pytestmark = pytest.mark.slow
BUDGET_RATE = 5.0  # --api.requests-per-second, its default


@dataclass
class Matrix:
    server: OrganizationServer
    board: Switchboard
    process: ExporterProcess


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    server = start_simulator(MATRIX_PROJECTS, seed=5)
    board = Switchboard(server)
    process = ExporterProcess.start(
        # The project list alone: each collector's faults have a table of their own, and their
        # requests would take budget slots between a faulted page and its retry.
        ["--api.base-url", server.base_url, *MATRIX_ARGS, *NO_COLLECTORS],
        tmp_path_factory.mktemp("matrix"),
    )
    try:
        process.wait_ready()
        yield Matrix(server, board, process)
    finally:
        process.kill()
        stop_simulator(server)


def failures(metrics: Metrics) -> dict[str, float]:
    return {reason: metrics.value("openai_poll_failures_total", reason=reason) for reason in POLL_FAILURE_REASONS}


def code_count(metrics: Metrics, code: str) -> float:
    return metrics.get("openai_api_requests_total", code=code) or 0.0


def _wait_clean_poll(process, since: float, timeout: float = 20.0) -> dict:
    """A poll_succeeded of a poll that began at or after `since`."""
    return process.wait_event("poll_succeeded", since, timeout, where=lambda r: r["_time"] - r["duration"] >= since)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_fault_row(matrix, row: FaultRow):
    process, board, server = matrix.process, matrix.board, matrix.server
    # A clean start: the last poll succeeded and nothing is armed.
    board.disarm()
    # ... and the request budget back at its rate: a row of 429s before this one halved it, and
    # its polls would otherwise still wait for slots several seconds apart.
    baseline = process.wait_metric(
        lambda m: m.value("openai_up") == 1 and m.value("openai_api_budget_requests_per_second") == BUDGET_RATE,
        timeout=60,
        what="a good last poll at the budget's full rate",
    )
    good_series = snapshot_series(baseline)
    good_failures = failures(baseline)
    organization = server.organization.all()

    board.arm(row.fault)
    started = board.wait_active()
    # The last good poll is the one before the fault's, which may have ended after `baseline`
    # was read: a poll already past its first page when the fault was armed runs clean.
    good_success_time = process.metrics().value("openai_last_successful_poll_timestamp_seconds")
    outcome = process.poll_outcome(started)
    ended = outcome["_time"]

    # What the poll did, and how many upstream requests it made.
    assert outcome["event"] == ("poll_succeeded" if row.ok else "poll_failed"), outcome
    arrivals = board.between(started, ended)
    low, high = row.requests
    assert low <= len(arrivals) <= high, (
        f"{len(arrivals)} upstream requests, expected {low}..{high}: {[a.after for a in arrivals]}"
    )
    assert outcome["duration"] <= POLL_TIMEOUT + 0.5

    retried = process.events("request_retried", started, ended)
    if row.retried:
        assert retried, "no request_retried event"
        assert {r["reason"] for r in retried} == {row.retried}
        # One request_retried per retry: every request beyond the first of its page.
        assert len(retried) == len(arrivals) - len({a.after for a in arrivals})
    else:
        assert retried == [], retried
    if row.gap:
        later = [a for a in arrivals if a.after is not None]
        retry_of_page_two = [a for a in later if a.after == later[0].after]
        assert len(retry_of_page_two) >= 2
        for first, second in zip(retry_of_page_two, retry_of_page_two[1:], strict=False):
            assert row.gap[0] <= second.monotonic - first.monotonic <= row.gap[1], (
                f"retry after {second.monotonic - first.monotonic:.3f}s, expected {row.gap}"
            )

    # A poll is all or nothing: a failed one publishes and logs no change.
    changes = [r for r in process.records() if r["event"].startswith("project_") and started <= r["_time"] <= ended]
    if row.changes:
        row.changes(changes)
    else:
        assert changes == [], changes[:3]

    # What /metrics serves while the fault holds.
    during = process.metrics()
    if row.code:
        assert code_count(during, row.code) >= code_count(baseline, row.code) + 1
    if row.ok:
        assert during.value("openai_up") == 1
        assert failures(during) == good_failures
        if row.served:
            row.served(during, organization)
        else:
            assert snapshot_series(during) == good_series
    else:
        assert outcome["reason"] == row.reason, outcome
        assert row.message in outcome["message"], outcome["message"]
        assert during.value("openai_up") == 0
        moved = {
            r: during.value("openai_poll_failures_total", reason=r) - good_failures[r] for r in POLL_FAILURE_REASONS
        }
        assert moved[row.reason] >= 1
        assert all(n == 0 for r, n in moved.items() if r != row.reason), moved
        # The last good snapshot is still served, with its time: stale data says it is stale.
        assert snapshot_series(during) == good_series
        assert during.value("openai_last_successful_poll_timestamp_seconds") == good_success_time
        assert process.get("/readyz").status_code == 200
        if row.auth_like:
            _assert_polls_keep_their_schedule(process, board, started, row)

    # The first poll after the fault is gone succeeds on its own. A fault the poll rode out
    # with retries recovered within the poll itself; only changed data needs one more poll.
    clean = board.disarm()
    if row.ok and not row.served:
        return
    recovered = _wait_clean_poll(process, clean)
    after = process.metrics()
    assert after.value("openai_up") == 1
    assert snapshot_series(after) == good_series
    assert good_success_time < after.value("openai_last_successful_poll_timestamp_seconds") <= recovered["_time"]
    assert process.get("/readyz").status_code == 200


def _assert_polls_keep_their_schedule(process, board: Switchboard, started: float, row: FaultRow) -> None:
    """401/403: every poll fails alike, one request each, at the poll interval, no faster, no slower."""
    ended = process.wait_events("poll_failed", count=3, since=started)[2]["_time"]
    firsts = [a for a in board.between(started, ended) if a.after is None]
    assert len(firsts) == 3 == len(board.between(started, ended)), "one request per poll, never retried"
    gaps = [b.monotonic - a.monotonic for a, b in zip(firsts, firsts[1:], strict=False)]
    assert all(abs(gap - POLL_INTERVAL) <= 0.4 for gap in gaps), gaps
    for record in process.events("poll_failed", started, ended):
        assert record["reason"] == row.reason
        assert "Admin API key" in record["message"]
        assert KEY not in record["message"] and KEY[9:] not in record["message"]


# -- faults that need an exporter of their own ---------------------------------------------


def test_connection_refused_then_upstream_appears(start_exporter):
    nothing_listens = ReservedPort()  # refuses connections, and no other process can take the port
    process = start_exporter(
        "--api.base-url",
        nothing_listens.base_url,
        "--poll.interval",
        "1s",
        "--api.timeout",
        "1s",
        "--api.max-retries",
        "1",
    )
    server = None
    try:
        first = process.wait_event("poll_failed")
        assert first["reason"] == "connection" and "ConnectError" in first["message"], first
        assert "gave up after 2 attempts" in first["message"]
        retried = process.events("request_retried", 0, first["_time"])
        assert [r["reason"] for r in retried] == ["connection"]  # max-retries 1: two connection attempts
        metrics = process.metrics()
        assert metrics.value("openai_up") == 0
        assert metrics.value("openai_poll_failures_total", reason="connection") >= 1
        assert metrics.get("openai_projects", status="active") is None  # nothing good to serve yet
        assert process.get("/readyz").status_code == 503

        server = start_simulator(120, seed=2, port=nothing_listens.port)
        nothing_listens.release()
        appeared = time.time()
        recovered = process.wait_event("poll_succeeded", appeared)
        assert recovered["projects"] == 120
        metrics = process.metrics()
        assert metrics.value("openai_up") == 1
        assert metrics.project_total() == 120
        assert process.get("/readyz").status_code == 200
    finally:
        nothing_listens.release()
        if server is not None:
            stop_simulator(server)


def test_404_on_a_wrong_base_url_is_not_retried_and_polling_keeps_its_schedule(simulator, start_exporter):
    server = simulator(50, seed=3)
    board = Switchboard(server, watches=lambda request: True)  # the wrong path is not the list's
    process = start_exporter(
        "--api.base-url", f"{server.base_url}/wrong", "--poll.interval", "1s", "--api.max-retries", "3", *NO_COLLECTORS
    )
    records = process.wait_events("poll_failed", count=3)[:3]
    for record in records:
        assert record["reason"] == "http_error" and record["message"].startswith("HTTP 404"), record
    arrivals = board.between(0, records[-1]["_time"])
    assert [a.request.path for a in arrivals] == ["/v1/wrong/organization/projects"] * 3
    gaps = [b.monotonic - a.monotonic for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert all(abs(gap - POLL_INTERVAL) <= 0.4 for gap in gaps), gaps
    assert process.events("request_retried") == []
    metrics = process.metrics()
    assert metrics.value("openai_up") == 0
    assert metrics.value("openai_poll_failures_total", reason="http_error") >= 3
    assert metrics.value("openai_api_requests_total", code="404") >= 3
    assert process.get("/readyz").status_code == 503
