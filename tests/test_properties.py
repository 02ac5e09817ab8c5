"""Property-based tests: the two project parsers agree, chains stitch to a sequential walk,
and the snapshot diff is the set difference of two polls.

Hypothesis generates the pages and the edits between two polls; the chains run against a
real loopback server whose pages come from a list the test edits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.chains import MIN_PAGES_PER_CHAIN, fetch_projects, worth_chaining
from exporter.settings import AdminKey
from exporter.simulator import OrganizationServer, Request, Response, SimulatedOrganization, error_body
from exporter.snapshot import ARCHIVED, Project, Snapshot, diff
from exporter.upstream import (
    PAGE_SIZE,
    PollError,
    ProjectsClient,
    _Invalid,
    _parse_plain_project,
    parse_page,
    parse_project,
)
from tests.support.upstream import list_page

# -- the two parsers -------------------------------------------------------------------------

# Text as JSON can carry it: any code point, now and then lone surrogates (from \uD800 escapes).
LONE_SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.one_of(
    st.text(max_size=12),
    st.text(max_size=12),
    st.text(max_size=12),
    st.tuples(st.text(max_size=5), LONE_SURROGATE, st.text(max_size=5)).map("".join),
)
ODD = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=3),
    st.just(""),
)
EXTRA = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda k: k not in Project._fields),
    st.one_of(st.none(), TEXT, st.integers(), st.lists(st.integers(), max_size=2)),
    max_size=3,
)
MISSING = object()
# Each field is mostly of the contract's shape, else absent, or of a wrong type or value.
FIELDS = {
    "id": TEXT.filter(bool),
    "name": st.one_of(st.none(), TEXT),
    "status": st.sampled_from(["active", "archived", "", None]),
    "created_at": st.one_of(st.integers(0, 2**40), st.floats(0, 2e9)),
    "archived_at": st.one_of(st.none(), st.integers(0, 2**40)),
    "external_key_id": st.one_of(st.none(), TEXT),
    "residency": st.one_of(st.none(), st.sampled_from(["US_STORAGE_PROCESSING", "EU"]), TEXT),
}


@st.composite
def items(draw: st.DrawFn, wrong: bool = True) -> object:
    """A project as upstream might send it: mostly well formed, with nulls, missing and extra
    fields, and unless `wrong` is false, now and then a field of a wrong type or no object at all."""
    if wrong and draw(st.integers(0, 30)) == 0:
        return draw(st.one_of(st.none(), ODD))
    item: dict[str, object] = {}
    for name, good in FIELDS.items():
        value = draw(st.one_of(good, good, good, good, st.just(MISSING), ODD if wrong else good))
        if value is not MISSING:
            item[name] = value
    item.update(draw(EXTRA))
    return item


def _has_lone_surrogate(value: object) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in json.dumps(value, ensure_ascii=False))


def _outcome(parse, item: object) -> Project | str:  # type: ignore[no-untyped-def]
    try:
        return parse(item)
    except _Invalid:
        return "invalid"


@given(items())
@settings(max_examples=300, deadline=None)
def test_the_fast_parser_agrees_with_the_tolerant_one(item: object) -> None:
    """Wherever the fast path answers, it answers as parse_project would; it never refuses
    what parse_project accepts (it hands anything unusual over)."""
    if _has_lone_surrogate(item):
        return  # parse_page sends pages with lone surrogates to parse_project alone: below
    assert _outcome(_parse_plain_project, item) == _outcome(parse_project, item)


@given(st.lists(st.one_of(items(wrong=False), items(wrong=False), items()), max_size=5), st.booleans())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_page_parses_as_its_items_do_one_by_one(data: list[object], has_more: bool) -> None:
    """parse_page, whichever path it takes per page, gives what parse_project gives item by item."""
    body = json.dumps({"object": "list", "data": data, "has_more": has_more}).encode()  # \uXXXX escapes
    expected: list[Project] | str
    try:
        expected = [parse_project(item) for item in data]
    except _Invalid:
        expected = "invalid"
    try:
        page = parse_page(body)
    except PollError as exc:
        assert expected == "invalid" or (has_more and expected == []), exc.message
        return
    assert page.projects == expected
    assert page.ids == tuple(p.id for p in page.projects)
    assert all(p.status for p in page.projects)
    assert not any(_has_lone_surrogate([p.id, p.name, p.external_key_id, p.residency]) for p in page.projects)


# -- chains against a sequential walk -------------------------------------------------------


class ListedUpstream:
    """A loopback server whose project list is `self.items`, paged by cursor as upstream pages."""

    def __init__(self) -> None:
        self.items: list[dict[str, object]] = []
        self.lock = threading.Lock()
        self.server = OrganizationServer(SimulatedOrganization(0), "sk-admin-properties")
        self.server.fault = self.answer
        self.server.start()

    def answer(self, request: Request) -> Response:
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        with self.lock:
            ids = [item["id"] for item in self.items]
            if after is not None and after not in ids:
                return Response(400, error_body("No such object for the `after` cursor", param="after"))
            start = 0 if after is None else ids.index(after) + 1
            data = self.items[start : start + limit]
            has_more = start + limit < len(self.items)
        return list_page(data, has_more)


@pytest.fixture(scope="module")
def listed() -> Iterator[ListedUpstream]:
    upstream = ListedUpstream()
    yield upstream
    upstream.server.stop()


def _client(upstream: ListedUpstream, concurrency: int) -> ProjectsClient:
    return ProjectsClient(
        base_url=upstream.server.base_url,
        admin_key=AdminKey(value="sk-admin-properties"),
        timeout=10.0,
        max_retries=0,
        max_pages=10_000,
        stop=threading.Event(),
        concurrency=concurrency,
    )


def _item(n: int, status: str = "active") -> dict[str, object]:
    return {
        "id": f"proj_{n:06}",
        "object": "organization.project",
        "name": f"Project {n}",
        "created_at": 1_700_000_000 + n,
        "archived_at": 1_750_000_000 if status == ARCHIVED else None,
        "status": status,
    }


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["create", "archive", "rename", "remove", "move", "swap-pages"]),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
    ),
    max_size=12,
)


def _edit(items: list[dict[str, object]], edits: list[tuple[str, int, int]]) -> None:
    """Edits between two polls, in place: what upstream's list may do while we are not looking."""
    fresh = 900_000
    for kind, a, b in edits:
        if not items:
            break
        i, j = a % len(items), b % len(items)
        if kind == "create":
            fresh += 1
            items.append(_item(fresh))
        elif kind == "archive":
            items[i] = {**items[i], "status": ARCHIVED, "archived_at": 1_760_000_000}
        elif kind == "rename":
            items[i] = {**items[i], "name": f"renamed {b}"}
        elif kind == "remove":
            del items[i]
        elif kind == "move":
            items.insert(j, items.pop(i))
        else:  # two whole pages change places
            pages = len(items) // PAGE_SIZE
            if pages >= 2:
                p, q = sorted((a % pages, b % pages))
                if p != q:
                    first, second = slice(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), slice(q * PAGE_SIZE, (q + 1) * PAGE_SIZE)
                    items[first], items[second] = items[second], items[first]


@given(size=st.integers(0, 700), concurrency=st.integers(2, 3), edits=EDITS)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
def test_chained_polls_stitch_to_the_list_a_sequential_walk_gives(
    listed: ListedUpstream, size: int, concurrency: int, edits
) -> None:  # type: ignore[no-untyped-def]
    size += concurrency * PAGE_SIZE * MIN_PAGES_PER_CHAIN  # enough projects for the chains to run
    with listed.lock:
        listed.items = [_item(n, ARCHIVED if n % 7 == 0 else "active") for n in range(size)]
    sequential, chained = _client(listed, 1), _client(listed, concurrency)
    try:
        deadline = time.monotonic() + 30
        before = fetch_projects(sequential, deadline).projects
        previous = {p.id: p for p in before}
        assert worth_chaining(len(previous), concurrency)
        with listed.lock:
            _edit(listed.items, edits)
        walked = fetch_projects(sequential, deadline).projects
        stitched = fetch_projects(chained, deadline, previous).projects
    finally:
        sequential.close()
        chained.close()
    assert [p.id for p in stitched] == [item["id"] for item in listed.items]
    assert stitched == walked


# -- the diff against the set difference ----------------------------------------------------

PROJECTS = st.lists(
    st.builds(
        Project,
        id=st.sampled_from([f"proj_{n}" for n in range(30)]),
        name=st.one_of(st.none(), st.sampled_from(["a", "b", "Ünï"])),
        status=st.sampled_from(["active", ARCHIVED]),
        created_at=st.just(1.0),
        archived_at=st.none(),
        external_key_id=st.none(),
        residency=st.none(),
    ),
    max_size=30,
    unique_by=lambda p: p.id,
)


@given(PROJECTS, PROJECTS, st.randoms())
@settings(max_examples=250, deadline=None)
def test_the_diff_is_the_set_difference_of_two_polls(old: list[Project], new: list[Project], rng) -> None:  # type: ignore[no-untyped-def]
    rng.shuffle(new)  # the order of the list is no change
    first = Snapshot.build(old, completed_at=1.0, pages=1, duration=0.1)
    second = Snapshot.build(new, completed_at=2.0, pages=1, duration=0.1, previous=first)
    before, after = {p.id: p for p in old}, {p.id: p for p in new}
    both = before.keys() & after.keys()
    expected = (
        {("created", i) for i in after.keys() - before.keys()}
        | {("removed", i) for i in before.keys() - after.keys()}
        | {("archived", i) for i in both if before[i].status != ARCHIVED and after[i].status == ARCHIVED}
        | {("unarchived", i) for i in both if before[i].status == ARCHIVED and after[i].status != ARCHIVED}
        | {("renamed", i) for i in both if before[i].name != after[i].name}
    )
    changes = diff(first, second)
    assert len(changes) == len(expected)  # no change reported twice
    assert {(c.kind, c.project.id) for c in changes} == expected
    for change in changes:
        assert change.project == (before if change.kind == "removed" else after)[change.project.id]
        if change.kind == "renamed":
            assert change.old_name == before[change.project.id].name
