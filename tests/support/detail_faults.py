"""The fault matrix of the detail endpoints: one `DetailFaultRow` per fault, with its outcome.

tests/test_detail_faults.py injects each row into a running exporter process whose
collectors refresh every project every few seconds; `python -m tests.support.faultmatrix`
renders the rows as the second table of docs/fault-matrix.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.simulator import OrganizationServer, Request, Response
from tests.support.metrics import Metrics
from tests.support.upstream import LIST_PATH, error, ok

DETAIL_PROJECTS = 20
REQUESTS_PER_SECOND = 40
DETAILS_INTERVAL = 3.0
DETAIL_ARGS = (
    "--poll.interval",
    "1s",
    "--poll.details-interval",
    f"{DETAILS_INTERVAL:g}s",
    "--api.requests-per-second",
    str(REQUESTS_PER_SECOND),
    "--api.timeout",
    "4s",
    "--api.max-retries",
    "2",
)
HOLD = 6.0  # seconds each fault holds: a round of refreshes, and a refresh's retries


@dataclass(frozen=True)
class DetailFaultRow:
    id: str
    description: str  # the fault, in one line
    collector: str  # the collector whose endpoint is faulted
    fault: Callable[[OrganizationServer, Request, int], Response | None]
    watches: Callable[[Request], bool]  # the requests the fault applies to
    up: bool  # openai_collector_up of that collector while the fault holds
    reason: str | None  # openai_collector_failures_total{reason} that moves; None: none does
    served: str  # what /metrics serves meanwhile, in one line
    check: Callable[[Metrics, dict], None] | None = None  # more checks; `seen` holds what the fault saw
    hold: float = HOLD
    state: dict = field(default_factory=dict, compare=False)


def _endpoint(suffix: str) -> Callable[[Request], bool]:
    return lambda request: request.path.rstrip("/").endswith(suffix) and request.path.rstrip("/") != LIST_PATH


def _forbidden(server, request, n):
    return error(403, "You do not have access to this resource.", type_="invalid_request_error")


def _storm(server, request, n):
    return error(429, "Rate limit reached for requests", {"retry-after-ms": "200"}, type_="requests")


def _page_two(server, request, n):
    if "after" not in request.query:
        return None
    return error(500, "The server had an error while processing your request.", type_="server_error")


def _no_limit(server, request, n):
    return error(404, "No spend limit is set for this project", param="project_id")


def _removed_in_flight(server, request, n):
    """The first project asked for is removed while its answer is on the way, and arrives late."""
    seen = ROW_BY_ID["removed-in-flight"].state
    project_id = request.path.split("/")[4]
    with _lock:
        if "project_id" in seen and seen["project_id"] != project_id:
            return None
        if "project_id" not in seen:
            seen["project_id"] = project_id
            answer = server.organization.governance.read(project_id, "users", request.query)
            server.organization.remove(project_id)
            return ok(answer, delay=2.0)  # past the next list poll, which drops the project
    return None


_lock = threading.Lock()


def _storm_check(metrics: Metrics, seen: dict) -> None:
    """The list poll goes on (`openai_up 1`); the budget's rate falls below the configured one."""
    assert metrics.value("openai_up") == 1
    assert metrics.value("openai_api_budget_requests_per_second") < REQUESTS_PER_SECOND


def _removed_check(metrics: Metrics, seen: dict) -> None:
    """The removed project has no series left, and its late answer counts as no failure."""
    assert seen.get("project_id"), "no request of the fault's collector arrived"
    assert metrics.series("openai_project_users") and not [
        s for s in metrics.samples("openai_project_users") if s.labels["project_id"] == seen["project_id"]
    ]


MANY_KEYS = 130  # the first active project's keys: two pages


def prepare(server: OrganizationServer) -> str:
    """Give the first active project two pages of keys; its id."""
    project_id = next(p["id"] for p in server.organization.all() if p["status"] == "active")
    for number in range(MANY_KEYS):
        server.organization.governance.add_api_key(project_id, name=f"batch key {number}")
    return project_id


def _page_two_check(metrics: Metrics, seen: dict) -> None:
    """The project with two pages of keys still shows every one of them: not the first page alone."""
    counts = [s.value for s in metrics.samples("openai_project_api_keys") if s.labels["project_id"] == seen["many"]]
    assert sum(counts) >= MANY_KEYS


def _no_limit_check(metrics: Metrics, seen: dict) -> None:
    """No project has an `openai_project_spend_limit` series."""
    assert not metrics.samples("openai_project_spend_limit")


DETAIL_ROWS = (
    DetailFaultRow(
        "403-one-collector",
        "every API-key list answers 403 (a key without that scope)",
        "api-keys",
        _forbidden,
        _endpoint("/api_keys"),
        up=False,
        reason="auth",
        served="the last good API keys; users, service accounts, spend limits and the project list go on",
    ),
    DetailFaultRow(
        "429-storm",
        "every project's users answer 429 with `retry-after-ms: 200`",
        "users",
        _storm,
        _endpoint("/users"),
        up=False,
        reason="rate_limited",
        served="the last good users; the budget slows every collector, the project list goes first",
        check=_storm_check,
        hold=2 * HOLD,  # every request waits out a Retry-After, at a rate cut down to a sixteenth
    ),
    DetailFaultRow(
        "removed-in-flight",
        "a project is removed while its users are on the way, and the answer arrives after the next list poll",
        "users",
        _removed_in_flight,
        _endpoint("/users"),
        up=True,
        reason=None,
        served="the project and all its details are gone with the list poll; the late answer is dropped",
        check=_removed_check,
    ),
    DetailFaultRow(
        "key-list-page-two",
        "API-key lists fail with 500 at page 2",
        "api-keys",
        _page_two,
        _endpoint("/api_keys"),
        up=False,
        reason="http_error",
        served="each project's last good key list, whole: never a part of one",
        check=_page_two_check,
    ),
    DetailFaultRow(
        "spend-limit-404",
        "every project's spend limit answers 404",
        "spend-limits",
        _no_limit,
        lambda request: request.path.rstrip("/").endswith("/spend_limit") and "/projects/" in request.path,
        up=True,
        reason=None,
        served="no spend-limit series: a 404 means no limit, and is no failure",
        check=_no_limit_check,
    ),
)
ROW_BY_ID = {row.id: row for row in DETAIL_ROWS}


class DetailBoard:
    """The simulator's fault hook for one row at a time; every request's arrival time is kept."""

    def __init__(self, server: OrganizationServer):
        self.server = server
        self.arrivals: list[float] = []
        self._row: DetailFaultRow | None = None
        self._count = 0
        self._lock = threading.Lock()
        server.fault = self

    def arm(self, row: DetailFaultRow) -> None:
        with self._lock:
            row.state.clear()
            self._row, self._count = row, 0

    def disarm(self) -> None:
        with self._lock:
            self._row = None

    def __call__(self, request: Request) -> Response | None:
        with self._lock:
            self.arrivals.append(time.monotonic())
            row, number = self._row, self._count
            if row is None or not row.watches(request):
                return None
            self._count += 1
        return row.fault(self.server, request, number)
