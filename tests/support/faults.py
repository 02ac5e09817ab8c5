"""The fault matrix: one `FaultRow` per fault the upstream can show, with the outcome the
exporter must reach.

tests/test_faults.py injects each row into a running exporter process; tests/test_secrets.py
drives every row through exporters at debug level; `python -m tests.support.faultmatrix`
renders the table as docs/fault-matrix.md.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from exporter.simulator import OrganizationServer, Request, Response
from tests.support.keys import KEY
from tests.support.metrics import Metrics
from tests.support.upstream import Fault, error, every_request, later_pages, ok, project, real_document, transform

# The settings the matrix runs with; the bounds below follow from them.
POLL_INTERVAL = 1.0
POLL_TIMEOUT = 2.5
API_TIMEOUT = 1.0
MAX_RETRIES = 3
MATRIX_PROJECTS = 250  # three pages of 100
MATRIX_ARGS = (
    "--poll.interval",
    "1s",
    "--poll.timeout",
    "2.5s",
    "--api.timeout",
    "1s",
    "--api.max-retries",
    str(MAX_RETRIES),
)


@dataclass(frozen=True)
class FaultRow:
    id: str
    description: str  # the fault, in one line, for docs/fault-matrix.md
    fault: Fault
    ok: bool  # whether the faulted poll succeeds (after retries) or fails
    reason: str | None = None  # openai_poll_failures_total{reason} that moves
    message: str = ""  # a part of poll_failed's message
    retried: str | None = None  # request_retried's reason, when the poll retries
    requests: tuple[int, int] = (3, 3)  # upstream requests of the faulted poll: (at least, at most)
    gap: tuple[float, float] | None = None  # seconds between a refused request and its retry
    # Checks of the served data while the fault holds: (metrics, the organization's projects) -> None;
    # None: the last good snapshot is served unchanged. The docstring says what is checked.
    served: Callable[[Metrics, list[dict]], None] | None = None
    auth_like: bool = False  # fails on page 1, every poll alike
    code: str | None = None  # openai_api_requests_total{code} that counts the faulted answers
    # Checks of the project_* change events the faulted poll logged; None: it logs none.
    changes: Callable[[list[dict]], None] | None = None


def _retry_after(headers: dict[str, str]) -> Fault:
    return lambda server, request, n: error(
        429, "Rate limit reached for requests", headers, type_="requests", code="rate_limit_exceeded"
    )


def _status(code: int, message: str) -> Fault:
    return lambda server, request, n: error(code, message, type_="server_error")


def _body(raw: bytes) -> Fault:
    return lambda server, request, n: Response(200, raw)


def _document(edit: Callable[[dict], dict]) -> Fault:
    return lambda server, request, n: ok(edit(real_document(server, request)))


def _item_edit(edit: Callable[[dict], None]) -> Callable[[dict], dict]:
    def apply(document):
        edit(document["data"][0])
        return document

    return apply


def _reset_mid_body(server, request, n):
    return Response(200, json.dumps(real_document(server, request)).encode(), reset_after=10)


def _slow(seconds: float) -> Fault:
    def respond(server, request, n):
        return ok(real_document(server, request), delay=seconds)

    return respond


def _cursor_stands_still(server, request, n):
    document = real_document(server, request)
    document["last_id"] = request.query["after"]  # page 2 says: continue after the cursor you sent
    return ok(document)


def _cursor_loops_back(server, request, n):
    """Page 3 (has_more) points back at page 1's last id: page 2 comes again."""
    document = real_document(server, request)
    first_page = server.organization.page(None, 100, True)[0]
    if request.query["after"] != first_page[-1]["id"]:
        document["has_more"] = True
        document["last_id"] = first_page[-1]["id"]
    return ok(document)


def _same_id_twice(server, request, n):
    document = real_document(server, request)
    document["data"][1] = server.organization.page(None, 100, True)[0][0]  # page 1's first project
    return ok(document)


def _added_fields(document: dict) -> dict:
    document["schema_version"] = "2099-01-01"
    document["next_page"] = {"after": document["last_id"], "hint": ["x", 1, None]}
    for item in document["data"]:
        item["billing"] = {"plan": "enterprise", "limits": [1, 2, 3]}
        item["owner"] = None
        item["tags"] = ["a", "b"]
        item["created_by"] = {"id": "user_1", "name": "Ada"}
    return document


OPTIONAL_FIELDS = ("object", "archived_at", "external_key_id", "residency")


def _dropped_fields(document: dict) -> dict:
    for key in ("object", "first_id", "last_id"):
        document.pop(key, None)
    for item in document["data"]:
        for key in OPTIONAL_FIELDS:
            if key != "archived_at" or item.get("archived_at") is None:
                item.pop(key, None)
    return document


UNICODE_NAMES = [
    "Données 客户 🚀",
    'Team "Alpha"\\beta',
    "line\nbreak",
    "עברית مرحبا",
    "e\u0301\u200dx\u00a0y",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010fffd",
    "tab\there",
    "{}=,\"'`",
    "",
]
UNICODE_IDS = [
    "proj_ünï🚀",
    "proj_漢字",
    'proj_"quoted"',
    "proj_back\\slash",
    "proj_line\nbreak",
    "proj_\u202eRTL",
    "proj_\U0001f600",
    "proj_sp ace",
    "proj_\u00e9\u0301",
]


def _unicode(document: dict) -> dict:
    for item, pid, name in zip(document["data"], UNICODE_IDS, UNICODE_NAMES, strict=False):
        item["id"], item["name"] = pid, name
    document["last_id"] = document["data"][-1]["id"] if document["data"] else None
    return document


def _unicode_page(server, request, n):
    # Only page 3 (the last one) is rewritten, so the cursors of pages 1 and 2 still hold.
    document = real_document(server, request)
    if document["has_more"]:
        return ok(document)
    document = _unicode(document)
    document["last_id"] = None
    return ok(document)


def _served_unicode(metrics: Metrics, organization: list[dict]) -> None:
    """the new ids and names are served exactly, escaped and parsed back"""
    info = metrics.by_label("openai_project_info", "project_id")
    for pid, name in zip(UNICODE_IDS, UNICODE_NAMES, strict=False):
        assert pid in info, f"{pid!r} is not served"
        assert info[pid]["name"] == name, (pid, info[pid]["name"], name)
    created = metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id")
    assert set(UNICODE_IDS) <= set(created)


def _unicode_changes(events: list[dict]) -> None:
    """one project_created per new id and one project_removed per replaced project, nothing else"""
    created = [r["project_id"] for r in events if r["event"] == "project_created"]
    removed = [r for r in events if r["event"] == "project_removed"]
    assert sorted(created) == sorted(UNICODE_IDS), created
    assert {r["name"] for r in events if r["event"] == "project_created"} == set(UNICODE_NAMES)
    assert len(removed) == len(UNICODE_IDS) and len(events) == 2 * len(UNICODE_IDS)


def _served_as_organization(metrics: Metrics, organization: list[dict]) -> None:
    """every project with its name, status, external key and residency, as the organization has them"""
    info = metrics.by_label("openai_project_info", "project_id")
    assert set(info) == {p["id"] for p in organization}
    for item in organization:
        labels = info[item["id"]]
        assert labels["name"] == item["name"] and labels["status"] == item["status"]
        assert labels["external_key_id"] == (item.get("external_key_id") or "")
        assert labels["residency"] == (item.get("residency") or "")


def _served_without_optional(metrics: Metrics, organization: list[dict]) -> None:
    """every project; the dropped fields as empty labels, archive times kept"""
    info = metrics.by_label("openai_project_info", "project_id")
    assert set(info) == {p["id"] for p in organization}
    page_one = {p["id"] for p in organization[:100]}
    for item in organization:
        labels = info[item["id"]]
        assert labels["name"] == item["name"] and labels["status"] == item["status"]
        if item["id"] not in page_one:  # pages 2 and 3 lost their optional fields
            assert labels["external_key_id"] == "" and labels["residency"] == ""
    archived = metrics.values_by_label("openai_project_archived_timestamp_seconds", "project_id")
    assert set(archived) == {p["id"] for p in organization if p["archived_at"] is not None}


def _unauthorized(server: OrganizationServer, request: Request, n: int) -> Response:
    return error(
        401, f"Incorrect API key provided: sk-admin-****{KEY[-4:]}. You need an Admin API key.", code="invalid_api_key"
    )


def _forbidden(server: OrganizationServer, request: Request, n: int) -> Response:
    return error(
        403,
        "You have insufficient permissions for this operation. Missing scopes: api.management.read.",
        code="insufficient_permissions",
    )


# -- bodies past the exporter's bounds: --api.max-response-size (16MiB by default), the limit
# asked for, the nesting a JSON parser takes. Each is valid JSON that an unbounded client reads.
OVERSIZED_BODY = 17 * 1024 * 1024  # just past the default bound
BOMB_INFLATED = 64 * 1024 * 1024


def _oversized(server, request, n):
    """The real page, then whitespace up to 17 MiB: valid JSON, declared in Content-Length."""
    body = json.dumps(real_document(server, request)).encode()
    return Response(200, body + b" " * (OVERSIZED_BODY - len(body)))


@functools.cache
def _bomb_padding() -> tuple[bytes, zlib._Compress]:
    """64 MiB of spaces, gzipped once: the bytes so far and the compressor to go on from."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b" " * (1 << 20)
    head = b"".join(compressor.compress(block) for _ in range(BOMB_INFLATED >> 20))
    return head, compressor


def _gzip_bomb(server, request, n):
    """Leading whitespace then the real page, gzipped: 64 MiB once inflated, about 65 KB sent."""
    head, compressor = _bomb_padding()
    compressor = compressor.copy()
    body = head + compressor.compress(json.dumps(real_document(server, request)).encode()) + compressor.flush()
    return Response(200, body, {"Content-Encoding": "gzip"})


def _endless_oversized_pages(server, request, n):
    """10,000 projects no page listed before, and `has_more` always."""
    items = [project(f"proj_flood_{n}_{i}", 1_700_000_000 + i) for i in range(10_000)]
    return ok(
        {"object": "list", "data": items, "first_id": items[0]["id"], "last_id": items[-1]["id"], "has_more": True}
    )


DEPTH = 100_000


def _deeply_nested(server, request, n):
    return Response(200, b'{"object": "list", "data": ' + b"[" * DEPTH + b"]" * DEPTH + b', "has_more": false}')


ROWS: list[FaultRow] = [
    # -- rate limits: the retry waits what the upstream says, or a jittered backoff
    FaultRow(
        "429-retry-after",
        "page 2 answers 429 once, with `Retry-After: 1`",
        later_pages(_retry_after({"Retry-After": "1"}), times=1),
        ok=True,
        retried="rate_limited",
        requests=(4, 4),
        gap=(0.95, 1.6),
        code="429",
    ),
    FaultRow(
        "429-retry-after-ms",
        "page 2 answers 429 once, with `retry-after-ms: 200`",
        later_pages(_retry_after({"retry-after-ms": "200"}), times=1),
        ok=True,
        retried="rate_limited",
        requests=(4, 4),
        gap=(0.19, 0.65),
        code="429",
    ),
    FaultRow(
        "429-no-header",
        "page 2 answers 429 once, without a retry header",
        later_pages(_retry_after({}), times=1),
        ok=True,
        retried="rate_limited",
        requests=(4, 4),
        gap=(0.49, 1.5),
        code="429",
    ),
    FaultRow(
        "429-past-deadline",
        "pages 2 on answer 429 with `Retry-After: 1`, every time",
        later_pages(_retry_after({"Retry-After": "1"})),
        ok=False,
        reason="rate_limited",
        message="would pass the poll deadline",
        retried="rate_limited",
        # Each 429 also halves the request budget's rate, which earlier rows may have cut
        # already: the retry after the second Retry-After may no longer fit before the deadline.
        requests=(3, 4),
        gap=(0.95, 1.6),
        code="429",
    ),
    # -- server errors, transport errors, slowness
    FaultRow(
        "500-once",
        "page 2 answers 500 once",
        later_pages(_status(500, "The server had an error"), times=1),
        ok=True,
        retried="http_error",
        requests=(4, 4),
        gap=(0.49, 1.5),
        code="500",
    ),
    FaultRow(
        "502-once",
        "page 2 answers 502 once",
        later_pages(_status(502, "Bad gateway"), times=1),
        ok=True,
        retried="http_error",
        requests=(4, 4),
        gap=(0.49, 1.5),
        code="502",
    ),
    FaultRow(
        "503-once",
        "page 2 answers 503 once",
        later_pages(_status(503, "Service unavailable"), times=1),
        ok=True,
        retried="http_error",
        requests=(4, 4),
        gap=(0.49, 1.5),
        code="503",
    ),
    FaultRow(
        "5xx-every-retry",
        "pages 2 on answer 503, every time",
        later_pages(_status(503, "Service unavailable")),
        ok=False,
        reason="http_error",
        message="HTTP 503",
        retried="http_error",
        requests=(3, 4),
        code="503",
    ),
    FaultRow(
        "reset-mid-body",
        "pages 2 on: the connection is reset 10 bytes into the body",
        later_pages(_reset_mid_body),
        ok=False,
        reason="connection",
        message="RemoteProtocolError",
        retried="connection",
        requests=(3, 4),
    ),
    FaultRow(
        "read-timeout",
        f"pages 2 on answer after {API_TIMEOUT + 0.6:g} s, past `--api.timeout`",
        later_pages(_slow(API_TIMEOUT + 0.6)),
        ok=False,
        reason="timeout",
        message="no answer within",
        retried="timeout",
        requests=(3, 3),
    ),
    FaultRow(
        "slow-past-deadline",
        "every page answers after 0.9 s: three pages pass `--poll.timeout`",
        every_request(_slow(0.9)),
        ok=False,
        reason="timeout",
        message="would pass the poll deadline",
        requests=(3, 3),
    ),
    # -- 200 with a body the exporter cannot use: never retried, the poll fails at once
    FaultRow(
        "malformed-json",
        "page 2 is cut-off JSON",
        later_pages(_body(b'{"object": "list", "data": [{"id": "proj_')),
        ok=False,
        reason="invalid_response",
        message="not JSON",
        requests=(2, 2),
    ),
    FaultRow(
        "data-not-a-list",
        "page 2's `data` is an object, not a list",
        later_pages(_document(lambda d: {**d, "data": {"id": "proj_x"}})),
        ok=False,
        reason="invalid_response",
        message="`data` is not a list",
        requests=(2, 2),
    ),
    FaultRow(
        "item-without-id",
        "a project on page 2 has no `id`",
        later_pages(_document(_item_edit(lambda item: item.pop("id")))),
        ok=False,
        reason="invalid_response",
        message="has no `id`",
        requests=(2, 2),
    ),
    FaultRow(
        "item-without-created-at",
        "a project on page 2 has no `created_at`",
        later_pages(_document(_item_edit(lambda item: item.pop("created_at")))),
        ok=False,
        reason="invalid_response",
        message="`created_at` is not a number",
        requests=(2, 2),
    ),
    FaultRow(
        "created-at-string",
        "a project on page 2 has `created_at` as a string",
        later_pages(_document(_item_edit(lambda item: item.update(created_at=str(item["created_at"]))))),
        ok=False,
        reason="invalid_response",
        message="`created_at` is not a number",
        requests=(2, 2),
    ),
    FaultRow(
        "has-more-empty-page",
        "page 2 is empty but says `has_more: true`",
        later_pages(_document(lambda d: {**d, "data": [], "has_more": True, "first_id": None, "last_id": None})),
        ok=False,
        reason="pagination",
        message="`has_more` is true but the page is empty",
        requests=(2, 2),
    ),
    FaultRow(
        "cursor-stands-still",
        "page 2's `last_id` is the cursor it was asked for",
        later_pages(_cursor_stands_still),
        ok=False,
        reason="pagination",
        message="did not advance",
        requests=(2, 2),
    ),
    FaultRow(
        "cursor-loops-back",
        "page 3 says `has_more` and points back at page 1's last id",
        later_pages(_cursor_loops_back),
        ok=False,
        reason="pagination",
        message="listed twice",
        requests=(4, 4),
    ),
    FaultRow(
        "same-id-on-two-pages",
        "page 2 lists a project of page 1 again",
        later_pages(_same_id_twice),
        ok=False,
        reason="pagination",
        message="listed twice",
        requests=(2, 2),
    ),
    # -- credentials: never retried; every poll fails alike until the key is fixed
    FaultRow(
        "401",
        "every request answers 401 `invalid_api_key`",
        every_request(_unauthorized),
        ok=False,
        reason="auth",
        message="Admin API key",
        requests=(1, 1),
        auth_like=True,
        code="401",
    ),
    FaultRow(
        "403",
        "every request answers 403 `insufficient_permissions`",
        every_request(_forbidden),
        ok=False,
        reason="auth",
        message="Admin API key",
        requests=(1, 1),
        auth_like=True,
        code="403",
    ),
    # -- the upstream's schema drifts
    FaultRow(
        "added-fields",
        "every page and project carries fields the exporter does not know",
        transform(lambda d, r: _added_fields(d)),
        ok=True,
        requests=(3, 3),
        served=_served_as_organization,
    ),
    FaultRow(
        "dropped-optional-fields",
        "pages 2 on leave out `object`, `first_id`, `last_id` and the projects' optional fields",
        later_pages(lambda s, r, n: ok(_dropped_fields(real_document(s, r)))),
        ok=True,
        requests=(3, 3),
        served=_served_without_optional,
    ),
    FaultRow(
        "unicode-ids-and-names",
        "page 3's projects get ids and names in any Unicode, quotes and newlines",
        _unicode_page,
        ok=True,
        requests=(3, 3),
        served=_served_unicode,
        changes=_unicode_changes,
    ),
    # -- bodies past the exporter's bounds: refused as they are read, never retried
    FaultRow(
        "body-over-max-size",
        "page 2 is a valid page padded with whitespace to 17 MiB, past `--api.max-response-size` (16MiB)",
        later_pages(_oversized),
        ok=False,
        reason="invalid_response",
        message="larger than 16777216 bytes",
        requests=(2, 2),
    ),
    FaultRow(
        "gzip-bomb",
        "page 2 is gzip of 65 KB that inflates to 64 MiB of a valid page",
        later_pages(_gzip_bomb),
        ok=False,
        reason="invalid_response",
        message="larger than 16777216 bytes",
        requests=(2, 2),
    ),
    FaultRow(
        "page-over-limit",
        "pages 2 on hold 10,000 new projects each, more than the 100 asked for, and say `has_more`",
        later_pages(_endless_oversized_pages),
        ok=False,
        reason="invalid_response",
        message="more than the 100 asked for",
        requests=(2, 2),
    ),
    FaultRow(
        "deeply-nested-json",
        f"page 2's `data` is arrays nested {DEPTH:,} deep",
        later_pages(_deeply_nested),
        ok=False,
        reason="invalid_response",
        message="nested too deeply",
        requests=(2, 2),
    ),
]
ROW_IDS = [row.id for row in ROWS]
