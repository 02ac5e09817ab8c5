"""The official openai SDK reads the simulator's audit log as the simulator sends it.

The SDK is generated from OpenAI's own spec: if its auto-paging returns every event once, in the
log's order, and it parses every field of every event into a field it declares (the type's details,
the actor, the project) with the raw JSON's value, the simulator speaks the real contract. The one
allowance: the fields of `changes_requested` the simulator adds where the contract names none
(EXTRA_CHANGES), which the SDK keeps as extra fields. Its filters and errors go through as well,
and the exporter counts by type exactly the events the SDK lists.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from exporter.audit.events import ALL_EVENT_TYPES
from exporter.simulated_audit import DISABLED, EXTRA_CHANGES, facets
from tests.support.process import NO_DETAILS, upstream_args
from tests.support.sdk import sdk
from tests.support.upstream import start_simulator, stop_simulator
from tests.test_simulated_audit import NOW, every_change

PAGE = 4  # small, so that the log takes many pages


@pytest.fixture(scope="module")
def server():
    """An organization that made every change, and churned: every type the simulator writes."""
    server = start_simulator(12, seed=5, now=NOW)
    every_change(server.organization)
    for _ in range(30):
        server.organization.churn()
        server.organization.spend.clock.advance(20)
    yield server
    stop_simulator(server)


def assert_parsed(parsed: BaseModel, document: dict, where: str, extra: tuple[str, ...] = ()) -> None:
    """Each field of `document` is a field the SDK's model declares, parsed to the same value (or, if
    named in `extra`, kept as an extra field); every field the model requires is in the document."""
    fields = type(parsed).model_fields
    attributes = {field.alias or name: name for name, field in fields.items()}  # "project.created" is project_created
    for name, value in document.items():
        if name not in attributes:
            assert name in extra, f"the SDK's {type(parsed).__name__} has no field {where}.{name}"
            assert (parsed.model_extra or {})[name] == value
            continue
        attribute = getattr(parsed, attributes[name])
        if isinstance(attribute, BaseModel):
            assert_parsed(attribute, value, f"{where}.{name}", extra_fields(where, name))
        else:
            assert attribute == value, f"{where}.{name}"
    missing = [name for name, attr in attributes.items() if fields[attr].is_required() and name not in document]
    assert not missing, f"{where} lacks the required {missing}"


def extra_fields(where: str, name: str) -> tuple[str, ...]:
    """The fields beyond the contract the `changes_requested` of an event's details may carry."""
    if name != "changes_requested":
        return ()
    return next((fields for type_, fields in EXTRA_CHANGES.items() if where.endswith(f".{type_}")), ())


def test_auto_paging_returns_every_event_once_parsed(server):
    client = sdk(server)
    raw = server.organization.audit.events()
    parsed = list(client.admin.organization.audit_logs.list(limit=PAGE))
    assert [event.id for event in parsed] == [event["id"] for event in raw]
    assert len({event.id for event in parsed}) == len(raw) > 10 * PAGE
    for model, document in zip(parsed, raw, strict=True):
        assert_parsed(model, document, f"event {document['type']}")
        assert model.to_dict() == document  # nothing added, nothing dropped
        assert model.type == document["type"]
        assert model.actor is not None and model.actor.type == document["actor"]["type"]
        if model.actor.type == "session":
            assert model.actor.session is not None and model.actor.session.user is not None
            assert model.actor.session.user.id == document["actor"]["session"]["user"]["id"]
        else:
            assert model.actor.api_key is not None and model.actor.api_key.id == document["actor"]["api_key"]["id"]
        if "project" in document:
            assert model.project is not None and model.project.id == document["project"]["id"]
            assert model.project.name == document["project"]["name"]
        else:
            assert model.project is None
    # Every type the simulator writes came through: the changes, the sign-ins, the invitations.
    written = {event.type for event in parsed}
    assert {"project.created", "project.updated", "project.archived", "project.deleted"} <= written
    assert {"api_key.created", "api_key.deleted", "user.added", "user.updated", "user.deleted"} <= written
    assert {"service_account.created", "service_account.updated", "service_account.deleted"} <= written
    assert {"rate_limit.updated", "certificate.created", "certificate.updated", "certificate.deleted"} <= written
    assert {"organization.updated", "login.succeeded", "login.failed", "invite.sent"} <= written


def test_one_page_as_the_sdk_sees_it(server):
    page = sdk(server).admin.organization.audit_logs.list(limit=PAGE)
    raw = server.organization.audit.events()
    assert [event.id for event in page.data] == [event["id"] for event in raw[:PAGE]]
    assert page.has_more and page.last_id == raw[PAGE - 1]["id"] and page.has_next_page()
    assert [event.id for event in page.get_next_page().data] == [event["id"] for event in raw[PAGE : 2 * PAGE]]


def test_the_sdks_filters_reach_the_simulator(server):
    client, raw = sdk(server), server.organization.audit.events()
    audit_logs = client.admin.organization.audit_logs

    def expect(name: str, values: list[str], **filters: Any) -> None:
        got = [event.id for event in audit_logs.list(limit=PAGE, **filters)]
        assert got == [event["id"] for event in raw if facets(event, name) & set(values)], filters
        assert got, filters

    expect("event_types", ["user.added", "login.failed"], event_types=["user.added", "login.failed"])
    project_id = next(event["project"]["id"] for event in raw if "project" in event)
    expect("project_ids", [project_id], project_ids=[project_id])
    resource_id = next(event["api_key.created"]["id"] for event in raw if event["type"] == "api_key.created")
    expect("resource_ids", [resource_id], resource_ids=[resource_id])
    actor = server.organization.audit.actors[-1]["api_key"]
    expect("actor_ids", [actor["id"]], actor_ids=[actor["id"]])
    email = server.organization.audit.actors[0]["session"]["user"]["email"]
    expect("actor_emails", [email], actor_emails=[email])

    low, high = raw[-1]["effective_at"] + 60, raw[0]["effective_at"] - 60
    got = [event.id for event in audit_logs.list(limit=PAGE, effective_at={"gte": low, "lt": high})]
    assert got == [event["id"] for event in raw if low <= event["effective_at"] < high] and got


def test_the_sdk_raises_the_simulators_errors(simulator):
    server = simulator(2, seed=3, now=NOW)
    audit_logs = sdk(server).admin.organization.audit_logs
    with pytest.raises(openai.BadRequestError):
        audit_logs.list(limit=0)
    with pytest.raises(openai.BadRequestError):
        audit_logs.list(after="audit_log-nosuchevent")
    server.organization.audit.enabled = False
    with pytest.raises(openai.PermissionDeniedError) as raised:
        audit_logs.list()
    assert raised.value.status_code == 403 and DISABLED in str(raised.value)


@pytest.mark.slow
def test_the_exporter_counts_by_type_what_the_sdk_lists(simulator, start_exporter):
    server = simulator(8, seed=9)
    process = start_exporter(
        *upstream_args(server, *NO_DETAILS, "--no-collector.costs", "--no-collector.usage"), wait="ready"
    )
    first = process.wait_metric(
        lambda m: m.get("openai_audit_last_event_timestamp_seconds") is not None, what="a first read"
    )
    start = int(first.get("openai_audit_last_event_timestamp_seconds"))  # history before it is not counted
    for _ in range(25):
        server.organization.churn()
    for key in ("key_tenant_a", "key_tenant_b"):  # listed only to a read of the tenant's events
        server.organization.audit.record("tenant.admin_api_key.created", project_id=None, resource_id=key)
    listed = Counter(e.type for e in sdk(server).admin.organization.audit_logs.list(effective_at={"gte": start}))
    assert sum(listed.values()) > 25

    def counted(metrics) -> dict[str, float]:
        return {t: v for t in ALL_EVENT_TYPES if (v := metrics.get("openai_audit_events_total", type=t))}

    metrics = process.wait_metric(lambda m: sum(counted(m).values()) >= sum(listed.values()), what="every event")
    assert counted(metrics) == dict(listed)
