"""The official openai SDK reads the simulator's costs and usage endpoints as the simulator sends them.

The SDK is generated from OpenAI's own spec: if it pages through the simulator's buckets with
`next_page` and parses every field of every result into a field its model for that result object
declares, with the value the raw JSON has, the simulator speaks the real contract. The SDK writes
arrays with brackets (`group_by[]=...`), the raw requests here repeat them: both answer the same.
One thing the SDK changes: an `amount.value` sent as a string it parses into a float.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from pydantic import BaseModel

from exporter.simulated_spend_catalog import BASE_MODELS, ENDPOINTS
from exporter.simulator import SimulatedOrganization
from tests.support.keys import KEY
from tests.support.sdk import sdk

NOW = 1_750_000_000
DAY = 86_400
START = NOW // DAY * DAY - 4 * DAY
LIMIT = 2  # small, so that every answer takes several pages


@pytest.fixture
def server(simulator):
    server = simulator(0)
    server.organization = SimulatedOrganization(40, seed=11, now=NOW)
    return server


@pytest.fixture
def client(server):
    client = sdk(server)
    yield client
    client.close()


def raw_pages(server, resource: str, **params) -> list[dict]:
    """The simulator's JSON pages, following `next_page`, lists sent as repeated parameters."""
    pages: list[dict] = []
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {KEY}"}) as http:
        while not pages or pages[-1]["has_more"]:
            page = {"page": pages[-1]["next_page"]} if pages else {}
            response = http.get(f"{server.base_url}/organization/{resource}", params=params | page)
            assert response.status_code == 200, response.text
            pages.append(response.json())
    return pages


def sdk_pages(method, **params) -> list:
    pages = [method(**params)]
    while pages[-1].has_more:
        pages.append(method(**params, page=pages[-1].next_page))
    return pages


def assert_parsed(parsed: BaseModel, document: dict, where: str = "") -> None:
    """Each field of `document` is a field the SDK's model declares, parsed to the same value (a string
    amount to its float); every field the model requires is in the document."""
    fields = type(parsed).model_fields
    for name, value in document.items():
        assert name in fields, f"the SDK's {type(parsed).__name__} has no field {where}.{name}"
        attribute = getattr(parsed, name)
        if isinstance(value, dict):
            assert_parsed(attribute, value, f"{where}.{name}")
        elif isinstance(value, list):
            assert len(attribute) == len(value), f"{where}.{name}"
            for n, (item, raw) in enumerate(zip(attribute, value, strict=True)):
                assert_parsed(item, raw, f"{where}.{name}[{n}]")
        elif isinstance(value, str) and where.endswith(".amount") and name == "value":
            assert attribute == float(value), f"{where}.{name}"
        else:
            # A number the contract types `number` (a cost's quantity) the SDK holds as a float.
            widened = type(value) is int and type(attribute) is float
            assert attribute == value and (type(attribute) is type(value) or widened), f"{where}.{name}"
    missing = [name for name, field in fields.items() if field.is_required() and name not in document]
    assert not missing, f"{where} lacks the required {missing}"


# The SDK's method (client.admin.organization.usage.NAME), the path, a grouping that names every field.
CALLS = [("costs", "costs", ["project_id", "line_item"])] + [
    (name, f"usage/{name}", list(endpoint.dimensions)) for name, endpoint in ENDPOINTS.items()
]


def test_the_sdk_has_a_method_for_each_endpoint(client):
    usage = client.admin.organization.usage
    assert {name for name, _, _ in CALLS} <= set(dir(usage))


@pytest.mark.parametrize(("method", "resource", "group_by"), CALLS, ids=[c[0] for c in CALLS])
def test_the_sdk_parses_every_bucket(server, client, method, resource, group_by):
    for grouping in ([], group_by):
        parsed = sdk_pages(
            getattr(client.admin.organization.usage, method), start_time=START, limit=LIMIT, group_by=grouping
        )
        raw = raw_pages(server, resource, start_time=START, limit=LIMIT, group_by=grouping)
        assert len(parsed) == len(raw) == 3  # five daily buckets, two a page
        for page, document in zip(parsed, raw, strict=True):
            assert_parsed(page, document, method)
        results = [result for page in parsed for bucket in page.data for result in bucket.results]
        assert results, "no usage to parse"
        # The SDK chose the result model by the `object` discriminator.
        assert {result.object for result in results} == {results[0].object}
        assert type(results[0]).__name__.endswith("Result")
    brackets = [r.query for r in server.requests if r.path.endswith(resource) and "group_by[]" in r.query]
    assert brackets, "the SDK sends arrays with brackets"


def test_string_amounts_parse_to_their_float(server, client):
    parsed = sdk_pages(
        client.admin.organization.usage.costs, start_time=START, limit=7, group_by=["project_id", "line_item"]
    )
    raw = raw_pages(server, "costs", start_time=START, limit=7, group_by=["project_id", "line_item"])
    values = [
        (r.amount.value, doc["amount"]["value"])
        for page, document in zip(parsed, raw, strict=True)
        for bucket, raw_bucket in zip(page.data, document["data"], strict=True)
        for r, doc in zip(bucket.results, raw_bucket["results"], strict=True)
    ]
    strings = [(value, text) for value, text in values if isinstance(text, str)]
    assert strings and all(isinstance(value, float) and value == float(text) for value, text in strings)
    assert any(r.project_id is None for page in parsed for bucket in page.data for r in bucket.results)


def test_filters_and_widths_through_the_sdk(server, client):
    usage = client.admin.organization.usage
    projects = [p["id"] for p in server.organization.all()[:5]]
    model = BASE_MODELS[0].name
    params = {
        "start_time": NOW - 3 * 3600,
        "bucket_width": "1h",
        "limit": 2,
        "group_by": ["project_id", "model", "batch"],
    }
    parsed = sdk_pages(usage.completions, **params, project_ids=projects, models=[model], batch=False)
    raw = raw_pages(server, "usage/completions", **params, project_ids=projects, models=[model], batch="false")
    for page, document in zip(parsed, raw, strict=True):
        assert_parsed(page, document, "completions")
    results = [r for page in parsed for bucket in page.data for r in bucket.results]
    assert results and {r.model for r in results} == {model} and {r.batch for r in results} == {False}
    assert {r.project_id for r in results} <= set(projects)
    assert all(b.end_time - b.start_time == 3600 for page in parsed for b in page.data)


def test_the_sdk_raises_the_simulators_errors(server, client):
    usage = client.admin.organization.usage
    with pytest.raises(openai.BadRequestError) as refused:
        usage.costs(start_time=START, group_by=["api_key_id"])
    assert refused.value.body["param"] == "group_by"
    with pytest.raises(openai.BadRequestError):
        usage.completions(start_time=START, page="page_unknown")
    with pytest.raises(openai.BadRequestError):
        usage.completions(start_time=START, bucket_width="1m", limit=1441)
    server.organization.forbidden = {"usage/images"}
    with pytest.raises(openai.PermissionDeniedError):
        usage.images(start_time=START)
    assert usage.embeddings(start_time=START).object == "page"
