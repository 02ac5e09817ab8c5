"""The exporter as a real process: `python -m exporter` with its JSON log in a file.

- `ExporterProcess.start(...)` starts one (tests use the `start_exporter` fixture, which kills
  it at teardown); `run_exporter(...)` runs one to its exit, for flags it refuses.
- Its log is read incrementally: each read parses only the new complete lines, and every
  record gets `_time`, the Unix time of its own `timestamp`, so that a test can ask for the
  events logged since a moment ("the poll_failed after the fault was armed").
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

from exporter.audit import AUDIT_COLLECTOR
from exporter.collectors import COLLECTORS
from exporter.spend import SPEND_COLLECTORS
from tests.support import net
from tests.support.keys import KEY
from tests.support.metrics import Metrics
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
_serial = itertools.count()  # log file names: unique per test process, whatever port a process gets


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any OPENAI_* variable, so no real key or URL leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(extra)
    return env


def _environment(key: str | None, env: dict[str, str] | None) -> dict[str, str]:
    environment = clean_environment(**(env or {}))
    if key is not None:
        environment.setdefault("OPENAI_ADMIN_KEY", key)
    return environment


def run_exporter(
    args: list[str], *, key: str | None = KEY, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess:
    """Run `python -m exporter` to its exit; `env` adds to a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env=_environment(key, env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


REFUSAL_PREFIX = "openai-projects-exporter: error: "


def assert_one_line_error(result: subprocess.CompletedProcess, message: str, starts: str = "") -> None:
    """A refused start: exit 2, nothing on stdout, and one line on stderr, after the prefix
    `starts`, that holds `message` and no admin key."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(REFUSAL_PREFIX + starts), lines[0]
    assert message in lines[0], (message, lines[0])
    assert KEY not in result.stderr


# For tests of the costs and usage: the project details' requests would only slow them down.
NO_DETAILS = tuple(f"--no-collector.{c.name}" for c in COLLECTORS if c.default)
# For tests of the project list alone: the collectors' requests would be counted with its own.
NO_COLLECTORS = tuple(
    f"--no-collector.{name}"
    for name, default in (
        *((c.name, c.default) for c in COLLECTORS),
        *((s.name, s.default) for s in (*SPEND_COLLECTORS, AUDIT_COLLECTOR)),
    )
    if default
)


def upstream_args(server, *extra: str, interval: str = "1s") -> list[str]:
    """The flags that point an exporter at `server` (anything with a base_url), polling every `interval`."""
    return ["--api.base-url", server.base_url, "--poll.interval", interval, *extra]


def timestamp(record: dict) -> float:
    """Unix time of a log record, from its ISO `timestamp`."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


class LogTail:
    """A JSON-lines log file, parsed once: each read parses only the new complete lines."""

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
                try:
                    record = json.loads(line)
                except ValueError:
                    raise AssertionError(f"a log line is not JSON: {line!r}") from None
                assert isinstance(record, dict) and "event" in record, f"not a log record: {line!r}"
                record["_time"] = timestamp(record)
                self.records.append(record)
            self.offset += end
            return list(self.records)


class ExporterProcess:
    """`python -m exporter` with stdout and stderr in files, reachable on a loopback port.

    Unless a test gives the port, the process gets a free one (`--web.listen-address`, or
    `{port}` in an argument or variable); should another process take that port before the
    exporter binds it, the exporter is started again on another one.
    """

    RELAUNCHES = 5

    def __init__(
        self, args: list[str], env: dict[str, str], workdir: Path, port: int | None = None, listen: bool = True
    ):
        self._args, self._env, self._given_port, self._listen = list(args), dict(env), port, listen
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.launches = 0
        self._launch()

    @classmethod
    def start(
        cls,
        args: list[str],
        workdir: Path,
        *,
        key: str | None = KEY,
        env: dict[str, str] | None = None,
        port: int | None = None,
        listen: bool = True,
    ) -> ExporterProcess:
        """Start one; `env` adds to a clean environment, `key` is OPENAI_ADMIN_KEY (None: unset)."""
        return cls(list(args), _environment(key, env), workdir, port=port, listen=listen)

    def _launch(self) -> None:
        self.port = self._given_port or net.free_port()
        serial = next(_serial)
        self.stdout_path = self.workdir / f"exporter-{os.getpid()}-{serial}.stdout"
        self.stderr_path = self.workdir / f"exporter-{os.getpid()}-{serial}.stderr"
        args = [a.replace("{port}", str(self.port)) for a in self._args]
        env = {k: v.replace("{port}", str(self.port)) for k, v in self._env.items()}
        if (
            self._listen
            and not any(a.startswith("--web.listen-address") for a in args)
            and "OPENAI_EXPORTER_WEB_LISTEN_ADDRESS" not in env
        ):
            args = ["--web.listen-address", f"127.0.0.1:{self.port}", *args]
        self.args = args
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exporter", *args], stdout=out, stderr=err, env=env, cwd=REPO
            )
        self._tail = LogTail(self.stdout_path)
        self.launches += 1
        self.started = time.monotonic()

    # -- output --

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def records(self) -> list[dict]:
        """Every complete log line so far, parsed, each with `_time` (Unix time)."""
        return self._tail.read()

    def events(self, name: str | tuple[str, ...], since: float = 0.0, until: float = float("inf")) -> list[dict]:
        """The records named `name` (or one of the names) logged between `since` and `until`."""
        names = (name,) if isinstance(name, str) else name
        return [r for r in self.records() if r["event"] in names and since <= r["_time"] <= until]

    def wait_events(
        self,
        name: str | tuple[str, ...],
        count: int = 1,
        since: float = 0.0,
        timeout: float = 20.0,
        where: Callable[[dict], bool] = lambda record: True,
    ) -> list[dict]:
        """All the records named `name` logged since `since` that pass `where`, once there are `count`."""

        def found():
            self.check_alive()
            matches = [r for r in self.events(name, since) if where(r)]
            return matches if len(matches) >= count else None

        return wait_for(found, timeout, what=f"{count} x {name} in the exporter's log")

    def wait_event(
        self,
        name: str | tuple[str, ...],
        since: float = 0.0,
        timeout: float = 20.0,
        where: Callable[[dict], bool] = lambda record: True,
    ) -> dict:
        """The first record named `name` logged since `since` that passes `where`."""
        return self.wait_events(name, 1, since, timeout, where)[0]

    def poll_outcome(self, since: float, timeout: float = 20.0) -> dict:
        """The first poll_succeeded or poll_failed logged since `since`."""
        return self.wait_event(("poll_succeeded", "poll_failed"), since, timeout)

    def check_alive(self) -> None:
        """Fail the test if the exporter has exited, but start it again if it lost its port."""
        if self.proc.poll() is None:
            return
        if (
            self._given_port is None
            and self.proc.returncode == 2
            and self.launches < self.RELAUNCHES
            and "Address already in use" in self.stderr()
        ):
            self._launch()
            return
        raise AssertionError(
            f"the exporter exited with {self.proc.returncode}; "
            f"stderr: {self.stderr()[-2000:]!r}; stdout: {self.stdout()[-2000:]!r}"
        )

    # -- HTTP --

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: dict | None = None, **kwargs) -> httpx.Response:
        """`net.get` to this exporter: auth=, tls=, host=, timeout=, method=."""
        return net.get(self.port, path, headers=headers, **kwargs)

    def raw(self, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
        return net.raw_get(self.port, path, headers, method)

    def metrics(self, headers: dict | None = None, **kwargs) -> Metrics:
        response = self.get("/metrics", headers, **kwargs)
        assert response.status_code == 200, response.text
        return Metrics(response.text)

    def _wait_status(self, path: str, statuses: tuple[int, ...], timeout: float, what: str, **kwargs) -> None:
        def answered():
            self.check_alive()
            try:
                return self.get(path, timeout=5, **kwargs).status_code in statuses
            except httpx.TransportError:
                return False

        wait_for(answered, timeout, what=what)

    def wait_listening(self, timeout: float = 20.0, **kwargs) -> None:
        self._wait_status("/healthz", (200, 503), timeout, "the exporter to listen", **kwargs)

    def wait_ready(self, timeout: float = 20.0, **kwargs) -> None:
        self._wait_status("/readyz", (200,), timeout, "/readyz to answer 200", **kwargs)

    def wait_metric(
        self, predicate: Callable[[Metrics], bool], timeout: float = 20.0, what: str = "a metric condition"
    ) -> Metrics:
        def check():
            self.check_alive()
            metrics = self.metrics()
            return metrics if predicate(metrics) else None

        return wait_for(check, timeout, what=what)

    # -- lifecycle --

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> tuple[int | None, float]:
        """Send `signum`; return the exit code (None if still running at `timeout`) and the time taken."""
        sent = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - sent

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, if it still runs; reaped."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)
