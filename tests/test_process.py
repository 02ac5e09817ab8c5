"""The exporter as a real process against the simulated organization: endpoints, polls, logs, signals."""

from __future__ import annotations

import gzip
import signal
import time

import httpx
import pytest

from exporter import __version__
from exporter.simulator import Response
from exporter.snapshot import CHANGE_KINDS
from exporter.upstream import POLL_FAILURE_REASONS
from tests.support.metrics import PER_PROJECT_FAMILIES, Metrics, promtool_check, snapshot_series
from tests.support.process import NO_COLLECTORS, ExporterProcess, upstream_args
from tests.support.upstream import (
    Switchboard,
    error,
    list_page,
    list_requests,
    on_cursor,
    project,
    start_simulator,
    stop_simulator,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def ids(server) -> list[str]:
    return [p["id"] for p in server.organization.all()]


def expect_matches_organization(metrics: Metrics, organization) -> None:
    """/metrics holds exactly the projects the simulated organization lists."""
    projects = organization.all(include_archived=True)
    counts = {"active": 0, "archived": 0}
    for p in projects:
        counts[p["status"]] += 1
    assert metrics.values_by_label("openai_projects", "status") == counts
    info = metrics.by_label("openai_project_info", "project_id")
    assert info == {
        p["id"]: {
            "project_id": p["id"],
            "name": p["name"],
            "status": p["status"],
            "external_key_id": p.get("external_key_id") or "",
            "residency": p.get("residency") or "",
        }
        for p in projects
    }
    assert metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id") == {
        p["id"]: p["created_at"] for p in projects
    }
    assert metrics.values_by_label("openai_project_archived_timestamp_seconds", "project_id") == {
        p["id"]: p["archived_at"] for p in projects if p["archived_at"] is not None
    }


# -- one steady exporter for the read-only endpoint checks ------------------------------


@pytest.fixture(scope="module")
def steady(tmp_path_factory):
    """An exporter that polled once and will not poll again during the module (interval 1h)."""
    server = start_simulator(250, seed=5)
    args = upstream_args(server, *NO_COLLECTORS, interval="1h")  # the list alone: nothing runs between polls
    process = ExporterProcess.start(args, tmp_path_factory.mktemp("steady"))
    try:
        process.wait_ready()
        process.wait_event("poll_succeeded")  # logged just after the snapshot is published
        yield process, server
    finally:
        process.kill()
        stop_simulator(server)


def test_metrics_describe_the_organization_and_the_poll(steady):
    process, server = steady
    metrics = process.metrics()

    expect_matches_organization(metrics, server.organization)
    assert metrics.value("openai_up") == 1
    assert metrics.value("openai_polls_total") == 1
    assert metrics.values_by_label("openai_api_requests_total", "code") == {"200": 3}
    assert {r: metrics.value("openai_poll_failures_total", reason=r) for r in POLL_FAILURE_REASONS} == dict.fromkeys(
        POLL_FAILURE_REASONS, 0
    )
    assert {k: metrics.value("openai_project_changes_total", change=k) for k in CHANGE_KINDS} == dict.fromkeys(
        CHANGE_KINDS, 0
    )
    last = metrics.value("openai_last_successful_poll_timestamp_seconds")
    assert time.time() - 120 < last <= time.time()
    assert 0 < metrics.value("openai_poll_duration_seconds") < 10
    assert metrics.value("openai_exporter_build_info", version=__version__) == 1
    assert sum(metrics.value("openai_project_age_seconds_count", status=s) for s in ("active", "archived")) == 250
    assert metrics.samples("process_cpu_seconds_total") and metrics.samples("python_info")


def test_metrics_content_type_and_promtool(steady):
    process, _ = steady
    response = process.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers.get("content-encoding") is None
    result = promtool_check(response.text)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_openmetrics_when_the_scraper_asks(steady):
    process, _ = steady
    response = process.get(
        "/metrics", {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    openmetrics = Metrics(response.text, openmetrics=True)
    assert snapshot_series(openmetrics) == snapshot_series(process.metrics())
    assert openmetrics.value("openai_up") == 1


@pytest.mark.parametrize("accept_encoding", ["gzip", "gzip, deflate, br", "*", "br;q=1.0, gzip;q=0.8"])
def test_gzip_when_accepted_has_the_same_content(steady, accept_encoding):
    process, _ = steady
    status, headers, body = process.raw("/metrics", {"Accept-Encoding": accept_encoding})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body)
    zipped = Metrics(gzip.decompress(body).decode())
    plain = process.metrics()
    assert snapshot_series(zipped) == snapshot_series(plain)
    # The live tail: the same series; process values move between the two scrapes.
    assert {(s.name, frozenset(s.labels.items())) for f in zipped.families.values() for s in f.samples} == {
        (s.name, frozenset(s.labels.items())) for f in plain.families.values() for s in f.samples
    }


@pytest.mark.parametrize("accept_encoding", [None, "identity", "gzip;q=0", "deflate, br"])
def test_no_gzip_unless_accepted(steady, accept_encoding):
    process, _ = steady
    status, headers, body = process.raw("/metrics", {"Accept-Encoding": accept_encoding} if accept_encoding else {})
    assert status == 200
    assert "content-encoding" not in headers
    assert int(headers["content-length"]) == len(body)
    Metrics(body.decode())


def test_head_metrics_sends_no_body(steady):
    process, _ = steady
    status, headers, body = process.raw("/metrics", method="HEAD")
    assert status == 200 and body == b""
    assert headers["content-type"].startswith("text/plain")


def test_health_readiness_index_and_unknown_paths(steady):
    process, server = steady
    healthz, readyz, index, missing = (process.get(p) for p in ("/healthz", "/readyz", "/", "/nope"))
    assert (healthz.status_code, healthz.text) == (200, "ok\n")
    assert readyz.status_code == 200
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    counts = {"active": 0, "archived": 0}
    for p in server.organization.all():
        counts[p["status"]] += 1
    assert __version__ in index.text
    assert "succeeded" in index.text
    assert f"active: {counts['active']}" in index.text and f"archived: {counts['archived']}" in index.text
    for link in ("/metrics", "/healthz", "/readyz"):
        assert f'href="{link}"' in index.text
    assert missing.status_code == 404


def test_scrapes_never_call_upstream(steady):
    process, server = steady
    before = len(server.requests)
    with httpx.Client(base_url=process.url(), trust_env=False, timeout=5) as scraper:  # keep-alive, as Prometheus
        for _ in range(20):
            for headers in ({}, {"Accept-Encoding": "gzip"}, {"Accept": OPENMETRICS}):
                assert scraper.get("/metrics", headers=headers).status_code == 200
            for path in ("/", "/healthz", "/readyz"):
                assert scraper.get(path).status_code == 200
    assert len(server.requests) == before
    # Still the one poll at start: nothing but the 1 h schedule triggers another.
    assert [r.query.get("after") for r in list_requests(server)].count(None) == 1


def test_logs_are_json_lines_with_one_initial_snapshot(steady):
    process, server = steady
    records = process.records()
    assert all({"event", "level", "timestamp", "logger"} <= set(r) for r in records)
    [started] = [r for r in records if r["event"] == "exporter_started"]
    assert started["version"] == __version__
    [initial] = [r for r in records if r["event"] == "initial_snapshot"]
    [succeeded] = [r for r in records if r["event"] == "poll_succeeded"]
    archived = sum(1 for p in server.organization.all() if p["status"] == "archived")
    assert (initial["projects"], initial["active"], initial["archived"]) == (250, 250 - archived, archived)
    assert (succeeded["projects"], succeeded["active"], succeeded["archived"], succeeded["pages"]) == (
        250,
        250 - archived,
        archived,
        3,
    )
    assert 0 <= succeeded["duration"] < 10
    assert not [r for r in records if r["event"].startswith("project_")]
    assert process.stderr() == ""


# -- readiness and the first poll ------------------------------------------------------


def test_not_ready_until_the_first_good_poll(simulator, start_exporter, hang):
    server = simulator()
    board = Switchboard(server).arm(lambda s, request, n: (hang.wait(30), None)[1] if n == 0 else None)
    process = start_exporter(*upstream_args(server))
    wait_for(lambda: board.arrivals, what="the first poll to reach upstream")

    readyz = process.get("/readyz")
    assert readyz.status_code == 503
    assert process.get("/healthz").status_code == 200
    metrics = process.metrics()
    assert metrics.value("openai_up") == 0
    assert metrics.value("openai_polls_total") == 0
    assert "openai_projects" not in metrics.families
    assert "no poll has finished yet" in process.get("/").text

    hang.set()
    process.wait_ready()
    expect_matches_organization(process.metrics(), server.organization)


def test_failed_first_poll_stays_not_ready(simulator, start_exporter):
    server = simulator()
    Switchboard(server).arm(lambda s, r, n: error(403, "<script>alert('x')</script> is not an admin key"))
    process = start_exporter(*upstream_args(server))

    failed = process.wait_event("poll_failed")
    assert failed["reason"] == "auth"
    assert failed["request_id"].startswith("req_")
    assert "403" in failed["message"]
    metrics = process.wait_metric(lambda m: m.value("openai_poll_failures_total", reason="auth") >= 1)
    assert metrics.value("openai_up") == 0
    assert "openai_projects" not in metrics.families
    assert process.get("/readyz").status_code == 503
    index = process.get("/").text
    assert "failed" in index and "auth" in index
    assert "&lt;script&gt;" in index and "<script>" not in index  # upstream text is escaped, not markup


# -- polls over time --------------------------------------------------------------------


def test_polls_at_start_then_every_interval(simulator, start_exporter):
    server = simulator()
    board = Switchboard(server)
    spawned = time.monotonic()
    process = start_exporter(*upstream_args(server, interval="1s"))

    wait_for(lambda: len(board.first_pages()) >= 4, what="four polls")
    starts = [a.monotonic for a in board.first_pages()]
    assert starts[0] - spawned < 5  # at start, not after one interval of a long schedule
    # On the 1 s grid from the first poll: a late run does not push the later ones back.
    offsets = [round(start - starts[0], 2) for start in starts]
    assert all(abs(offset - n) < 0.5 for n, offset in enumerate(offsets)), offsets
    metrics = process.metrics()
    assert metrics.value("openai_polls_total") >= 3
    assert metrics.value("openai_api_requests_total", code="200") >= 9


def test_slow_polls_never_overlap(simulator, start_exporter):
    server = simulator(250, page_delay=0.4)  # 1.2 s per poll against a 1 s interval
    board = Switchboard(server)
    process = start_exporter(*upstream_args(server, "--poll.timeout", "10s", interval="1s"))

    process.wait_events("poll_succeeded", count=2)
    cursors = ids(server)
    afters = board.afters()
    polls = len(afters) // 3
    assert polls >= 2
    # Each poll is exactly its three pages in order; another poll's first page never cuts in.
    assert afters[: polls * 3] == [None, cursors[99], cursors[199]] * polls


def test_each_change_is_logged_counted_and_shown(simulator, start_exporter):
    server = simulator()
    organization = server.organization
    projects = organization.all()
    active = [p["id"] for p in projects if p["status"] == "active"]
    archived = [p["id"] for p in projects if p["status"] == "archived"]
    process = start_exporter(*upstream_args(server))
    process.wait_ready()
    process.wait_event("poll_succeeded")

    to_archive, to_rename, to_remove, both = active[0], active[1], active[2], active[3]
    to_unarchive = archived[0]
    old_name = organization.get(to_rename)["name"]
    removed_name = organization.get(to_remove)["name"]
    both_old_name = organization.get(both)["name"]
    organization.archive(to_archive)
    organization.unarchive(to_unarchive)
    organization.update(to_rename, name='Renamed "quoted" \\ 検索')
    organization.update(both, name="Archived and renamed")
    organization.archive(both)
    organization.remove(to_remove)
    created = organization.create("Brand new", residency="EU_STORAGE_PROCESSING")

    expected = {"created": 1, "archived": 2, "unarchived": 1, "renamed": 2, "removed": 1}

    def counted(metrics):
        return {k: metrics.value("openai_project_changes_total", change=k) for k in CHANGE_KINDS} == expected

    process.wait_metric(counted, timeout=10, what=f"change counters {expected}")

    for kind, count in expected.items():
        process.wait_events(f"project_{kind}", count=count)
    events = {kind: process.events(f"project_{kind}") for kind in expected}
    assert {k: len(v) for k, v in events.items()} == expected
    assert [(e["project_id"], e["name"]) for e in events["created"]] == [(created["id"], "Brand new")]
    assert sorted(e["project_id"] for e in events["archived"]) == sorted([to_archive, both])
    assert [e["project_id"] for e in events["unarchived"]] == [to_unarchive]
    assert sorted((e["project_id"], e["old_name"], e["new_name"]) for e in events["renamed"]) == sorted(
        [(to_rename, old_name, 'Renamed "quoted" \\ 検索'), (both, both_old_name, "Archived and renamed")]
    )
    assert [(e["project_id"], e["name"]) for e in events["removed"]] == [(to_remove, removed_name)]
    for records in events.values():
        assert all({"project_id", "name"} <= set(r) for r in records)

    expect_matches_organization(process.metrics(), organization)
    # One initial snapshot in all: the changes came from later polls.
    assert len(process.events("initial_snapshot")) == 1


def test_failure_mid_pagination_keeps_the_last_snapshot(simulator, start_exporter):
    server = simulator()
    process = start_exporter(*upstream_args(server, "--api.max-retries", "0"))
    process.wait_ready()
    before = process.metrics()
    first_page_project = ids(server)[5]
    last_cursor = ids(server)[199]

    # Page one changes, page three fails: publishing page one's news would be a half poll.
    board = Switchboard(server).arm(on_cursor(last_cursor, error(500, "boom", {"x-request-id": "req_midway"})))
    server.organization.update(first_page_project, name="Seen only by a failed poll")
    first = process.wait_events("poll_failed", where=lambda r: r["request_id"] == "req_midway")
    failed = process.wait_metric(lambda m: m.value("openai_up") == 0)
    process.wait_events("poll_failed", count=len(first) + 1)  # and one more failed poll after the scrape
    still = process.metrics()

    assert failed.value("openai_poll_failures_total", reason="http_error") >= 1
    assert still.value("openai_polls_total") > failed.value("openai_polls_total")
    assert snapshot_series(failed) == snapshot_series(still) == snapshot_series(before)
    assert still.value("openai_last_successful_poll_timestamp_seconds") == failed.value(
        "openai_last_successful_poll_timestamp_seconds"
    )
    assert process.get("/readyz").status_code == 200  # stale data is still data
    assert not process.events("project_renamed")
    assert first[0]["reason"] == "http_error" and "500" in first[0]["message"]

    board.disarm()
    [renamed] = process.wait_events("project_renamed")
    assert (renamed["project_id"], renamed["new_name"]) == (first_page_project, "Seen only by a failed poll")
    recovered = process.wait_metric(lambda m: m.value("openai_up") == 1)
    expect_matches_organization(recovered, server.organization)


def test_every_failure_reason_is_logged_and_counted(simulator, start_exporter):
    """One exporter, one fault per reason in turn: each shows in the log and its counter."""
    server = simulator()
    second = ids(server)[99]
    faults = {
        "auth": lambda s, r, n: error(403, "not an admin key"),
        "rate_limited": lambda s, r, n: error(429, "slow down", {"Retry-After": "0"}),
        "http_error": on_cursor(second, error(502, "bad gateway")),
        "timeout": on_cursor(second, Response(200, b"{}", delay=1.5)),
        "connection": lambda s, r, n: Response(200, b'{"data": [], "has_more": false}', reset_after=5),
        "invalid_response": lambda s, r, n: Response(200, b"<html>maintenance</html>"),
        "pagination": lambda s, r, n: (
            list_page([project("proj_loop")], True, last_id="same") if r.query.get("after") in (None, "same") else None
        ),
    }
    assert set(faults) == set(POLL_FAILURE_REASONS)
    process = start_exporter(*upstream_args(server, "--api.max-retries", "0", "--api.timeout", "0.5s"))
    process.wait_ready()
    board = Switchboard(server)
    for reason, fault in faults.items():
        board.arm(fault)
        process.wait_events("poll_failed", where=lambda r, reason=reason: r["reason"] == reason)
        process.wait_metric(
            lambda m, reason=reason: m.value("openai_poll_failures_total", reason=reason) >= 1,
            what=f"openai_poll_failures_total{{reason={reason!r}}}",
        )
    board.disarm()
    metrics = process.wait_metric(lambda m: m.value("openai_up") == 1)
    expect_matches_organization(metrics, server.organization)
    # No failure since the fault went away: the counters and the log agree exactly.
    failures = sum(metrics.value("openai_poll_failures_total", reason=r) for r in POLL_FAILURE_REASONS)
    assert failures == len(process.events("poll_failed"))
    assert process.stderr() == ""


def test_retry_after_is_honoured_by_the_daemon(simulator, start_exporter):
    server = simulator()
    second = ids(server)[99]
    board = Switchboard(server).arm(on_cursor(second, error(429, "Rate limit reached", {"Retry-After": "1"}), times=1))
    process = start_exporter(*upstream_args(server, interval="1h"))
    process.wait_ready()

    [retry] = process.events("request_retried")
    assert (retry["reason"], retry["delay"], retry["after"]) == ("rate_limited", 1, second)
    first, again = [a for a in board.arrivals if a.after == second][:2]
    assert again.monotonic - first.monotonic >= 1.0
    metrics = process.metrics()
    assert metrics.values_by_label("openai_api_requests_total", "code") == {"200": 3, "429": 1}
    assert metrics.value("openai_up") == 1
    assert metrics.value("openai_poll_failures_total", reason="rate_limited") == 0


def test_per_project_false_drops_the_project_series(simulator, start_exporter):
    server = simulator()
    process = start_exporter(*upstream_args(server, "--metrics.per-project=false"))
    process.wait_ready()
    metrics = process.metrics()
    for family in PER_PROJECT_FAMILIES:
        assert family not in metrics.families
    projects = server.organization.all()
    assert sum(metrics.values_by_label("openai_projects", "status").values()) == len(projects)
    assert sum(metrics.value("openai_project_age_seconds_count", status=s) for s in ("active", "archived")) == len(
        projects
    )


def test_demo_needs_no_key_and_changes_over_time(start_exporter):
    process = start_exporter("--demo", "--demo.projects", "40", "--poll.interval", "1s", key=None)
    process.wait_ready()
    metrics = process.metrics()
    assert sum(metrics.values_by_label("openai_projects", "status").values()) >= 40
    process.wait_event("project_created")  # the simulated organization churns


# -- stopping --------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_within_five_seconds_with_exit_code_zero(simulator, start_exporter, signum):
    server = simulator()
    process = start_exporter(*upstream_args(server))
    process.wait_ready()
    code, took = process.stop(signum)
    assert code == 0 and took < 5, (code, took, process.stderr())
    events = [r["event"] for r in process.records()]
    # A poll under way when the signal came gives up, and says so, before the exporter has stopped.
    stopping = len(events) - 1 - events[::-1].index("exporter_stopping")
    assert events[-1] == "exporter_stopped" and set(events[stopping + 1 : -1]) <= {"poll_cancelled"}
    assert process.stderr() == ""


def test_sigterm_mid_poll_with_a_hanging_page_exits_0_and_keeps_the_state_file(
    simulator, start_exporter, tmp_path, hang
):
    server = simulator(150)
    second = ids(server)[99]
    state_file = tmp_path / "state.json"
    process = start_exporter(
        *upstream_args(server, "--state.file", str(state_file), "--api.timeout", "60s", "--poll.timeout", "60s"),
        wait="ready",
    )
    wait_for(lambda: state_file.exists() and not state_file.with_name("state.json.tmp").exists(), what="a state file")
    saved = state_file.read_bytes()

    # The upstream stops answering page two: the next poll hangs in a read with a minute to go.
    board = Switchboard(server).arm(
        lambda s, r, n: (hang.wait(60), None)[1] if r.query.get("after") == second else None
    )
    hung = board.wait_active()
    wait_for(lambda: any(a.after == second for a in board.arrivals), what="the poll to hang on page two")

    code, took = process.stop(signal.SIGTERM)
    assert code == 0 and took < 5, (code, took, process.stderr())
    assert state_file.read_bytes() == saved
    assert not process.events("poll_succeeded", since=hung)
    names = [r["event"] for r in process.records()]
    assert names[-2:] == ["exporter_stopping", "exporter_stopped"], names[-5:]
    assert "Traceback" not in process.stderr()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_retry_wait_exits_0_at_once(simulator, start_exporter, signum):
    server = simulator()
    second = ids(server)[99]
    board = Switchboard(server).arm(on_cursor(second, error(429, "slow down", {"Retry-After": "60"})))
    process = start_exporter(*upstream_args(server, "--poll.timeout", "100s"))
    process.wait_event("request_retried")

    code, took = process.stop(signum)
    assert code == 0 and took < 2, (code, took, process.stderr())
    assert process.events("poll_cancelled"), "the waiting poll gives up and says so"
    assert not process.events("poll_failed")
    assert sum(1 for a in board.arrivals if a.after == second) == 1
