"""The simulated organization's governance endpoints, over real HTTP, against the upstream contract.

Every answer is checked against the schema openai-admin-governance-and-spend.openapi.yaml gives
its path, closed (no field the spec does not name), so the simulator cannot drift into fields of
its own; the rest checks paging, errors, the fault and scope hooks, the data's variety and
determinism, changes made by tests and by churn.
"""

from __future__ import annotations

import re
import threading

import httpx
import jsonschema
import pytest

from exporter.simulated_governance import LIST_DEFAULT_LIMITS, PROJECT_RESOURCES, RESOURCES, SINGLE_RESOURCES
from exporter.simulator import Response, SimulatedOrganization, error_body, start_churn
from tests.support.governance import closed_components, contract
from tests.support.keys import KEY
from tests.support.listing import assert_error, walk
from tests.support.waiting import wait_for

NOW = 1_750_000_000  # the organization's present, so that every run generates the same data
DAY = 86_400


@pytest.fixture(scope="module")
def spec():
    return contract()


@pytest.fixture(scope="module")
def validate(spec):
    """validate(document, path, status): the document matches the spec's schema for that GET answer."""
    components = closed_components()

    def check(document, path: str, status: int = 200) -> None:
        if status == 200:
            content = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
            reference = content["schema"]["$ref"]
        else:
            reference = "#/components/schemas/ErrorResponse"
        jsonschema.Draft202012Validator({"$ref": reference, "components": components}).validate(document)

    return check


_http = httpx.Client(timeout=10)  # one pool for the module: a client per request costs more than the request


@pytest.fixture(scope="module", autouse=True)
def _close_http():
    yield
    _http.close()


def get(server, path: str, key: str = KEY, **params) -> httpx.Response:
    return _http.get(server.base_url + path, params=params, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def organization(simulator):
    """A server over an organization of 60 projects with the default variety (archived ones included)."""
    return simulator(60, seed=11, now=NOW)


@pytest.fixture
def fixed(simulator):
    """A server whose organization has fixed counts, enough for several pages of each list."""
    server = simulator(0)
    server.organization = SimulatedOrganization(
        8, seed=5, now=NOW, users_per_project=7, service_accounts_per_project=5, keys_per_project=11
    )
    return server


def first_project(server, status: str = "active") -> str:
    return next(p["id"] for p in server.organization.all() if p["status"] == status)


# -- the shapes of the contract ------------------------------------------------------------------------


@pytest.mark.parametrize("resource", PROJECT_RESOURCES)
def test_each_project_endpoint_answers_as_the_spec_says(organization, validate, resource):
    spec_path = f"/organization/projects/{{project_id}}/{resource}"
    statuses = set()
    for project in organization.organization.all()[:25]:
        response = get(organization, f"/organization/projects/{project['id']}/{resource}")
        assert response.headers["x-request-id"].startswith("req_")
        assert response.headers["content-type"] == "application/json"
        statuses.add(response.status_code)
        validate(response.json(), spec_path, response.status_code)
        if resource in LIST_DEFAULT_LIMITS:
            document = response.json()
            assert document["object"] == "list" and len(document["data"]) <= LIST_DEFAULT_LIMITS[resource]
    # Only a project without a spend limit answers 404.
    assert statuses == ({200, 404} if resource == "spend_limit" else {200})


def test_organization_spend_limit_answers_as_the_spec_says(organization, validate):
    response = get(organization, "/organization/spend_limit")
    assert response.status_code == 200
    validate(response.json(), "/organization/spend_limit")
    assert response.json()["object"] == "organization.spend_limit"
    assert response.json()["currency"] == "USD" and response.json()["interval"] == "month"


def test_api_key_owners_are_the_projects_members(organization):
    for project in organization.organization.all()[:25]:
        base = f"/organization/projects/{project['id']}"
        keys, _ = walk(organization, f"{base}/api_keys", owner_project_access="any")
        users = {u["id"]: u for u in walk(organization, f"{base}/users")[0]}
        accounts = {a["id"]: a for a in walk(organization, f"{base}/service_accounts")[0]}
        for key in keys:
            owner = key["owner"][key["owner"]["type"]]
            assert set(key["owner"]) == {"type", key["owner"]["type"]}
            members = users if key["owner"]["type"] == "user" else accounts
            if key["owner_project_access"] == "active":
                assert members[owner["id"]]["role"] == owner["role"] != "none"
                assert owner["name"] == members[owner["id"]]["name"]
            if key["owner"]["type"] == "user":
                assert owner["email"].endswith("@example.com")
            assert re.fullmatch(r"sk-proj-[A-Za-z0-9]{3}\.\.\.[A-Za-z0-9]{3}", key["redacted_value"])


# -- paging and errors ---------------------------------------------------------------------------------


def test_every_list_pages_with_after_across_several_pages(fixed):
    project_id = first_project(fixed)
    governance = fixed.organization.governance
    for n in range(5):
        governance.add_certificate(project_id, name=f"cert {n}")
    for n in range(9):
        governance.set_rate_limit(project_id, f"model-{n}", max_requests_per_1_minute=100 + n)
    whole = governance.snapshot(project_id)
    for resource in LIST_DEFAULT_LIMITS:
        path = f"/organization/projects/{project_id}/{resource}"
        query = {"owner_project_access": "any", "order": "asc"}
        items, pages = walk(fixed, path, limit=2, **query)
        assert items == whole[resource]
        assert len(pages) == (len(items) + 1) // 2 >= 3
        assert [p["has_more"] for p in pages] == [True] * (len(pages) - 1) + [False]
        for page in pages:
            assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])
        # An `after` in the middle of a page starts right after that item.
        second = get(fixed, path, limit=100, after=items[2]["id"], **query).json()
        assert second["data"] == items[3:] and second["has_more"] is False


def test_default_page_sizes(fixed):
    project_id = first_project(fixed)
    governance = fixed.organization.governance
    for n in range(20):
        governance.add_user(project_id)
        governance.set_rate_limit(project_id, f"model-{n}", max_requests_per_1_minute=100)
    users = get(fixed, f"/organization/projects/{project_id}/users").json()
    assert len(users["data"]) == 20 and users["has_more"] is True
    limits = get(fixed, f"/organization/projects/{project_id}/rate_limits").json()
    assert len(limits["data"]) == len(governance.snapshot(project_id)["rate_limits"]) > 20
    assert limits["has_more"] is False


@pytest.mark.parametrize("resource", list(LIST_DEFAULT_LIMITS))
def test_limit_bounds_and_unknown_cursor(organization, validate, resource):
    path = f"/organization/projects/{first_project(organization)}/{resource}"
    for limit in ("0", "101", "-1", "ten"):
        validate(get(organization, path, limit=limit).json(), path, 400)
        assert_error(get(organization, path, limit=limit), 400, "limit")
    assert get(organization, path, limit=1).status_code == 200
    assert get(organization, path, limit=100).status_code == 200
    assert_error(get(organization, path, after="nope_does_not_exist"), 400, "after")


@pytest.mark.parametrize("resource", PROJECT_RESOURCES)
def test_unknown_project_is_a_404(organization, resource):
    error = assert_error(get(organization, f"/organization/projects/proj_does_not_exist/{resource}"), 404)
    assert error["type"] == "invalid_request_error" and error["param"] == "project_id"


def test_query_parameters_outside_their_enums_are_refused(organization):
    base = f"/organization/projects/{first_project(organization)}"
    assert_error(get(organization, f"{base}/api_keys", owner_project_access="some"), 400, "owner_project_access")
    assert_error(get(organization, f"{base}/certificates", order="up"), 400, "order")


def test_a_missing_spend_limit_is_a_404_until_one_is_set(organization, validate):
    governance = organization.organization.governance
    project_id = next(
        p["id"] for p in organization.organization.all() if governance.snapshot(p["id"])["spend_limit"] is None
    )
    path = f"/organization/projects/{project_id}/spend_limit"
    response = get(organization, path)
    validate(response.json(), "/organization/projects/{project_id}/spend_limit", 404)
    assert_error(response, 404)

    assert governance.set_spend_limit(project_id, 12_345, "inactive") == get(organization, path).json()
    assert get(organization, path).json()["enforcement"] == {"status": "inactive"}
    assert governance.set_spend_limit(project_id, None) is None
    assert_error(get(organization, path), 404)


def test_a_key_without_the_scope_gets_403(simulator):
    server = simulator(0)
    server.organization = SimulatedOrganization(5, seed=3, now=NOW, forbidden={"rate_limits"})
    base = f"/organization/projects/{first_project(server)}"
    error = assert_error(get(server, f"{base}/rate_limits"), 403)
    assert error["type"] == "invalid_request_error" and "access" in error["message"]
    assert get(server, f"{base}/users").status_code == 200
    # Refused before the project is looked up, as a missing scope is.
    assert_error(get(server, "/organization/projects/proj_missing/rate_limits"), 403)

    server.organization.forbidden = {"organization_spend_limit", "spend_limit"}  # at run time
    assert_error(get(server, "/organization/spend_limit"), 403)
    assert_error(get(server, f"{base}/spend_limit"), 403)
    assert get(server, f"{base}/rate_limits").status_code == 200
    assert server.organization.forbidden <= set(RESOURCES)
    with pytest.raises(ValueError, match="rate_limit"):
        SimulatedOrganization(1, forbidden={"rate_limit"})


def test_auth_and_the_fault_hook_apply_to_governance_paths(organization):
    base = f"/organization/projects/{first_project(organization)}"
    assert_error(get(organization, f"{base}/users", key="sk-admin-wrong"), 401)
    assert_error(get(organization, "/organization/spend_limit", key="sk-admin-wrong"), 401)

    answers = {
        "api_keys": Response(429, error_body("Rate limit reached", type_="rate_limit_error"), {"Retry-After": "3"}),
        "certificates": Response(500, error_body("The server had an error", type_="server_error")),
        "data_retention": Response(403, error_body("You do not have access to this resource.")),
    }
    organization.fault = lambda request: answers.get(request.path.rsplit("/", 1)[-1])
    response = get(organization, f"{base}/api_keys")
    assert_error(response, 429)
    assert response.headers["Retry-After"] == "3"
    assert_error(get(organization, f"{base}/certificates"), 500)
    assert_error(get(organization, f"{base}/data_retention"), 403)
    assert get(organization, f"{base}/users").status_code == 200
    assert [r.path for r in list(organization.requests)[-4:]] == [
        f"/v1{base}/{name}" for name in ("api_keys", "certificates", "data_retention", "users")
    ]


def test_archived_projects_still_answer(organization):
    project_id = first_project(organization, "archived")
    for resource in PROJECT_RESOURCES:
        response = get(organization, f"/organization/projects/{project_id}/{resource}")
        assert response.status_code in ((200, 404) if resource == "spend_limit" else (200,))


# -- the data ------------------------------------------------------------------------------------------


def test_default_variety(simulator):
    server = simulator(0)
    server.organization = SimulatedOrganization(400, seed=9, now=NOW)
    snapshots = [server.organization.governance.snapshot(p["id"]) for p in server.organization.all()]
    keys = [key for s in snapshots for key in s["api_keys"]]
    certificates = [c for s in snapshots for c in s["certificates"]]
    limits = [entry for s in snapshots for entry in s["rate_limits"]]

    assert {len(s["users"]) for s in snapshots} == {1, 2, 3, 4}
    assert {len(s["service_accounts"]) for s in snapshots} == {0, 1, 2}
    assert {len(s["api_keys"]) for s in snapshots} <= set(range(7))
    assert 4 <= sum(not any(u["role"] == "owner" for u in s["users"]) for s in snapshots) <= 40  # about 1 in 25
    assert {u["role"] for s in snapshots for u in s["users"]} == {"owner", "member"}
    assert {a["role"] for s in snapshots for a in s["service_accounts"]} == {"owner", "member", "none"}
    assert all(u["email"].endswith("@example.com") for s in snapshots for u in s["users"])

    never = sum(key["last_used_at"] is None for key in keys)
    stale = sum(key["last_used_at"] is not None and key["last_used_at"] < NOW - 90 * DAY for key in keys)
    recent = sum(key["last_used_at"] is not None and key["last_used_at"] > NOW - 7 * DAY for key in keys)
    assert 0.12 < never / len(keys) < 0.28 and stale > 0.05 * len(keys) and recent > 0.2 * len(keys)
    assert {key["owner"]["type"] for key in keys} == {"user", "service_account"}
    assert {key["owner_project_access"] for key in keys} == {"active", "inactive"}
    assert all(key["created_at"] <= (key["last_used_at"] or NOW) <= NOW for key in keys)

    assert any(NOW < c["certificate_details"]["expires_at"] <= NOW + 14 * DAY for c in certificates)
    assert {c["active"] for c in certificates} == {True, False} and any(c["name"] is None for c in certificates)
    assert 0.6 < sum(s["spend_limit"] is not None for s in snapshots) / len(snapshots) < 0.8
    assert {"gpt-4o", "gpt-4o-mini", "o3", "text-embedding-3-small", "dall-e-3", "whisper-1"} <= {
        entry["model"] for entry in limits
    }
    optional = ("max_images_per_1_minute", "max_audio_megabytes_per_1_minute", "max_requests_per_1_day")
    for name in (*optional, "batch_1_day_max_input_tokens"):
        assert 0 < sum(name in entry for entry in limits) < len(limits)  # present on some models only
    assert {s["model_permissions"]["mode"] for s in snapshots} == {"allow_list", "deny_list"}
    assert {s["hosted_tool_permissions"]["mcp"]["enabled"] for s in snapshots} == {True, False}
    assert len({s["data_retention"]["type"] for s in snapshots}) >= 4


def test_fixed_counts(fixed):
    for project in fixed.organization.all():
        base = f"/organization/projects/{project['id']}"
        assert len(walk(fixed, f"{base}/users", limit=100)[0]) == 7
        assert len(walk(fixed, f"{base}/service_accounts", limit=100)[0]) == 5
        keys = walk(fixed, f"{base}/api_keys", limit=100)[0]
        assert len(keys) == 11 and all(key["owner_project_access"] == "active" for key in keys)


def test_the_same_seed_gives_the_same_organization_whatever_is_read_first():
    first = SimulatedOrganization(30, seed=4, now=NOW)
    second = SimulatedOrganization(30, seed=4, now=NOW)
    ids = [p["id"] for p in first.all()]
    assert ids == [p["id"] for p in second.all()]
    forwards = {pid: first.governance.snapshot(pid) for pid in ids}
    backwards = {pid: second.governance.snapshot(pid) for pid in reversed(ids)}
    assert forwards == backwards
    assert first.governance.read(None, "organization_spend_limit", {}) == second.governance.read(
        None, "organization_spend_limit", {}
    )
    other = SimulatedOrganization(30, seed=5, now=NOW)
    assert other.governance.snapshot(other.all()[0]["id"]) != forwards[ids[0]]


def test_governance_is_generated_on_first_access_only():
    organization = SimulatedOrganization(10_000, seed=2, now=NOW)
    assert organization.governance._states == {}  # nothing made at start, whatever the size
    project_id = organization.all()[1234]["id"]
    organization.governance.snapshot(project_id)
    assert list(organization.governance._states) == [project_id]


def test_governance_leaves_the_projects_as_they_were():
    """Reading, changing and churning governance draws nothing from the projects' generator."""
    quiet, busy = SimulatedOrganization(20, seed=8, now=NOW), SimulatedOrganization(20, seed=8, now=NOW)
    for project in busy.all():
        busy.governance.snapshot(project["id"])
        busy.governance.add_api_key(project["id"])
    for _ in range(10):
        quiet.churn()
        busy.churn()
    assert [(p["id"], p["name"], p["status"]) for p in quiet.all()] == [
        (p["id"], p["name"], p["status"]) for p in busy.all()
    ]


# -- changes -------------------------------------------------------------------------------------------


def test_changes_show_up_in_the_answers(organization):
    governance = organization.organization.governance
    project_id = first_project(organization)
    base = f"/organization/projects/{project_id}"

    def listed(resource: str, **params) -> list[dict]:
        return walk(organization, f"{base}/{resource}", limit=100, **params)[0]

    user = governance.add_user(project_id, role="owner", name="Test Person", email="test.person@example.com")
    assert user in listed("users")
    key = governance.add_api_key(project_id, owner_id=user["id"], name="made by a test")
    assert key in listed("api_keys") and key["last_used_at"] is None
    assert key["owner"] == {
        "type": "user",
        "user": {k: user[k] for k in ("id", "email", "name", "role")}
        | {"created_at": key["owner"]["user"]["created_at"]},
    }
    used = governance.use_api_key(project_id, key["id"], at=NOW + 5)
    assert next(k for k in listed("api_keys") if k["id"] == key["id"]) == used and used["last_used_at"] == NOW + 5
    assert governance.set_user_role(project_id, user["id"], "member")["role"] == "member"
    assert next(k for k in listed("api_keys") if k["id"] == key["id"])["owner"]["user"]["role"] == "member"

    # A member who leaves keeps their keys, which only the inactive (or any) listing shows.
    assert governance.remove_user(project_id, user["id"]) == user["id"]
    assert user["id"] not in {u["id"] for u in listed("users")}
    assert key["id"] not in {k["id"] for k in listed("api_keys")}
    assert key["id"] in {k["id"] for k in listed("api_keys", owner_project_access="inactive")}
    assert governance.remove_api_key(project_id, key["id"]) == key["id"]
    assert key["id"] not in {k["id"] for k in listed("api_keys", owner_project_access="any")}

    account = governance.add_service_account(project_id, name="deploy-bot")
    assert account in listed("service_accounts")
    account_key = governance.add_api_key(project_id, owner_id=account["id"])
    assert account_key["owner"]["service_account"]["name"] == "deploy-bot"
    governance.set_service_account_role(project_id, account["id"], "none")
    assert account_key["id"] in {k["id"] for k in listed("api_keys", owner_project_access="inactive")}
    assert governance.remove_service_account(project_id, account["id"]) == account["id"]

    entry = governance.set_rate_limit(project_id, "gpt-4o", max_requests_per_1_minute=7, max_images_per_1_minute=None)
    assert entry in listed("rate_limits") and "max_images_per_1_minute" not in entry
    with pytest.raises(ValueError):
        governance.set_rate_limit(project_id, "gpt-4o", max_tokens_per_1_minute=None)

    certificate = governance.add_certificate(project_id, name=None, expires_at=NOW + 3 * DAY)
    assert certificate in listed("certificates")
    changed = governance.set_certificate(project_id, certificate["id"], active=False)
    assert changed in listed("certificates") and changed["active"] is False
    assert governance.remove_certificate(project_id, certificate["id"]) == certificate["id"]
    assert certificate["id"] not in {c["id"] for c in listed("certificates")}

    singles = {
        "model_permissions": governance.set_model_permissions(project_id, "allow_list", ["o3", "gpt-4.1"]),
        "hosted_tool_permissions": governance.set_hosted_tool(project_id, "web_search", False),
        "data_retention": governance.set_data_retention(project_id, "zero_data_retention"),
        "spend_limit": governance.set_spend_limit(project_id, 4_200),
    }
    for resource, document in singles.items():
        assert get(organization, f"{base}/{resource}").json() == document
    assert singles["hosted_tool_permissions"]["web_search"] == {"enabled": False}
    assert governance.set_organization_spend_limit(99_900) == get(organization, "/organization/spend_limit").json()
    assert governance.set_organization_spend_limit(None) is None
    assert_error(get(organization, "/organization/spend_limit"), 404)

    with pytest.raises(ValueError):
        governance.set_user_role(project_id, listed("users")[0]["id"], "admin")
    with pytest.raises(KeyError):
        governance.remove_api_key(project_id, "key_missing")


def test_certificates_come_newest_first_unless_asked(organization):
    governance = organization.organization.governance
    project_id = first_project(organization)
    for n in range(3):
        governance.add_certificate(project_id, name=f"cert {n}")
    path = f"/organization/projects/{project_id}/certificates"
    newest_first = walk(organization, path, limit=2)[0]
    oldest_first = walk(organization, path, limit=2, order="asc")[0]
    assert [c["created_at"] for c in newest_first] == sorted((c["created_at"] for c in newest_first), reverse=True)
    assert sorted(c["id"] for c in newest_first) == sorted(c["id"] for c in oldest_first)
    assert [c["created_at"] for c in oldest_first] == sorted(c["created_at"] for c in oldest_first)


def test_changes_from_several_threads_at_once(organization):
    governance = organization.organization.governance
    project_id = first_project(organization)
    before = len(governance.snapshot(project_id)["api_keys"])
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                key = governance.add_api_key(project_id)
                governance.use_api_key(project_id, key["id"])
                assert get(organization, f"/organization/projects/{project_id}/api_keys").status_code == 200
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(governance.snapshot(project_id)["api_keys"]) == before + 120


def test_churn_changes_governance_among_active_projects():
    organization = SimulatedOrganization(40, seed=6, now=NOW)

    def everything() -> dict:
        return {p["id"]: organization.governance.snapshot(p["id"]) for p in organization.all()}

    active = [p["id"] for p in organization.all(include_archived=False)]
    assert len(active) < 40
    before = everything()
    changes = [change for _ in range(30) for change in organization.governance.churn(active)]
    after = everything()
    changed = {pid for pid in before if before[pid] != after[pid]}
    assert changed and changed <= set(active)
    assert 30 <= len(changes) <= 60  # one or two a step
    assert len({change.split()[0] for change in changes}) >= 5
    kinds = {
        resource for pid in changed for resource in PROJECT_RESOURCES if before[pid][resource] != after[pid][resource]
    }
    assert {"api_keys", "users"} <= kinds and len(kinds) >= 4

    # The organization's own churn step makes them too, beside its project changes.
    before = everything()
    for _ in range(5):
        organization.churn()
    assert any(before[pid] != organization.governance.snapshot(pid) for pid in before)


def test_churn_in_the_background_shows_over_http_within_seconds(organization):
    """The demo churns every few seconds: a poller must see governance move long before a minute."""
    active = organization.organization.all(include_archived=False)
    seen = {p["id"]: get(organization, f"/organization/projects/{p['id']}/api_keys").json() for p in active}
    stop = threading.Event()
    start_churn(organization.organization, 0.02, stop)
    try:

        def moved() -> bool:
            return any(
                get(organization, f"/organization/projects/{pid}/api_keys").json() != document
                for pid, document in seen.items()
            )

        wait_for(moved, timeout=20, interval=0.05, what="a governance change over HTTP")
    finally:
        stop.set()


def test_the_resource_names_are_the_paths_of_the_spec(spec):
    paths = {path for path in spec["paths"] if path.startswith("/organization/projects/{project_id}/")}
    served = {f"/organization/projects/{{project_id}}/{resource}" for resource in PROJECT_RESOURCES}
    assert served <= paths
    assert paths - served == {"/organization/projects/{project_id}/spend_alerts"}  # optional, not served
    assert set(SINGLE_RESOURCES) | set(LIST_DEFAULT_LIMITS) == set(PROJECT_RESOURCES)
