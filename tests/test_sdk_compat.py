"""The simulated organization speaks the real protocol: the official openai SDK agrees with it.

If the SDK, which OpenAI generates from its own OpenAPI spec, reads the same projects from
the simulator as the exporter does, the fake cannot have drifted into a private dialect.
"""

from __future__ import annotations

import math

import openai
import pytest

from tests.support.sdk import sdk
from tests.support.upstream import fetch, list_requests


def fields(project) -> tuple:
    if isinstance(project, dict):
        get = project.get
    else:

        def get(name):
            return getattr(project, name, None)

    return (
        get("id"),
        get("name"),
        get("status"),
        get("created_at"),
        get("archived_at"),
        get("external_key_id"),
        get("residency"),
    )


@pytest.fixture
def organization(simulator):
    return simulator(250, seed=23)


def test_sdk_and_exporter_list_the_same_projects(organization, make_client):
    with sdk(organization) as client:
        by_sdk = list(client.admin.organization.projects.list(include_archived=True, limit=100))
    sdk_cursors = [r.query.get("after") for r in list_requests(organization)]
    organization.requests.clear()
    by_exporter = fetch(make_client(organization.base_url)).projects
    exporter_cursors = [r.query.get("after") for r in list_requests(organization)]

    assert len(by_sdk) == 250
    assert any(p.status == "archived" for p in by_sdk)
    assert [fields(p) for p in by_sdk] == [fields(p._asdict()) for p in by_exporter]
    assert [fields(p) for p in by_sdk] == [fields(p) for p in organization.organization.all()]
    # Both follow `last_id` the same way, page for page.
    assert sdk_cursors == exporter_cursors and len(sdk_cursors) == 3


def test_sdk_defaults_leave_archived_projects_out(organization):
    with sdk(organization) as client:
        listed = list(client.admin.organization.projects.list())
    active = organization.organization.all(include_archived=False)
    assert [p.id for p in listed] == [p["id"] for p in active]
    assert all(p.status == "active" for p in listed)
    requests = list_requests(organization)
    assert len(requests) == math.ceil(len(active) / 20)  # the documented default page size
    assert all("limit" not in r.query and "include_archived" not in r.query for r in requests)


def test_sdk_reads_the_error_shape(organization):
    with sdk(organization, key="sk-admin-not-this-one") as client:
        with pytest.raises(openai.AuthenticationError) as denied:
            client.admin.organization.projects.list(include_archived=True)
    assert denied.value.status_code == 401
    assert denied.value.code == "invalid_api_key"
    assert denied.value.request_id and denied.value.request_id.startswith("req_")

    with sdk(organization) as client:
        with pytest.raises(openai.BadRequestError) as bad_limit:
            client.admin.organization.projects.list(limit=101)
        with pytest.raises(openai.BadRequestError) as bad_cursor:
            client.admin.organization.projects.list(after="proj_does_not_exist")
        with pytest.raises(openai.NotFoundError):
            client.admin.organization.projects.retrieve("proj_does_not_exist")
    assert bad_limit.value.param == "limit"
    assert bad_cursor.value.param == "after"


def test_sdk_writes_are_what_the_exporter_reads_next(organization, make_client):
    client = make_client(organization.base_url)
    with sdk(organization) as api:
        created = api.admin.organization.projects.create(name="Made by the SDK", residency="EU_STORAGE_PROCESSING")
        target = next(p for p in fetch(client).projects if p.status == "active")
        renamed = api.admin.organization.projects.update(target.id, name="Renamed by the SDK")
        archived = api.admin.organization.projects.archive(created.id)
        retrieved = api.admin.organization.projects.retrieve(created.id)

    assert (renamed.id, renamed.name) == (target.id, "Renamed by the SDK")
    assert (archived.status, retrieved.status) == ("archived", "archived")
    assert archived.archived_at is not None
    seen = {p.id: p for p in fetch(client).projects}
    assert seen[target.id].name == "Renamed by the SDK"
    assert fields(seen[created.id]._asdict()) == fields(retrieved)
    assert seen[created.id].residency == "EU_STORAGE_PROCESSING"


@pytest.mark.slow
def test_sdk_and_the_exporter_process_agree(organization, start_exporter):
    process = start_exporter("--api.base-url", organization.base_url, "--poll.interval", "1h")
    process.wait_ready()
    info = process.metrics().by_label("openai_project_info", "project_id")
    created = process.metrics().values_by_label("openai_project_created_timestamp_seconds", "project_id")

    with sdk(organization) as client:
        by_sdk = list(client.admin.organization.projects.list(include_archived=True, limit=100))

    assert {p.id: (p.name, p.status) for p in by_sdk} == {
        pid: (labels["name"], labels["status"]) for pid, labels in info.items()
    }
    assert {p.id: p.created_at for p in by_sdk} == created
    assert {p.id: (p.external_key_id or "", p.residency or "") for p in by_sdk} == {
        pid: (labels["external_key_id"], labels["residency"]) for pid, labels in info.items()
    }
