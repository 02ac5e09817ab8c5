"""The audit log's fault matrix, injected into a running exporter process.

Each row starts its own exporter (a row may turn the collector off for an hour), waits for a
first good read, arms the fault, writes three events while it holds, and checks the
collector's health, which failure reason moved, the log, that the project list went on, and
what became of the three events: counted once after the fault for a read that failed, never
for a collector that turned itself off, never twice.
"""

from __future__ import annotations

import time

import pytest

from tests.support.audit_faults import AUDIT_ARGS, AUDIT_PATH, INJECTED, POLL_INTERVAL, AuditFaultRow
from tests.support.process import NO_DETAILS, upstream_args

pytestmark = pytest.mark.slow
HOLD = 3 * POLL_INTERVAL


class AuditLogFault:
    """The simulator's fault hook: the armed row's fault on the audit log, nothing elsewhere."""

    def __init__(self, server):
        self.server = server
        self.row: AuditFaultRow | None = None
        server.fault = self

    def __call__(self, request):
        row = self.row
        if row is None or row.fault is None or not request.path.rstrip("/").endswith(AUDIT_PATH):
            return None
        return row.fault(self.server, request)


@pytest.mark.parametrize("row", INJECTED, ids=[row.id for row in INJECTED])
def test_audit_fault_row(simulator, start_exporter, row: AuditFaultRow):
    server = simulator(4, seed=41)
    fault = AuditLogFault(server)
    process = start_exporter(
        *upstream_args(server, *NO_DETAILS, *AUDIT_ARGS, interval=f"{POLL_INTERVAL:g}s"), wait="ready"
    )
    process.wait_metric(lambda m: m.get("openai_collector_up", collector="audit-log") == 1, what="a first read")
    before = process.metrics()
    failures = before.get("openai_collector_failures_total", collector="audit-log", reason=row.reason or "auth")
    counted = before.get("openai_audit_events_total", type="login.failed")

    since = time.time()
    fault.row = row
    for n in range(3):
        server.organization.audit.record("login.failed", project_id=None, resource_id=None, data={"n": n})
    time.sleep(HOLD)
    during = process.metrics()
    assert during.get("openai_up") == 1, "the project list goes on"
    if row.reason is None:
        assert during.get("openai_collector_up", collector="audit-log") == 1
        assert not process.events(("audit_log_read_failed", "audit_log_unavailable"), since=since)
    else:
        assert during.get("openai_collector_up", collector="audit-log") == 0
        moved = during.get("openai_collector_failures_total", collector="audit-log", reason=row.reason) - failures
        assert moved == 1 if row.off else moved >= 1
    if row.event is not None:
        lines = process.events(row.event, since=since)
        assert len(lines) == 1 if row.off else len(lines) >= 1
        assert all("\n" not in line.get("message", "") for line in lines)

    fault.row = None
    if row.off:
        time.sleep(2 * POLL_INTERVAL)
        after = process.metrics()
        assert after.get("openai_collector_up", collector="audit-log") == 0  # off until the hourly retry
        assert after.get("openai_audit_events_total", type="login.failed") == counted
        return
    after = process.wait_metric(
        lambda m: m.get("openai_audit_events_total", type="login.failed") >= counted + 3, what="the events counted"
    )
    time.sleep(2 * POLL_INTERVAL)
    again = process.metrics()
    assert again.get("openai_audit_events_total", type="login.failed") == counted + 3, "each counted once"
    assert again.get("openai_collector_up", collector="audit-log") == 1
    assert after.get("openai_audit_events_total", type="tenant.something.new") is None
