"""The official openai SDK reads the simulator's governance endpoints as the simulator sends them.

The SDK is generated from OpenAI's own spec: if it pages through the simulator's lists and parses
every field of every item into a field it declares, with the same value as the raw JSON pages,
the simulator speaks the real contract rather than a dialect of its own.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from pydantic import BaseModel

from exporter.simulator import SimulatedOrganization
from tests.support.details import samples
from tests.support.keys import KEY
from tests.support.sdk import sdk

NOW = 1_750_000_000
PAGE = 2  # small, so that every list takes several pages


def raw_pages(server, path: str, **params) -> list[dict]:
    """The simulator's JSON pages of a list, following `last_id` as a client would."""
    pages = []
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {KEY}"}) as http:
        while not pages or pages[-1]["has_more"]:
            if pages:
                params["after"] = pages[-1]["last_id"]
            response = http.get(server.base_url + path, params=params)
            assert response.status_code == 200, response.text
            pages.append(response.json())
    return pages


def raw(server, path: str) -> dict:
    response = httpx.get(server.base_url + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def assert_parsed(parsed: BaseModel, document: dict, where: str = "") -> None:
    """Each field of `document` is a field the SDK's model declares, parsed to the same value; and
    every field the model requires is in the document."""
    fields = type(parsed).model_fields
    attributes = {field.alias or name: name for name, field in fields.items()}  # model_ids is api_model_ids
    for name, value in document.items():
        assert name in attributes, f"the SDK's {type(parsed).__name__} has no field {where}.{name}"
        if isinstance(value, dict):
            assert_parsed(getattr(parsed, attributes[name]), value, f"{where}.{name}")
        else:
            assert getattr(parsed, attributes[name]) == value, f"{where}.{name}"
    missing = [
        name for name, attribute in attributes.items() if fields[attribute].is_required() and name not in document
    ]
    assert not missing, f"{where} lacks the required {missing}"
    assert parsed.to_dict() == document  # nothing added, nothing dropped


@pytest.fixture
def server(simulator):
    server = simulator(0)
    server.organization = SimulatedOrganization(
        6, seed=13, now=NOW, users_per_project=7, service_accounts_per_project=5, keys_per_project=10
    )
    project_id = server.organization.all()[0]["id"]
    governance = server.organization.governance
    for n in range(5):
        governance.add_certificate(project_id, name=None if n == 1 else f"cert {n}", active=n != 2)
    for model in ("ft:gpt-4o-mini:acme", "gpt-image-1", "o4-mini", "computer-use-preview"):
        governance.set_rate_limit(project_id, model, max_requests_per_1_minute=50)
    governance.remove_user(project_id, governance.snapshot(project_id)["users"][0]["id"])  # some keys turn inactive
    server.project_id = project_id
    return server


# (the SDK's list method, the path under the project, the query both use)
LISTS = [
    ("users", "users", {}),
    ("service_accounts", "service_accounts", {}),
    ("api_keys", "api_keys", {"owner_project_access": "any"}),
    ("api_keys", "api_keys", {}),
    # The SDK names this method `list_rate_limits`, not `list`.
    ("rate_limits", "rate_limits", {}),
    ("certificates", "certificates", {"order": "asc"}),
    ("certificates", "certificates", {}),
]


@pytest.mark.parametrize(("resource", "path", "query"), LISTS, ids=[f"{p}{sorted(q.items())}" for _, p, q in LISTS])
def test_sdk_pages_through_each_list_and_parses_every_field(server, resource, path, query):
    pages = raw_pages(server, f"/organization/projects/{server.project_id}/{path}", limit=PAGE, **query)
    assert len(pages) >= 3
    expected = [item for page in pages for item in page["data"]]
    server.requests.clear()

    with sdk(server) as client:
        resources = getattr(client.admin.organization.projects, resource)
        listing = resources.list_rate_limits if resource == "rate_limits" else resources.list
        parsed = list(listing(server.project_id, limit=PAGE, **query))

    assert [item.id for item in parsed] == [item["id"] for item in expected]
    for item, document in zip(parsed, expected, strict=True):
        assert_parsed(item, document, f"{path}[{document['id']}]")
    # The SDK followed `last_id` exactly as the raw walk did.
    cursors = [request.query.get("after") for request in server.requests]
    assert cursors == [None] + [page["last_id"] for page in pages[:-1]]


def test_sdk_reads_api_key_owners_of_both_kinds(server):
    with sdk(server) as client:
        keys = list(client.admin.organization.projects.api_keys.list(server.project_id, owner_project_access="any"))
    assert {key.owner.type for key in keys} == {"user", "service_account"}
    assert {key.owner_project_access for key in keys} == {"active", "inactive"}
    for key in keys:
        owner = key.owner.user if key.owner.type == "user" else key.owner.service_account
        assert owner is not None and owner.id and owner.role
        assert (key.owner.user is None) == (key.owner.type == "service_account")


@pytest.mark.parametrize("resource", ["spend_limit", "model_permissions", "hosted_tool_permissions", "data_retention"])
def test_sdk_retrieves_each_project_object(server, resource):
    governance = server.organization.governance
    governance.set_spend_limit(server.project_id, 31_400, "inactive")
    document = raw(server, f"/organization/projects/{server.project_id}/{resource}")
    with sdk(server) as client:
        parsed = getattr(client.admin.organization.projects, resource).retrieve(server.project_id)
    assert_parsed(parsed, document, resource)


def test_sdk_retrieves_the_organization_spend_limit(server):
    server.organization.governance.set_organization_spend_limit(1_234_500)
    document = raw(server, "/organization/spend_limit")
    with sdk(server) as client:
        parsed = client.admin.organization.spend_limit.retrieve()
    assert_parsed(parsed, document, "spend_limit")
    assert (parsed.threshold_amount, parsed.enforcement.status) == (1_234_500, "enforcing")


def test_a_missing_spend_limit_raises_not_found(server):
    server.organization.governance.set_spend_limit(server.project_id, None)
    with sdk(server) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.admin.organization.projects.spend_limit.retrieve(server.project_id)
        with pytest.raises(openai.NotFoundError):
            client.admin.organization.projects.users.list("proj_does_not_exist")
    assert missing.value.status_code == 404
    assert missing.value.request_id and missing.value.request_id.startswith("req_")


def test_a_key_without_the_scope_raises_permission_denied(server):
    server.organization.forbidden = {"rate_limits", "organization_spend_limit"}
    with sdk(server) as client:
        with pytest.raises(openai.PermissionDeniedError):
            client.admin.organization.projects.rate_limits.list_rate_limits(server.project_id)
        with pytest.raises(openai.PermissionDeniedError):
            client.admin.organization.spend_limit.retrieve()
        assert list(client.admin.organization.projects.users.list(server.project_id))


def test_sdk_reads_bad_paging_parameters_as_bad_requests(server):
    with sdk(server) as client:
        with pytest.raises(openai.BadRequestError) as bad_limit:
            client.admin.organization.projects.api_keys.list(server.project_id, limit=101)
        with pytest.raises(openai.BadRequestError) as bad_cursor:
            client.admin.organization.projects.certificates.list(server.project_id, after="cert_missing")
    assert (bad_limit.value.param, bad_cursor.value.param) == ("limit", "after")


# -- what the SDK reads is what the exporter publishes ---------------------------------------------


def test_the_sdk_and_the_exporter_see_the_same_governance(harness):
    h = harness(15, seed=31).start()
    families = h.families()
    keys = samples(families, "openai_project_api_key_info")
    users = samples(families, "openai_project_users")
    accounts = samples(families, "openai_project_service_accounts")
    limits = samples(families, "openai_project_spend_limit")
    with sdk(h.server) as client:
        projects = client.admin.organization.projects
        for project_id in h.active():
            by_sdk = list(projects.api_keys.list(project_id, owner_project_access="any", limit=PAGE))
            exported = {
                (labels["api_key_id"], labels["owner_type"], labels["owner_id"], labels["name"])
                for labels in (dict(k) for k in keys)
                if labels["project_id"] == project_id
            }
            owner = [getattr(k.owner, k.owner.type) for k in by_sdk]
            assert exported == {(k.id, k.owner.type, o.id, k.name) for k, o in zip(by_sdk, owner, strict=True)}
            members = list(projects.users.list(project_id, limit=PAGE))
            for role in ("owner", "member"):
                count = sum(1 for m in members if m.role == role)
                assert users[(("project_id", project_id), ("role", role))] == count
            service_accounts = list(projects.service_accounts.list(project_id, limit=PAGE))
            for role in ("owner", "member", "none"):
                count = sum(1 for a in service_accounts if a.role == role)
                assert accounts[(("project_id", project_id), ("role", role))] == count
            try:
                limit = projects.spend_limit.retrieve(project_id)
            except openai.NotFoundError:
                assert not [k for k in limits if dict(k)["project_id"] == project_id]
            else:
                labels = (("currency", limit.currency), ("interval", limit.interval), ("project_id", project_id))
                assert limits[labels] == limit.threshold_amount / 100
