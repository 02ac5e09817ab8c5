"""A simulated OpenAI organization on loopback, speaking the Admin API's projects contract.

It serves `--demo`, the test suite and the benchmarks. It follows
openai-organization-projects.openapi.yaml: cursor paging with `after` and `last_id`,
`limit` 1..100 (default 20), `include_archived` false by default, Bearer auth, the
`{"error": {...}}` shape, and an `x-request-id` on every response. Tests inject faults
through `OrganizationServer.fault`; the demo lets time pass with `churn`.

It also serves the GET operations of openai-admin-governance-and-spend.openapi.yaml on a
project's users, service accounts, API keys, rate limits, certificates, spend limit, model and
hosted-tool permissions and data retention, and on the organization's spend limit: their state
lives in exporter/simulated_governance.py. And it serves the organization's costs and the ten
usage endpoints of the same contract, from exporter/simulated_spend.py: time buckets of each
project's usage, which grow while they are recent, and their costs. And the organization's audit
log, from exporter/simulated_audit.py, which every change writes to. `SimulatedOrganization.forbidden`
names the resources the key lacks the scope for ("api_keys", "costs", "audit_logs", ...), which answer 403.

    python -m exporter.simulator --listen 127.0.0.1:8900 --projects 300 --admin-key sk-admin-test
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

from exporter.simulated_audit import AUDIT_LOGS, SimulatedAuditLog
from exporter.simulated_governance import (
    ORGANIZATION_SPEND_LIMIT,
    PROJECT_RESOURCES,
    RESOURCES,
    ApiError,
    Counts,
    SimulatedGovernance,
)
from exporter.simulated_spend import Clock, SimulatedSpend
from exporter.simulated_spend_catalog import ENDPOINTS
from exporter.simulated_spend_query import COSTS, SPEND_RESOURCES

RESIDENCIES = ("GLOBAL", "US_STORAGE_PROCESSING", "EU_STORAGE_PROCESSING", "JP_STORAGE")
_WORDS = (
    "Search",
    "Support",
    "Billing",
    "Fraud",
    "Recs",
    "Docs",
    "Chat",
    "Vision",
    "Voice",
    "Ledger",
    "Atlas",
    "Orion",
    "Helix",
    "Nimbus",
    "Quartz",
    "Données clients",
    "検索チーム",
    'Team "Alpha"',
    "Back\\slash",
)
_KINDS = ("Bot", "Agent", "Pipeline", "Evals", "Sandbox", "Prod", "Staging", "Research")
_ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
ProjectObject: TypeAlias = dict[str, Any]  # a project as the API's JSON has it


class UnknownCursor(Exception):
    pass


class SimulatedOrganization:
    """Projects in creation order, as the upstream lists them, their governance and spend; thread-safe.

    The `*_per_project` counts fix how many users, service accounts and API keys every project
    has (None: the default variety). `forbidden` names resources the key lacks the scope for:
    governance ones (RESOURCES of exporter.simulated_governance) and spend ones (SPEND_RESOURCES:
    "costs", "usage/completions", ...); tests may change it at run time.

    The spend (`.spend`) runs on `clock`: by default the wall clock, or with `now` a manual clock
    standing at `now` that tests advance (`organization.spend.clock.advance(60)`). `models` is how
    many models the usage spreads over (None: the base catalog of sixteen; more adds fine-tuned
    ones); a bucket is final `settle` seconds after it ends.
    """

    def __init__(
        self,
        projects: int = 300,
        *,
        seed: int = 7,
        now: float | None = None,
        users_per_project: int | None = None,
        service_accounts_per_project: int | None = None,
        keys_per_project: int | None = None,
        forbidden: Iterable[str] = (),
        models: int | None = None,
        clock: Clock | None = None,
        settle: int = 300,
    ):
        # Reentrant: the governance's changes hold it and call one another, and read projects under it.
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._projects: list[ProjectObject] = []
        self._position: dict[str, int] = {}
        clock = clock or Clock(now)
        now = clock() if now is None else now
        self.forbidden = set(forbidden)
        if unknown := self.forbidden - set(RESOURCES) - set(SPEND_RESOURCES) - {AUDIT_LOGS}:
            raise ValueError(f"unknown resources: {', '.join(sorted(unknown))}")
        counts = Counts(users_per_project, service_accounts_per_project, keys_per_project)
        self.audit = SimulatedAuditLog(self._lock, clock, self.get, seed=seed)  # the history starts empty
        self.governance = SimulatedGovernance(
            self._lock, self._created_at, seed=seed, now=int(now), counts=counts, audit=self.audit
        )
        self.spend = SimulatedSpend(
            self._lock, self._times, self._identities, seed=seed, clock=clock, models=models, settle=settle
        )
        # Ages from minutes to three years, skewed young like a real organization's.
        ages = sorted((self._rng.random() ** 2 * 3 * 365 * 86400 for _ in range(projects)), reverse=True)
        for age in ages:
            project = self._new_project(int(now - age))
            if self._rng.random() < 0.12:
                project["archived_at"] = int(now - age * self._rng.random())
                project["status"] = "archived"
            self._append(project)

    def _new_project(self, created_at: int, name: str | None = None) -> ProjectObject:
        rng = self._rng
        project = {
            "id": "proj_" + "".join(rng.choices(_ID_CHARACTERS, k=24)),
            "object": "organization.project",
            "name": name or f"{rng.choice(_WORDS)} {rng.choice(_KINDS)} {rng.randrange(1000)}",
            "created_at": created_at,
            "archived_at": None,
            "status": "active",
        }
        if rng.random() < 0.3:
            project["external_key_id"] = "ekm_" + uuid.UUID(int=rng.getrandbits(128)).hex[:16]
        if rng.random() < 0.5:
            project["residency"] = rng.choice(RESIDENCIES)
        return project

    def _append(self, project: ProjectObject) -> None:
        self._position[project["id"]] = len(self._projects)
        self._projects.append(project)

    # -- reads ------------------------------------------------------------------------

    def page(self, after: str | None, limit: int, include_archived: bool) -> tuple[list[ProjectObject], bool]:
        with self._lock:
            if after is None:
                start = 0
            elif after in self._position:
                start = self._position[after] + 1
            else:
                raise UnknownCursor(after)
            data: list[ProjectObject] = []
            for position in range(start, len(self._projects)):
                project = self._projects[position]
                if include_archived or project["status"] != "archived":
                    if len(data) == limit:
                        return data, True
                    data.append(dict(project))
            return data, False

    def get(self, project_id: str) -> ProjectObject | None:
        with self._lock:
            position = self._position.get(project_id)
            return None if position is None else dict(self._projects[position])

    def all(self, include_archived: bool = True) -> list[ProjectObject]:
        with self._lock:
            return [dict(p) for p in self._projects if include_archived or p["status"] != "archived"]

    def _times(self) -> list[tuple[str, int, int | None]]:
        with self._lock:
            return [(p["id"], int(p["created_at"]), p["archived_at"]) for p in self._projects]

    def _identities(self, project_id: str) -> list[tuple[str | None, str | None]]:
        return self.governance.usage_identities(project_id)

    def _created_at(self, project_id: str) -> int | None:
        with self._lock:
            position = self._position.get(project_id)
            return None if position is None else int(self._projects[position]["created_at"])

    # -- writes -----------------------------------------------------------------------

    def create(self, name: str, **fields: Any) -> ProjectObject:
        with self._lock:
            project = self._new_project(int(time.time()), name)
            project.update({k: v for k, v in fields.items() if v is not None})
            self._append(project)
            self.audit.project_changed(None, project)
            return dict(project)

    def update(self, project_id: str, **fields: Any) -> ProjectObject:
        with self._lock:
            project = self._projects[self._position[project_id]]
            before = dict(project)
            project.update(fields)
            self.audit.project_changed(before, project)
            return dict(project)

    def archive(self, project_id: str) -> ProjectObject:
        return self.update(project_id, status="archived", archived_at=int(time.time()))

    def unarchive(self, project_id: str) -> ProjectObject:
        return self.update(project_id, status="active", archived_at=None)

    def remove(self, project_id: str) -> None:
        with self._lock:
            self.audit.project_changed(self._projects[self._position[project_id]], None)  # while it has a name
            del self._projects[self._position.pop(project_id)]
            self._position = {p["id"]: i for i, p in enumerate(self._projects)}
            self.governance.forget(project_id)
            self.spend.forget(project_id)

    def churn(self) -> None:
        """One step of time passing: a project created, one archived, one renamed, rarely one unarchived;
        one or two governance changes among the active projects (a key made, used or deleted, ...);
        a burst of use by one or two of them, so that the current buckets' spend rises; the audit
        events of those changes, and maybe a sign-in or an invitation."""
        rng = self._rng
        with self._lock:
            active = [p["id"] for p in self._projects if p["status"] == "active"]
            archived = [p["id"] for p in self._projects if p["status"] == "archived"]
        self.create(f"{rng.choice(_WORDS)} {rng.choice(_KINDS)} {rng.randrange(1000)}")
        if active and rng.random() < 0.6:
            self.archive(rng.choice(active))
        if active and rng.random() < 0.6:
            self.update(rng.choice(active), name=f"{rng.choice(_WORDS)} {rng.choice(_KINDS)} v{rng.randrange(9)}")
        if archived and rng.random() < 0.2:
            self.unarchive(rng.choice(archived))
        self.governance.churn(active)
        self.spend.churn(active)
        self.audit.churn()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    number: int


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    reset_after: int | None = None  # close the connection after this many body bytes
    delay: float = 0.0


def error_body(
    message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


class OrganizationServer(ThreadingHTTPServer):
    """The Admin API's projects endpoints over HTTP on loopback.

    `fault`, when set, sees each request first and may return a Response to send instead.
    `requests` records what was asked, so tests can check cursors and counts.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        organization: SimulatedOrganization,
        admin_key: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        page_delay: float = 0.0,
    ):
        self.organization = organization
        self.admin_key = admin_key
        self.page_delay = page_delay
        self.fault: Callable[[Request], Response | None] | None = None
        self.requests: deque[Request] = deque(maxlen=200_000)
        self._count_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]  # once bound, getsockname()'s: the host is a str
        return f"http://{host!s}:{port}/v1"

    def start(self) -> OrganizationServer:
        threading.Thread(target=self.serve_forever, name="simulator", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        pass  # clients that hang up (tests that time out on purpose) are not worth a traceback

    def record(self, request: Request) -> Request:
        with self._count_lock:
            request.number = len(self.requests) + 1
            self.requests.append(request)
        return request


class _Handler(BaseHTTPRequestHandler):
    server: OrganizationServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave in separate writes

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet, the tests read `requests`
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        request = self.server.record(Request(self.command, url.path, query, dict(self.headers), 0))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        response = self.server.fault(request) if self.server.fault else None
        if response is None:
            response = self._route(request, body)
        self._send(response)

    def _route(self, request: Request, body: bytes) -> Response:
        if self.headers.get("Authorization") != f"Bearer {self.server.admin_key}":
            return Response(
                401, error_body("Incorrect API key provided. You need an Admin API key.", code="invalid_api_key")
            )
        parts = request.path.rstrip("/").split("/")
        if parts == ["", "v1", "organization", "spend_limit"] and request.method == "GET":
            return self._governance(None, ORGANIZATION_SPEND_LIMIT, request.query)
        if parts == ["", "v1", "organization", "costs"] and request.method == "GET":
            return self._whole_query(COSTS)
        if len(parts) == 5 and parts[:4] == ["", "v1", "organization", "usage"] and parts[4] in ENDPOINTS:
            if request.method == "GET":
                return self._whole_query(f"usage/{parts[4]}")
        if parts == ["", "v1", "organization", "audit_logs"] and request.method == "GET":
            return self._whole_query(AUDIT_LOGS)
        if parts[:4] != ["", "v1", "organization", "projects"]:
            return Response(404, error_body(f"Invalid URL ({request.method} {request.path})"))
        if len(parts) == 6 and parts[5] in PROJECT_RESOURCES and request.method == "GET":
            return self._governance(parts[4], parts[5], request.query)
        organization = self.server.organization
        if len(parts) == 4 and request.method == "GET":
            return self._list(request.query)
        if len(parts) == 4 and request.method == "POST":
            fields = _json_object(body)
            name = fields.get("name")
            if not isinstance(name, str):
                return Response(400, error_body("name is required", param="name"))
            return _ok(organization.create(name, **{k: fields.get(k) for k in ("external_key_id", "residency")}))
        project = organization.get(parts[4]) if len(parts) >= 5 else None
        if project is None:
            return Response(404, error_body("No such project", param="project_id"))
        if len(parts) == 5 and request.method == "GET":
            return _ok(project)
        if len(parts) == 5 and request.method == "POST":
            fields = {k: v for k, v in _json_object(body).items() if k in ("name", "external_key_id")}
            return _ok(organization.update(project["id"], **fields))
        if len(parts) == 6 and parts[5] == "archive" and request.method == "POST":
            return _ok(organization.archive(project["id"]))
        return Response(404, error_body(f"Invalid URL ({request.method} {request.path})"))

    def _governance(self, project_id: str | None, resource: str, query: dict[str, str]) -> Response:
        organization = self.server.organization
        # A key without the scope is refused before the project is looked up, as a missing scope is.
        if resource in organization.forbidden:
            return _forbidden("api.management.read")
        try:
            document = organization.governance.read(project_id, resource, query)
        except ApiError as error:
            return Response(error.status, error_body(error.message, code=error.code, param=error.param))
        return Response(200, json.dumps(document, ensure_ascii=False).encode(), delay=self.server.page_delay)

    def _whole_query(self, resource: str) -> Response:
        """Costs, usage or the audit log: their arrays come repeated or with brackets, so the query is read whole."""
        organization, audit = self.server.organization, resource == AUDIT_LOGS
        if resource in organization.forbidden:  # before the query is checked, as a missing scope is
            return _forbidden("api.audit_logs.read" if audit else "api.usage.read")
        params = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        try:
            document = organization.audit.read(params) if audit else organization.spend.read(resource, params)
        except ApiError as error:
            return Response(error.status, error_body(error.message, code=error.code, param=error.param))
        return Response(200, json.dumps(document, ensure_ascii=False).encode(), delay=self.server.page_delay)

    def _list(self, query: dict[str, str]) -> Response:
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return Response(400, error_body("limit must be between 1 and 100", param="limit"))
        include_archived = query.get("include_archived", "false").lower() == "true"
        try:
            data, has_more = self.server.organization.page(query.get("after"), limit, include_archived)
        except UnknownCursor:
            return Response(400, error_body("No such object for the `after` cursor", param="after"))
        document = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
        return Response(200, json.dumps(document, ensure_ascii=False).encode(), delay=self.server.page_delay)

    def _send(self, response: Response) -> None:
        if response.delay:
            time.sleep(response.delay)
        self.send_response(response.status)
        headers = {"Content-Type": "application/json", "x-request-id": f"req_{uuid.uuid4().hex}"}
        headers.update(response.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.reset_after is not None:
            self.wfile.write(response.body[: response.reset_after])
            self.close_connection = True
            return
        self.wfile.write(response.body)


def _forbidden(scope: str) -> Response:
    return Response(403, error_body(f"You do not have access to this resource. Missing scopes: {scope}."))


def _ok(project: ProjectObject) -> Response:
    return Response(200, json.dumps(project, ensure_ascii=False).encode())


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def start_churn(organization: SimulatedOrganization, every: float, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(every):
            organization.churn()

    thread = threading.Thread(target=run, name="churn", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default a free loopback port)")
    parser.add_argument("--projects", type=int, default=300)
    parser.add_argument("--admin-key", default="sk-admin-simulated")
    parser.add_argument("--churn-seconds", type=float, default=0, help="0 for a still organization")
    parser.add_argument(
        "--page-delay", type=float, default=0, help="seconds added to each list page or governance read"
    )
    parser.add_argument("--seed", type=int, default=7)
    for kind in ("users", "service-accounts", "keys"):
        parser.add_argument(f"--{kind}-per-project", type=int, help="a fixed count (default a realistic variety)")
    parser.add_argument("--models", type=int, help="how many models the usage spreads over (default 16)")
    parser.add_argument("--audit-log-disabled", action="store_true", help="the audit log answers 403")
    every = ", ".join((*RESOURCES, *SPEND_RESOURCES, AUDIT_LOGS))
    parser.add_argument("--forbidden", default="", help=f"comma-separated, answered 403: {every}")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    organization = SimulatedOrganization(
        args.projects,
        seed=args.seed,
        users_per_project=args.users_per_project,
        service_accounts_per_project=args.service_accounts_per_project,
        keys_per_project=args.keys_per_project,
        forbidden=[name for name in args.forbidden.split(",") if name],
        models=args.models,
    )
    organization.audit.enabled = not args.audit_log_disabled
    server = OrganizationServer(
        organization,
        args.admin_key,
        host=host or "127.0.0.1",
        port=int(port),
        page_delay=args.page_delay,
    )
    stop = threading.Event()
    if args.churn_seconds > 0:
        start_churn(server.organization, args.churn_seconds, stop)
    print(json.dumps({"event": "simulator_listening", "base_url": server.base_url}), flush=True)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    stop.set()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
