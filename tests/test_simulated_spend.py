"""The simulated organization's costs and usage endpoints, over real HTTP, against the upstream contract.

Every answer is checked against the schema openai-admin-governance-and-spend.openapi.yaml gives
its path, closed (no field the spec does not name), with one widening the contract lacks: the live
API sends some `amount.value`s as strings of 28 decimals. The rest checks the parameters and their
limits, paging, errors, the scope and fault hooks, that costs and usage agree in every grouping and
width, the growth of recent buckets, the tests' changes (grow, revise) and determinism.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal

import httpx
import jsonschema
import pytest

from exporter.simulated_spend import Clock
from exporter.simulated_spend_catalog import BASE_MODELS, ENDPOINTS, catalog
from exporter.simulated_spend_query import COSTS, SPEND_RESOURCES, USAGE
from exporter.simulator import Response, SimulatedOrganization, error_body
from tests.support.governance import closed_components, contract
from tests.support.keys import KEY
from tests.support.listing import assert_error

NOW = 1_750_000_000  # Sunday 15 June 2025, 15:06:40 UTC: the spend's present, on a manual clock
DAY, HOUR, MINUTE = 86_400, 3_600, 60
TODAY = NOW // DAY * DAY
WEEK_AGO = TODAY - 7 * DAY
STRING_AMOUNT = r"-?[0-9]+\.[0-9]{28}"


@pytest.fixture(scope="module")
def validate():
    """validate(document, resource, status): the document matches the spec's schema for that GET answer."""
    spec = contract()
    components = copy.deepcopy(closed_components())
    amount = components["schemas"]["CostsResult"]["properties"]["amount"]["properties"]
    amount["value"] = {"anyOf": [amount["value"], {"type": "string", "pattern": f"^{STRING_AMOUNT}$"}]}

    validators: dict[str, jsonschema.Draft202012Validator] = {}

    def check(document, resource: str, status: int = 200) -> None:
        if status == 200:
            content = spec["paths"][f"/organization/{resource}"]["get"]["responses"]["200"]["content"]
            reference = content["application/json"]["schema"]["$ref"]
        else:
            reference = "#/components/schemas/ErrorResponse"
        if reference not in validators:
            validators[reference] = jsonschema.Draft202012Validator({"$ref": reference, "components": components})
        validators[reference].validate(document)

    return check


_http = httpx.Client(timeout=10)


@pytest.fixture(scope="module", autouse=True)
def _close_http():
    yield
    _http.close()


def get(server, resource: str, key: str = KEY, **params) -> httpx.Response:
    """A GET of costs or usage/NAME; list values go as repeated parameters."""
    return _http.get(
        f"{server.base_url}/organization/{resource}", params=params, headers={"Authorization": f"Bearer {key}"}
    )


def page(server, resource: str, **params) -> dict:
    response = get(server, resource, **params)
    assert response.status_code == 200, response.text
    return response.json()


def walk(server, resource: str, **params) -> tuple[list[dict], list[dict]]:
    """Every bucket, following `next_page` page by page; and the pages."""
    pages = [page(server, resource, **params)]
    while pages[-1]["has_more"]:
        pages.append(page(server, resource, **params | {"page": pages[-1]["next_page"]}))
    assert pages[-1]["next_page"] is None
    return [bucket for p in pages for bucket in p["data"]], pages


def results(buckets: list[dict]) -> list[dict]:
    return [result for bucket in buckets for result in bucket["results"]]


def value(result: dict) -> Decimal:
    return Decimal(str(result["amount"]["value"]))


@pytest.fixture
def server(simulator):
    """A server over 40 projects (every endpoint has usage in the week before NOW) on a manual clock."""
    server = simulator(0)
    server.organization = SimulatedOrganization(40, seed=11, now=NOW)
    return server


@pytest.fixture
def spend(server):
    return server.organization.spend


# -- the shapes of the contract ------------------------------------------------------------------------


def groupings(resource: str) -> list[list[str]]:
    dimensions = ("project_id", "line_item") if resource == COSTS else ENDPOINTS[resource[6:]].dimensions
    return [[], *[[name] for name in dimensions], list(dimensions)]


# (width, start, limit): a few buckets of each width, the newest still growing.
WINDOWS = [("1d", TODAY - DAY, 2), ("1h", NOW - 2 * HOUR, 3), ("1m", NOW - 6 * MINUTE, 7)]


@pytest.mark.parametrize("resource", SPEND_RESOURCES)
def test_each_endpoint_answers_as_the_spec_says(server, validate, resource):
    object_ = "organization.costs.result" if resource == COSTS else ENDPOINTS[resource[6:]].object
    fields = set(contract()["components"]["schemas"][result_schema(object_)]["properties"])
    seen = 0
    for width, start, limit in WINDOWS[:1] if resource == COSTS else WINDOWS:
        every = groupings(resource)
        for group_by in every if width == "1d" else [every[0], every[-1]]:
            response = get(server, resource, start_time=start, bucket_width=width, group_by=group_by, limit=limit)
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-request-id"].startswith("req_")
            document = response.json()
            validate(document, resource)
            assert document["object"] == "page" and len(document["data"]) == limit
            for bucket in document["data"]:
                assert bucket["end_time"] - bucket["start_time"] == {"1d": DAY, "1h": HOUR, "1m": MINUTE}[width]
                for result in bucket["results"]:
                    seen += 1
                    # Every field of the endpoint's result object, those not grouped by null.
                    assert result["object"] == object_ and set(result) == fields
                    for dimension in every[-1]:
                        if dimension not in group_by:
                            assert result[dimension] is None, dimension
                    if resource == COSTS:
                        assert (result["quantity"] is None) == ("line_item" not in group_by)
    assert seen


def result_schema(object_: str) -> str:
    schemas = contract()["components"]["schemas"]
    return next(
        name for name, s in schemas.items() if s.get("properties", {}).get("object", {}).get("enum") == [object_]
    )


def test_results_group_as_asked_and_add_up(server):
    """Each group is one result per bucket; the groups add up to the ungrouped total, in every endpoint."""
    for resource in USAGE:
        metrics = ENDPOINTS[resource[6:]].metrics
        whole = page(server, resource, start_time=WEEK_AGO)["data"]
        for group_by in groupings(resource)[1:]:
            grouped = page(server, resource, start_time=WEEK_AGO, group_by=group_by)["data"]
            for one, parts in zip(whole, grouped, strict=True):
                keys = [tuple(result[name] for name in group_by) for result in parts["results"]]
                assert len(keys) == len(set(keys))
                for metric in metrics:
                    total = sum(result[metric] for result in parts["results"])
                    assert total == sum(result[metric] for result in one["results"]), (resource, group_by, metric)
    whole = page(server, COSTS, start_time=WEEK_AGO)["data"]
    grouped = page(server, COSTS, start_time=WEEK_AGO, group_by=["project_id", "line_item"])["data"]
    for one, parts in zip(whole, grouped, strict=True):
        assert sum(map(value, parts["results"])) == pytest.approx(value(one["results"][0]), rel=Decimal("1e-9"))


def test_costs_are_the_usage_times_the_price(server, spend):
    """A model's cost lines count its completions tokens, at its price; some lines belong to no project."""
    day = TODAY - 2 * DAY
    usage = page(server, "usage/completions", start_time=day, limit=1, group_by=["project_id", "model"])["data"][0]
    costs = page(server, COSTS, start_time=day, limit=1, group_by=["project_id", "line_item"])["data"][0]
    lines = {(r["project_id"], r["line_item"]): r for r in costs["results"]}
    prices = {model.name: model.prices for model in BASE_MODELS}
    assert usage["results"]
    for result in usage["results"]:
        project, model = result["project_id"], result["model"]
        expected = {
            "input": result["input_uncached_tokens"] + result["input_cache_write_tokens"],
            "cached input": result["input_cached_tokens"],
            "output": result["output_tokens"],
        }
        for suffix, quantity in expected.items():
            line = lines.get((project, f"{model}, {suffix}"))
            if quantity == 0:
                assert line is None
                continue
            assert line["quantity"] == quantity and line["quantity_unit"] == "tokens"
            assert value(line) == pytest.approx(quantity * prices[model][suffix], rel=Decimal("1e-12"))
    organization = [r for r in costs["results"] if r["project_id"] is None]
    assert organization and all(r["line_item"] == "file storage" for r in organization)
    assert {r["line_item"].split(", ")[-1] for r in costs["results"]} >= {"input", "output", "cached input"}


def test_bucket_widths_add_up_to_the_same_day(server):
    """A settled day is its 24 hours, and an hour its 60 minutes."""
    day = TODAY - DAY
    daily = page(server, "usage/completions", start_time=day, limit=1)["data"][0]["results"][0]
    hours = page(server, "usage/completions", start_time=day, end_time=day + DAY, bucket_width="1h")["data"]
    assert len(hours) == 24 and [b["start_time"] for b in hours] == list(range(day, day + DAY, HOUR))
    noon = day + 12 * HOUR
    minutes = page(server, "usage/completions", start_time=noon, end_time=noon + HOUR, bucket_width="1m")["data"]
    assert len(minutes) == 60
    for metric in ("input_tokens", "output_tokens", "num_model_requests"):
        assert sum(r[metric] for r in results(hours)) == daily[metric]
        assert sum(r[metric] for r in results(minutes)) == results(hours[12:13])[0][metric]


def test_string_amounts_beside_numbers(server):
    found = results(page(server, COSTS, start_time=WEEK_AGO, group_by=["project_id", "line_item"])["data"])
    strings = [r["amount"]["value"] for r in found if isinstance(r["amount"]["value"], str)]
    numbers = [r["amount"]["value"] for r in found if not isinstance(r["amount"]["value"], str)]
    assert strings and numbers and all(re.fullmatch(STRING_AMOUNT, s) for s in strings)
    assert all(isinstance(n, float | int) for n in numbers)
    assert {r["amount"]["currency"] for r in found} == {"usd"}


# -- parameters, paging, errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "width", "default", "most"),
    [
        (COSTS, "1d", 7, 180),
        ("usage/completions", "1d", 7, 31),
        ("usage/embeddings", "1h", 24, 168),
        ("usage/images", "1m", 60, 1440),
    ],
)
def test_limits_per_bucket_width(server, resource, width, default, most):
    start = NOW - 200 * DAY if width == "1d" else NOW - 200 * HOUR if width == "1h" else NOW - 2000 * MINUTE
    assert len(page(server, resource, start_time=start, bucket_width=width)["data"]) == default
    assert len(page(server, resource, start_time=start, bucket_width=width, limit=most)["data"]) == most
    assert_error(get(server, resource, start_time=start, bucket_width=width, limit=most + 1), 400, "limit")
    assert_error(get(server, resource, start_time=start, bucket_width=width, limit=0), 400, "limit")


def test_bad_parameters_answer_400(server):
    assert_error(get(server, COSTS), 400, "start_time")
    assert_error(get(server, "usage/completions", start_time="yesterday"), 400, "start_time")
    assert_error(get(server, COSTS, start_time=NOW, end_time=NOW), 400, "end_time")
    assert_error(get(server, COSTS, start_time=NOW, bucket_width="1h"), 400, "bucket_width")
    assert_error(get(server, "usage/completions", start_time=NOW, bucket_width="1w"), 400, "bucket_width")
    assert_error(get(server, "usage/vector_stores", start_time=NOW, group_by="model"), 400, "group_by")
    assert_error(get(server, "usage/images", start_time=NOW, sizes="9x9"), 400, "sizes")
    assert_error(get(server, "usage/web_search_calls", start_time=NOW, context_levels="huge"), 400, "context_levels")
    assert_error(get(server, "usage/completions", start_time=NOW, batch="maybe"), 400, "batch")


def test_costs_refuse_group_by_api_key_id(server, validate):
    """The contract lists it; the live API answers 400, and so does the simulator."""
    for group_by in (["api_key_id"], ["project_id", "api_key_id"]):
        response = get(server, COSTS, start_time=WEEK_AGO, group_by=group_by)
        error = assert_error(response, 400, "group_by")
        assert error["type"] == "invalid_request_error" and "api_key_id" in error["message"]
        validate(response.json(), COSTS, 400)
    assert get(server, "usage/completions", start_time=WEEK_AGO, group_by="api_key_id").status_code == 200


@pytest.mark.parametrize("resource", [COSTS, "usage/completions", "usage/vector_stores"])
def test_paging_follows_next_page(server, resource):
    everything = page(server, resource, start_time=TODAY - 20 * DAY, limit=30)
    assert not everything["has_more"] and len(everything["data"]) == 21  # today's bucket too
    buckets, pages = walk(server, resource, start_time=TODAY - 20 * DAY, limit=2)
    assert buckets == everything["data"] and len(pages) == 11
    assert all(p["has_more"] and re.fullmatch(r"page_[A-Za-z0-9+/]{27}=", p["next_page"]) for p in pages[:-1])
    starts = [bucket["start_time"] for bucket in buckets]
    assert starts == list(range(TODAY - 20 * DAY, TODAY + DAY, DAY))
    # The cursor continues the query it came from, whatever the limit of the next page.
    rest = page(server, resource, start_time=TODAY - 20 * DAY, limit=30, page=pages[0]["next_page"])
    assert rest["data"] == everything["data"][2:]


def test_buckets_stop_at_end_time_and_now(server):
    days = page(server, COSTS, start_time=TODAY - 3 * DAY + 5, end_time=TODAY - DAY)["data"]
    assert [b["start_time"] for b in days] == [TODAY - 3 * DAY, TODAY - 2 * DAY]  # aligned to the UTC day
    future = page(server, COSTS, start_time=TODAY, end_time=TODAY + 30 * DAY)
    assert [b["start_time"] for b in future["data"]] == [TODAY] and not future["has_more"]
    assert page(server, COSTS, start_time=NOW + DAY) == {
        "object": "page",
        "data": [],
        "has_more": False,
        "next_page": None,
    }


def test_an_unknown_page_answers_400(server):
    first = page(server, COSTS, start_time=TODAY - 20 * DAY, limit=2)
    cursor = first["next_page"]
    for wrong in (
        "nonsense",
        "page_AAAAAGdGxdEiJdKOAAAAAGcqsYA=",
        cursor[:-6] + "AAAAA=",
        cursor.removeprefix("page_"),
    ):
        assert_error(get(server, COSTS, start_time=TODAY - 20 * DAY, limit=2, page=wrong), 400, "page")
    # A cursor belongs to its query: another start, endpoint or grouping refuses it.
    assert_error(get(server, COSTS, start_time=TODAY - 19 * DAY, page=cursor), 400, "page")
    assert_error(get(server, "usage/completions", start_time=TODAY - 20 * DAY, page=cursor), 400, "page")
    assert_error(get(server, COSTS, start_time=TODAY - 20 * DAY, group_by="project_id", page=cursor), 400, "page")


def test_filters_and_both_array_forms(server, spend):
    projects = [p["id"] for p in server.organization.all()]
    chosen = projects[:3]
    repeated = page(server, COSTS, start_time=WEEK_AGO, project_ids=chosen, group_by="project_id")
    brackets = page(server, COSTS, **{"start_time": WEEK_AGO, "project_ids[]": chosen, "group_by[]": "project_id"})
    assert repeated == brackets
    assert {r["project_id"] for r in results(repeated["data"])} <= set(chosen)
    model = BASE_MODELS[0].name
    only = results(
        page(server, "usage/completions", start_time=WEEK_AGO, models=model, group_by=["model", "batch"])["data"]
    )
    assert only and {r["model"] for r in only} == {model}
    batch = results(page(server, "usage/completions", start_time=WEEK_AGO, batch="true", group_by="batch")["data"])
    assert batch and {r["batch"] for r in batch} == {True}
    generated = results(
        page(server, "usage/images", start_time=WEEK_AGO, sources="image.generation", group_by="source")["data"]
    )
    assert {r["source"] for r in generated} <= {"image.generation"}


def test_forbidden_resources_answer_403(server):
    server.organization.forbidden = {"costs", "usage/completions"}
    for resource in ("costs", "usage/completions"):
        error = assert_error(get(server, resource, start_time=WEEK_AGO), 403)
        assert "access" in error["message"]
    assert_error(get(server, COSTS), 403)  # refused before the query is checked, as a missing scope is
    assert get(server, "usage/embeddings", start_time=WEEK_AGO).status_code == 200
    SimulatedOrganization(1, forbidden=SPEND_RESOURCES)
    with pytest.raises(ValueError, match="usage/chat"):
        SimulatedOrganization(1, forbidden={"usage/chat"})


def test_auth_and_the_fault_hook_apply(server):
    assert_error(get(server, COSTS, key="sk-admin-wrong", start_time=WEEK_AGO), 401)
    server.fault = lambda request: (
        Response(503, error_body("busy", "server_error")) if "usage" in request.path else None
    )
    assert_error(get(server, "usage/completions", start_time=WEEK_AGO), 503)
    assert get(server, COSTS, start_time=WEEK_AGO).status_code == 200
    assert_error(get(server, "usage/moderations", start_time=WEEK_AGO), 503)


# -- time, growth and changes ------------------------------------------------------------------------


def today_cost(server) -> Decimal:
    return value(page(server, COSTS, start_time=TODAY)["data"][0]["results"][0])


def test_the_current_day_grows_with_the_clock(server, spend):
    before = today_cost(server)
    assert spend.clock.manual and page(server, COSTS, start_time=TODAY)["data"][0]["end_time"] == TODAY + DAY
    spend.clock.advance(10 * MINUTE)
    assert today_cost(server) > before
    assert spend.cost_total(TODAY) == pytest.approx(today_cost(server), rel=Decimal("1e-12"))


def test_a_minute_is_final_only_once_settled(server, spend):
    minute = (NOW - 2 * MINUTE) // MINUTE * MINUTE

    def requests() -> int:
        found = page(server, "usage/completions", start_time=minute, end_time=minute + MINUTE, bucket_width="1m")
        return found["data"][0]["results"][0]["num_model_requests"]

    early = requests()
    spend.clock.advance(spend.settle)
    settled = requests()
    assert settled > early
    spend.clock.advance(HOUR)
    assert requests() == settled


def test_grow_and_revise(server, spend):
    project = server.organization.all()[0]["id"]
    before = spend.cost_total(TODAY, project_id=project)
    stream = spend.grow(project, 1000, model=BASE_MODELS[6].name)  # now, on the frozen clock
    assert stream["project_id"] == project and stream["model"] == BASE_MODELS[6].name
    assert spend.cost_total(TODAY, project_id=project) > before
    usage = page(
        server,
        "usage/completions",
        start_time=NOW // MINUTE * MINUTE,
        bucket_width="1m",
        project_ids=project,
        models=stream["model"],
    )
    assert results(usage["data"])[0]["num_model_requests"] >= 1000

    day = TODAY - 3 * DAY
    served = {
        (r["project_id"], r["line_item"]): value(r)
        for r in results(page(server, COSTS, start_time=day, limit=1, group_by=["project_id", "line_item"])["data"])
    }
    assert spend.revise(day, day + DAY, project_id=project, keep=0.25)
    revised = {
        (r["project_id"], r["line_item"]): value(r)
        for r in results(page(server, COSTS, start_time=day, limit=1, group_by=["project_id", "line_item"])["data"])
    }
    for key, amount in served.items():
        if key[0] == project:  # a quarter of each stream's requests, rounded down
            assert revised.get(key, 0) <= amount / 4
        else:
            assert revised[key] == amount
    mine = [(served[key], revised.get(key, 0)) for key in served if key[0] == project]
    assert sum(after for _, after in mine) == pytest.approx(sum(before for before, _ in mine) / 4, rel=Decimal("0.02"))
    truth = spend.cost_totals(day, day + DAY)
    assert {k: float(v) for k, v in truth.items()} == pytest.approx({k: float(v) for k, v in revised.items()})
    with pytest.raises(ValueError):
        spend.revise(day, day + DAY, keep=1.5)


def test_the_truth_is_what_the_pages_add_up_to(server, spend):
    buckets, _ = walk(server, COSTS, start_time=TODAY - 40 * DAY, group_by=["project_id", "line_item"], limit=9)
    served: dict[tuple, Decimal] = {}
    for result in results(buckets):
        key = (result["project_id"], result["line_item"])
        served[key] = served.get(key, Decimal(0)) + value(result)
    truth = spend.cost_totals(TODAY - 40 * DAY)
    assert served.keys() == truth.keys()
    for key, amount in truth.items():
        assert served[key] == pytest.approx(amount, rel=Decimal("1e-9"))
    assert spend.cost_total(TODAY - 40 * DAY) == sum(truth.values())
    assert spend.cost_total(TODAY - 40 * DAY, project_id=None) == truth[None, "file storage"]
    usage = spend.usage_totals("completions", WEEK_AGO)
    served_usage = results(
        page(server, "usage/completions", start_time=WEEK_AGO, limit=8, group_by=["project_id", "model"])["data"]
    )
    assert sum(m["output_tokens"] for m in usage.values()) == sum(r["output_tokens"] for r in served_usage)


def test_churn_raises_the_current_buckets_spend(server, spend):
    before = today_cost(server)
    for _ in range(3):
        server.organization.churn()
    assert today_cost(server) > before  # on the frozen clock: the burst alone


# -- variety and determinism ----------------------------------------------------------------------


def test_the_catalog_and_its_options():
    assert len(catalog()) == 16 and len(catalog(20)) == 20 and len(catalog(3)) == 3
    assert {m.endpoint for m in catalog(6)} == {
        "completions",
        "embeddings",
        "moderations",
        "images",
        "audio_speeches",
        "audio_transcriptions",
    }
    assert all(m.name.startswith("ft:") for m in catalog(20)[16:])
    organization = SimulatedOrganization(30, seed=4, now=NOW, models=20)
    models = {key[1] for key in organization.spend.usage_totals("completions", WEEK_AGO)}
    assert any(model.startswith("ft:") for model in models)
    with pytest.raises(ValueError):
        catalog(0)
    clock = Clock(NOW)
    organization = SimulatedOrganization(5, seed=4, clock=clock)
    assert organization.spend.clock is clock and clock() == NOW
    clock.set(NOW + 5)
    assert clock() == NOW + 5 and not Clock().manual


def test_the_same_seed_answers_the_same(simulator):
    servers = [simulator(0) for _ in range(3)]
    for server, seed in zip(servers, (11, 11, 12), strict=True):
        server.organization = SimulatedOrganization(25, seed=seed, now=NOW)
    queries = [
        (COSTS, {"group_by": ["project_id", "line_item"]}),
        *[(resource, {"group_by": list(ENDPOINTS[resource[6:]].dimensions)}) for resource in USAGE],
    ]
    for resource, params in queries:
        answers = [get(server, resource, start_time=WEEK_AGO, **params).content for server in servers]
        assert answers[0] == answers[1], resource
    costs = [get(server, COSTS, start_time=WEEK_AGO, group_by="project_id").content for server in servers]
    assert costs[0] == costs[1] != costs[2]
