"""Loopback upstreams: the simulated organization, its fault hook, and scripted pages.

- `start_simulator`: `exporter.simulator.OrganizationServer` on a free loopback port.
- `Switchboard`: the one fault hook of the tests. It records every request with its arrival
  time, and a fault armed on it takes effect at the next request without a cursor, that is at
  the first page of the next poll: one poll is faulted from its start, and its requests can be
  told apart from the polls before and after it.
- Responses: `project`, `list_page`, `ok`, `error`, `real_document`; fault builders
  `later_pages`, `every_request`, `transform`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter.chains import fetch_projects
from exporter.simulator import OrganizationServer, Request, Response, SimulatedOrganization, error_body
from tests.support.keys import KEY
from tests.support.waiting import wait_for

LIST_PATH = "/v1/organization/projects"


def start_simulator(
    projects: int = 250,
    *,
    seed: int = 11,
    key: str = KEY,
    page_delay: float = 0.0,
    now: float | None = None,
    port: int = 0,
) -> OrganizationServer:
    """A simulated organization on loopback (a free port unless `port`); stop it with `.stop()`."""
    server = OrganizationServer(
        SimulatedOrganization(projects, seed=seed, now=now), key, port=port, page_delay=page_delay
    )
    # As OrganizationServer.start(), with a short poll interval: shutdown() waits up to one
    # interval, and the default 0.5 s per test adds up over the suite.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="simulator", daemon=True).start()
    return server


def stop_simulator(server: OrganizationServer) -> None:
    server.fault = None
    server.stop()


# -- requests ----------------------------------------------------------------------------


def most_in_one_second(times: list[float]) -> int:
    """The most of these moments that any one-second window holds."""
    times = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def header(request: Request, name: str) -> str | None:
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return None


def list_requests(server: OrganizationServer) -> list[Request]:
    return [r for r in list(server.requests) if r.path.rstrip("/") == LIST_PATH]


def fetch(client, within: float = 20.0):
    """One whole poll (exporter.chains.fetch_projects) with a deadline `within` seconds from now."""
    return fetch_projects(client, time.monotonic() + within)


# -- responses ---------------------------------------------------------------------------


def project(pid: str, created_at: float = 1_700_000_000, **fields) -> dict:
    """A project object as the upstream sends it; `fields` override or add keys."""
    item = {
        "id": pid,
        "object": "organization.project",
        "name": f"Project {pid}",
        "created_at": created_at,
        "archived_at": None,
        "status": "active",
    }
    item.update(fields)
    return item


_DEFAULT = object()
OMIT = object()  # leave the key out of the document altogether


def list_page(items: list[dict], has_more: bool, last_id=_DEFAULT, **extra) -> Response:
    """A 200 ProjectListResponse; `last_id` defaults to the last item's id, None sends null."""
    document = {"object": "list", "data": items, "first_id": items[0]["id"] if items else None, "has_more": has_more}
    if last_id is _DEFAULT:
        document["last_id"] = items[-1]["id"] if items else None
    elif last_id is not OMIT:
        document["last_id"] = last_id
    document.update(extra)
    return Response(200, json.dumps(document).encode())


def ok(document, **kwargs) -> Response:
    return Response(200, json.dumps(document, ensure_ascii=False).encode(), **kwargs)


def error(status: int, message: str = "error", headers: dict | None = None, **kwargs) -> Response:
    """An error answer in the Admin API's shape; `kwargs` go to `error_body` (type_, code, param)."""
    return Response(status, error_body(message, **kwargs), headers or {})


def real_document(server: OrganizationServer, request: Request) -> dict:
    """The ProjectListResponse the simulated organization would send for `request`."""
    limit = int(request.query.get("limit", "20"))
    include = request.query.get("include_archived", "false") == "true"
    data, has_more = server.organization.page(request.query.get("after"), limit, include)
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


# -- the fault hook ----------------------------------------------------------------------


@dataclass
class Arrival:
    """One request as the upstream saw it: when (monotonic and wall clock), and whether a fault answered."""

    monotonic: float
    wall: float
    request: Request
    faulted: bool

    @property
    def after(self) -> str | None:
        return self.request.query.get("after")


# fault(server, request, n): n counts the requests (from 0) since the fault took effect;
# a Response answers the request, None lets the organization answer.
Fault = Callable[[OrganizationServer, Request, int], "Response | None"]


class Switchboard:
    """The simulated organization's fault hook, switched by the test.

    `arm(fault)` takes effect at the next request without a cursor (the first page of the next
    poll) and stays until `disarm()`. Every request is recorded in `arrivals`.

    It sees the requests of the project list only, unless `watches` says otherwise: the
    collectors' requests for each project's details pass through, unfaulted and unrecorded.
    """

    def __init__(self, server: OrganizationServer, watches: Callable[[Request], bool] | None = None):
        self.server = server
        self.watches = watches or (lambda request: request.path.rstrip("/") == LIST_PATH)
        self.arrivals: list[Arrival] = []
        self.active_since: float | None = None  # wall time the armed fault took effect
        self._pending: Fault | None = None
        self._active: Fault | None = None
        self._count = 0
        self._lock = threading.Lock()
        server.fault = self

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def arm(self, fault: Fault) -> Switchboard:
        reset = getattr(fault, "reset", None)
        if reset is not None:  # a fault with a budget (only the first n requests) starts afresh
            reset()
        with self._lock:
            self._pending, self._active, self.active_since, self._count = fault, None, None, 0
        return self

    def disarm(self) -> float:
        """Remove the fault at once; return the wall time from which requests are clean."""
        with self._lock:
            self._pending = self._active = None
            return time.time()

    def wait_active(self, timeout: float = 20.0) -> float:
        return wait_for(lambda: self.active_since, timeout, interval=0.01, what="the next poll to begin")

    def between(self, since: float, until: float) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if since <= a.wall <= until]

    def afters(self) -> list[str | None]:
        """The `after` cursor of every request so far."""
        with self._lock:
            return [a.after for a in self.arrivals]

    def first_pages(self) -> list[Arrival]:
        """One per poll: the requests without a cursor."""
        with self._lock:
            return [a for a in self.arrivals if a.after is None]

    def __call__(self, request: Request) -> Response | None:
        if not self.watches(request):
            return None
        now, wall = time.monotonic(), time.time()
        with self._lock:
            if self._pending is not None and request.query.get("after") is None:
                self._active, self._pending, self.active_since, self._count = self._pending, None, wall, 0
            fault, number = self._active, self._count
            if fault is not None:
                self._count += 1
            self.arrivals.append(Arrival(now, wall, request, fault is not None))
        return fault(self.server, request, number) if fault is not None else None


def scripted(pages: dict[str | None, Response]) -> Fault:
    """Answer each request from `pages`, keyed by its `after` cursor (None for the first page)."""
    return lambda server, request, n: pages[request.query.get("after")]


def later_pages(response: Fault, times: int | None = None) -> Fault:
    """Apply `response` to requests with a cursor (page 2 on); only the first `times` of them if given,
    counted from the last time the fault was armed."""
    seen = {"n": 0}
    lock = threading.Lock()

    def fault(server, request, number):
        if request.query.get("after") is None:
            return None
        with lock:
            n = seen["n"]
            seen["n"] += 1
        if times is not None and n >= times:
            return None
        return response(server, request, n)

    def reset():
        with lock:
            seen["n"] = 0

    fault.reset = reset
    return fault


def on_cursor(cursor: str, response: Response, times: int | None = None) -> Fault:
    """Answer the first `times` requests (all, if None) for the page after `cursor` with `response`."""
    seen = {"n": 0}
    lock = threading.Lock()

    def fault(server, request, number):
        if request.query.get("after") != cursor:
            return None
        with lock:
            seen["n"] += 1
            if times is not None and seen["n"] > times:
                return None
        return response

    def reset():
        with lock:
            seen["n"] = 0

    fault.reset = reset
    return fault


def every_request(response: Fault) -> Fault:
    return response


def transform(edit: Callable[[dict, Request], dict]) -> Fault:
    """Every page, as the organization has it, passed through `edit(document, request)`."""

    def fault(server, request, number):
        return ok(edit(real_document(server, request), request))

    return fault
