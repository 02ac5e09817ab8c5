"""Shared helpers of the fault, secret, web-config, state, load and organization tests.

- `Switchboard`: a fault hook for the simulated organization that is armed by the test and
  takes effect at the next poll's first request, so one poll is faulted from its start and
  its requests can be told apart from the polls before and after it.
- `ROWS`: the fault matrix, one `FaultRow` per fault the upstream can show, with the outcome
  the exporter must reach (also driven through the debug-level secret sweep).
- Log helpers keyed on the exporter's own timestamps, bounded waits, TLS material made with
  the `openssl` command, bcrypt hashes, /proc readings.
"""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import bcrypt
import httpx

from exporter.simulator import OrganizationServer, Request, Response, error_body
from helpers import KEY, REPO, ExporterProcess, Metrics, clean_environment, wait_for

KEY_SECRET_PART = KEY.removeprefix("sk-admin-")  # the random part: found even if the prefix is cut

# -- logs --------------------------------------------------------------------------------


def timestamp(record: dict) -> float:
    """Unix time of a log record, from its ISO `timestamp`."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


class _LogTail:
    """The process's stdout parsed once: each call reads and parses only the new complete lines."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.records: list[dict] = []
        self.lock = threading.Lock()

    def read(self) -> list[dict]:
        with self.lock:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
            end = chunk.rfind(b"\n") + 1
            for line in chunk[:end].splitlines():
                record = json.loads(line)
                assert isinstance(record, dict) and "event" in record, f"not a log record: {line!r}"
                record["_time"] = timestamp(record)
                self.records.append(record)
            self.offset += end
            return list(self.records)


def records(process: ExporterProcess) -> list[dict]:
    """Every complete log line of the process so far, parsed, each with `_time` (Unix time)."""
    tail = getattr(process, "_faultkit_tail", None)
    if tail is None:
        tail = process._faultkit_tail = _LogTail(process.stdout_path)
    return tail.read()


def events_between(process: ExporterProcess, name: str | tuple[str, ...], since: float,
                   until: float = float("inf")) -> list[dict]:
    names = (name,) if isinstance(name, str) else name
    return [r for r in records(process) if r["event"] in names and since <= r["_time"] <= until]


def wait_event(process: ExporterProcess, name: str | tuple[str, ...], since: float, timeout: float = 10.0,
               where: Callable[[dict], bool] = lambda record: True) -> dict:
    """The first record named `name` (or one of the names) logged at or after `since`."""
    def found():
        process._check_alive()
        matches = [r for r in events_between(process, name, since) if where(r)]
        return matches[0] if matches else None
    return wait_for(found, timeout, what=f"{name} in the exporter's log")


def poll_outcome(process: ExporterProcess, since: float, timeout: float = 10.0) -> dict:
    """The first poll_succeeded or poll_failed logged at or after `since`."""
    return wait_event(process, ("poll_succeeded", "poll_failed"), since, timeout)


# -- the fault hook ----------------------------------------------------------------------


@dataclass
class Arrival:
    monotonic: float
    wall: float
    request: Request
    faulted: bool

    @property
    def after(self) -> str | None:
        return self.request.query.get("after")


Fault = Callable[[OrganizationServer, Request, int], "Response | None"]


class Switchboard:
    """The simulated organization's fault hook, switched by the test.

    `arm(fault)` takes effect at the next request without a cursor, that is at the first
    page of the next poll, and stays until `disarm()`. `fault(server, request, n)` sees the
    n-th request (from 0) since it took effect and returns a Response or None (no fault).
    Every request is recorded with its arrival time.
    """

    def __init__(self, server: OrganizationServer):
        self.server = server
        self.arrivals: list[Arrival] = []
        self.active_since: float | None = None  # wall time the armed fault took effect
        self._pending: Fault | None = None
        self._active: Fault | None = None
        self._count = 0
        self._lock = threading.Lock()
        server.fault = self

    def arm(self, fault: Fault) -> None:
        reset = getattr(fault, "reset", None)
        if reset is not None:  # a fault with a budget (only the first n requests) starts afresh
            reset()
        with self._lock:
            self._pending, self._active, self.active_since, self._count = fault, None, None, 0

    def disarm(self) -> float:
        """Remove the fault at once; return the wall time from which requests are clean."""
        with self._lock:
            self._pending = self._active = None
            return time.time()

    def wait_active(self, timeout: float = 5.0) -> float:
        return wait_for(lambda: self.active_since, timeout, interval=0.01, what="the next poll to begin")

    def between(self, since: float, until: float) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if since <= a.wall <= until]

    def __call__(self, request: Request) -> Response | None:
        now, wall = time.monotonic(), time.time()
        with self._lock:
            if self._pending is not None and request.query.get("after") is None:
                self._active, self._pending, self.active_since, self._count = self._pending, None, wall, 0
            fault, number = self._active, self._count
            if fault is not None:
                self._count += 1
            self.arrivals.append(Arrival(now, wall, request, fault is not None))
        return fault(self.server, request, number) if fault is not None else None


# -- building responses ------------------------------------------------------------------


def real_document(server: OrganizationServer, request: Request) -> dict:
    """The ProjectListResponse the simulated organization would send for `request`."""
    limit = int(request.query.get("limit", "20"))
    include = request.query.get("include_archived", "false") == "true"
    data, has_more = server.organization.page(request.query.get("after"), limit, include)
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def ok(document, **kwargs) -> Response:
    return Response(200, json.dumps(document, ensure_ascii=False).encode(), **kwargs)


def error(status: int, message: str, headers: dict | None = None, **kwargs) -> Response:
    return Response(status, error_body(message, **kwargs), headers or {})


def later_pages(response: Callable[[OrganizationServer, Request, int], Response | None], times: int | None = None
                ) -> Fault:
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


def every_request(response: Callable[[OrganizationServer, Request, int], Response | None]) -> Fault:
    return response


def transform(edit: Callable[[dict, Request], dict]) -> Fault:
    """Every page, as the organization has it, passed through `edit(document, request)`."""
    def fault(server, request, number):
        return ok(edit(real_document(server, request), request))
    return fault


# -- the fault matrix --------------------------------------------------------------------
# The settings the matrix runs with; the bounds below follow from them.
POLL_INTERVAL = 1.0
POLL_TIMEOUT = 2.5
API_TIMEOUT = 1.0
MAX_RETRIES = 3
MATRIX_PROJECTS = 250  # three pages of 100
MATRIX_ARGS = ("--poll.interval", "1s", "--poll.timeout", "2.5s", "--api.timeout", "1s",
               "--api.max-retries", str(MAX_RETRIES))


@dataclass(frozen=True)
class FaultRow:
    id: str
    fault: Fault
    ok: bool  # whether the faulted poll succeeds (after retries) or fails
    reason: str | None = None  # openai_poll_failures_total{reason} that moves
    message: str = ""  # a part of poll_failed's message
    retried: str | None = None  # request_retried's reason, when the poll retries
    requests: tuple[int, int] = (3, 3)  # upstream requests of the faulted poll: (at least, at most)
    gap: tuple[float, float] | None = None  # seconds between a refused request and its retry
    # Checks of the served data while the fault holds: (metrics, the organization's projects) -> None
    served: Callable[[Metrics, list[dict]], None] | None = None
    auth_like: bool = False  # fails on page 1, every poll alike
    code: str | None = None  # openai_api_requests_total{code} that counts the faulted answers
    # Checks of the project_* change events the faulted poll logged; None: it logs none.
    changes: Callable[[list[dict]], None] | None = None


def _retry_after(headers: dict[str, str]):
    return lambda server, request, n: error(429, "Rate limit reached for requests", headers,
                                            type_="requests", code="rate_limit_exceeded")


def _status(code: int, message: str):
    return lambda server, request, n: error(code, message, type_="server_error")


def _body(raw: bytes):
    return lambda server, request, n: Response(200, raw)


def _document(edit: Callable[[dict], dict]):
    return lambda server, request, n: ok(edit(real_document(server, request)))


def _item_edit(edit: Callable[[dict], None]) -> Callable[[dict], dict]:
    def apply(document):
        edit(document["data"][0])
        return document
    return apply


def _reset_mid_body(server, request, n):
    return Response(200, json.dumps(real_document(server, request)).encode(), reset_after=10)


def _slow(seconds: float):
    def respond(server, request, n):
        document = real_document(server, request)
        return ok(document, delay=seconds)
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
    "Données 客户 🚀", 'Team "Alpha"\\beta', "line\nbreak", "עברית مرحبا", "e\u0301\u200dx\u00a0y",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010fffd", "tab\there", "{}=,\"'`", "",
]
UNICODE_IDS = ["proj_ünï🚀", "proj_漢字", 'proj_"quoted"', "proj_back\\slash", "proj_line\nbreak",
               "proj_\u202eRTL", "proj_\U0001f600", "proj_sp ace", "proj_\u00e9\u0301"]


def _unicode(document: dict) -> dict:
    for item, pid, name in zip(document["data"], UNICODE_IDS, UNICODE_NAMES):
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
    info = metrics.by_label("openai_project_info", "project_id")
    for pid, name in zip(UNICODE_IDS, UNICODE_NAMES):
        assert pid in info, f"{pid!r} is not served"
        assert info[pid]["name"] == name, (pid, info[pid]["name"], name)
    created = metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id")
    assert set(UNICODE_IDS) <= set(created)


def _unicode_changes(events: list[dict]) -> None:
    created = [r["project_id"] for r in events if r["event"] == "project_created"]
    removed = [r for r in events if r["event"] == "project_removed"]
    assert sorted(created) == sorted(UNICODE_IDS), created
    assert {r["name"] for r in events if r["event"] == "project_created"} == set(UNICODE_NAMES)
    assert len(removed) == len(UNICODE_IDS) and len(events) == 2 * len(UNICODE_IDS)


def _served_as_organization(metrics: Metrics, organization: list[dict]) -> None:
    info = metrics.by_label("openai_project_info", "project_id")
    assert set(info) == {p["id"] for p in organization}
    for item in organization:
        labels = info[item["id"]]
        assert labels["name"] == item["name"] and labels["status"] == item["status"]
        assert labels["external_key_id"] == (item.get("external_key_id") or "")
        assert labels["residency"] == (item.get("residency") or "")


def _served_without_optional(metrics: Metrics, organization: list[dict]) -> None:
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


ROWS: list[FaultRow] = [
    # -- rate limits: the retry waits what the upstream says, or a jittered backoff
    FaultRow("429-retry-after", later_pages(_retry_after({"Retry-After": "1"}), times=1), ok=True,
             retried="rate_limited", requests=(4, 4), gap=(0.95, 1.4), code="429"),
    FaultRow("429-retry-after-ms", later_pages(_retry_after({"retry-after-ms": "200"}), times=1), ok=True,
             retried="rate_limited", requests=(4, 4), gap=(0.19, 0.45), code="429"),
    FaultRow("429-no-header", later_pages(_retry_after({}), times=1), ok=True,
             retried="rate_limited", requests=(4, 4), gap=(0.49, 1.3), code="429"),
    FaultRow("429-past-deadline", later_pages(_retry_after({"Retry-After": "1"})), ok=False,
             reason="rate_limited", message="would pass the poll deadline", retried="rate_limited",
             requests=(4, 4), gap=(0.95, 1.4), code="429"),
    # -- server errors, transport errors, slowness
    FaultRow("500-once", later_pages(_status(500, "The server had an error"), times=1), ok=True,
             retried="http_error", requests=(4, 4), gap=(0.49, 1.3), code="500"),
    FaultRow("502-once", later_pages(_status(502, "Bad gateway"), times=1), ok=True,
             retried="http_error", requests=(4, 4), gap=(0.49, 1.3), code="502"),
    FaultRow("503-once", later_pages(_status(503, "Service unavailable"), times=1), ok=True,
             retried="http_error", requests=(4, 4), gap=(0.49, 1.3), code="503"),
    FaultRow("5xx-every-retry", later_pages(_status(503, "Service unavailable")), ok=False,
             reason="http_error", message="HTTP 503", retried="http_error", requests=(3, 4), code="503"),
    FaultRow("reset-mid-body", later_pages(_reset_mid_body), ok=False, reason="connection",
             message="RemoteProtocolError", retried="connection", requests=(3, 4)),
    FaultRow("read-timeout", later_pages(_slow(API_TIMEOUT + 0.6)), ok=False, reason="timeout",
             message="no answer within", retried="timeout", requests=(3, 3)),
    FaultRow("slow-past-deadline", every_request(_slow(0.9)), ok=False, reason="timeout",
             message="would pass the poll deadline", requests=(3, 3)),
    # -- 200 with a body the exporter cannot use: never retried, the poll fails at once
    FaultRow("malformed-json", later_pages(_body(b'{"object": "list", "data": [{"id": "proj_')), ok=False,
             reason="invalid_response", message="not JSON", requests=(2, 2)),
    FaultRow("data-not-a-list", later_pages(_document(lambda d: {**d, "data": {"id": "proj_x"}})), ok=False,
             reason="invalid_response", message="`data` is not a list", requests=(2, 2)),
    FaultRow("item-without-id", later_pages(_document(_item_edit(lambda item: item.pop("id")))), ok=False,
             reason="invalid_response", message="has no `id`", requests=(2, 2)),
    FaultRow("item-without-created-at", later_pages(_document(_item_edit(lambda item: item.pop("created_at")))),
             ok=False, reason="invalid_response", message="`created_at` is not a number", requests=(2, 2)),
    FaultRow("created-at-string",
             later_pages(_document(_item_edit(lambda item: item.update(created_at=str(item["created_at"]))))),
             ok=False, reason="invalid_response", message="`created_at` is not a number", requests=(2, 2)),
    FaultRow("has-more-empty-page", later_pages(_document(lambda d: {**d, "data": [], "has_more": True,
                                                                     "first_id": None, "last_id": None})),
             ok=False, reason="pagination", message="`has_more` is true but the page is empty", requests=(2, 2)),
    FaultRow("cursor-stands-still", later_pages(_cursor_stands_still), ok=False, reason="pagination",
             message="did not advance", requests=(2, 2)),
    FaultRow("cursor-loops-back", later_pages(_cursor_loops_back), ok=False, reason="pagination",
             message="listed twice", requests=(4, 4)),
    FaultRow("same-id-on-two-pages", later_pages(_same_id_twice), ok=False, reason="pagination",
             message="listed twice", requests=(2, 2)),
    # -- credentials: never retried; every poll fails alike until the key is fixed
    FaultRow("401", every_request(lambda s, r, n: error(
        401, f"Incorrect API key provided: sk-admin-****{KEY[-4:]}. You need an Admin API key.",
        code="invalid_api_key")), ok=False, reason="auth", message="Admin API key", requests=(1, 1),
        auth_like=True, code="401"),
    FaultRow("403", every_request(lambda s, r, n: error(
        403, "You have insufficient permissions for this operation. Missing scopes: api.management.read.",
        code="insufficient_permissions")), ok=False, reason="auth", message="Admin API key", requests=(1, 1),
        auth_like=True, code="403"),
    # -- the upstream's schema drifts
    FaultRow("added-fields", transform(lambda d, r: _added_fields(d)), ok=True, requests=(3, 3),
             served=_served_as_organization),
    FaultRow("dropped-optional-fields", later_pages(lambda s, r, n: ok(_dropped_fields(real_document(s, r)))),
             ok=True, requests=(3, 3), served=_served_without_optional),
    FaultRow("unicode-ids-and-names", _unicode_page, ok=True, requests=(3, 3), served=_served_unicode,
             changes=_unicode_changes),
]
ROW_IDS = [row.id for row in ROWS]


# -- processes ---------------------------------------------------------------------------


def exporter(args: list[str], workdir: Path, *, key: str | None = KEY, env: dict[str, str] | None = None,
             port: int | None = None) -> ExporterProcess:
    environment = clean_environment(**(env or {}))
    if key is not None:
        environment.setdefault("OPENAI_ADMIN_KEY", key)
    return ExporterProcess(list(args), environment, workdir, port=port)


def run_exporter(args: list[str], *, key: str | None = KEY, env: dict[str, str] | None = None,
                 timeout: float = 15.0) -> subprocess.CompletedProcess:
    """Run the exporter to its exit (for flags it refuses, or --config.check)."""
    environment = clean_environment(**(env or {}))
    if key is not None:
        environment.setdefault("OPENAI_ADMIN_KEY", key)
    return subprocess.run([sys.executable, "-m", "exporter", *args], env=environment, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


_PROBE = r"""
import http.client, json, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
began_all = time.monotonic()
samples = []
while time.monotonic() - began_all < seconds:
    began = time.monotonic()
    connection.request("GET", "/metrics", headers={"Accept-Encoding": "identity"})
    response = connection.getresponse()
    body = response.read()
    latency = time.monotonic() - began
    whole = (response.status == 200 and len(body) == int(response.headers["Content-Length"])
             and body.endswith(b"\n") and b"\nopenai_up " in body)
    samples.append([began - began_all, latency, whole])
    time.sleep(0.02)
print(json.dumps(samples))
"""


def latency_probe(port: int, seconds: float) -> subprocess.Popen:
    """Sequential scrapes from a process of their own, so the latencies it measures are the
    exporter's and not the test process's threads waiting for the GIL. `.communicate()` gives
    a JSON list of [offset, latency, whole body]."""
    return subprocess.Popen([sys.executable, "-c", _PROBE, str(port), str(seconds)], stdout=subprocess.PIPE,
                            text=True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def assert_no_secret(where: str, text: str | bytes, *secrets: str) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in secrets or (KEY, KEY_SECRET_PART):
        assert secret not in text, f"the admin key appears in {where}"


# -- TLS and basic auth ------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)


def _leaf(directory: Path, name: str, ca: str, usage: str, san: str | None = None) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    extensions = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
                  f"extendedKeyUsage={usage}", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"]
    if san:
        extensions.append(f"subjectAltName={san}")
    (directory / f"{name}.ext").write_text("\n".join(extensions) + "\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=directory)


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate of that CA,
    and a client certificate of another CA."""

    directory: Path
    ca: Path = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "ca", self.directory / "ca.crt")

    def path(self, name: str) -> Path:
        return self.directory / name

    @classmethod
    def create(cls, directory: Path) -> "Pki":
        if shutil.which("openssl") is None:
            import pytest
            pytest.skip("the openssl command is needed to make test certificates")
        directory.mkdir(parents=True, exist_ok=True)
        _ca(directory, "ca")
        _ca(directory, "rogue-ca")
        _leaf(directory, "server", "ca", "serverAuth", "IP:127.0.0.1,DNS:localhost")
        _leaf(directory, "client", "ca", "clientAuth")
        _leaf(directory, "rogue-client", "rogue-ca", "clientAuth")
        return cls(directory)

    def client_context(self, cert: str | None = None, maximum=None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert:
            context.load_cert_chain(self.path(f"{cert}.crt"), self.path(f"{cert}.key"))
        if maximum is not None:
            context.maximum_version = maximum
        return context


def bcrypt_hash(password: str, rounds: int = 10) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def https_get(port: int, path: str, context, auth: tuple[str, str] | None = None,
              host: str = "127.0.0.1", timeout: float = 10.0) -> httpx.Response:
    with httpx.Client(verify=context, trust_env=False, timeout=timeout) as client:
        return client.get(f"https://{host}:{port}{path}", auth=auth, headers={"Accept-Encoding": "identity"})


_PLAIN = httpx.Client(trust_env=False)  # one client: building one costs an SSL context each time


def http_get(port: int, path: str, auth: tuple[str, str] | None = None, timeout: float = 10.0,
             headers: dict | None = None) -> httpx.Response:
    return _PLAIN.get(f"http://127.0.0.1:{port}{path}", auth=auth, timeout=timeout,
                      headers={"Accept-Encoding": "identity", **(headers or {})})


def kill_quietly(process: ExporterProcess) -> None:
    if process.proc.poll() is None:
        process.proc.send_signal(signal.SIGKILL)
        process.proc.wait(10)
