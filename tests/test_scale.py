"""A thousand organizations in --config.file: the exporter is ready soon, small, and holds no
connection between polls.

Every organization is polled by its own client, but what the clients can share they share:
one TLS context (loading the CA bundle is most of what a client costs to build), and no
connection kept between polls further apart than a connection may idle.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.support.process import NO_COLLECTORS
from tests.support.procfs import rss_kib
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

ORGANIZATIONS = 1000
# Bounds for a loaded two-core machine, with the simulated organization's server on the same
# machine. Building a TLS context per client took over 20 s and 700 MB to get here.
HEALTHY_WITHIN = 5.0
READY_WITHIN = 15.0
PEAK_RSS_KIB = 200 * 1024
MOST_DESCRIPTORS = 100


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_a_thousand_organizations_are_ready_within_seconds_in_little_memory(simulator, start_exporter, tmp_path):
    server = simulator(3)
    config = tmp_path / "organizations.yml"
    config.write_text(
        "organizations:\n"
        + "".join(
            f"  - alias: org{n:04d}\n    admin_key_env: OPENAI_ADMIN_KEY\n    base_url: {server.base_url}\n"
            for n in range(ORGANIZATIONS)
        )
    )
    # The project lists alone: a thousand organizations' collectors on one loopback simulator
    # and two cores would measure the simulator.
    process = start_exporter("--config.file", str(config), "--poll.interval", "5m", *NO_COLLECTORS, wait=None)
    pid = process.proc.pid

    def answers(path: str, status: int) -> bool:
        process.check_alive()
        try:
            return process.get(path, timeout=10).status_code == status
        except httpx.TransportError:  # not listening yet
            return False

    wait_for(lambda: answers("/healthz", 200), 60, interval=0.05, what="/healthz")
    healthy = time.monotonic() - process.started
    wait_for(lambda: answers("/readyz", 200), 120, interval=0.1, what="/readyz")
    ready = time.monotonic() - process.started

    lines = process.get("/readyz").text.splitlines()
    assert len(lines) == ORGANIZATIONS and all(line.endswith(": ready") for line in lines), lines[:3]
    # A poll logs its success just after it publishes: the last lines may follow /readyz by a moment.
    assert len(process.wait_events("poll_succeeded", count=ORGANIZATIONS)) == ORGANIZATIONS
    assert process.events("poll_failed") == []
    peak, now = peak_rss_kib(pid), rss_kib(pid)
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    summary = f"healthy {healthy:.1f}s, ready {ready:.1f}s, peak RSS {peak // 1024} MiB, {descriptors} descriptors"
    assert healthy < HEALTHY_WITHIN, summary
    assert ready < READY_WITHIN, summary
    assert peak < PEAK_RSS_KIB and now < PEAK_RSS_KIB, summary
    # Polls five minutes apart keep no connection open between them.
    assert descriptors < MOST_DESCRIPTORS, summary
    metrics = process.get("/probe?organization=org0999")
    assert metrics.status_code == 200 and 'openai_projects{status="active"}' in metrics.text
