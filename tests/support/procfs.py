"""Readings of a running process: /proc (RSS, per-thread niceness) and a latency probe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def thread_niceness(pid: int) -> dict[int, int]:
    """Niceness of each thread of `pid` (field 19 of /proc/PID/task/TID/stat)."""
    niceness = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        niceness[int(task.name)] = int(fields[16])
    return niceness


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
    return subprocess.Popen([sys.executable, "-c", _PROBE, str(port), str(seconds)], stdout=subprocess.PIPE, text=True)
