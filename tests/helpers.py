"""Shared test helpers: bounded waits, metric parsing, scripted upstream pages, the real process.

Everything here talks to real sockets: the simulated organization on loopback and the
exporter started as its own process. Every wait has a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.chains import fetch_projects
from exporter.simulator import OrganizationServer, Request, Response, SimulatedOrganization, error_body

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-admin-test-7c1f3e9a0b5d4a2e8f6c"
PER_PROJECT_FAMILIES = (
    "openai_project_info",
    "openai_project_created_timestamp_seconds",
    "openai_project_archived_timestamp_seconds",
)


# -- waiting ---------------------------------------------------------------------------

def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(projects: int = 250, *, seed: int = 11, key: str = KEY, page_delay: float = 0.0,
                    now: float | None = None) -> OrganizationServer:
    """A simulated organization on a free loopback port; stop it with `.stop()`."""
    server = OrganizationServer(SimulatedOrganization(projects, seed=seed, now=now), key, page_delay=page_delay)
    # As OrganizationServer.start(), with a short poll interval: shutdown() waits up to one
    # interval, and the default 0.5 s per test adds up over the suite.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="simulator",
                     daemon=True).start()
    return server


# -- metrics ---------------------------------------------------------------------------

class Metrics:
    """A scrape parsed with prometheus_client's own parser (text or OpenMetrics)."""

    def __init__(self, text: str, openmetrics: bool = False):
        self.text = text
        parse = openmetrics_families if openmetrics else text_string_to_metric_families
        self.families = {family.name: family for family in parse(text)}

    def samples(self, name: str) -> list:
        """Samples named `name` (e.g. openai_polls_total), from whichever family holds them."""
        return [s for family in self.families.values() for s in family.samples if s.name == name]

    def series(self, name: str) -> dict[frozenset, float]:
        return {frozenset(s.labels.items()): s.value for s in self.samples(name)}

    def get(self, name: str, **labels) -> float | None:
        matches = [s.value for s in self.samples(name) if s.labels == labels]
        assert len(matches) <= 1, f"{name}{labels} appears {len(matches)} times"
        return matches[0] if matches else None

    def value(self, name: str, **labels) -> float:
        found = self.get(name, **labels)
        assert found is not None, f"no sample {name}{labels} in the scrape"
        return found

    def by_label(self, name: str, label: str) -> dict[str, dict[str, str]]:
        """Labels of each sample of `name`, keyed by one label's value (e.g. project_id)."""
        out = {}
        for sample in self.samples(name):
            key = sample.labels[label]
            assert key not in out, f"{name} has two series with {label}={key!r}"
            out[key] = sample.labels
        return out

    def values_by_label(self, name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in self.samples(name)}


def snapshot_series(metrics: Metrics) -> dict:
    """The series that come from the last snapshot, with their values: identical between scrapes."""
    out = {}
    for name in ("openai_projects", *PER_PROJECT_FAMILIES):
        for sample in metrics.samples(name):
            out[(name, frozenset(sample.labels.items()))] = sample.value
    return out


def promtool() -> str | None:
    """promtool's path; in CI a missing promtool is a failure, not a skip."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed, and CI must check the exposition with it")
        pytest.skip("promtool is not installed")
    return path


def promtool_check(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), "check", "metrics"], input=text.encode(), capture_output=True,
                          timeout=30)


# -- scripted upstream -----------------------------------------------------------------

def project(pid: str, created_at: float = 1_700_000_000, **fields) -> dict:
    """A project object as the upstream sends it; `fields` override or add keys."""
    item = {"id": pid, "object": "organization.project", "name": f"Project {pid}",
            "created_at": created_at, "archived_at": None, "status": "active"}
    item.update(fields)
    return item


_DEFAULT = object()
OMIT = object()  # leave the key out of the document altogether


def list_page(items: list[dict], has_more: bool, last_id=_DEFAULT, **extra) -> Response:
    """A 200 ProjectListResponse; `last_id` defaults to the last item's id, None sends null."""
    document = {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                "has_more": has_more}
    if last_id is _DEFAULT:
        document["last_id"] = items[-1]["id"] if items else None
    elif last_id is not OMIT:
        document["last_id"] = last_id
    document.update(extra)
    return Response(200, json.dumps(document).encode())


def error(status: int, message: str = "error", headers: dict | None = None, **kwargs) -> Response:
    return Response(status, error_body(message, **kwargs), headers or {})


@dataclass
class Arrival:
    monotonic: float
    wall: float
    request: Request

    @property
    def after(self) -> str | None:
        return self.request.query.get("after")


class Timed:
    """A fault hook that notes when each request arrived, then lets `answer` reply or pass."""

    def __init__(self, answer: Callable[[Request, int], Response | None] | None = None):
        self.answer = answer or (lambda request, index: None)
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response | None:
        with self._lock:
            self.arrivals.append(Arrival(time.monotonic(), time.time(), request))
            index = len(self.arrivals) - 1
        return self.answer(request, index)

    def afters(self) -> list[str | None]:
        return [a.after for a in self.arrivals]

    def first_pages(self) -> list[Arrival]:
        """One per poll: the requests without a cursor."""
        return [a for a in self.arrivals if a.after is None]


def header(request: Request, name: str) -> str | None:
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return None


def list_requests(server: OrganizationServer) -> list[Request]:
    return [r for r in server.requests if r.path.rstrip("/") == "/v1/organization/projects"]


def fetch(client, within: float = 10.0):
    """One whole poll with a deadline `within` seconds from now."""
    return fetch_projects(client, time.monotonic() + within)


# -- the real process ------------------------------------------------------------------

def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any OPENAI_* variable, so no real key or URL leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(extra)
    return env


class ExporterProcess:
    """`python -m exporter` with stdout and stderr in files, reachable on a loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, port: int | None = None,
                 listen: bool = True):
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / f"exporter-{self.port}.stdout"
        self.stderr_path = workdir / f"exporter-{self.port}.stderr"
        full_args = list(args)
        if listen and not any(a.startswith("--web.listen-address") for a in args) \
                and "OPENAI_EXPORTER_WEB_LISTEN_ADDRESS" not in env:
            full_args = ["--web.listen-address", f"127.0.0.1:{self.port}", *full_args]
        self.args = full_args
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "exporter", *full_args], stdout=out,
                                         stderr=err, env=env, cwd=REPO)
        self.started = time.monotonic()

    # -- output --

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> list[dict]:
        """Every complete stdout line, each of which must be one JSON object."""
        text = self.stdout()
        lines = text.split("\n")[:-1]  # the last element is an unfinished line, or empty
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(f"stdout line is not JSON: {line!r}") from None
            assert isinstance(record, dict) and "event" in record, f"not a log record: {line!r}"
            records.append(record)
        return records

    def events(self, name: str) -> list[dict]:
        return [r for r in self.logs() if r["event"] == name]

    def wait_events(self, name: str, count: int = 1, timeout: float = 10.0,
                    where: Callable[[dict], bool] = lambda record: True) -> list[dict]:
        def found():
            self._check_alive()
            matches = [r for r in self.events(name) if where(r)]
            return matches if len(matches) >= count else None
        return wait_for(found, timeout, what=f"{count} x {name} in the exporter's log")

    def _check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"the exporter exited with {self.proc.returncode}; "
                                 f"stderr: {self.stderr()[-2000:]!r}; stdout: {self.stdout()[-2000:]!r}")

    # -- HTTP --

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: dict | None = None, method: str = "GET") -> httpx.Response:
        # httpx would ask for gzip by default; the tests say what they accept.
        sent = {"Accept-Encoding": "identity", **(headers or {})}
        return httpx.request(method, self.url(path), headers=sent, timeout=5.0, trust_env=False)

    def raw(self, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
        """Status, headers and the body exactly as sent: no client-side decompression."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5.0)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            connection.close()

    def metrics(self, headers: dict | None = None) -> Metrics:
        response = self.get("/metrics", headers)
        assert response.status_code == 200, response.text
        return Metrics(response.text)

    def wait_listening(self, timeout: float = 10.0) -> None:
        def listening():
            self._check_alive()
            try:
                return self.get("/healthz").status_code in (200, 503)
            except httpx.TransportError:
                return False
        wait_for(listening, timeout, what="the exporter to listen")

    def wait_ready(self, timeout: float = 10.0) -> None:
        def ready():
            self._check_alive()
            try:
                return self.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False
        wait_for(ready, timeout, what="/readyz to answer 200")

    def wait_metric(self, predicate: Callable[[Metrics], bool], timeout: float = 10.0,
                    what: str = "a metric condition") -> Metrics:
        def check():
            self._check_alive()
            metrics = self.metrics()
            return metrics if predicate(metrics) else None
        return wait_for(check, timeout, what=what)

    # -- lifecycle --

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int | None, float]:
        """Send `signum`; return the exit code (None if still running at `timeout`) and the time taken."""
        sent = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - sent

    def wait_exit(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
