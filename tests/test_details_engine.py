"""The details engine against a simulated organization on loopback: real HTTP, real threads.

Each test runs one engine with a generous budget; a refresh is asked for (`ask`) rather than
waited for, so that no test depends on the details interval.
"""

from __future__ import annotations

import threading
import time

import structlog

from exporter.collectors import BY_NAME
from exporter.details.schedule import Unit
from exporter.snapshot import Snapshot
from tests.support.details import samples
from tests.support.upstream import error
from tests.support.waiting import wait_for


def test_every_active_project_has_its_details_and_no_archived_one(harness):
    h = harness(20).start()
    families = h.families()
    active = set(h.active())
    archived = {p["id"] for p in h.organization.all()} - active
    users = samples(families, "openai_project_users")
    assert {dict(k)["project_id"] for k in users} == active
    assert {dict(k)["role"] for k in users} == {"owner", "member"}
    for project_id in active:
        truth = h.organization.governance.snapshot(project_id)
        owners = sum(1 for u in truth["users"] if u["role"] == "owner")
        assert users[(("project_id", project_id), ("role", "owner"))] == owners
        keys = samples(families, "openai_project_api_keys")
        by_sdk = len(truth["api_keys"])
        assert sum(v for k, v in keys.items() if dict(k)["project_id"] == project_id) == by_sdk
        limit = truth["spend_limit"]
        spend = samples(families, "openai_project_spend_limit")
        mine = [v for k, v in spend.items() if dict(k)["project_id"] == project_id]
        assert mine == ([limit["threshold_amount"] / 100] if limit else [])
    for project_id in archived:
        assert project_id not in h.text()
    assert h.value("openai_collector_up", collector="api-keys") == 1
    assert "@example.com" not in h.text() and "redacted" not in h.text()


def test_a_change_is_logged_once_with_its_ids_and_counted(harness):
    h = harness(6).start()
    project_id = h.active()[0]
    with structlog.testing.capture_logs() as logs:
        key = h.organization.governance.add_api_key(project_id, name="ci deploy")
        h.refresh("api-keys", project_id)
        user = h.organization.governance.snapshot(project_id)["users"][0]
        new_role = "member" if user["role"] == "owner" else "owner"
        h.organization.governance.set_user_role(project_id, user["id"], new_role)
        h.refresh("users", project_id)
        h.refresh("users", project_id)  # nothing changed since: nothing more is logged
    created = [e for e in logs if e["event"] == "api_key_created"]
    assert created == [
        {
            "event": "api_key_created",
            "log_level": "info",
            "project_id": project_id,
            "collector": "api-keys",
            "api_key_id": key["id"],
            "name": "ci deploy",
            "owner_type": key["owner"]["type"],
            "owner_id": key["owner"][key["owner"]["type"]]["id"],
        }
    ]
    [changed] = [e for e in logs if e["event"] == "project_user_role_changed"]
    assert (changed["user_id"], changed["old_role"], changed["new_role"]) == (user["id"], user["role"], new_role)
    assert "email" not in changed  # only with --log.emails
    assert h.value("openai_governance_changes_total", resource="api_key", change="created") == 1
    assert h.value("openai_governance_changes_total", resource="project_user", change="role_changed") == 1
    assert f'api_key_id="{key["id"]}"' in h.text()


def test_emails_are_logged_only_when_asked_for(harness):
    h = harness(4, emails=True).start()
    project_id = h.active()[0]
    with structlog.testing.capture_logs() as logs:
        h.organization.governance.add_user(project_id, email="new.member@example.com")
        h.refresh("users", project_id)
    [added] = [e for e in logs if e["event"] == "project_user_added"]
    assert added["email"] == "new.member@example.com"
    assert "@example.com" not in h.text()


def test_a_403_fails_that_collector_alone_and_spends_no_more_of_the_round_on_it(harness):
    h = harness(10)
    h.organization.forbidden = {"api_keys"}
    h.engine.sync(h.snapshot())
    h.engine.start(4)
    wait_for(lambda: h.value("openai_collector_up", collector="users") == 1, 10, what="users up")
    wait_for(lambda: h.value("openai_collector_failures_total", collector="api-keys", reason="auth"), 10)
    time.sleep(0.5)  # the backfill of every other collector ends
    h.engine.count_stale()
    assert h.value("openai_collector_up", collector="api-keys") == 0
    # One refusal, then the rest of the round skips the collector: not one per project.
    assert h.value("openai_collector_failures_total", collector="api-keys", reason="auth") <= 4
    assert h.value("openai_collector_projects_stale", collector="api-keys") == len(h.active())
    assert h.value("openai_collector_projects_stale", collector="users") == 0
    assert h.value("openai_collector_up", collector="users") == 1
    assert h.value("openai_collector_up", collector="spend-limits") == 1


def test_a_missing_spend_limit_is_no_series_and_no_failure(harness):
    h = harness(8)
    for project_id in h.active():
        h.organization.governance.set_spend_limit(project_id, None)
    h.start()
    assert samples(h.families(), "openai_project_spend_limit") == {}
    assert h.value("openai_collector_up", collector="spend-limits") == 1
    assert (
        sum(
            h.value("openai_collector_failures_total", collector="spend-limits", reason=r) or 0
            for r in ("http_error", "invalid_response", "auth")
        )
        == 0
    )


def test_a_key_list_failing_at_page_two_keeps_the_last_good_list_whole(harness):
    h = harness(3).start()
    project_id = h.active()[0]
    for n in range(150):  # two pages of keys
        h.organization.governance.add_api_key(project_id, name=f"key {n}")
    h.refresh("api-keys", project_id)
    before = samples(h.families(), "openai_project_api_key_info")
    mine = {k for k in before if dict(k)["project_id"] == project_id}
    assert len(mine) >= 150
    broken = error(500, "the second page broke")
    h.server.fault = lambda r: broken if r.path.endswith(f"{project_id}/api_keys") and "after" in r.query else None
    h.organization.governance.add_api_key(project_id, name="one more")
    h.refresh("api-keys", project_id)
    assert h.value("openai_collector_failures_total", collector="api-keys", reason="http_error") == 1
    assert h.value("openai_collector_up", collector="api-keys") == 0
    after = samples(h.families(), "openai_project_api_key_info")
    assert {k for k in after if dict(k)["project_id"] == project_id} == mine  # not one key more or less


def test_an_archived_project_leaves_in_the_same_sync_and_a_late_refresh_does_not_bring_it_back(harness):
    h = harness(6).start()
    project_id = h.active()[0]
    assert project_id in h.text()
    h.organization.archive(project_id)
    part = h.engine.sync(h.snapshot())
    assert project_id not in b"".join(bytes(b) for b in part.raw).decode()
    h.engine._complete(Unit("users", project_id), BY_NAME["users"], (), {})  # a refresh that was in flight
    with h.engine._lock:
        assert project_id not in h.engine._entries["users"]


def test_a_list_poll_that_changed_nothing_syncs_without_waiting_for_the_engine(harness):
    # Its sync counts in the list poll's duration: a worker holding the engine's lock (to
    # take a unit, or to render and compose) must not hold it up.
    h = harness(6).start()
    before = h.snapshot()
    h.engine.sync(before)
    unchanged = Snapshot.build(
        list(before.projects.values()), completed_at=time.time(), pages=1, duration=0.0, previous=before
    )
    assert unchanged.projects is before.projects  # what a poll that changed nothing builds
    synced = []
    with h.engine._lock:  # a worker busy
        thread = threading.Thread(target=lambda: synced.append(h.engine.sync(unchanged)), daemon=True)
        thread.start()
        thread.join(5)
        assert synced == [h.engine.part]


def test_an_unchanged_response_costs_no_render(harness):
    h = harness(4).start()
    project_id = h.active()[0]
    blocks = h.engine._entries["api-keys"][project_id].blocks
    h.refresh("api-keys", project_id)
    again = h.engine._entries["api-keys"][project_id]
    assert again.blocks is blocks  # the very same bytes: not rendered again


def test_per_item_series_follow_the_per_project_switch(harness):
    h = harness(5, per_item=False).start()
    names = set(h.families())
    assert "openai_project_api_keys" in names and "openai_project_api_key_info" not in names
    assert "openai_project_api_key_created_timestamp_seconds" not in names
    assert "openai_api_keys_never_used" in names
    histogram = list(h.engine.part.live[0](time.time()))
    assert histogram[0].name == "openai_api_key_idle_seconds"
