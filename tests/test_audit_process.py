"""The audit-log collector through the real process, against the simulated organization's audit log.

The matrix: each project change and each governance change attributed to its actor; a change
with no event; an event with no change; a disabled audit log; a restart in the middle of a
page of events. The details interval is an hour: a governance change found within seconds was
found because its event put the project first in the queue.
"""

from __future__ import annotations

import signal
import time

import pytest

from exporter.audit.events import ALL_EVENT_TYPES
from tests.support.metrics import promtool_check
from tests.support.process import NO_DETAILS, upstream_args
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
EVERY_COLLECTOR = tuple(
    f"--collector.{name}" for name in ("rate-limits", "certificates", "permissions", "data-retention")
)
NO_SPEND = ("--no-collector.costs", "--no-collector.usage")
# A round an hour apart: only an audit event brings a governance change in within a list poll.
SLOW_ROUNDS = ("--poll.details-interval", "1h", "--api.requests-per-second", "200", *NO_SPEND)
WITHIN = 10.0  # seconds: a few one-second list polls, on a loaded machine


def backfilled(process, collectors: int) -> None:
    """Every active project's details fetched once (the backfill), so that what follows is a change."""
    process.wait_events("details_first_refresh", count=collectors, timeout=60)


def actor_of(record: dict) -> dict | None:
    return record.get("actor")


def test_each_project_change_names_its_actor_and_emails_only_when_asked(simulator, start_exporter):
    server = simulator(6, seed=31)
    organization, audit = server.organization, server.organization.audit
    plain = start_exporter(*upstream_args(server, *NO_DETAILS, *NO_SPEND), wait="ready")
    emails = start_exporter(*upstream_args(server, *NO_DETAILS, *NO_SPEND, "--log.emails"), wait="ready")
    for process in (plain, emails):
        process.wait_metric(lambda m: m.get("openai_collector_up", collector="audit-log") == 1, what="audit up")
    active = [p["id"] for p in organization.all() if p["status"] == "active"]

    with audit.actor(session_user="user-ann", email="ann@example.com", ip_address="198.51.100.4"):
        created = organization.create("made by ann")
        organization.archive(active[0])
    for process in (plain, emails):
        process.wait_event("project_archived", timeout=WITHIN, where=lambda r: r["project_id"] == active[0])
    with audit.actor(api_key="key_trk1", service_account="svc_deploy"):
        organization.update(active[1], name="renamed by a bot")
        organization.unarchive(active[0])  # a poll after its archive: two changes, each seen
        organization.remove(active[2])

    expected = {
        ("project_created", created["id"]): "user-ann",
        ("project_archived", active[0]): "user-ann",
        ("project_renamed", active[1]): "key_trk1",
        ("project_unarchived", active[0]): "key_trk1",
        ("project_removed", active[2]): "key_trk1",
    }
    for (event, project_id), who in expected.items():
        record = plain.wait_event(event, timeout=WITHIN, where=lambda r, p=project_id: r["project_id"] == p)
        actor = actor_of(record)
        assert actor is not None, record
        assert who in (actor.get("user_id"), actor.get("api_key_id")), record
        assert "email" not in actor and "ip_address" not in actor
        assert isinstance(actor["effective_at"], int) and abs(actor["effective_at"] - time.time()) < 120
        if who == "key_trk1":
            assert actor == {"type": "api_key", "service_account_id": "svc_deploy", "api_key_id": "key_trk1"} | {
                "effective_at": actor["effective_at"]
            }
        opted = emails.wait_event(event, timeout=WITHIN, where=lambda r, p=project_id: r["project_id"] == p)
        if who == "user-ann":
            assert opted["actor"]["email"] == "ann@example.com" and opted["actor"]["ip_address"] == "198.51.100.4"
    assert "ann@example.com" not in plain.stdout() and "198.51.100.4" not in plain.stdout()

    metrics = plain.metrics()
    assert {s.labels["type"] for s in metrics.samples("openai_audit_events_total")} == set(ALL_EVENT_TYPES)
    assert metrics.get("openai_audit_events_total", type="project.created") >= 1
    assert metrics.get("openai_audit_events_total", type="project.updated") >= 2  # renamed, unarchived
    assert promtool_check(plain.get("/metrics").text).returncode == 0


def test_each_governance_change_is_found_within_a_list_poll_and_names_its_actor(simulator, start_exporter):
    server = simulator(5, seed=32)
    organization, governance, audit = server.organization, server.organization.governance, server.organization.audit
    process = start_exporter(*upstream_args(server, *SLOW_ROUNDS, *EVERY_COLLECTOR), wait="ready")
    backfilled(process, collectors=8)
    project = next(p["id"] for p in organization.all() if p["status"] == "active")
    state = governance.snapshot(project)
    user = state["users"][0]["id"]
    account = state["service_accounts"][0]["id"] if state["service_accounts"] else None

    def found(wanted: list[tuple[str, str, str, str]], since: float) -> None:
        for event, field, value, who in wanted:
            record = process.wait_event(
                event, since=since, timeout=WITHIN, where=lambda r, f=field, v=value: r.get(f) == v
            )
            assert record["project_id"] == project
            actor = actor_of(record)
            assert actor is not None and who in (actor.get("user_id"), actor.get("api_key_id")), record
            assert record["_time"] - since < WITHIN  # a list poll or two, not the hour's round

    since = time.time()
    with audit.actor(session_user="user-admin"):
        key = governance.add_api_key(project, name="made in a session")["id"]
        added = governance.add_user(project)["id"]
        governance.set_user_role(project, user, "owner" if state["users"][0]["role"] == "member" else "member")
        made = governance.add_service_account(project)["id"]
        governance.set_spend_limit(project, 123_400)
        certificate = governance.add_certificate(project, expires_at=int(time.time()) + 86_400)["id"]
    found(
        [
            ("api_key_created", "api_key_id", key, "user-admin"),
            ("project_user_added", "user_id", added, "user-admin"),
            ("project_user_role_changed", "user_id", user, "user-admin"),
            ("service_account_created", "service_account_id", made, "user-admin"),
            ("spend_limit_changed", "project_id", project, "user-admin"),
            ("certificate_added", "certificate_id", certificate, "user-admin"),
        ],
        since,
    )

    since = time.time()
    model = state["rate_limits"][0]["model"] if state["rate_limits"] else None
    with audit.actor(api_key="key_ops", service_account="svc_ops"):
        governance.remove_api_key(project, key)
        governance.remove_user(project, added)
        if model is not None:
            governance.set_rate_limit(project, model, max_requests_per_1_minute=7)
        governance.remove_certificate(project, certificate)
        governance.set_data_retention(project, "zero_data_retention")
        governance.set_hosted_tool(project, "web_search", False)
        if account is not None:
            governance.remove_service_account(project, account)
    wanted = [
        ("api_key_removed", "api_key_id", key, "key_ops"),
        ("project_user_removed", "user_id", added, "key_ops"),
        ("certificate_removed", "certificate_id", certificate, "key_ops"),
        ("data_retention_changed", "project_id", project, "key_ops"),
        ("hosted_tool_permission_changed", "project_id", project, "key_ops"),
    ]
    if model is not None:
        wanted.append(("rate_limit_changed", "model", model, "key_ops"))
    if account is not None:
        wanted.append(("service_account_removed", "service_account_id", account, "key_ops"))
    found(wanted, since)
    assert not process.events("details_fetch_failed")


def test_a_change_without_an_event_is_logged_without_an_actor_and_an_undone_change_logs_nothing(
    simulator, start_exporter
):
    server = simulator(5, seed=33)
    organization, governance, audit = server.organization, server.organization.governance, server.organization.audit
    process = start_exporter(*upstream_args(server, *SLOW_ROUNDS), wait="ready")
    backfilled(process, collectors=4)
    active = [p["id"] for p in organization.all() if p["status"] == "active"]

    since = time.time()
    with audit.silenced():
        organization.archive(active[0])
    record = process.wait_event("project_archived", since=since, where=lambda r: r["project_id"] == active[0])
    assert "actor" not in record  # logged at once all the same, never held back

    # A role changed and changed back between two polls: two events, no change.
    user = governance.snapshot(active[1])["users"][0]
    before = process.metrics().get("openai_audit_events_total", type="user.updated")
    with audit.actor(session_user="user-fickle"):
        governance.set_user_role(active[1], user["id"], "owner" if user["role"] == "member" else "member")
        governance.set_user_role(active[1], user["id"], user["role"])
    process.wait_metric(
        lambda m: m.get("openai_audit_events_total", type="user.updated") == before + 2, what="both events counted"
    )
    # The refresh the events asked for ran, and found nothing to log.
    wait_for(
        lambda: any(r["event"] == "poll_succeeded" and r["_time"] > since + 3 for r in process.records()),
        10,
        what="a few polls after the events",
    )
    assert not process.events("project_user_role_changed", since=since)


def test_a_disabled_audit_log_turns_the_collector_off_with_one_line(simulator, start_exporter):
    server = simulator(5, seed=34)
    server.organization.audit.enabled = False
    process = start_exporter(*upstream_args(server, *NO_DETAILS, *NO_SPEND), wait="ready")
    metrics = process.wait_metric(
        lambda m: m.get("openai_collector_up", collector="audit-log") == 0, what="the audit log off"
    )
    assert metrics.get("openai_up") == 1  # the list poll is untouched
    active = [p["id"] for p in server.organization.all() if p["status"] == "active"]
    server.organization.archive(active[0])
    record = process.wait_event("project_archived", where=lambda r: r["project_id"] == active[0])
    assert "actor" not in record
    process.wait_events("poll_succeeded", count=4)
    [line] = process.events("audit_log_unavailable")
    assert line["level"] == "warning" and "not enabled" in line["message"] and line["reason"] == "auth"
    after = process.metrics()
    assert after.get("openai_collector_failures_total", collector="audit-log", reason="auth") == 1
    assert after.get("openai_audit_events_total", type="project.archived") == 0
    audit_reads = [r for r in server.requests if r.path.endswith("/organization/audit_logs")]
    assert len(audit_reads) == 1  # not asked again at every poll


def test_a_restart_in_the_middle_of_a_page_of_events_neither_loses_nor_repeats_one(simulator, start_exporter, tmp_path):
    server = simulator(3, seed=35)
    audit = server.organization.audit
    state = tmp_path / "state.json"
    # Polls two seconds apart that may take ten: long enough for a page to come a second late.
    args = upstream_args(
        server, *NO_DETAILS, *NO_SPEND, "--state.file", str(state), "--poll.timeout", "10s", interval="2s"
    )
    process = start_exporter(*args, wait="ready")
    process.wait_metric(lambda m: m.get("openai_audit_last_event_timestamp_seconds") is not None, what="a first read")
    process.wait_events("poll_succeeded", count=2)
    process.stop()

    for n in range(250):  # three pages of a hundred
        audit.record("login.failed", project_id=None, resource_id=None, data={"error_code": f"attempt {n}"})
    server.page_delay = 1.0
    first = len(server.requests)
    process = start_exporter(*args, wait=None)
    wait_for(
        lambda: any(r.path.endswith("/audit_logs") and r.query.get("after") for r in list(server.requests)[first:]),
        30,
        what="the second page of events asked for",
    )
    process.send_signal(signal.SIGKILL)
    process.wait_exit()
    server.page_delay = 0.0

    process = start_exporter(*args, wait="ready")
    metrics = process.wait_metric(
        lambda m: m.get("openai_audit_events_total", type="login.failed") == 250, timeout=30, what="all counted"
    )
    process.wait_events("poll_succeeded", count=3, since=time.time())
    assert process.metrics().get("openai_audit_events_total", type="login.failed") == 250  # not one twice
    assert metrics.get("openai_collector_up", collector="audit-log") == 1
    process.stop()
    # And the count itself survives a restart.
    process = start_exporter(*args, wait="ready")
    assert process.metrics().get("openai_audit_events_total", type="login.failed") == 250
