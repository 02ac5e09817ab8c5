"""ProjectsClient against the simulated organization on loopback: paging, retries, parsing."""

from __future__ import annotations

import email.utils
import json
import math
import threading
import time

import pytest

import exporter.upstream as upstream_module
from exporter import __version__
from exporter.chains import fetch_projects
from exporter.settings import AdminKey
from exporter.simulator import Response
from exporter.upstream import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    PAGE_SIZE,
    PollCancelled,
    PollError,
    parse_page,
)
from tests.support.keys import KEY
from tests.support.net import ReservedPort
from tests.support.upstream import (
    OMIT,
    Switchboard,
    error,
    fetch,
    header,
    list_page,
    list_requests,
    on_cursor,
    project,
)
from tests.support.waiting import wait_for


def ids(projects) -> list[str]:
    return [p.id if hasattr(p, "id") else p["id"] for p in projects]


# -- paging ----------------------------------------------------------------------------


def test_walks_every_page_including_archived_projects(simulator, make_client):
    server = simulator()
    expected = server.organization.all(include_archived=True)
    assert len(expected) == 250 and any(p["status"] == "archived" for p in expected)

    result = fetch(make_client(server.base_url))

    assert ids(result.projects) == ids(expected)
    assert result.pages == 3
    for got, want in zip(result.projects, expected, strict=False):
        assert (got.name, got.status, got.created_at, got.archived_at) == (
            want["name"],
            want["status"],
            want["created_at"],
            want["archived_at"],
        )
        assert (got.external_key_id, got.residency) == (want.get("external_key_id"), want.get("residency"))


def test_every_page_asks_for_100_with_archived_and_the_previous_last_id(simulator, make_client):
    server = simulator()
    expected = ids(server.organization.all())
    fetch(make_client(server.base_url))

    requests = list_requests(server)
    assert [r.query.get("after") for r in requests] == [None, expected[99], expected[199]]
    for request in requests:
        assert request.method == "GET"
        assert request.query["limit"] == str(PAGE_SIZE) == "100"
        assert request.query["include_archived"] == "true"
        assert header(request, "Authorization") == f"Bearer {KEY}"
        assert header(request, "User-Agent") == f"openai-projects-exporter/{__version__}"


@pytest.mark.parametrize("projects, pages", [(0, 1), (1, 1), (100, 1), (101, 2), (300, 3)])
def test_page_count_follows_has_more(simulator, make_client, projects, pages):
    server = simulator(projects)
    result = fetch(make_client(server.base_url))
    assert ids(result.projects) == ids(server.organization.all())
    assert result.pages == pages == len(list_requests(server))


def test_cursor_is_last_id_and_falls_back_to_the_last_item(scripted_upstream, make_client):
    items = [project(f"proj_{n}") for n in range(6)]
    upstream = scripted_upstream(
        {
            None: list_page(items[0:2], True, last_id="cursor_opaque"),  # an opaque cursor, not an id
            "cursor_opaque": list_page(items[2:4], True, last_id=None),  # null: next after = last item
            "proj_3": list_page(items[4:5], True, last_id=OMIT),  # absent: the same
            "proj_4": list_page(items[5:], False),
        }
    )

    result = fetch(make_client(upstream.base_url))

    assert upstream.afters() == [None, "cursor_opaque", "proj_3", "proj_4"]
    assert ids(result.projects) == ids(items)
    assert result.pages == 4


def test_has_more_false_ends_the_walk_even_with_a_last_id(scripted_upstream, make_client):
    items = [project("proj_a"), project("proj_b")]
    upstream = scripted_upstream({None: list_page(items, False, last_id="cursor_more")})
    result = fetch(make_client(upstream.base_url))
    assert upstream.afters() == [None]
    assert ids(result.projects) == ["proj_a", "proj_b"]


# -- pagination guards -----------------------------------------------------------------


def test_cursor_that_does_not_advance_fails_the_poll(scripted_upstream, make_client):
    upstream = scripted_upstream(
        {
            None: list_page([project("proj_a")], True, last_id="c1"),
            "c1": list_page([project("proj_b")], True, last_id="c1"),
        }
    )
    with pytest.raises(PollError) as failure:
        fetch(make_client(upstream.base_url))
    assert failure.value.reason == "pagination"
    assert upstream.afters() == [None, "c1"]


def test_cursor_loop_back_to_an_earlier_page_fails_the_poll(scripted_upstream, make_client):
    first = [project("proj_a"), project("proj_b")]
    upstream = scripted_upstream(
        {
            None: list_page(first, True, last_id="c1"),
            "c1": list_page([project("proj_c")], True, last_id="c2"),
            "c2": list_page(first, True, last_id="c1"),  # the first page again: a loop
        }
    )
    with pytest.raises(PollError) as failure:
        fetch(make_client(upstream.base_url))
    assert failure.value.reason == "pagination"
    assert "proj_a" in failure.value.message
    assert len(upstream.arrivals) == 3


def test_has_more_with_an_empty_page_fails_the_poll(scripted_upstream, make_client):
    upstream = scripted_upstream({None: list_page([], True, last_id=None)})
    with pytest.raises(PollError) as failure:
        fetch(make_client(upstream.base_url))
    assert failure.value.reason == "pagination"


def test_endless_list_stops_at_max_pages(scripted_upstream, make_client):
    def endless(server, request, n):  # fresh ids forever, the cursor always advancing
        return list_page([project(f"proj_{n}")], True)

    upstream = scripted_upstream(fault=endless)
    with pytest.raises(PollError) as failure:
        fetch(make_client(upstream.base_url, max_pages=5))
    assert failure.value.reason == "pagination"
    assert len(upstream.arrivals) == 5


@pytest.mark.parametrize("max_pages, ok", [(2, False), (3, True)])
def test_max_pages_is_the_most_pages_a_poll_may_read(simulator, make_client, max_pages, ok):
    server = simulator()
    client = make_client(server.base_url, max_pages=max_pages)
    if ok:
        assert fetch(client).pages == 3
    else:
        with pytest.raises(PollError) as failure:
            fetch(client)
        assert failure.value.reason == "pagination"
        assert len(list_requests(server)) == 2


# -- retries ---------------------------------------------------------------------------


def page_two(server, response: Response, times: int | None = 1) -> Switchboard:
    """Answer the first `times` requests (all, if None) for the second page with `response`;
    the Switchboard records every request, and `cursor` is page two's."""
    cursor = ids(server.organization.all())[99]
    board = Switchboard(server).arm(on_cursor(cursor, response, times))
    board.cursor = cursor
    return board


def page_two_arrivals(board: Switchboard):
    return [a for a in board.arrivals if a.after == board.cursor]


def test_429_retry_after_seconds_is_waited_and_the_page_retried_at_its_own_cursor(simulator, make_client):
    server = simulator()
    board = page_two(server, error(429, "Rate limit reached", {"Retry-After": "1"}))
    codes = []
    result = fetch(make_client(server.base_url, on_response=codes.append))

    cursor = board.cursor
    assert board.afters() == [None, cursor, cursor, ids(server.organization.all())[199]]
    first, retry = page_two_arrivals(board)
    assert retry.monotonic - first.monotonic >= 1.0
    assert codes == [200, 429, 200, 200]
    assert len(result.projects) == 250


def test_retry_after_ms_wins_over_retry_after(simulator, make_client):
    server = simulator()
    board = page_two(server, error(429, "slow down", {"retry-after-ms": "200", "Retry-After": "30"}))
    started = time.monotonic()
    fetch(make_client(server.base_url), within=20)
    first, retry = page_two_arrivals(board)
    assert retry.monotonic - first.monotonic >= 0.2
    assert time.monotonic() - started < 5  # not the 30 s of Retry-After


def test_retry_after_as_an_http_date(simulator, make_client):
    server = simulator()
    when = math.ceil(time.time() + 0.6)  # whole seconds, at least 0.6 s ahead
    board = page_two(server, error(429, "slow down", {"Retry-After": email.utils.formatdate(when, usegmt=True)}))
    fetch(make_client(server.base_url), within=20)
    first, retry = page_two_arrivals(board)
    assert retry.wall >= when - 0.05  # 50 ms for clock reads on either side


def test_5xx_is_retried_after_a_jittered_backoff(simulator, make_client):
    server = simulator()
    board = page_two(server, error(502, "Bad gateway"))
    result = fetch(make_client(server.base_url))
    first, retry = page_two_arrivals(board)
    gap = retry.monotonic - first.monotonic
    # The first backoff lies in [base/2, base]; allow scheduling slack above.
    assert BACKOFF_BASE / 2 <= gap <= BACKOFF_BASE + 0.75
    assert len(result.projects) == 250


@pytest.mark.parametrize("status", [500, 503, 504])
def test_each_5xx_then_success(simulator, make_client, status):
    server = simulator()
    board = page_two(server, error(status, "upstream trouble", {"retry-after-ms": "10"}), times=2)
    codes = []
    result = fetch(make_client(server.base_url, on_response=codes.append))
    assert len(page_two_arrivals(board)) == 3
    assert codes == [200, status, status, 200, 200]
    assert len(result.projects) == 250


def test_backoff_is_capped_exponential_with_jitter(make_client):
    client = make_client("http://127.0.0.1:9")
    for attempt in range(10):
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
        delays = [client._backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jitter: not every exporter retries in step


def test_retries_give_up_after_max_retries(simulator, make_client):
    server = simulator()
    board = page_two(
        server, error(429, "still limited", {"retry-after-ms": "20", "x-request-id": "req_limit"}), times=None
    )
    with pytest.raises(PollError) as failure:
        fetch(make_client(server.base_url, max_retries=2))
    assert failure.value.reason == "rate_limited"
    assert failure.value.status == 429
    assert failure.value.request_id == "req_limit"
    assert "gave up after 3 attempts" in failure.value.message
    assert len(page_two_arrivals(board)) == 3


def test_no_retries_with_max_retries_zero(simulator, make_client):
    server = simulator()
    board = page_two(server, error(503, "down", {"retry-after-ms": "10"}), times=None)
    with pytest.raises(PollError) as failure:
        fetch(make_client(server.base_url, max_retries=0))
    assert failure.value.reason == "http_error"
    assert len(page_two_arrivals(board)) == 1


@pytest.mark.parametrize(
    "status, reason", [(401, "auth"), (403, "auth"), (400, "http_error"), (404, "http_error"), (409, "http_error")]
)
def test_other_4xx_are_not_retried(simulator, make_client, status, reason):
    server = simulator()
    board = page_two(server, error(status, "no", {"retry-after-ms": "10"}), times=None)
    with pytest.raises(PollError) as failure:
        fetch(make_client(server.base_url, max_retries=3))
    assert (failure.value.reason, failure.value.status) == (reason, status)
    assert len(page_two_arrivals(board)) == 1


def test_wrong_key_is_an_auth_failure(simulator, make_client):
    server = simulator()
    with pytest.raises(PollError) as failure:
        fetch(make_client(server.base_url, key="sk-admin-wrong-key-0000"))
    assert failure.value.reason == "auth"
    assert failure.value.status == 401
    assert "Admin API key" in failure.value.message
    assert failure.value.request_id and failure.value.request_id.startswith("req_")
    assert len(list_requests(server)) == 1


@pytest.fixture
def quick_backoff(monkeypatch):
    """Backoffs of 25 to 50 ms, for the tests of what is retried rather than of how long a retry waits."""
    monkeypatch.setattr(upstream_module, "BACKOFF_BASE", 0.05)


def test_connection_reset_mid_body_is_retried(simulator, make_client, quick_backoff):
    server = simulator()

    def reset_first(server, request, n):
        if n == 0:
            body = json.dumps({"object": "list", "data": [project("proj_x")], "has_more": False}).encode()
            return Response(200, body, reset_after=10)
        return None

    board = Switchboard(server).arm(reset_first)
    result = fetch(make_client(server.base_url))
    assert board.afters()[:2] == [None, None]
    assert len(result.projects) == 250


def test_unreachable_upstream_is_a_connection_failure(make_client):
    with ReservedPort() as nothing_listens:
        client = make_client(nothing_listens.base_url, max_retries=0)
        with pytest.raises(PollError) as failure:
            fetch(client)
    assert failure.value.reason == "connection"


def test_slow_answer_times_out_and_is_retried(simulator, make_client, quick_backoff):
    server = simulator()
    board = page_two(server, Response(200, b"{}", delay=2.0))
    started = time.monotonic()
    result = fetch(make_client(server.base_url, timeout=0.3))
    first, retry = page_two_arrivals(board)
    assert retry.monotonic - first.monotonic >= 0.3
    assert time.monotonic() - started < 3
    assert len(result.projects) == 250


def test_api_timeout_without_retries_is_a_timeout_failure(simulator, make_client):
    server = simulator()
    page_two(server, Response(200, b"{}", delay=2.0))
    with pytest.raises(PollError) as failure:
        fetch(make_client(server.base_url, timeout=0.3, max_retries=0))
    assert failure.value.reason == "timeout"


def test_poll_deadline_bounds_the_whole_poll(simulator, make_client):
    server = simulator(250, page_delay=0.2)  # three pages: 0.6 s
    started = time.monotonic()
    with pytest.raises(PollError) as failure:
        fetch(make_client(server.base_url, timeout=5, max_retries=5), within=0.5)
    assert failure.value.reason == "timeout"
    assert time.monotonic() - started < 0.5 + 0.5


def test_retry_that_would_pass_the_deadline_fails_at_once(simulator, make_client):
    server = simulator()
    board = page_two(server, error(429, "slow down", {"Retry-After": "30"}), times=None)
    started = time.monotonic()
    with pytest.raises(PollError) as failure:
        fetch(make_client(server.base_url), within=3)
    assert failure.value.reason == "rate_limited"
    assert "deadline" in failure.value.message
    assert time.monotonic() - started < 1.5
    assert len(page_two_arrivals(board)) == 1


def test_stop_interrupts_a_retry_wait(simulator, make_client):
    server = simulator()
    board = page_two(server, error(429, "slow down", {"Retry-After": "60"}), times=None)
    stop = threading.Event()
    client = make_client(server.base_url, stop=stop)
    stopped = []

    def stop_once_refused():  # the poll now waits 60 s to retry page two
        wait_for(lambda: page_two_arrivals(board), what="page two to be refused")
        stopped.append(time.monotonic())
        stop.set()

    threading.Thread(target=stop_once_refused, daemon=True).start()
    with pytest.raises(PollCancelled):
        fetch(client, within=100)
    assert stopped and time.monotonic() - stopped[0] < 2


def test_failure_on_a_later_page_returns_nothing(simulator, make_client):
    server = simulator()
    last_cursor = ids(server.organization.all())[199]
    Switchboard(server).arm(on_cursor(last_cursor, error(500, "boom")))
    with pytest.raises(PollError) as failure:
        fetch(make_client(server.base_url, max_retries=0))
    assert failure.value.reason == "http_error"
    assert failure.value.status == 500


# -- the key ---------------------------------------------------------------------------


def test_key_file_is_read_again_before_each_poll(simulator, make_client, tmp_path):
    server = simulator()
    key_file = tmp_path / "admin-key"
    key_file.write_text(KEY + "\n")
    client = make_client(server.base_url, key=AdminKey(path=key_file))
    fetch(client)

    rotated = "sk-admin-rotated-5e2b"
    server.admin_key = rotated
    key_file.write_text(rotated)
    fetch(client)

    auth = [header(r, "Authorization") for r in list_requests(server)]
    assert auth == [f"Bearer {KEY}"] * 3 + [f"Bearer {rotated}"] * 3


def test_missing_key_file_is_an_auth_failure_without_a_request(simulator, make_client, tmp_path):
    server = simulator()
    client = make_client(server.base_url, key=AdminKey(path=tmp_path / "absent"))
    with pytest.raises(PollError) as failure:
        fetch(client)
    assert failure.value.reason == "auth"
    assert list_requests(server) == []


def test_upstream_error_message_is_one_line_and_hides_key_like_tokens(scripted_upstream, make_client):
    message = f"Incorrect API key provided: {KEY}.\nSee sk-admin-****wxyz for details " + "x" * 400
    upstream = scripted_upstream({None: error(401, message)})
    with pytest.raises(PollError) as failure:
        fetch(make_client(upstream.base_url))
    text = failure.value.message
    assert KEY not in text and "sk-admin-****wxyz" not in text
    assert "sk-***" in text
    assert "\n" not in text
    assert len(text) < 400


# -- parsing ---------------------------------------------------------------------------


def test_missing_null_and_unknown_fields(scripted_upstream, make_client):
    items = [
        {"id": "proj_bare", "created_at": 1_700_000_000},
        {
            "id": "proj_nulls",
            "object": "organization.project",
            "name": None,
            "created_at": 1_700_000_001,
            "archived_at": None,
            "status": None,
            "external_key_id": None,
            "residency": None,
        },
        {"id": "proj_arch_no_status", "created_at": 1_700_000_002, "archived_at": 1_700_000_500},
        {"id": "proj_arch_null_status", "created_at": 1_700_000_003, "archived_at": 1_700_000_600, "status": None},
        {
            "id": "proj_extra",
            "object": "organization.project",
            "name": "Extra",
            "created_at": 1_700_000_004,
            "status": "active",
            "colour": "teal",
            "settings": {"nested": [1, 2]},
            "residency": "EU_STORAGE_PROCESSING",
            "external_key_id": "ekm_1",
        },
    ]
    upstream = scripted_upstream({None: list_page(items, False, unknown_top_level={"x": 1})})

    got = {p.id: p for p in fetch(make_client(upstream.base_url)).projects}

    assert got["proj_bare"][1:] == (None, "active", 1_700_000_000, None, None, None)
    assert got["proj_nulls"][1:] == (None, "active", 1_700_000_001, None, None, None)
    assert (got["proj_arch_no_status"].status, got["proj_arch_no_status"].archived_at) == ("archived", 1_700_000_500)
    assert got["proj_arch_null_status"].status == "archived"
    assert got["proj_extra"][1:] == ("Extra", "active", 1_700_000_004, None, "ekm_1", "EU_STORAGE_PROCESSING")


INVALID_BODIES = {
    "not json": b"<html>Bad gateway</html>",
    "a list": b"[]",
    "data not a list": json.dumps({"object": "list", "data": {}, "has_more": False}).encode(),
    "has_more missing": json.dumps({"object": "list", "data": []}).encode(),
    "has_more a string": json.dumps({"object": "list", "data": [], "has_more": "false"}).encode(),
    "item not an object": json.dumps({"data": ["proj_a"], "has_more": False}).encode(),
    "id missing": json.dumps({"data": [{"created_at": 1}], "has_more": False}).encode(),
    "id a number": json.dumps({"data": [{"id": 5, "created_at": 1}], "has_more": False}).encode(),
    "created_at missing": json.dumps({"data": [{"id": "proj_a"}], "has_more": False}).encode(),
    "created_at a string": json.dumps({"data": [{"id": "proj_a", "created_at": "2024"}], "has_more": False}).encode(),
    "created_at a bool": json.dumps({"data": [{"id": "proj_a", "created_at": True}], "has_more": False}).encode(),
    "archived_at a string": json.dumps(
        {"data": [{"id": "proj_a", "created_at": 1, "archived_at": "x"}], "has_more": False}
    ).encode(),
    "name a number": json.dumps({"data": [{"id": "proj_a", "created_at": 1, "name": 7}], "has_more": False}).encode(),
    "status an object": json.dumps(
        {"data": [{"id": "proj_a", "created_at": 1, "status": {}}], "has_more": False}
    ).encode(),
    "last_id a number": json.dumps({"data": [], "has_more": False, "last_id": 3}).encode(),
}


@pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_wrong_shape_is_an_invalid_response_and_not_retried(scripted_upstream, make_client, body):
    upstream = scripted_upstream({None: Response(200, body, {"x-request-id": "req_shape"})})
    with pytest.raises(PollError) as failure:
        fetch(make_client(upstream.base_url, max_retries=3))
    assert failure.value.reason == "invalid_response"
    assert failure.value.request_id == "req_shape"
    assert len(upstream.arrivals) == 1


def test_unicode_names_survive(scripted_upstream, make_client):
    body = (
        '{"object":"list","has_more":false,"data":[{"id":"proj_u","created_at":1,'
        '"name":"検索チーム \\ud83d\\ude00 Données \\"q\\" back\\\\slash"}]}'
    )
    upstream = scripted_upstream({None: Response(200, body.encode())})
    [got] = fetch(make_client(upstream.base_url)).projects
    assert got.name == '検索チーム 😀 Données "q" back\\slash'


def test_lone_surrogate_becomes_the_replacement_character(scripted_upstream, make_client):
    body = b'{"object":"list","has_more":false,"data":[{"id":"proj_s","created_at":2,"name":"bad \\ud800 half"}]}'
    upstream = scripted_upstream({None: Response(200, body)})
    [got] = fetch(make_client(upstream.base_url)).projects
    got.name.encode("utf-8")  # encodable, so it can reach a label value
    assert got.name == "bad \ufffd half"


def test_parse_page_reads_the_documented_example():
    # The example response of list-projects in the upstream OpenAPI excerpt.
    body = b"""{"object": "list", "data": [{"id": "proj_abc", "object": "organization.project",
        "name": "Project example", "created_at": 1711471533, "archived_at": null, "status": "active"}],
        "first_id": "proj-abc", "last_id": "proj-xyz", "has_more": false}"""
    page = parse_page(body)
    assert page.has_more is False
    assert page.next_after == "proj-xyz"
    assert [(p.id, p.name, p.status, p.created_at) for p in page.projects] == [
        ("proj_abc", "Project example", "active", 1711471533)
    ]


# -- parallel cursor chains (--poll.concurrency) ---------------------------------------


@pytest.mark.parametrize("change", ["none", "anchor removed", "anchor archived", "projects created", "reordered"])
def test_parallel_chains_list_exactly_what_a_sequential_walk_lists(simulator, make_client, change):
    server = simulator(1000, seed=3)
    sequential = make_client(server.base_url)
    parallel = make_client(server.base_url, concurrency=2)
    previous = ids(fetch(sequential).projects)
    anchor = previous[len(previous) // 2 // 100 * 100 - 1]  # where the second chain starts: a page's end
    organization = server.organization
    if change == "anchor removed":
        organization.remove(anchor)
    elif change == "anchor archived":
        organization.archive(anchor)
    elif change == "projects created":
        for n in range(150):
            organization.create(f"New {n}")
    elif change == "reordered":  # the anchor moves to the end of the list
        moved = organization.get(anchor)
        organization.remove(anchor)
        organization.create(moved["name"], id=anchor)
    server.requests.clear()

    result = fetch_projects(parallel, time.monotonic() + 20, previous)

    chained = [r.query.get("after") for r in list_requests(server)]
    assert ids(result.projects) == ids(fetch(sequential).projects) == ids(organization.all())
    assert anchor in chained and chained.count(None) == 1  # the chains ran, from the top and the anchor
