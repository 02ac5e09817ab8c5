"""The simulated organization's audit log, over real HTTP, against the upstream contract.

Every answer is checked against the schema openai-admin-governance-and-spend.openapi.yaml gives
`GET /organization/audit_logs`, closed (no field the spec does not name) but for the fields of
`changes_requested` the simulator adds where the contract names none (EXTRA_CHANGES). The rest
checks the order and the paging, each filter, the errors, what each change writes, who acts, and
churn. The organization's clock is manual: tests move it, never sleep.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import jsonschema
import pytest

from exporter.simulated_audit import (
    CHANGE_TYPES,
    DATA_TYPES,
    DISABLED,
    EVENT_TYPES,
    EXTRA_CHANGES,
    SimulatedAuditLog,
    facets,
)
from exporter.simulator import SimulatedOrganization
from tests.support.governance import closed_components, contract
from tests.support.keys import KEY
from tests.support.listing import assert_error, walk

NOW = 1_750_000_000
PATH = "/organization/audit_logs"

_http = httpx.Client(timeout=10)  # one pool for the module: a client per request costs more than the request


@pytest.fixture(scope="module", autouse=True)
def _close_http():
    yield
    _http.close()


def get(server, key: str = KEY, **params) -> httpx.Response:
    """A GET of the audit log; a parameter given a list goes as repeated keys, as `name[]` if so named."""
    return _http.get(server.base_url + PATH, params=params, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def validate():
    """validate(page): the page matches the contract's ListAuditLogsResponse, closed but for EXTRA_CHANGES."""
    components = copy.deepcopy(closed_components())
    properties = components["schemas"]["AuditLog"]["properties"]
    for type_ in EXTRA_CHANGES:
        properties[type_]["properties"]["changes_requested"]["additionalProperties"] = True
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/ListAuditLogsResponse", "components": components}
    )

    def check(page: dict) -> None:
        validator.validate(page)
        named = {t: set(properties[t]["properties"]["changes_requested"]["properties"]) for t in EXTRA_CHANGES}
        for event in page["data"]:
            if event["type"] in EXTRA_CHANGES:
                extra = set(event[event["type"]].get("changes_requested", {})) - named[event["type"]]
                assert extra <= set(EXTRA_CHANGES[event["type"]]), event

    return check


@pytest.fixture
def server(simulator):
    """A server over 12 projects whose log starts empty, on a manual clock."""
    return simulator(12, seed=5, now=NOW)


def active(server) -> list[str]:
    return [p["id"] for p in server.organization.all() if p["status"] == "active"]


def every_change(organization: SimulatedOrganization) -> None:
    """Each change the simulator can make, once or more, a minute apart, on the first active project."""
    clock, governance = organization.spend.clock, organization.governance
    project_id = next(p["id"] for p in organization.all() if p["status"] == "active")
    state = governance.snapshot(project_id)
    steps = [
        lambda: organization.create("Audit Test"),
        lambda: organization.update(project_id, name="Renamed"),
        lambda: organization.archive(project_id),
        lambda: organization.unarchive(project_id),
        lambda: governance.add_api_key(project_id),
        lambda: governance.remove_api_key(project_id, state["api_keys"][0]["id"]),
        lambda: governance.add_user(project_id, role="owner"),
        lambda: governance.set_user_role(project_id, state["users"][0]["id"], "member"),
        lambda: governance.remove_user(project_id, state["users"][0]["id"]),
        lambda: governance.add_service_account(project_id),
        lambda: governance.set_service_account_role(
            project_id, governance.snapshot(project_id)["service_accounts"][0]["id"], "none"
        ),
        lambda: governance.remove_service_account(
            project_id, governance.snapshot(project_id)["service_accounts"][0]["id"]
        ),
        lambda: governance.set_rate_limit(
            project_id, "gpt-4o", max_requests_per_1_minute=5, max_images_per_1_minute=None
        ),
        lambda: governance.add_certificate(project_id, name="mtls"),
        lambda: governance.add_certificate(project_id),
        lambda: governance.set_certificate(
            project_id, governance.snapshot(project_id)["certificates"][0]["id"], active=False
        ),
        lambda: governance.remove_certificate(project_id, governance.snapshot(project_id)["certificates"][0]["id"]),
        lambda: governance.set_spend_limit(project_id, 10_000),
        lambda: governance.set_spend_limit(project_id, None),
        lambda: governance.set_model_permissions(project_id, "allow_list", ["gpt-4o"]),
        lambda: governance.set_hosted_tool(project_id, "web_search", False),
        lambda: governance.set_data_retention(project_id, "zero_data_retention"),
        lambda: governance.set_organization_spend_limit(500_000),
        lambda: governance.set_organization_spend_limit(None),
    ]
    for step in steps:
        step()
        clock.advance(60)
    organization.remove(organization.all()[-1]["id"])


# -- the contract ------------------------------------------------------------------------------------


def test_the_event_types_and_their_details_are_the_contracts():
    schemas = contract()["components"]["schemas"]
    assert EVENT_TYPES == tuple(schemas["AuditLogEventType"]["enum"])
    properties = schemas["AuditLog"]["properties"]
    detailed = {t: set(properties[t].get("properties", {})) for t in EVENT_TYPES if t in properties}
    assert DATA_TYPES == {t for t, fields in detailed.items() if "data" in fields}
    assert CHANGE_TYPES == {t for t, fields in detailed.items() if "changes_requested" in fields}
    path = contract()["paths"][PATH]["get"]
    assert {"effective_at", "event_types[]", "project_ids[]", "resource_ids[]", "actor_ids[]", "limit", "after"} <= {
        parameter["name"] for parameter in path["parameters"]
    }


def test_every_event_answers_as_the_spec_says(server, validate):
    organization = server.organization
    every_change(organization)
    for _ in range(40):
        organization.churn()
        organization.spend.clock.advance(30)
    events, pages = walk(server, PATH, limit=7)
    for page in pages:
        validate(page)
    types = Counter(event["type"] for event in events)
    assert {"login.succeeded", "login.failed", "invite.sent", "project.deleted", "organization.updated"} <= set(types)
    for event in events:
        actor = event["actor"]
        assert set(actor) == {"type", actor["type"]}
        if actor["type"] == "api_key":
            key = actor["api_key"]
            assert key["id"].startswith("key_") and set(key) == {"id", "type", key["type"]}
        else:
            assert set(actor["session"]) == {"user", "ip_address"} and actor["session"]["user"]["email"]
        if event["type"].startswith(("login.", "invite.", "organization.")):
            assert "project" not in event
        else:
            assert event["project"]["id"] and event["project"]["name"]


# -- order and paging --------------------------------------------------------------------------------


def test_paging_newest_first_covers_every_event_exactly_once(server):
    organization = server.organization
    clock = organization.spend.clock
    added = []
    for n in range(23):
        added.append(organization.governance.add_user(active(server)[n % 3])["id"])
        if n % 4 == 3:  # some share a second: the later recorded comes first
            clock.advance(1)
    events, pages = walk(server, PATH, limit=4)
    assert len(pages) == 6 and [len(page["data"]) for page in pages] == [4, 4, 4, 4, 4, 3]
    assert [page["has_more"] for page in pages] == [True] * 5 + [False]
    for page in pages:
        assert page["object"] == "list"
        assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])
    ids = [event["id"] for event in events]
    assert len(ids) == len(set(ids)) == 23
    assert events == organization.audit.events()
    assert [event["user.added"]["id"] for event in events] == added[::-1]
    times = [event["effective_at"] for event in events]
    assert times == sorted(times, reverse=True) and times[0] == NOW + 5 and times[-1] == NOW

    # Events recorded while a client pages are newer: they come before its cursor, not in its pages.
    first = get(server, limit=10).json()
    organization.governance.add_user(active(server)[0])
    rest, _ = walk(server, PATH, limit=10, after=first["last_id"])
    assert [e["id"] for e in first["data"] + rest] == ids


def test_a_clock_set_back_still_lists_by_time(server):
    organization = server.organization
    created = organization.governance.add_user(active(server)[0])
    organization.spend.clock.set(NOW - 3600)
    earlier = organization.governance.add_user(active(server)[0])
    events, _ = walk(server, PATH, limit=1)
    assert [e["user.added"]["id"] for e in events] == [created["id"], earlier["id"]]
    assert [e["effective_at"] for e in events] == [NOW, NOW - 3600]


def test_default_limit_and_before(server):
    organization = server.organization
    for _ in range(25):
        organization.governance.add_user(active(server)[0])
    events = organization.audit.events()
    page = get(server).json()
    assert len(page["data"]) == 20 and page["has_more"]
    # `before` gives the `limit` events just newer than the cursor, still newest first.
    before = get(server, limit=3, before=events[10]["id"]).json()
    assert [e["id"] for e in before["data"]] == [e["id"] for e in events[7:10]]
    assert before["has_more"]
    newest = get(server, limit=3, before=events[2]["id"]).json()
    assert [e["id"] for e in newest["data"]] == [e["id"] for e in events[:2]] and not newest["has_more"]


# -- filters -----------------------------------------------------------------------------------------


def test_effective_at_bounds(server):
    organization = server.organization
    for _ in range(10):
        organization.governance.add_user(active(server)[0])
        organization.spend.clock.advance(10)
    at = NOW + 40
    cases = {
        "gt": lambda t: t > at,
        "gte": lambda t: t >= at,
        "lt": lambda t: t < at,
        "lte": lambda t: t <= at,
    }
    everything = organization.audit.events()
    for bound, keep in cases.items():
        events, _ = walk(server, PATH, limit=2, **{f"effective_at[{bound}]": at})
        assert events == [e for e in everything if keep(e["effective_at"])], bound
    events, _ = walk(server, PATH, **{"effective_at[gte]": NOW + 20, "effective_at[lt]": NOW + 60})
    assert [e["effective_at"] for e in events] == [NOW + 50, NOW + 40, NOW + 30, NOW + 20]
    assert walk(server, PATH, **{"effective_at[gt]": NOW + 60, "effective_at[lt]": NOW + 20})[0] == []


@pytest.mark.parametrize("brackets", [True, False], ids=["brackets", "repeated"])
def test_each_array_filter(server, brackets):
    organization = server.organization
    every_change(organization)
    for _ in range(10):
        organization.churn()
    everything = organization.audit.events()

    def filtered(name: str, values: list[str]) -> list[dict]:
        events, _ = walk(server, PATH, limit=3, **{f"{name}[]" if brackets else name: values})
        assert events == [e for e in everything if facets(e, name) & set(values)], name
        return events

    assert {e["type"] for e in filtered("event_types", ["user.added", "api_key.deleted"])} == {
        "user.added",
        "api_key.deleted",
    }
    project_ids = active(server)[:2]
    assert {e["project"]["id"] for e in filtered("project_ids", project_ids)} <= set(project_ids)
    user_id = next(e["user.added"]["id"] for e in everything if e["type"] == "user.added")
    assert [e["type"] for e in filtered("resource_ids", [user_id])] == ["user.added"]
    sessions = [a for a in organization.audit.actors if a["type"] == "session"]
    keys = [a for a in organization.audit.actors if a["type"] == "api_key"]
    service_account = next(a["api_key"]["service_account"]["id"] for a in keys if "service_account" in a["api_key"])
    for actor_id in (sessions[0]["session"]["user"]["id"], keys[0]["api_key"]["id"], service_account):
        assert filtered("actor_ids", [actor_id])
    assert filtered("actor_emails", [sessions[1]["session"]["user"]["email"]])
    assert filtered("event_types", ["tunnel.created"]) == []


def test_filters_combine_and_page_with_a_cursor_they_exclude(server):
    organization = server.organization
    project_id = active(server)[0]
    for n in range(12):
        organization.governance.add_user(project_id)
        organization.governance.add_service_account(active(server)[1])
        organization.spend.clock.advance(n % 2)
    everything = organization.audit.events()
    wanted = [e for e in everything if e["type"] == "user.added" and e["project"]["id"] == project_id]
    params = {"event_types[]": ["user.added"], "project_ids[]": [project_id], "limit": 5}
    events, pages = walk(server, PATH, **params)
    assert events == wanted and len(pages) == 3
    # A cursor need not pass the filters: paging goes on from its place in the log.
    other = next(e for e in everything[5:] if e["type"] == "service_account.created")
    after, _ = walk(server, PATH, **params, after=other["id"])
    assert after == [e for e in wanted if everything.index(e) > everything.index(other)]


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "audit_log-nosuchevent"}, "after"),
        ({"before": "audit_log-nosuchevent"}, "before"),
        ({"event_types[]": ["project.created", "project.exploded"]}, "event_types"),
        ({"effective_at[gt]": "yesterday"}, "effective_at[gt]"),
    ],
)
def test_bad_requests_answer_400(server, params, param):
    server.organization.governance.add_user(active(server)[0])
    error = assert_error(get(server, **params), 400, param)
    assert error["type"] == "invalid_request_error"


def test_limit_bounds_are_inclusive(server):
    for _ in range(3):
        server.organization.governance.add_user(active(server)[0])
    assert len(get(server, limit=1).json()["data"]) == 1
    assert len(get(server, limit=100).json()["data"]) == 3


def test_disabled_audit_logging_answers_403_and_records_nothing(server, validate):
    organization = server.organization
    organization.audit.enabled = False
    organization.governance.add_user(active(server)[0])
    error = assert_error(get(server), 403)
    assert error == {"message": DISABLED, "type": "invalid_request_error", "param": None, "code": None}
    assert_error(get(server, limit=0), 403)  # refused before the query is read
    organization.audit.enabled = True
    assert get(server).json()["data"] == []
    organization.governance.add_user(active(server)[0])
    page = get(server).json()
    validate(page)
    assert [e["type"] for e in page["data"]] == ["user.added"]


def test_a_key_without_the_scope_gets_403_and_a_wrong_key_401(simulator):
    server = simulator(0)
    server.organization = SimulatedOrganization(3, seed=3, now=NOW, forbidden={"audit_logs"})
    error = assert_error(get(server), 403)
    assert "api.audit_logs.read" in error["message"]
    server.organization.forbidden = set()
    assert get(server).status_code == 200
    assert_error(get(server, key="sk-admin-wrong"), 401)


# -- what each change writes -------------------------------------------------------------------------


def _changes(org: SimulatedOrganization, pid: str) -> list[tuple]:
    """(the change, the event type, the resource id from the change's answer, the details beside the id)."""
    g = org.governance

    def quietly(change):  # a change the test needs first, which writes nothing
        with org.audit.silenced():
            return change()

    snapshot = g.snapshot(pid)
    user, account = snapshot["users"][0]["id"], snapshot["service_accounts"][0]["id"]
    key = snapshot["api_keys"][0]["id"]
    return [
        (
            lambda: org.update(pid, name="New Name"),
            "project.updated",
            pid,
            {"changes_requested": {"title": "New Name"}},
        ),
        (lambda: org.update(pid, external_key_id="ekm_x"), None, None, None),  # no rename: nothing to log
        (lambda: org.archive(pid), "project.archived", pid, {}),
        (lambda: org.unarchive(pid), "project.updated", pid, {"changes_requested": {"status": "active"}}),
        (lambda: g.add_api_key(pid)["id"], "api_key.created", "$", {"data": {"scopes": ["api.all"]}}),
        (lambda: g.use_api_key(pid, key), None, None, None),  # using a key is no admin change
        (lambda: g.remove_api_key(pid, key), "api_key.deleted", key, {}),
        (lambda: g.add_user(pid, role="owner")["id"], "user.added", "$", {"data": {"role": "owner"}}),
        (lambda: g.set_user_role(pid, user, "owner"), "user.updated", user, {"changes_requested": {"role": "owner"}}),
        (lambda: g.remove_user(pid, user), "user.deleted", user, {}),
        (lambda: g.add_service_account(pid)["id"], "service_account.created", "$", {"data": {"role": "member"}}),
        (
            lambda: g.set_service_account_role(pid, account, "owner"),
            "service_account.updated",
            account,
            {"changes_requested": {"role": "owner"}},
        ),
        (lambda: g.remove_service_account(pid, account), "service_account.deleted", account, {}),
        (
            lambda: g.set_rate_limit(pid, "o3", max_tokens_per_1_minute=9, max_requests_per_1_day=None),
            "rate_limit.updated",
            "rl-o3",
            {"changes_requested": {"max_tokens_per_1_minute": 9}},
        ),
        (lambda: g.add_certificate(pid, name="edge")["id"], "certificate.created", "$", {"name": "edge"}),
        (lambda: g.add_certificate(pid)["id"], "certificate.created", "$", {}),  # unnamed: no name
        (
            lambda: g.set_certificate(pid, quietly(lambda: g.add_certificate(pid, name="c"))["id"], active=False)["id"],
            "certificate.updated",
            "$",
            {"name": "c"},
        ),
        (
            lambda: g.remove_certificate(pid, quietly(lambda: g.add_certificate(pid, name="gone"))["id"]),
            "certificate.deleted",
            "$",
            {"name": "gone"},
        ),
        (
            lambda: g.set_spend_limit(pid, 2_500, "inactive"),
            "project.updated",
            pid,
            {"changes_requested": {"spend_limit": {"threshold_amount": 2_500, "enforcement": "inactive"}}},
        ),
        (lambda: g.set_spend_limit(pid, None), "project.updated", pid, {"changes_requested": {"spend_limit": None}}),
        (
            lambda: g.set_model_permissions(pid, "deny_list", ["o3"]),
            "project.updated",
            pid,
            {"changes_requested": {"model_permissions": {"mode": "deny_list", "model_ids": ["o3"]}}},
        ),
        (
            lambda: g.set_hosted_tool(pid, "mcp", False),
            "project.updated",
            pid,
            {"changes_requested": {"hosted_tool_permissions": {"mcp": {"enabled": False}}}},
        ),
        (
            lambda: g.set_data_retention(pid, "none"),
            "project.updated",
            pid,
            {"changes_requested": {"data_retention": {"type": "none"}}},
        ),
    ]


def test_each_change_writes_its_event_on_its_object_in_its_project(simulator):
    server = simulator(0)
    organization = SimulatedOrganization(4, seed=9, now=NOW, users_per_project=2, service_accounts_per_project=1)
    server.organization = organization
    pid = next(p["id"] for p in organization.all() if p["status"] == "active")
    for change, type_, resource_id, details in _changes(organization, pid):
        organization.spend.clock.advance(1)
        before = organization.audit.events()
        answer = change()
        after = organization.audit.events()
        written = after[: len(after) - len(before)]
        if type_ is None:
            assert written == [], change
            continue
        [event] = written
        resource_id = answer if resource_id == "$" else resource_id
        assert event["type"] == type_
        assert event[type_] == {"id": resource_id} | details, type_
        assert event["project"] == {"id": pid, "name": organization.get(pid)["name"]}
        assert event["effective_at"] == organization.spend.clock()
        assert get(server, **{"resource_ids[]": [resource_id], "limit": 1}).json()["data"] == [event]


def test_project_lifecycle_and_the_organization_spend_limit(server):
    organization = server.organization
    created = organization.create("Lifecycle")
    organization.remove(created["id"])
    organization.governance.set_organization_spend_limit(123_400, "inactive")
    limit, deleted, made = organization.audit.events()
    assert made["project.created"] == {"id": created["id"], "data": {"title": "Lifecycle"}}
    assert deleted["project.deleted"] == {"id": created["id"]}
    # Deleted while it had a name: the event keeps it.
    assert deleted["project"] == made["project"] == {"id": created["id"], "name": "Lifecycle"}
    assert "project" not in limit
    changes = {"spend_limit": {"threshold_amount": 123_400, "enforcement": "inactive"}}
    assert limit["organization.updated"] == {"id": organization.audit.organization_id, "changes_requested": changes}


def test_changes_over_http_write_events_too(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    with server.organization.audit.actor(session_user="user-http", email="http@example.com"):
        made = _http.post(server.base_url + "/organization/projects", json={"name": "Via HTTP"}, headers=headers)
        project_id = made.json()["id"]
        _http.post(f"{server.base_url}/organization/projects/{project_id}", json={"name": "Renamed"}, headers=headers)
        _http.post(f"{server.base_url}/organization/projects/{project_id}/archive", headers=headers)
    events, _ = walk(server, PATH, **{"project_ids[]": [project_id]})
    assert [e["type"] for e in events] == ["project.archived", "project.updated", "project.created"]
    assert {e["actor"]["session"]["user"]["id"] for e in events} == {"user-http"}  # the handler's threads too


# -- who acts, and changes that write nothing ---------------------------------------------------------


def test_actor_contexts_name_who_acts(server):
    audit, governance = server.organization.audit, server.organization.governance
    project_id = active(server)[0]
    with audit.actor(session_user="user-abc") as session:
        governance.add_user(project_id)
        with audit.actor(api_key="key_x", service_account="svc_y"):
            governance.add_user(project_id)
            with audit.actor(api_key="key_z", user="user-abc", email="abc@example.com"):
                governance.add_user(project_id)
        governance.add_user(project_id)
    governance.add_user(project_id)
    last, inner_again, by_user_key, by_account_key, first = (e["actor"] for e in audit.events())
    assert first == inner_again == session
    assert session == {
        "type": "session",
        "session": {"user": {"id": "user-abc", "email": "user-abc@example.com"}, "ip_address": "203.0.113.7"},
    }
    assert by_account_key == {
        "type": "api_key",
        "api_key": {"id": "key_x", "type": "service_account", "service_account": {"id": "svc_y"}},
    }
    assert by_user_key == {
        "type": "api_key",
        "api_key": {"id": "key_z", "type": "user", "user": {"id": "user-abc", "email": "abc@example.com"}},
    }
    assert last in audit.actors  # outside every context: one of the organization's own
    by_actor, _ = walk(server, PATH, **{"actor_ids[]": ["user-abc"]})
    assert len(by_actor) == 3  # two sessions and the user's key
    assert len(walk(server, PATH, **{"actor_ids[]": ["svc_y", "key_z"]})[0]) == 2


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"session_user": "u", "api_key": "k"},
        {"api_key": "k"},
        {"api_key": "k", "user": "u", "service_account": "s"},
    ],
)
def test_an_actor_must_be_one_thing(server, arguments):
    with pytest.raises(ValueError), server.organization.audit.actor(**arguments):
        pass


def test_silenced_changes_write_nothing(server):
    audit, governance = server.organization.audit, server.organization.governance
    project_id = active(server)[0]
    with audit.silenced():
        governance.add_user(project_id)
        with audit.silenced():
            server.organization.create("Quiet")
        governance.add_api_key(project_id)
    assert audit.events() == []
    governance.add_user(project_id)
    assert [e["type"] for e in audit.events()] == ["user.added"]
    with pytest.raises(ValueError, match="event type"):
        audit.record("project.exploded", project_id=None, resource_id=None)


# -- churn and retention -----------------------------------------------------------------------------


def test_churn_writes_the_events_of_its_changes_and_some_sign_ins(server):
    organization = server.organization
    for _ in range(60):
        organization.churn()
        organization.spend.clock.advance(15)
    events = organization.audit.events()
    types = Counter(e["type"] for e in events)
    assert types["project.created"] == 60  # each step makes one project
    assert types["login.succeeded"] > types["login.failed"] > 0 and types["invite.sent"] > 0
    assert {"api_key.created", "user.added", "project.archived"} <= set(types)
    for event in events:
        if event["type"].startswith("login."):
            assert event["actor"]["type"] == "session" and "project" not in event
        if event["type"] == "invite.sent":
            assert event["invite.sent"]["data"]["role"] in ("owner", "member")
    # The same seed gives the same log.
    again = SimulatedOrganization(12, seed=5, now=NOW)
    for _ in range(60):
        again.churn()
        again.spend.clock.advance(15)
    assert [e["id"] for e in again.audit.events()] == [e["id"] for e in events]


def test_the_log_keeps_the_newest_events_within_its_bound(server):
    audit, governance = server.organization.audit, server.organization.governance
    audit.retain = 5
    for _ in range(8):
        governance.add_user(active(server)[0])
        server.organization.spend.clock.advance(1)
    events, _ = walk(server, PATH, limit=2)
    assert len(events) == 5 and events[-1]["effective_at"] == NOW + 3


def test_the_audit_log_stands_alone():
    """Without an organization: its own lock, clock and projects."""
    import threading

    at = [NOW]
    audit = SimulatedAuditLog(threading.RLock(), lambda: at[0], {"proj_a": {"name": "A"}}.get, seed=1)
    audit.record("project.archived", project_id="proj_a", resource_id="proj_a")
    at[0] += 1
    audit.record("project.archived", project_id="proj_gone", resource_id="proj_gone")
    gone, kept = audit.events()
    assert kept["project"] == {"id": "proj_a", "name": "A"} and gone["project"] == {"id": "proj_gone"}
    assert audit.read({"limit": ["1"]})["data"] == [gone]


@pytest.mark.slow
def test_the_simulators_flag_disables_the_audit_log():
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", "--projects", "2", "--admin-key", KEY, "--audit-log-disabled"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert process.stdout is not None
        base_url = json.loads(process.stdout.readline())["base_url"]
        response = _http.get(base_url + PATH, headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 403 and response.json()["error"]["message"] == DISABLED
    finally:
        process.terminate()
        process.wait(timeout=10)
