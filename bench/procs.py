"""Child processes of the benchmark: start, watch their output, read /proc, always stop.

Every process started here is registered and stopped by `stop_all()` (run.py calls it in
a `finally`), and each child asks the kernel to SIGTERM it if the benchmark itself dies.
Every wait has a deadline.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
_running: list[Proc] = []


def cpu_ns_between(before: dict[str, int], after: dict[str, int]) -> int:
    """CPU time between two thread_cpu_ns() readings, over the threads alive at both."""
    return sum(ns - before[task] for task, ns in after.items() if task in before)


class BenchError(Exception):
    """A benchmark step that could not complete; the message says which and why."""


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Line:
    at: float  # time.time() when read
    text: str


class Proc:
    """One child process; its stdout is read line by line into `lines`, stderr kept for errors."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO):
        self.name = name
        self.argv = argv
        self.lines: list[Line] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _running.append(self)
        for stream, sink in ((self.popen.stdout, self.lines), (self.popen.stderr, None)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self, stream, sink) -> None:
        for text in stream:
            with self._cond:
                if sink is None:
                    self.stderr.append(text.rstrip("\n"))
                    del self.stderr[:-50]
                else:
                    sink.append(Line(time.time(), text.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def events(self, name: str | None = None) -> list[tuple[float, dict]]:
        """stdout lines that are JSON objects, optionally only those whose `event` is `name`."""
        found = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            if not line.text.startswith("{"):
                continue
            try:
                record = json.loads(line.text)
            except ValueError:
                continue
            if isinstance(record, dict) and (name is None or record.get("event") == name):
                found.append((line.at, record))
        return found

    def wait_event(
        self, name: str, count: int = 1, timeout: float = 60.0, fail_on: str | None = None
    ) -> tuple[float, dict]:
        """The `count`-th JSON line whose event is `name`.

        BenchError after `timeout`, if the child exits, or as soon as an event `fail_on` appears.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if len(found) >= count:
                return found[count - 1]
            if fail_on and (failed := self.events(fail_on)):
                raise BenchError(f"{self.name}: {fail_on}: {json.dumps(failed[-1][1])[:500]}")
            if self.popen.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.popen.returncode} before {name!r} #{count}: {self.tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {name!r} #{count} within {timeout:.0f}s: {self.tail()}")
            with self._cond:
                self._cond.wait(min(remaining, 0.5))

    def tail(self) -> str:
        with self._cond:
            return " | ".join((self.stderr or [line.text for line in self.lines])[-5:])[:1500]

    # -- /proc ----------------------------------------------------------------------

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process, all threads."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def thread_cpu_ns(self) -> dict[str, int] | None:
        """CPU time of each live thread, in nanoseconds (/proc/PID/task/TID/schedstat).

        Precise where cpu_seconds() counts clock ticks (10 ms), so one request's CPU can be
        read; None where the kernel keeps no schedstat. A thread that both starts and ends
        between two readings is in neither; see cpu_ns_between().
        """
        found = {}
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return None
        for task in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{task}/schedstat") as schedstat:
                    found[task] = int(schedstat.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread ended meanwhile
        return found or None

    def memory(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak so far), in MiB."""
        values = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024
        return {"rss_mib": values["VmRSS"], "peak_mib": values["VmHWM"]}

    # -- stop -----------------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> None:
        if self in _running:
            _running.remove(self)
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(grace)
        for stream in (self.popen.stdout, self.popen.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def python(name: str, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Proc:
    """A Python child with this interpreter, unbuffered, run from the repository root (or `cwd`)."""
    return Proc(name, [sys.executable, "-u", *args], env, cwd)


def run_json(name: str, args: list[str], timeout: float) -> dict:
    """Run a Python child to completion and return the last JSON line it printed."""
    with python(name, *args) as proc:
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{name} did not finish within {timeout:.0f}s") from None
        deadline = time.monotonic() + 5  # the reader thread may still be draining stdout
        while proc.popen.returncode == 0 and not proc.events() and time.monotonic() < deadline:
            time.sleep(0.01)
        found = proc.events()
        if proc.popen.returncode != 0 or not found:
            raise BenchError(f"{name} failed (exit {proc.popen.returncode}): {proc.tail()}")
        return found[-1][1]


def stop_all() -> None:
    for proc in list(reversed(_running)):
        try:
            proc.stop()
        except Exception as exc:  # keep stopping the others
            print(f"bench: could not stop {proc.name} (pid {proc.pid}): {exc}", file=sys.stderr)


RESULTS = REPO / "bench" / "results"


def measure_and_report(
    name: str,
    results: dict,
    measure: Callable[[], None],
    render: Callable[[dict], str],
    out: Path | None,
    began: float,
    log: Callable[[str], None],
) -> int:
    """Run `measure` (it fills `results`), stop every child whatever happens, write the results
    to JSON (partial, with the error, when it failed), print the tables; the exit code."""
    error = None
    try:
        measure()
    except BenchError as exc:
        error = str(exc)
    except KeyboardInterrupt:
        error = "interrupted"
    finally:
        stop_all()
    results["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["seconds"] = round(time.monotonic() - began, 1)
    if error:
        results["error"] = error
    out = out or RESULTS / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    if error:
        log(f"failed: {error}; partial results in {out}")
        return 1
    print(render(results))
    log(f"done in {results['seconds']:.0f} s; results in {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0
