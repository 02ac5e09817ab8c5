"""The governance collectors, one module at a time: the contract's JSON, to records, to rendered text and change events.

Items are built by tests/support/governance.py in the shapes the upstream contract gives (checked
against its schemas below), fetched through each collector's own `fetch` with a fake Fetcher,
rendered and read back with prometheus_client's parser, and diffed.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal, localcontext
from functools import cache

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors import BY_NAME, COLLECTORS
from exporter.collectors.api_keys import API_KEYS, IDLE_BUCKETS, parse_key
from exporter.collectors.base import Change, Collector, Invalid, cents
from exporter.collectors.certificates import CERTIFICATES, parse_certificate
from exporter.collectors.data_retention import DATA_RETENTION, DataRetention, parse_retention
from exporter.collectors.members import SERVICE_ACCOUNTS, USERS, Member
from exporter.collectors.permissions import PERMISSIONS, Permissions, parse_models, parse_tools
from exporter.collectors.rate_limits import RATE_LIMITS
from exporter.collectors.rate_limits import parse_limit as parse_rate_limit
from exporter.collectors.spend_limits import SPEND_LIMITS, SpendLimit
from exporter.collectors.spend_limits import parse_limit as parse_spend_limit
from tests.support.governance import (
    CREATED,
    TOOLS,
    FakeFetcher,
    api_key,
    certificate,
    closed_components,
    contract_example,
    data_retention,
    hosted_tool_permissions,
    model_permissions,
    rate_limit,
    replaced,
    service_account,
    spend_limit,
    user,
    without,
)
from tests.support.metrics import Metrics

PROJECT = "proj_abc"
BASE = f"/organization/projects/{PROJECT}"
DAY = 86_400
NOW = CREATED + 400 * DAY
EMAIL = "user@example.com"
REDACTED = "sk-abc...def"  # the contract's example, the builders' default
NEW_FIELDS = {"brand_new": {"nested": [1, None]}, "another": None, "flag": True}
# Label values that need each escape of the text format, alone and together, and one that needs none.
ESCAPED = ('say "hi"', "back\\slash", "two\nlines", 'all "three" \\ at\nonce', "trailing\\", "ünïcødé ✓")
LE = ("86400.0", "604800.0", "2.592e+06", "7.776e+06", "1.5552e+07", "3.1536e+07", "+Inf")

# -- helpers -------------------------------------------------------------------------------------


def fetch(collector: Collector, project_id: str = PROJECT, **by_suffix):
    """The collector's records for a project whose endpoints answer `by_suffix` (users=[...], spend_limit={...})."""
    base = f"/organization/projects/{project_id}"
    return collector.fetch(FakeFetcher({f"{base}/{suffix}": doc for suffix, doc in by_suffix.items()}), project_id)


def users(*items):
    return fetch(USERS, users=list(items))


def accounts(*items):
    return fetch(SERVICE_ACCOUNTS, service_accounts=list(items))


def keys(*items, project_id: str = PROJECT):
    return fetch(API_KEYS, project_id, api_keys=list(items))


def limits(*items):
    return fetch(RATE_LIMITS, rate_limits=list(items))


def certificates(*items):
    return fetch(CERTIFICATES, certificates=list(items))


def permissions(models=None, tools=None):
    documents = {"model_permissions": models, "hosted_tool_permissions": tools}
    return fetch(PERMISSIONS, **{suffix: doc for suffix, doc in documents.items() if doc is not None})


def spend(*args, **kwargs) -> SpendLimit:
    return fetch(SPEND_LIMITS, spend_limit=spend_limit(*args, **kwargs))


def retention(kind: str) -> DataRetention:
    return fetch(DATA_RETENTION, data_retention=data_retention(kind))


def rendered(collector: Collector, details, project_id: str = PROJECT, per_item: bool = True) -> str:
    """The collector's block for a project as a scrape shows it: each family's header, then its samples."""
    blocks = collector.render(project_id, details, per_item)
    assert len(blocks) == len(collector.families)
    for family, block in zip(collector.families, blocks, strict=True):
        assert isinstance(block, bytes) and (block == b"" or block.endswith(b"\n"))
        for line in block.decode().split("\n")[:-1]:
            assert line.startswith(family.name + "{"), f"{line!r} is not a sample of {family.name}"
    return "".join((family.header + block).decode() for family, block in zip(collector.families, blocks, strict=True))


def scrape(collector: Collector, details, project_id: str = PROJECT, per_item: bool = True) -> Metrics:
    return Metrics(rendered(collector, details, project_id, per_item))


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


def canonical(changes: list[Change]) -> list[tuple]:
    """Changes in a fixed order, for comparing without caring for the order a diff found them."""
    return sorted(((c.resource, c.change, dict(c.fields)) for c in changes), key=repr)


def assert_refused(parse, item, *needles: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse(item)
    message = str(caught.value)
    assert message and "\n" not in message, f"{message!r} is not one line"
    for needle in needles:
        assert needle in message, f"{message!r} does not name {needle!r}"


# -- the builders follow the contract ------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "item"),
    [
        ("ProjectUser", user()),
        ("ProjectUser", user(email=None, name=None)),
        ("ProjectServiceAccount", service_account(role="none")),
        ("ProjectApiKey", api_key()),
        ("ProjectApiKey", api_key(owner_type="service_account", last_used_at=CREATED + 5)),
        ("ProjectRateLimit", rate_limit(max_images_per_1_minute=10, batch_1_day_max_input_tokens=9)),
        ("OrganizationProjectCertificate", certificate()),
        ("OrganizationProjectCertificate", certificate(name=None, active=False)),
        ("ProjectSpendLimitResource", spend_limit()),
        ("OrganizationSpendLimitResource", spend_limit(organization=True)),
        ("ProjectModelPermissions", model_permissions()),
        ("ProjectHostedToolPermissions", hosted_tool_permissions(mcp=False)),
        ("ProjectDataRetention", data_retention("zero_data_retention")),
    ],
)
def test_the_builders_follow_the_contract(schema, item):
    components = closed_components()
    validator = jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": components})
    validator.validate(item)


# -- parsing: the contract's own examples, tolerance, refusals ---------------------------------


def test_the_contracts_own_examples_parse():
    assert users(contract_example("ProjectUser")) == (Member("user_abc", "owner", EMAIL),)
    assert accounts(contract_example("ProjectServiceAccount")) == (Member("svc_acct_abc", "owner", None),)
    key = parse_key(contract_example("ProjectApiKey"))
    assert (key.id, key.name, key.owner_type, key.owner_id) == ("key_abc", "My API Key", "user", "user_abc")
    assert (key.created_at, key.last_used_at, key.owner_email) == (1711471533, 1711471534, EMAIL)
    limit = parse_rate_limit(contract_example("ProjectRateLimit"))
    assert (limit.model, limit.id) == ("ada", "rl_ada")
    assert dict(limit.values) == {"requests_per_minute": 600, "tokens_per_minute": 150000, "images_per_minute": 10}
    assert parse_models(contract_example("ProjectModelPermissions")) == ("allow_list", ("gpt-4.1", "o3"))
    assert parse_tools(contract_example("ProjectHostedToolPermissions")) == tuple((tool, True) for tool in TOOLS)
    assert parse_retention(contract_example("ProjectDataRetention")) == DataRetention("organization_default")


def test_members_accept_absent_optionals_nulls_and_new_fields():
    bare = {"id": "user_1", "role": "member"}  # no object, name, email nor added_at
    nulls = user("user_2", "owner", email=None, name=None)
    newer = user("user_3", "member", extra=NEW_FIELDS)
    assert users(newer, bare, nulls) == (
        Member("user_1", "member", None),
        Member("user_2", "owner", None),
        Member("user_3", "member", EMAIL),
    )
    bare_account = {"id": "svc_1", "role": "none"}
    assert accounts(service_account("svc_2", extra=NEW_FIELDS), bare_account) == (
        Member("svc_1", "none", None),
        Member("svc_2", "member", None),
    )


def test_api_keys_accept_absent_optionals_nulls_and_new_fields():
    never_used = api_key("key_1", last_used_at=None)
    absent = without(without(api_key("key_2"), "last_used_at"), "name")
    no_owner_detail = {"id": "key_3", "created_at": CREATED, "owner": {"type": "service_account"}}
    null_owner_detail = {"id": "key_4", "created_at": CREATED, "owner": {"type": "user", "user": None}}
    newer = api_key("key_5", extra=NEW_FIELDS, owner_project_access="inactive", last_used_at=CREATED + 1)
    newer["owner"]["user"]["new_owner_field"] = {"x": 1}
    newer["owner"]["future_detail"] = {"id": "x"}
    parsed = {k.id: k for k in keys(never_used, absent, no_owner_detail, null_owner_detail, newer)}
    assert (parsed["key_1"].last_used_at, parsed["key_1"].owner_email) == (None, EMAIL)
    assert (parsed["key_2"].name, parsed["key_2"].last_used_at) == ("", None)
    key_3 = parsed["key_3"]
    assert (key_3.owner_type, key_3.owner_id, key_3.owner_email, key_3.name) == ("service_account", "", None, "")
    assert (parsed["key_4"].owner_type, parsed["key_4"].owner_id) == ("user", "")
    assert (parsed["key_5"].owner_id, parsed["key_5"].last_used_at) == ("user_abc", CREATED + 1)


def test_rate_limits_accept_absent_optionals_nulls_and_new_fields():
    bare = {"id": "rl_1", "model": "m1"}  # not even the two limits the contract requires
    nulls = rate_limit("m2", max_images_per_1_minute=None, max_requests_per_1_day=None)
    full = rate_limit(
        "m3",
        max_images_per_1_minute=1,
        max_audio_megabytes_per_1_minute=2,
        max_requests_per_1_day=3,
        batch_1_day_max_input_tokens=4,
        extra=NEW_FIELDS | {"max_videos_per_1_minute": 5},
    )
    assert {r.model: dict(r.values) for r in limits(full, bare, nulls)} == {
        "m1": {},
        "m2": {"requests_per_minute": 600, "tokens_per_minute": 150000},
        "m3": {
            "requests_per_minute": 600,
            "tokens_per_minute": 150000,
            "images_per_minute": 1,
            "audio_megabytes_per_minute": 2,
            "requests_per_day": 3,
            "batch_input_tokens_per_day": 4,
        },
    }


def test_certificates_accept_absent_optionals_nulls_and_new_fields():
    parsed = {
        c.id: c
        for c in certificates(
            certificate("cert_1", name=None),
            replaced(certificate("cert_2"), "certificate_details", None),
            without(certificate("cert_3"), "certificate_details"),
            certificate("cert_4", expires_at=None, extra=NEW_FIELDS),
            replaced(certificate("cert_5"), "certificate_details.expires_at", None),
            certificate("cert_6", active=False),
        )
    }
    assert (parsed["cert_1"].name, parsed["cert_1"].expires_at) == (None, CREATED + 365 * DAY)
    assert [parsed[i].expires_at for i in ("cert_2", "cert_3", "cert_4", "cert_5")] == [None] * 4
    assert [c.active for c in parsed.values()] == [True] * 5 + [False]


def test_single_objects_accept_new_fields():
    limit = spend_limit(extra=NEW_FIELDS)
    limit["enforcement"]["since"] = 5
    assert parse_spend_limit(limit) == SpendLimit(12345, "USD", "month", "enforcing")
    future = spend_limit(currency="EUR", interval="week", status="a_new_state")
    assert parse_spend_limit(future) == SpendLimit(12345, "EUR", "week", "a_new_state")
    assert parse_models(model_permissions("deny_list", [], extra=NEW_FIELDS)) == ("deny_list", ())
    # A tool the contract does not name yet is still a tool; scalar, list and null fields are not tools.
    tools = hosted_tool_permissions(web_search=False, extra={"object": "x", "computer_use": {"enabled": False}})
    tools |= {"version": 3, "note": None, "labels": ["a"]}
    assert dict(parse_tools(tools)) == {
        "file_search": True,
        "web_search": False,
        "image_generation": True,
        "mcp": True,
        "code_interpreter": True,
        "computer_use": False,
    }
    assert parse_retention(data_retention("a_future_type", extra=NEW_FIELDS)) == DataRetention("a_future_type")


@pytest.mark.parametrize(
    ("parse", "item", "needles"),
    [
        (users, "user_1", ["project user", "not a JSON object"]),
        (users, without(user("user_1"), "id"), ["project user", "`id`"]),
        (users, replaced(user("user_1"), "id", ""), ["project user", "`id`"]),
        (users, without(user("user_1"), "role"), ["project user user_1", "`role`"]),
        (users, replaced(user("user_1"), "role", 3), ["project user user_1", "`role`"]),
        (users, replaced(user("user_1"), "email", ["a@b"]), ["project user user_1", "`email`"]),
        (users, replaced(user("user_1"), "added_at", "yesterday"), ["project user user_1", "`added_at`"]),
        (users, replaced(user("user_1"), "added_at", True), ["project user user_1", "`added_at`"]),
        (accounts, replaced(service_account("svc_1"), "role", None), ["service account svc_1", "`role`"]),
        (accounts, replaced(service_account("svc_1"), "created_at", "x"), ["service account svc_1", "`created_at`"]),
        (parse_key, [], ["API key", "not a JSON object"]),
        (parse_key, without(api_key("key_1"), "id"), ["API key", "`id`"]),
        (parse_key, without(api_key("key_1"), "created_at"), ["API key key_1", "`created_at`"]),
        (parse_key, replaced(api_key("key_1"), "created_at", "2024"), ["API key key_1", "`created_at`"]),
        (parse_key, replaced(api_key("key_1"), "created_at", False), ["API key key_1", "`created_at`"]),
        (parse_key, replaced(api_key("key_1"), "last_used_at", "never"), ["API key key_1", "`last_used_at`"]),
        (parse_key, replaced(api_key("key_1"), "name", 7), ["API key key_1", "`name`"]),
        (parse_key, without(api_key("key_1"), "owner"), ["API key key_1", "`owner`"]),
        (parse_key, replaced(api_key("key_1"), "owner", "user_abc"), ["API key key_1", "`owner`"]),
        (parse_key, without(api_key("key_1"), "owner.type"), ["API key key_1", "`type`"]),
        (parse_key, replaced(api_key("key_1"), "owner.user", "user_abc"), ["API key key_1", "owner.user"]),
        (parse_key, replaced(api_key("key_1"), "owner.user.id", 5), ["API key key_1", "`id`"]),
        (parse_key, replaced(api_key("key_1"), "owner.user.email", 5), ["API key key_1", "`email`"]),
        (parse_rate_limit, None, ["rate limit", "not a JSON object"]),
        (parse_rate_limit, without(rate_limit("m"), "id"), ["rate limit", "`id`"]),
        (parse_rate_limit, without(rate_limit("m", limit_id="rl_1"), "model"), ["rate limit rl_1", "`model`"]),
        (
            parse_rate_limit,
            rate_limit("m", limit_id="rl_1", max_tokens_per_1_minute="many"),
            ["rate limit rl_1", "`max_tokens_per_1_minute`"],
        ),
        (
            parse_rate_limit,
            rate_limit("m", limit_id="rl_1", batch_1_day_max_input_tokens=True),
            ["rate limit rl_1", "`batch_1_day_max_input_tokens`"],
        ),
        (parse_certificate, 5, ["certificate", "not a JSON object"]),
        (parse_certificate, without(certificate(), "id"), ["certificate", "`id`"]),
        (parse_certificate, certificate("cert_1", name=5), ["certificate cert_1", "`name`"]),
        (
            parse_certificate,
            replaced(certificate("cert_1"), "certificate_details", "soon"),
            ["certificate cert_1", "`certificate_details`"],
        ),
        (
            parse_certificate,
            replaced(certificate("cert_1"), "certificate_details.expires_at", "2030"),
            ["certificate cert_1", "`expires_at`"],
        ),
        (parse_spend_limit, "12345", ["spend limit", "not a JSON object"]),
        (parse_spend_limit, spend_limit(123.45), ["spend limit", "`threshold_amount`"]),
        (parse_spend_limit, spend_limit(12345.0), ["spend limit", "`threshold_amount`"]),
        (parse_spend_limit, spend_limit("12345"), ["spend limit", "`threshold_amount`"]),
        (parse_spend_limit, spend_limit(True), ["spend limit", "`threshold_amount`"]),
        (parse_spend_limit, spend_limit(None), ["spend limit", "`threshold_amount`"]),
        (parse_spend_limit, without(spend_limit(), "threshold_amount"), ["spend limit", "`threshold_amount`"]),
        (parse_spend_limit, without(spend_limit(), "currency"), ["spend limit", "`currency`"]),
        (parse_spend_limit, spend_limit(interval=""), ["spend limit", "`interval`"]),
        (parse_spend_limit, without(spend_limit(), "enforcement"), ["spend limit", "`enforcement`"]),
        (parse_spend_limit, replaced(spend_limit(), "enforcement", "enforcing"), ["spend limit", "`enforcement`"]),
        (parse_spend_limit, without(spend_limit(), "enforcement.status"), ["spend limit", "`status`"]),
        (parse_models, [], ["model permissions", "not a JSON object"]),
        (parse_models, without(model_permissions(), "mode"), ["model permissions", "`mode`"]),
        (parse_models, model_permissions(model_ids="o3"), ["model permissions", "`model_ids`"]),
        (parse_models, model_permissions(model_ids=["o3", 4]), ["model permissions", "`model_ids`"]),
        (parse_models, without(model_permissions(), "model_ids"), ["model permissions", "`model_ids`"]),
        (parse_tools, None, ["hosted tool permissions", "not a JSON object"]),
        (parse_tools, replaced(hosted_tool_permissions(), "mcp.enabled", "yes"), ["hosted tool", "`mcp.enabled`"]),
        (parse_tools, without(hosted_tool_permissions(), "web_search.enabled"), ["`web_search.enabled`"]),
        (parse_retention, "none", ["data retention", "not a JSON object"]),
        (parse_retention, without(data_retention(), "type"), ["data retention", "`type`"]),
        (parse_retention, data_retention(3), ["data retention", "`type`"]),
    ],
)
def test_a_required_field_missing_or_mistyped_is_refused_in_one_line(parse, item, needles):
    assert_refused(parse, item, *needles)


@pytest.mark.parametrize("active", ["true", 1])
def test_a_mistyped_certificate_active_flag_is_refused(active):
    assert_refused(parse_certificate, certificate("cert_1", active=active), "certificate cert_1", "`active`")


# -- fetch: the requests each collector makes ---------------------------------------------------


@pytest.mark.parametrize(
    ("collector", "suffix", "item"),
    [
        (USERS, "users", user),
        (SERVICE_ACCOUNTS, "service_accounts", service_account),
        (CERTIFICATES, "certificates", certificate),
    ],
)
def test_lists_are_read_from_the_projects_endpoint_and_sorted_by_id(collector, suffix, item):
    fetcher = FakeFetcher({f"{BASE}/{suffix}": [item("id_c"), item("id_a"), item("id_b")]})
    records = collector.fetch(fetcher, PROJECT)
    assert fetcher.requests == [("list", f"{BASE}/{suffix}", None)]
    assert [r.id for r in records] == ["id_a", "id_b", "id_c"]
    assert collector.count(records) == 3
    assert collector.fetch(FakeFetcher({}), PROJECT) == ()


def test_api_keys_ask_for_every_key_whatever_its_owners_access():
    fetcher = FakeFetcher({f"{BASE}/api_keys": [api_key("key_b"), api_key("key_a", owner_project_access="inactive")]})
    assert [k.id for k in API_KEYS.fetch(fetcher, PROJECT)] == ["key_a", "key_b"]
    assert fetcher.requests == [("list", f"{BASE}/api_keys", {"owner_project_access": "any"})]


def test_an_api_key_listed_twice_is_refused():
    with pytest.raises(Invalid, match=f"project {PROJECT}: API key key_a is listed twice"):
        keys(api_key("key_a"), api_key("key_b"), api_key("key_a", name="renamed between pages"))


def test_rate_limits_are_read_per_model_and_a_model_listed_twice_is_refused():
    fetcher = FakeFetcher({f"{BASE}/rate_limits": [rate_limit("o3"), rate_limit("gpt-4o")]})
    assert [r.model for r in RATE_LIMITS.fetch(fetcher, PROJECT)] == ["gpt-4o", "o3"]
    assert fetcher.requests == [("list", f"{BASE}/rate_limits", None)]
    with pytest.raises(Invalid, match=f"project {PROJECT}: a model's rate limit is listed twice"):
        limits(rate_limit("o3", limit_id="rl_1"), rate_limit("o3", limit_id="rl_2"))


@pytest.mark.parametrize(
    ("collector", "suffix", "first", "second"),
    [
        (USERS, "users", user("user_1", email=None), user("user_1")),
        (SERVICE_ACCOUNTS, "service_accounts", service_account("svc_1"), service_account("svc_1")),
        (CERTIFICATES, "certificates", certificate("cert_1", name=None), certificate("cert_1")),
    ],
    ids=["users", "service-accounts", "certificates"],
)
def test_a_member_or_certificate_listed_twice_is_refused(collector, suffix, first, second):
    with pytest.raises(Invalid, match="listed twice"):
        collector.fetch(FakeFetcher({f"{BASE}/{suffix}": [first, second]}), PROJECT)


def test_spend_limits_accept_a_404_as_no_limit_for_the_project_and_the_organization():
    fetcher = FakeFetcher({f"{BASE}/spend_limit": spend_limit(500, status="inactive")})
    assert SPEND_LIMITS.fetch(fetcher, PROJECT) == SpendLimit(500, "USD", "month", "inactive")
    assert SPEND_LIMITS.fetch(fetcher, "proj_other") is None
    assert SPEND_LIMITS.fetch_organization(fetcher) is None
    fetcher.documents["/organization/spend_limit"] = spend_limit(10000000, organization=True)
    assert SPEND_LIMITS.fetch_organization(fetcher) == SpendLimit(10000000, "USD", "month", "enforcing")
    assert fetcher.requests == [
        ("one", f"{BASE}/spend_limit", True),
        ("one", "/organization/projects/proj_other/spend_limit", True),
        ("one", "/organization/spend_limit", True),
        ("one", "/organization/spend_limit", True),
    ]
    assert [SPEND_LIMITS.count(x) for x in (None, SpendLimit(1, "USD", "month", "inactive"))] == [0, 1]


def test_permissions_read_both_endpoints_each_of_which_may_be_missing():
    documents = {
        f"{BASE}/model_permissions": model_permissions("deny_list", ["o3", "gpt-4.1", "dall-e-3"]),
        f"{BASE}/hosted_tool_permissions": hosted_tool_permissions(mcp=False),
    }
    fetcher = FakeFetcher(documents)
    both = PERMISSIONS.fetch(fetcher, PROJECT)
    assert fetcher.requests == [
        ("one", f"{BASE}/model_permissions", True),
        ("one", f"{BASE}/hosted_tool_permissions", True),
    ]
    assert both == Permissions("deny_list", ("dall-e-3", "gpt-4.1", "o3"), tuple((t, t != "mcp") for t in TOOLS))
    assert PERMISSIONS.count(both) == 3 + 5
    assert permissions() == Permissions(None, (), ())
    assert permissions(tools=hosted_tool_permissions()) == Permissions(None, (), tuple((t, True) for t in TOOLS))
    assert permissions(models=model_permissions(model_ids=[])) == Permissions("allow_list", (), ())


def test_data_retention_accepts_a_404():
    fetcher = FakeFetcher({f"{BASE}/data_retention": data_retention("zero_data_retention")})
    assert DATA_RETENTION.fetch(fetcher, PROJECT) == DataRetention("zero_data_retention")
    assert DATA_RETENTION.fetch(fetcher, "proj_other") is None
    assert fetcher.requests == [
        ("one", f"{BASE}/data_retention", True),
        ("one", "/organization/projects/proj_other/data_retention", True),
    ]
    assert [DATA_RETENTION.count(x) for x in (None, DataRetention("none"))] == [0, 1]


# -- rendering ------------------------------------------------------------------------------------


def test_users_are_counted_by_role_with_owner_and_member_always_present():
    assert scrape(USERS, users()).series("openai_project_users") == {
        labels(project_id=PROJECT, role="owner"): 0,
        labels(project_id=PROJECT, role="member"): 0,
    }
    members = users(user("u1", "owner"), user("u2", "member"), user("u3", "member"), user("u4", "member"))
    assert scrape(USERS, members).series("openai_project_users") == {
        labels(project_id=PROJECT, role="owner"): 1,
        labels(project_id=PROJECT, role="member"): 3,
    }
    only_owners = scrape(USERS, users(user("u1", "owner")))
    assert only_owners.value("openai_project_users", project_id=PROJECT, role="member") == 0


def test_service_accounts_are_counted_by_role_with_owner_member_and_none_always_present():
    assert scrape(SERVICE_ACCOUNTS, accounts()).series("openai_project_service_accounts") == {
        labels(project_id=PROJECT, role=role): 0 for role in ("owner", "member", "none")
    }
    members = accounts(service_account("s1", "none"), service_account("s2", "none"), service_account("s3", "owner"))
    assert scrape(SERVICE_ACCOUNTS, members).series("openai_project_service_accounts") == {
        labels(project_id=PROJECT, role="owner"): 1,
        labels(project_id=PROJECT, role="member"): 0,
        labels(project_id=PROJECT, role="none"): 2,
    }


def test_api_keys_render_counts_metadata_and_timestamps():
    records = keys(
        api_key("key_1", name="CI", owner_id="user_1", created_at=CREATED, last_used_at=CREATED + 10),
        api_key("key_2", name="bot", owner_type="service_account", owner_id="svc_1", created_at=CREATED + 1),
        api_key("key_3", name="CD", owner_id="user_2", created_at=CREATED + 2, last_used_at=CREATED + 20),
    )
    metrics = scrape(API_KEYS, records)
    assert metrics.series("openai_project_api_keys") == {
        labels(project_id=PROJECT, owner_type="user"): 2,
        labels(project_id=PROJECT, owner_type="service_account"): 1,
    }
    assert metrics.series("openai_project_api_key_info") == {
        labels(project_id=PROJECT, api_key_id="key_1", name="CI", owner_type="user", owner_id="user_1"): 1,
        labels(project_id=PROJECT, api_key_id="key_2", name="bot", owner_type="service_account", owner_id="svc_1"): 1,
        labels(project_id=PROJECT, api_key_id="key_3", name="CD", owner_type="user", owner_id="user_2"): 1,
    }
    assert metrics.series("openai_project_api_key_created_timestamp_seconds") == {
        labels(project_id=PROJECT, api_key_id=f"key_{i}"): CREATED + i - 1 for i in (1, 2, 3)
    }
    # A key never used has no last-used series at all, rather than a 0 that reads as 1970.
    assert metrics.series("openai_project_api_key_last_used_timestamp_seconds") == {
        labels(project_id=PROJECT, api_key_id="key_1"): CREATED + 10,
        labels(project_id=PROJECT, api_key_id="key_3"): CREATED + 20,
    }
    assert f'openai_project_api_key_created_timestamp_seconds{{project_id="{PROJECT}"' in metrics.text
    assert re.search(r'api_key_id="key_1"} 1711471533\n', metrics.text), "whole seconds are written as integers"


def test_api_keys_count_both_owner_types_always_and_drop_per_key_series_on_request():
    only_accounts = keys(api_key("key_1", owner_type="service_account"))
    assert scrape(API_KEYS, keys()).series("openai_project_api_keys") == {
        labels(project_id=PROJECT, owner_type="user"): 0,
        labels(project_id=PROJECT, owner_type="service_account"): 0,
    }
    assert scrape(API_KEYS, only_accounts).value("openai_project_api_keys", project_id=PROJECT, owner_type="user") == 0
    blocks = API_KEYS.render(PROJECT, keys(api_key("key_1", last_used_at=CREATED)), False)
    assert blocks[1:] == (b"", b"", b"")
    assert Metrics(rendered(API_KEYS, keys(api_key("key_1")), per_item=False)).series("openai_project_api_keys") == {
        labels(project_id=PROJECT, owner_type="user"): 1,
        labels(project_id=PROJECT, owner_type="service_account"): 0,
    }


@pytest.mark.parametrize("amount", [0, 1, 10, 99, 100, 101, 110, 999, 1000, 12345, 10000000, 10000001, 987654321])
def test_spend_limits_are_exact_currency_units(amount):
    expected = format(Decimal(amount).scaleb(-2).normalize(), "f")
    text = rendered(SPEND_LIMITS, spend(amount))
    assert f'openai_project_spend_limit{{project_id="{PROJECT}",currency="USD",interval="month"}} {expected}\n' in text
    value = Metrics(text).value("openai_project_spend_limit", project_id=PROJECT, currency="USD", interval="month")
    assert value == amount / 100
    organization = SPEND_LIMITS.render_organization(spend(amount)).decode()
    assert f'openai_organization_spend_limit{{currency="USD",interval="month"}} {expected}\n' in organization


@pytest.mark.parametrize(
    ("amount", "text"),
    [(1, "0.01"), (10, "0.1"), (99, "0.99"), (100, "1"), (12345, "123.45"), (10000000, "100000"), (-1, "-0.01")],
)
def test_cents_are_written_without_float_noise(amount, text):
    assert cents(amount) == text


def test_spend_limits_render_enforcement_and_nothing_without_a_limit():
    enforcing = scrape(SPEND_LIMITS, spend(100, status="enforcing"))
    assert enforcing.series("openai_project_spend_limit_enforcing") == {labels(project_id=PROJECT): 1}
    for status in ("inactive", "a_new_state"):
        assert (
            scrape(SPEND_LIMITS, spend(100, status=status)).value(
                "openai_project_spend_limit_enforcing", project_id=PROJECT
            )
            == 0
        )
    eur = scrape(SPEND_LIMITS, spend(250, currency="EUR", interval="week"))
    assert eur.series("openai_project_spend_limit") == {
        labels(project_id=PROJECT, currency="EUR", interval="week"): 2.5
    }
    assert SPEND_LIMITS.render(PROJECT, None, True) == (b"", b"")


def test_the_organization_spend_limit_keeps_its_header_without_a_limit():
    empty = {f.name: f for f in text_string_to_metric_families(SPEND_LIMITS.render_organization(None).decode())}
    assert list(empty) == ["openai_organization_spend_limit"]
    assert empty["openai_organization_spend_limit"].samples == []
    assert "background poll" in empty["openai_organization_spend_limit"].documentation
    limit = Metrics(SPEND_LIMITS.render_organization(spend(12345, organization=True)).decode())
    assert limit.series("openai_organization_spend_limit") == {labels(currency="USD", interval="month"): 123.45}


def test_rate_limits_render_each_limit_the_api_gave_and_no_other():
    records = limits(
        rate_limit("gpt-4o", max_requests_per_1_day=10000, batch_1_day_max_input_tokens=900000),
        rate_limit("gpt-image-1", max_requests_per_1_minute=5, max_tokens_per_1_minute=None, max_images_per_1_minute=7),
        rate_limit("whisper-1", max_audio_megabytes_per_1_minute=2.5),
    )
    assert scrape(RATE_LIMITS, records).series("openai_project_rate_limit") == {
        labels(project_id=PROJECT, model="gpt-4o", limit="requests_per_minute"): 600,
        labels(project_id=PROJECT, model="gpt-4o", limit="tokens_per_minute"): 150000,
        labels(project_id=PROJECT, model="gpt-4o", limit="requests_per_day"): 10000,
        labels(project_id=PROJECT, model="gpt-4o", limit="batch_input_tokens_per_day"): 900000,
        labels(project_id=PROJECT, model="gpt-image-1", limit="requests_per_minute"): 5,
        labels(project_id=PROJECT, model="gpt-image-1", limit="images_per_minute"): 7,
        labels(project_id=PROJECT, model="whisper-1", limit="requests_per_minute"): 600,
        labels(project_id=PROJECT, model="whisper-1", limit="tokens_per_minute"): 150000,
        labels(project_id=PROJECT, model="whisper-1", limit="audio_megabytes_per_minute"): 2.5,
    }
    assert RATE_LIMITS.render(PROJECT, (), True) == (b"",)


def test_certificates_render_active_counts_always_and_expiry_per_certificate():
    records = certificates(
        certificate("cert_1", name="edge", active=True, expires_at=CREATED + 30 * DAY),
        certificate("cert_2", name=None, active=True, expires_at=CREATED + 60 * DAY),
        certificate("cert_3", name="old", active=False, expires_at=None),
    )
    metrics = scrape(CERTIFICATES, records)
    assert metrics.series("openai_project_certificates") == {
        labels(project_id=PROJECT, active="true"): 2,
        labels(project_id=PROJECT, active="false"): 1,
    }
    assert metrics.series("openai_project_certificate_expiry_timestamp_seconds") == {
        labels(project_id=PROJECT, certificate_id="cert_1", name="edge"): CREATED + 30 * DAY,
        labels(project_id=PROJECT, certificate_id="cert_2", name=""): CREATED + 60 * DAY,
    }
    assert scrape(CERTIFICATES, certificates()).series("openai_project_certificates") == {
        labels(project_id=PROJECT, active="true"): 0,
        labels(project_id=PROJECT, active="false"): 0,
    }
    count, expiry = CERTIFICATES.render(PROJECT, records, False)
    assert expiry == b""
    assert count == CERTIFICATES.render(PROJECT, records, True)[0]


def test_permissions_render_the_number_of_models_and_each_tool():
    records = permissions(
        model_permissions("allow_list", ["gpt-4.1", "o3", "o4-mini"]),
        hosted_tool_permissions(web_search=False, mcp=False),
    )
    metrics = scrape(PERMISSIONS, records)
    assert metrics.series("openai_project_model_permissions") == {labels(project_id=PROJECT, mode="allow_list"): 3}
    assert metrics.series("openai_project_hosted_tool_enabled") == {
        labels(project_id=PROJECT, tool=tool): int(tool not in ("web_search", "mcp")) for tool in TOOLS
    }
    empty_deny_list = scrape(PERMISSIONS, permissions(model_permissions("deny_list", [])))
    assert empty_deny_list.series("openai_project_model_permissions") == {
        labels(project_id=PROJECT, mode="deny_list"): 0
    }
    assert PERMISSIONS.render(PROJECT, permissions(), True) == (b"", b"")


def test_data_retention_renders_an_info_series():
    metrics = scrape(DATA_RETENTION, retention("zero_data_retention"))
    assert metrics.series("openai_project_data_retention_info") == {
        labels(project_id=PROJECT, type="zero_data_retention"): 1
    }
    assert DATA_RETENTION.render(PROJECT, None, True) == (b"",)


@pytest.mark.parametrize("value", ESCAPED)
def test_label_values_are_escaped_and_read_back_unchanged(value):
    key = scrape(API_KEYS, keys(api_key("key_1", name=value, owner_id=value), project_id=value), project_id=value)
    assert key.series("openai_project_api_key_info") == {
        labels(project_id=value, api_key_id="key_1", name=value, owner_type="user", owner_id=value): 1
    }
    assert key.value("openai_project_api_keys", project_id=value, owner_type="user") == 1
    expiry = scrape(CERTIFICATES, certificates(certificate("cert_1", name=value)))
    assert expiry.series("openai_project_certificate_expiry_timestamp_seconds") == {
        labels(project_id=PROJECT, certificate_id="cert_1", name=value): CREATED + 365 * DAY
    }
    model = Metrics(rendered(RATE_LIMITS, limits(rate_limit(value))))
    assert (
        model.value("openai_project_rate_limit", project_id=PROJECT, model=value, limit="tokens_per_minute") == 150000
    )
    tool = Metrics(rendered(PERMISSIONS, permissions(tools={value: {"enabled": True}})))
    assert tool.series("openai_project_hosted_tool_enabled") == {labels(project_id=PROJECT, tool=value): 1}
    kind = Metrics(rendered(DATA_RETENTION, retention(value)))
    assert kind.series("openai_project_data_retention_info") == {labels(project_id=PROJECT, type=value): 1}


def test_label_escaping_is_the_text_formats():
    text = rendered(API_KEYS, keys(api_key("key_1", name='a "b" \\ c\nd')))
    assert 'name="a \\"b\\" \\\\ c\\nd"' in text
    assert all(line.startswith(("# HELP openai_", "# TYPE openai_", "openai_")) for line in text.split("\n")[:-1])


# -- no secret or email ever reaches a metric ---------------------------------------------------


def test_no_email_nor_redacted_value_appears_in_any_rendered_byte():
    emails = [f"person{i}@example.com" for i in range(4)]
    secret = "sk-proj-abc...xyz"
    api_keys = keys(
        api_key("k1", email=emails[3], redacted_value=secret, last_used_at=CREATED),
        api_key("k2", owner_type="service_account"),
    )
    records = [
        (USERS, users(user("u1", "owner", email=emails[0]), user("u2", email=emails[1]))),
        (SERVICE_ACCOUNTS, accounts(service_account("s1", extra={"email": emails[2]}))),
        (API_KEYS, api_keys),
    ]
    blob = b""
    for collector, details in records:
        for per_item in (True, False):
            blob += b"".join(collector.render(PROJECT, details, per_item))
    aggregate = API_KEYS.aggregate([api_keys], True)
    blob += aggregate.static
    blob += _live_text(aggregate, NOW).encode()
    assert blob.count(b"openai_") > 10
    for forbidden in [*emails, EMAIL, "@", secret, REDACTED, "sk-"]:
        assert forbidden.encode() not in blob


# -- the api-keys aggregate ---------------------------------------------------------------------


class _Live:
    """The aggregate's time-dependent families as a registry collector, as a scrape at `now` would see them."""

    def __init__(self, aggregate, now: float):
        self.aggregate, self.now = aggregate, now

    def collect(self):
        return self.aggregate.live(self.now)


def _live_text(aggregate, now: float) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Live(aggregate, now))
    return generate_latest(registry).decode()


def _histogram(aggregate, now: float) -> dict[str, dict]:
    """Per owner type: the buckets by le, the count and the sum of the idle histogram exposed at `now`."""
    [family] = text_string_to_metric_families(_live_text(aggregate, now))
    assert family.name == "openai_api_key_idle_seconds" and family.type == "histogram"
    assert "background poll" in family.documentation
    out: dict[str, dict] = {}
    for sample in family.samples:
        entry = out.setdefault(sample.labels["owner_type"], {"buckets": {}})
        if sample.name.endswith("_bucket"):
            entry["buckets"][sample.labels["le"]] = sample.value
        else:
            entry[sample.name.removeprefix("openai_api_key_idle_seconds_")] = sample.value
    return out


def test_the_aggregate_counts_never_used_keys_and_idle_time_across_projects():
    project_1 = keys(
        api_key("k1", created_at=NOW - 3 * DAY),  # never used: idle since created
        api_key("k2", created_at=CREATED, last_used_at=NOW - DAY // 2),
        api_key("k3", owner_type="service_account", created_at=CREATED, last_used_at=NOW - 100 * DAY),
    )
    project_2 = keys(
        api_key("k4", owner_type="service_account", created_at=NOW - 400 * DAY),  # never used
        api_key("k5", created_at=CREATED, last_used_at=NOW - DAY),  # exactly one day: in the 1d bucket
        project_id="proj_2",
    )
    aggregate = API_KEYS.aggregate([project_1, project_2], True)
    static = Metrics(aggregate.static.decode())
    assert "background poll" in static.families["openai_api_keys_never_used"].documentation
    assert static.series("openai_api_keys_never_used") == {
        labels(owner_type="user"): 1,
        labels(owner_type="service_account"): 1,
    }
    histogram = _histogram(aggregate, NOW)
    assert histogram["user"] == {
        "buckets": dict(zip(LE, [2, 3, 3, 3, 3, 3, 3], strict=True)),
        "count": 3,
        "sum": 4.5 * DAY,
    }
    assert histogram["service_account"] == {
        "buckets": dict(zip(LE, [0, 0, 0, 0, 1, 1, 2], strict=True)),
        "count": 2,
        "sum": 500 * DAY,
    }
    # The same index answers a later scrape: every key is a day more idle.
    later = _histogram(aggregate, NOW + DAY)
    assert later["user"]["buckets"]["86400.0"] == 0 and later["user"]["sum"] == 7.5 * DAY


def test_the_aggregate_of_no_keys_still_has_both_owner_types():
    aggregate = API_KEYS.aggregate([(), ()], False)
    assert Metrics(aggregate.static.decode()).series("openai_api_keys_never_used") == {
        labels(owner_type="user"): 0,
        labels(owner_type="service_account"): 0,
    }
    histogram = _histogram(aggregate, NOW)
    assert set(histogram) == {"user", "service_account"}
    for entry in histogram.values():
        assert entry == {"buckets": dict.fromkeys(LE, 0), "count": 0, "sum": 0}


def test_the_idle_buckets_are_the_specified_days():
    assert IDLE_BUCKETS == tuple(days * 86400.0 for days in (1, 7, 30, 90, 180, 365))


# Times anywhere (some in the future, as a skewed clock may give) or exactly on a bucket's bound.
TIME = st.one_of(st.integers(1, 2 * NOW), st.sampled_from([int(NOW - bound) for bound in IDLE_BUCKETS]))
KEY_TIMES = st.lists(
    st.tuples(st.sampled_from(["user", "service_account"]), TIME, st.one_of(st.none(), TIME)),
    max_size=30,
)


@given(KEY_TIMES, st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_the_idle_histogram_matches_a_count_by_hand(times, projects):
    items = [
        api_key(f"k{i}", owner_type=owner, created_at=created, last_used_at=used)
        for i, (owner, created, used) in enumerate(times)
    ]
    per_project = [keys(*items[p :: projects + 1], project_id=f"p{p}") for p in range(projects + 1)]
    histogram = _histogram(API_KEYS.aggregate(per_project, True), NOW)
    for owner in ("user", "service_account"):
        idle = [NOW - (used if used is not None else created) for o, created, used in times if o == owner]
        expected = [sum(1 for i in idle if i <= bound) for bound in IDLE_BUCKETS] + [len(idle)]
        assert list(histogram[owner]["buckets"].values()) == expected
        assert list(histogram[owner]["buckets"]) == list(LE)
        assert histogram[owner]["count"] == len(idle)
        assert histogram[owner]["sum"] == pytest.approx(sum(idle), abs=1e-3)


def test_a_key_last_used_at_time_zero_is_idle_since_time_zero():
    aggregate = API_KEYS.aggregate([keys(api_key("k1", created_at=NOW - 10, last_used_at=0))], True)
    assert Metrics(aggregate.static.decode()).value("openai_api_keys_never_used", owner_type="user") == 0
    assert _histogram(aggregate, NOW)["user"]["sum"] == NOW


# -- diff: the change events --------------------------------------------------------------------


def test_user_changes_carry_ids_roles_and_emails_only_when_asked():
    old = users(user("user_1", "owner", email="one@example.com"), user("user_2", "member", email="two@example.com"))
    new = users(user("user_1", "member", email="one@example.com"), user("user_3", "owner", email=None))
    assert canonical(USERS.diff(old, new, False)) == canonical(
        [
            Change("project_user", "added", {"user_id": "user_3", "role": "owner"}),
            Change("project_user", "role_changed", {"user_id": "user_1", "old_role": "owner", "new_role": "member"}),
            Change("project_user", "removed", {"user_id": "user_2", "role": "member"}),
        ]
    )
    assert canonical(USERS.diff(old, new, True)) == canonical(
        [
            Change("project_user", "added", {"user_id": "user_3", "role": "owner"}),  # no email known
            Change(
                "project_user",
                "role_changed",
                {"user_id": "user_1", "email": "one@example.com", "old_role": "owner", "new_role": "member"},
            ),
            Change("project_user", "removed", {"user_id": "user_2", "email": "two@example.com", "role": "member"}),
        ]
    )
    assert [c.event for c in USERS.diff(old, new, False)] == [
        "project_user_role_changed",
        "project_user_added",
        "project_user_removed",
    ]


def test_service_account_changes():
    old = accounts(service_account("svc_1", "owner"), service_account("svc_2", "member"))
    new = accounts(service_account("svc_1", "none"), service_account("svc_3", "member"))
    expected = canonical(
        [
            Change("service_account", "created", {"service_account_id": "svc_3", "role": "member"}),
            Change(
                "service_account",
                "role_changed",
                {"service_account_id": "svc_1", "old_role": "owner", "new_role": "none"},
            ),
            Change("service_account", "removed", {"service_account_id": "svc_2", "role": "member"}),
        ]
    )
    assert canonical(SERVICE_ACCOUNTS.diff(old, new, False)) == expected
    assert canonical(SERVICE_ACCOUNTS.diff(old, new, True)) == expected  # no email to show


def test_api_key_changes_carry_the_owner_and_its_email_only_when_asked():
    old = keys(api_key("key_1", name="old", owner_id="user_1", email="one@example.com"), api_key("key_2"))
    new = keys(api_key("key_2", last_used_at=NOW), api_key("key_3", name="bot", owner_type="service_account"))
    fields_1 = {"api_key_id": "key_1", "name": "old", "owner_type": "user", "owner_id": "user_1"}
    fields_3 = {"api_key_id": "key_3", "name": "bot", "owner_type": "service_account", "owner_id": "svc_acct_abc"}
    assert API_KEYS.diff(old, new, False) == [
        Change("api_key", "created", fields_3),
        Change("api_key", "removed", fields_1),
    ]
    assert API_KEYS.diff(old, new, True) == [
        Change("api_key", "created", fields_3),
        Change("api_key", "removed", fields_1 | {"owner_email": "one@example.com"}),
    ]


def test_spend_limit_changes_name_each_changed_field():
    assert SPEND_LIMITS.diff(spend(12345), spend(20000), True) == [
        Change("spend_limit", "changed", {"old_threshold_cents": 12345, "new_threshold_cents": 20000})
    ]
    assert SPEND_LIMITS.diff(spend(1, status="inactive"), spend(1, status="enforcing", interval="week"), False) == [
        Change(
            "spend_limit",
            "changed",
            {
                "old_interval": "month",
                "new_interval": "week",
                "old_enforcement": "inactive",
                "new_enforcement": "enforcing",
            },
        )
    ]
    unset = {f"old_{f}": None for f in SpendLimit._fields}
    set_to = {
        "new_threshold_cents": 100,
        "new_currency": "USD",
        "new_interval": "month",
        "new_enforcement": "enforcing",
    }
    assert SPEND_LIMITS.diff(None, spend(100), False) == [Change("spend_limit", "changed", unset | set_to)]
    [removed] = SPEND_LIMITS.diff(spend(100), None, False)
    assert removed.fields == {"old_threshold_cents": 100, "new_threshold_cents": None} | {
        "old_currency": "USD",
        "new_currency": None,
        "old_interval": "month",
        "new_interval": None,
        "old_enforcement": "enforcing",
        "new_enforcement": None,
    }


def test_rate_limit_changes_are_per_model_with_each_changed_limit():
    old = limits(rate_limit("gpt-4o"), rate_limit("o3", max_requests_per_1_day=100))
    new = limits(
        rate_limit("gpt-4o", max_requests_per_1_minute=1000, max_images_per_1_minute=5),
        rate_limit("whisper-1", max_tokens_per_1_minute=None),
    )
    assert RATE_LIMITS.diff(old, new, True) == [
        Change(
            "rate_limit",
            "changed",
            {
                "model": "gpt-4o",
                "rate_limit_id": "rl_gpt-4o",
                "old_images_per_minute": None,
                "new_images_per_minute": 5,
                "old_requests_per_minute": 600,
                "new_requests_per_minute": 1000,
            },
        ),
        Change(
            "rate_limit",
            "changed",
            {
                "model": "o3",
                "rate_limit_id": "rl_o3",
                "old_requests_per_day": 100,
                "new_requests_per_day": None,
                "old_requests_per_minute": 600,
                "new_requests_per_minute": None,
                "old_tokens_per_minute": 150000,
                "new_tokens_per_minute": None,
            },
        ),
        Change(
            "rate_limit",
            "changed",
            {
                "model": "whisper-1",
                "rate_limit_id": "rl_whisper-1",
                "old_requests_per_minute": None,
                "new_requests_per_minute": 600,
            },
        ),
    ]
    # A new id for the same limits is not a change of limits.
    assert (
        RATE_LIMITS.diff(
            old, limits(rate_limit("gpt-4o", limit_id="x"), rate_limit("o3", max_requests_per_1_day=100)), False
        )
        == []
    )


def test_certificate_changes():
    old = certificates(certificate("cert_1", name="edge", expires_at=CREATED + DAY), certificate("cert_2"))
    new = certificates(certificate("cert_2", active=False), certificate("cert_3", name=None, expires_at=None))
    assert CERTIFICATES.diff(old, new, True) == [
        Change("certificate", "added", {"certificate_id": "cert_3", "name": None, "expires_at": None}),
        Change("certificate", "removed", {"certificate_id": "cert_1", "name": "edge", "expires_at": CREATED + DAY}),
    ]


def test_permission_changes():
    old = permissions(model_permissions("allow_list", ["a", "b"]), hosted_tool_permissions())
    new = permissions(
        model_permissions("deny_list", ["c", "b"]),
        hosted_tool_permissions(mcp=False, extra={"computer_use": {"enabled": True}}),
    )
    assert PERMISSIONS.diff(old, new, False) == [
        Change(
            "model_permissions",
            "changed",
            {"old_mode": "allow_list", "new_mode": "deny_list", "added_models": ["c"], "removed_models": ["a"]},
        ),
        Change("hosted_tool_permission", "changed", {"tool": "computer_use", "old_enabled": None, "new_enabled": True}),
        Change("hosted_tool_permission", "changed", {"tool": "mcp", "old_enabled": True, "new_enabled": False}),
    ]
    assert PERMISSIONS.diff(permissions(), old, False)[0] == Change(
        "model_permissions",
        "changed",
        {"old_mode": None, "new_mode": "allow_list", "added_models": ["a", "b"], "removed_models": []},
    )
    same_models = permissions(model_permissions("allow_list", ["b", "a"]), hosted_tool_permissions())
    assert PERMISSIONS.diff(old, same_models, False) == []


def test_data_retention_changes():
    assert DATA_RETENTION.diff(retention("none"), retention("zero_data_retention"), False) == [
        Change("data_retention", "changed", {"old_type": "none", "new_type": "zero_data_retention"})
    ]
    assert DATA_RETENTION.diff(None, retention("none"), False) == [
        Change("data_retention", "changed", {"old_type": None, "new_type": "none"})
    ]
    assert DATA_RETENTION.diff(retention("none"), None, False) == [
        Change("data_retention", "changed", {"old_type": "none", "new_type": None})
    ]


@cache
def scenarios() -> dict[str, list[tuple]]:
    """Per collector, (old, new) pairs that between them produce every change it knows."""
    return {
        "users": [
            (
                users(user("u1", "owner"), user("u2", email="two@example.com")),
                users(user("u1", "member"), user("u3", email="three@example.com")),
            )
        ],
        "service-accounts": [
            (
                accounts(service_account("s1", "owner"), service_account("s2")),
                accounts(service_account("s1"), service_account("s3")),
            )
        ],
        "api-keys": [
            (keys(api_key("k1"), api_key("k2")), keys(api_key("k2"), api_key("k3", email="three@example.com")))
        ],
        "spend-limits": [(None, spend(100)), (spend(100), spend(101)), (spend(1), None)],
        "rate-limits": [(limits(rate_limit("a"), rate_limit("b")), limits(rate_limit("a", max_tokens_per_1_minute=1)))],
        "certificates": [(certificates(certificate("c1")), certificates(certificate("c2")))],
        "permissions": [(permissions(), permissions(model_permissions(), hosted_tool_permissions()))],
        "data-retention": [(None, retention("none")), (retention("none"), retention("zero_data_retention"))],
    }


@pytest.mark.parametrize("collector", COLLECTORS, ids=lambda c: c.name)
def test_equal_details_make_no_change_and_emails_stay_out_unless_asked(collector):
    for old, new in scenarios()[collector.name]:
        for details in (old, new):
            assert collector.diff(details, details, True) == []
            assert collector.diff(details, copy.deepcopy(details), True) == []
        for change in collector.diff(old, new, False):
            assert "@" not in repr(change.fields)
            assert not any("email" in field for field in change.fields)


# -- the table ----------------------------------------------------------------------------------


def test_the_table_names_each_collector_once_with_its_default():
    names = [c.name for c in COLLECTORS]
    assert len(names) == len(set(names))
    assert BY_NAME == {c.name: c for c in COLLECTORS}
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", name) for name in names)
    assert {c.name: c.default for c in COLLECTORS} == {
        "users": True,
        "service-accounts": True,
        "api-keys": True,
        "spend-limits": True,
        "rate-limits": False,
        "certificates": False,
        "permissions": False,
        "data-retention": False,
    }
    assert all(c.help for c in COLLECTORS)


def test_every_family_is_an_openai_gauge_whose_help_names_the_background_poll():
    names = [f.name for c in COLLECTORS for f in c.families]
    assert len(names) == len(set(names))
    for family in (f for c in COLLECTORS for f in c.families):
        assert family.name.startswith("openai_")
        [parsed] = text_string_to_metric_families(family.header.decode())
        assert (parsed.name, parsed.type) == (family.name, "gauge")
        assert "background poll" in parsed.documentation
    per_item = {f.name for c in COLLECTORS for f in c.families if f.per_item}
    assert per_item == {
        "openai_project_api_key_info",
        "openai_project_api_key_created_timestamp_seconds",
        "openai_project_api_key_last_used_timestamp_seconds",
        "openai_project_certificate_expiry_timestamp_seconds",
    }
    assert [c.name for c in COLLECTORS if c.aggregate] == ["api-keys"]
    assert [c.name for c in COLLECTORS if c.fetch_organization or c.render_organization] == ["spend-limits"]
    static = API_KEYS.aggregate([], True).static.decode()
    organization = SPEND_LIMITS.render_organization(None).decode()
    for text in (static, organization):
        for family in text_string_to_metric_families(text):
            assert family.name.startswith("openai_") and "background poll" in family.documentation


@pytest.mark.parametrize("collector", COLLECTORS, ids=lambda c: c.name)
def test_changes_lists_exactly_what_the_diff_emits(collector):
    emitted = {
        (change.resource, change.change)
        for old, new in scenarios()[collector.name]
        for emails in (False, True)
        for change in collector.diff(old, new, emails)
    }
    assert len(collector.changes) == len(set(collector.changes))
    assert emitted == set(collector.changes)


@pytest.mark.parametrize("collector", COLLECTORS, ids=lambda c: c.name)
def test_per_item_false_drops_exactly_the_per_item_families(collector):
    for details in {id(d): d for pair in scenarios()[collector.name] for d in pair}.values():
        full, counts = collector.render(PROJECT, details, True), collector.render(PROJECT, details, False)
        for family, with_items, without_items in zip(collector.families, full, counts, strict=True):
            assert without_items == (b"" if family.per_item else with_items)


# -- properties -----------------------------------------------------------------------------------


@given(st.integers())
def test_cents_is_the_exact_decimal_amount(amount):
    text = cents(amount)
    with localcontext() as exact:
        exact.prec = len(str(amount)) + 2  # no rounding, however many digits
        assert Decimal(text) == Decimal(amount) / 100
    assert re.fullmatch(r"-?(0|[1-9]\d*)(\.\d?[1-9])?", text), text
    if abs(amount) < 2**53:
        assert float(text) == amount / 100


@given(st.integers(0, 10**15))
@settings(max_examples=50, deadline=None)
def test_a_spend_limit_reads_back_as_its_amount(amount):
    value = Metrics(rendered(SPEND_LIMITS, spend(amount))).value(
        "openai_project_spend_limit", project_id=PROJECT, currency="USD", interval="month"
    )
    assert value == amount / 100


ROLES = st.dictionaries(st.sampled_from([f"id_{i}" for i in range(8)]), st.sampled_from(["owner", "member", "none"]))


@given(ROLES, ROLES, st.booleans())
@settings(max_examples=150, deadline=None)
def test_member_changes_replayed_on_old_give_new(old, new, emails):
    for collector, build, key in ((USERS, users, "user_id"), (SERVICE_ACCOUNTS, accounts, "service_account_id")):
        item = user if collector is USERS else service_account
        before = build(*(item(i, r) for i, r in old.items()))
        after = build(*(item(i, r) for i, r in new.items()))
        state = dict(old)
        for change in collector.diff(before, after, emails):
            assert (change.resource, change.change) in collector.changes
            member = change.fields[key]
            if change.change == "removed":
                assert state.pop(member) == change.fields["role"]
            elif change.change == "role_changed":
                assert state[member] == change.fields["old_role"] != change.fields["new_role"]
                state[member] = change.fields["new_role"]
            else:
                assert member not in state
                state[member] = change.fields["role"]
        assert state == new


IDS = st.sets(st.sampled_from([f"id_{i}" for i in range(8)]))


@given(IDS, IDS)
@settings(max_examples=100, deadline=None)
def test_key_and_certificate_changes_replayed_on_old_give_new(old, new):
    for collector, build, item, key in (
        (API_KEYS, keys, api_key, "api_key_id"),
        (CERTIFICATES, certificates, certificate, "certificate_id"),
    ):
        state = set(old)
        for change in collector.diff(build(*map(item, sorted(old))), build(*map(item, sorted(new))), False):
            assert (change.resource, change.change) in collector.changes
            if change.change == "removed":
                state.remove(change.fields[key])
            else:
                assert change.fields[key] not in state
                state.add(change.fields[key])
        assert state == new


LIMIT_VALUES = st.dictionaries(
    st.sampled_from(
        ["max_requests_per_1_minute", "max_tokens_per_1_minute", "max_images_per_1_minute", "max_requests_per_1_day"]
    ),
    st.integers(0, 5),
)
MODEL_LIMITS = st.dictionaries(st.sampled_from(["a", "b", "c"]), LIMIT_VALUES)


def _rate_limits(models: dict):
    """Records for these models, each with only the limits given (the builder's defaults cleared)."""
    cleared = {"max_requests_per_1_minute": None, "max_tokens_per_1_minute": None}
    return limits(*(rate_limit(model, **(cleared | values)) for model, values in models.items()))


def _limit_state(records) -> dict:
    """Model -> limit label -> value, leaving out models without any limit (they render nothing)."""
    return {r.model: dict(r.values) for r in records if r.values}


@given(MODEL_LIMITS, MODEL_LIMITS)
@settings(max_examples=100, deadline=None)
def test_rate_limit_changes_replayed_on_old_give_new(old, new):
    before, after = _rate_limits(old), _rate_limits(new)
    state = _limit_state(before)
    for change in RATE_LIMITS.diff(before, after, False):
        assert (change.resource, change.change) in RATE_LIMITS.changes
        values = state.setdefault(change.fields["model"], {})
        for field, value in change.fields.items():
            if field.startswith("new_"):
                label = field.removeprefix("new_")
                assert values.get(label) == change.fields[f"old_{label}"] != value
                if value is None:
                    del values[label]
                else:
                    values[label] = value
    assert {model: values for model, values in state.items() if values} == _limit_state(after)


SPEND = st.one_of(
    st.none(),
    st.builds(
        lambda amount, currency, status: spend(amount, currency=currency, status=status),
        st.integers(0, 10**9),
        st.sampled_from(["USD", "EUR"]),
        st.sampled_from(["enforcing", "inactive"]),
    ),
)


@given(SPEND, SPEND)
@settings(max_examples=100, deadline=None)
def test_spend_limit_changes_replayed_on_old_give_new(old, new):
    state = dict(zip(SpendLimit._fields, old or [None] * 4, strict=True))
    for change in SPEND_LIMITS.diff(old, new, False):
        assert (change.resource, change.change) in SPEND_LIMITS.changes
        for field, value in change.fields.items():
            if field.startswith("new_"):
                name = field.removeprefix("new_")
                assert state[name] == change.fields[f"old_{name}"] != value
                state[name] = value
    assert state == dict(zip(SpendLimit._fields, new or [None] * 4, strict=True))


@given(st.text(max_size=20), st.text(min_size=1, max_size=20))
@settings(max_examples=100, deadline=None)
def test_any_label_text_reads_back_unchanged(name, project_id):
    metrics = scrape(API_KEYS, keys(api_key("key_1", name=name), project_id=project_id), project_id=project_id)
    assert metrics.series("openai_project_api_key_info") == {
        labels(project_id=project_id, api_key_id="key_1", name=name, owner_type="user", owner_id="user_abc"): 1
    }


@pytest.mark.parametrize(
    ("collector", "item"),
    [
        (API_KEYS, lambda name: parse_key(api_key("key_1", name=name))),
        (CERTIFICATES, lambda name: parse_certificate(certificate("cert_1", name=name))),
    ],
    ids=["api-keys", "certificates"],
)
def test_an_email_in_a_free_text_name_never_reaches_a_metric(collector, item):
    record = item("deploy key of Alice.Smith+ci@corp.example.org (rotated)")
    text = b"".join(collector.render(PROJECT, (record,), True)).decode()
    assert "@" not in text and "corp.example.org" not in text
    assert "deploy key of [email] (rotated)" in text
