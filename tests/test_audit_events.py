"""Audit events as the exporter parses them, against the vendored contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.audit.events import ALL_EVENT_TYPES, EVENT_TYPES, TENANT_EVENT_TYPES, Actor, parse_event
from exporter.collectors import COLLECTORS
from exporter.collectors.base import Invalid

CONTRACT = Path(__file__).parent / "contracts" / "openai-admin-governance-and-spend.openapi.yaml"


@pytest.fixture(scope="module")
def schemas() -> dict:
    return yaml.safe_load(CONTRACT.read_text())["components"]["schemas"]


def test_the_two_reads_ask_for_every_type_of_the_enum_the_tenant_scoped_ones_apart(schemas):
    enum = schemas["AuditLogEventType"]["enum"]
    tenant = {t for t in enum if t.startswith("tenant.")} | {"role.bound_to_resource", "role.unbound_from_resource"}
    assert list(EVENT_TYPES) == [t for t in enum if t not in tenant]
    assert list(TENANT_EVENT_TYPES) == [t for t in enum if t in tenant]
    assert sorted(ALL_EVENT_TYPES) == sorted(enum)


def test_every_type_a_collector_names_is_in_the_contract(schemas):
    enum = set(schemas["AuditLogEventType"]["enum"])
    named = {t for c in COLLECTORS for audited in c.audited_by.values() for t in audited.event_types}
    assert named and named <= enum and named <= set(EVENT_TYPES)
    # ... and every change a collector logs has its row, even when no event type can explain it.
    for collector in COLLECTORS:
        assert set(collector.audited_by) <= {f"{resource}_{change}" for resource, change in collector.changes}


def test_a_session_event_names_the_user_and_its_address():
    event = parse_event(
        {
            "id": "audit_log-1",
            "type": "api_key.created",
            "effective_at": 1720804090,
            "project": {"id": "proj_a", "name": "A"},
            "actor": {
                "type": "session",
                "session": {"user": {"id": "user-1", "email": "ann@example.com"}, "ip_address": "10.0.0.1"},
            },
            "api_key.created": {"id": "key_1", "data": {"scopes": ["api.model.read"]}},
            "a_field_of_tomorrow": {"nested": True},
        }
    )
    assert (event.type, event.project_id, event.resource_id) == ("api_key.created", "proj_a", "key_1")
    assert event.actor == Actor("session", "user-1", None, None, "ann@example.com", "10.0.0.1")
    assert event.actor.fields(event.effective_at, emails=False) == {
        "type": "session",
        "user_id": "user-1",
        "effective_at": 1720804090,
    }
    assert event.actor.fields(event.effective_at, emails=True)["ip_address"] == "10.0.0.1"


def test_an_api_key_event_names_the_key_and_its_service_account():
    event = parse_event(
        {
            "id": "audit_log-2",
            "type": "rate_limit.updated",
            "effective_at": 5,
            "actor": {
                "type": "api_key",
                "api_key": {"id": "key_t", "type": "service_account", "service_account": {"id": "svc_1"}},
            },
            "rate_limit.updated": {"id": "rl_1", "changes_requested": {"max_requests_per_1_minute": 10}},
        }
    )
    assert event.project_id is None and event.resource_id == "rl_1"
    assert event.actor.fields(5, emails=True) == {
        "type": "api_key",
        "service_account_id": "svc_1",
        "api_key_id": "key_t",
        "effective_at": 5,
    }


@pytest.mark.parametrize(
    "actor", [None, {}, {"type": "robot"}, {"type": "session"}, {"type": "session", "session": None}]
)
def test_an_absent_or_unknown_actor_is_no_actor_or_an_empty_one(actor):
    event = parse_event({"id": "e", "type": "login.failed", "effective_at": 1, "actor": actor})
    if actor and actor.get("type") == "session":
        assert event.actor == Actor("session", None, None, None, None, None)
    else:
        assert event.actor is None


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([], "not a JSON object"),
        ({"type": "login.failed", "effective_at": 1}, "`id`"),
        ({"id": "e", "effective_at": 1}, "`type`"),
        ({"id": "e", "type": "login.failed", "effective_at": "1"}, "`effective_at`"),
        ({"id": "e", "type": "login.failed", "effective_at": True}, "`effective_at`"),
        ({"id": "e", "type": "api_key.created", "effective_at": 1, "api_key.created": {"id": 7}}, "`id`"),
    ],
)
def test_a_required_field_missing_or_mistyped_is_one_line(item, message):
    with pytest.raises(Invalid, match=message.replace("[", r"\[")) as caught:
        parse_event(item)
    assert "\n" not in str(caught.value)
