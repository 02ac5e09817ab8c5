"""Which audit event names the actor of a change: by type and resource, within the retention."""

from __future__ import annotations

from exporter.audit.attribution import MAX_EVENTS, PROJECT_CHANGES, Attribution
from exporter.audit.events import Actor, Event
from exporter.collectors import BY_NAME
from exporter.simulated_spend import Clock as ManualClock

ANN = Actor("session", "user-ann", None, None, "ann@example.com", "10.0.0.1")
BOT = Actor("api_key", None, "svc_bot", "key_track", None, None)


def event(
    type_: str, resource: str | None, at: int, actor: Actor | None = ANN, project: str | None = "proj_a"
) -> Event:
    return Event(f"audit_log-{type_}-{resource}-{at}", type_, at, project, resource, actor)


def test_a_key_created_is_attributed_to_the_newest_matching_event():
    clock = ManualClock(1000.0)
    attribution = Attribution(retention=600, emails=False, clock=clock)
    audited = BY_NAME["api-keys"].audited_by["api_key_created"]
    attribution.add([event("api_key.created", "key_1", 900, ANN), event("api_key.created", "key_1", 950, BOT)])
    actor = attribution.actor(audited, {"project_id": "proj_a", "api_key_id": "key_1"})
    assert actor == {"type": "api_key", "service_account_id": "svc_bot", "api_key_id": "key_track", "effective_at": 950}
    # Another key, another type on the same key: no actor.
    assert attribution.actor(audited, {"project_id": "proj_a", "api_key_id": "key_2"}) is None
    removed = BY_NAME["api-keys"].audited_by["api_key_removed"]
    assert attribution.actor(removed, {"project_id": "proj_a", "api_key_id": "key_1"}) is None


def test_a_user_is_attributed_only_in_the_project_the_event_names():
    attribution = Attribution(retention=600, emails=True, clock=ManualClock(1000.0))
    attribution.add([event("user.added", "user-zed", 990, ANN, project="proj_b")])
    audited = BY_NAME["users"].audited_by["project_user_added"]
    assert attribution.actor(audited, {"project_id": "proj_a", "user_id": "user-zed"}) is None
    actor = attribution.actor(audited, {"project_id": "proj_b", "user_id": "user-zed"})
    assert actor is not None and actor["email"] == "ann@example.com" and actor["ip_address"] == "10.0.0.1"


def test_project_changes_match_on_the_project_whatever_project_the_event_is_filed_under():
    # Admin API key actions are filed under the default project: the resource id decides.
    attribution = Attribution(retention=600, emails=False, clock=ManualClock(1000.0))
    attribution.add([event("project.archived", "proj_x", 999, BOT, project="proj_default")])
    fields = {"project_id": "proj_x", "name": "X"}
    assert attribution.actor(PROJECT_CHANGES["project_archived"], fields)["api_key_id"] == "key_track"
    assert attribution.actor(PROJECT_CHANGES["project_renamed"], fields) is None


def test_events_older_than_the_retention_are_forgotten_and_the_index_is_bounded():
    clock = ManualClock(1000.0)
    attribution = Attribution(retention=100, emails=False, clock=clock)
    attribution.add([event("project.created", "proj_old", 950)])
    audited = PROJECT_CHANGES["project_created"]
    assert attribution.actor(audited, {"project_id": "proj_old"}) is not None
    clock.advance(60)
    attribution.add([])
    assert attribution.actor(audited, {"project_id": "proj_old"}) is None
    attribution.add(event("login.failed", f"user-{n}", 1060) for n in range(MAX_EVENTS + 10))
    assert len(attribution._order) == MAX_EVENTS


def test_no_actor_and_no_target_are_not_kept():
    attribution = Attribution(retention=600, emails=False, clock=ManualClock(1000.0))
    attribution.add(
        [event("project.created", "proj_a", 999, actor=None), event("login.failed", None, 999, project=None)]
    )
    assert attribution.actor(PROJECT_CHANGES["project_created"], {"project_id": "proj_a"}) is None
    assert attribution._order == type(attribution._order)()
