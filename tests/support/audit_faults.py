"""The fault matrix of the audit log: one `AuditFaultRow` per fault, with its outcome.

tests/test_audit_faults.py injects each row into a running exporter that reads the audit log
at every list poll, POLL_INTERVAL apart; the restart row is checked by tests/test_audit_process.py.
`python -m tests.support.faultmatrix` renders the rows as the fourth table of
docs/fault-matrix.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from exporter.audit.events import EVENT_TYPES, TENANT_EVENT_TYPES
from exporter.simulator import OrganizationServer, Request, Response
from tests.support.upstream import error, ok

AUDIT_PATH = "/organization/audit_logs"
POLL_INTERVAL = 2.0
# One retry, so that a 429 is waited out; a timeout long enough for it and its backoff.
AUDIT_ARGS = ("--api.max-retries", "1", "--poll.timeout", "8s", "--no-collector.costs", "--no-collector.usage")


@dataclass(frozen=True)
class AuditFaultRow:
    id: str
    description: str
    fault: Callable[[OrganizationServer, Request], Response | None] | None  # on the audit log endpoint
    outcome: str  # what the exporter does, in one line
    reason: str | None = None  # openai_collector_failures_total{collector="audit-log"} that moves; None: up stays 1
    event: str | None = None  # a log event the fault must bring
    off: bool = False  # the collector turns itself off: nothing is read again for an hour
    checked_by: str = "tests/test_audit_faults.py"


def real_page(server: OrganizationServer, request: Request, *, first: bool = False) -> dict:
    """The page the simulated organization would answer; with `first`, the first page whatever the cursor."""
    skip = ("event_types[]", "after") if first else ("event_types[]",)
    params = {name: [value] for name, value in request.query.items() if name not in skip}
    # The recorded query keeps one value per name: the types asked for are those of the read.
    tenant = request.query.get("tenant_only") == "true"
    params["event_types[]"] = list(TENANT_EVENT_TYPES if tenant else EVENT_TYPES)
    return server.organization.audit.read(params)


def _disabled(server, request):
    return error(403, "Audit logging is not enabled for this organization.", type_="invalid_request_error")


def _refused(server, request):
    return error(400, "Invalid value for event_types.", param="event_types", type_="invalid_request_error")


def _server_error(server, request):
    return error(500, "The server had an error while processing your request.", type_="server_error")


def _not_json(server, request):
    return Response(200, b"<html>maintenance</html>", {"content-type": "text/html"})


def _event_without_id(server, request):
    document = real_page(server, request)
    document["data"].append({"type": "login.failed", "effective_at": int(server.organization.audit.clock())})
    return ok(document)


def _last_id_loop(server, request):
    document = real_page(server, request, first=True)
    document["has_more"], document["last_id"] = True, "audit_log-loop"
    return ok(document)


def _news(server, request):
    document = real_page(server, request)
    for event in document["data"]:
        event["a_field_of_tomorrow"] = {"nested": [1, 2]}
    document["data"].insert(
        0, {"id": "audit_log-new-kind", "type": "tenant.something.new", "effective_at": 1, "actor": None}
    )
    document["a_top_level_field"] = "new"
    return ok(document)


def _outside_any_tenant(server, request):
    if request.query.get("tenant_only") == "true":
        return error(400, "This organization does not belong to a tenant.", param="tenant_only")
    return None


def _throttled(server, request):
    if request.number % 2:
        return error(429, "Rate limit reached.", headers={"retry-after-ms": "200"}, type_="requests")
    return None


AUDIT_ROWS = (
    AuditFaultRow(
        "audit-disabled",
        "the audit log answers 403: audit logging is not enabled",
        _disabled,
        "the collector turns itself off with one `audit_log_unavailable` line and tries again an hour later; "
        "changes are logged without `actor`, the project list goes on",
        reason="auth",
        event="audit_log_unavailable",
        off=True,
    ),
    AuditFaultRow(
        "audit-refused",
        "the audit log refuses the request with 400",
        _refused,
        "the collector turns itself off as for a 403, with `http_error`",
        reason="http_error",
        event="audit_log_unavailable",
        off=True,
    ),
    AuditFaultRow(
        "audit-server-error",
        "the audit log answers 500 at every read",
        _server_error,
        "each read fails with `audit_log_read_failed`; the position stays, and the events of the outage "
        "are counted once it ends",
        reason="http_error",
        event="audit_log_read_failed",
    ),
    AuditFaultRow(
        "audit-not-json",
        "a page that is not JSON",
        _not_json,
        "the read fails with `invalid_response`; nothing of it is counted",
        reason="invalid_response",
        event="audit_log_read_failed",
    ),
    AuditFaultRow(
        "audit-event-without-id",
        "an event without its `id`",
        _event_without_id,
        "the read fails with `invalid_response`: an event without an id could be counted twice",
        reason="invalid_response",
        event="audit_log_read_failed",
    ),
    AuditFaultRow(
        "audit-last-id-loop",
        "`has_more` with a `last_id` that leads back to the same page",
        _last_id_loop,
        "the read fails with `pagination`; nothing of it is counted",
        reason="pagination",
        event="audit_log_read_failed",
    ),
    AuditFaultRow(
        "audit-new-fields-and-types",
        "unknown fields on every event and page, and an event of a type the contract does not list",
        _news,
        "read as usual: the known types are counted, the unknown one is not, no failure",
    ),
    AuditFaultRow(
        "audit-no-tenant",
        "the tenant-scoped read alone answers 400: the organization belongs to no tenant",
        _outside_any_tenant,
        "one `audit_log_tenant_unavailable` info line, that read tried again an hour later; the organization's "
        "events are read and counted as usual, the collector stays up",
        event="audit_log_tenant_unavailable",
    ),
    AuditFaultRow(
        "audit-throttled",
        "every other audit request answers 429 with `retry-after-ms: 200`",
        _throttled,
        "retried after the pause, within the shared budget; every event counted once, no failure",
    ),
    AuditFaultRow(
        "audit-restart-mid-read",
        "the exporter is killed between two pages of events, and restarts with `--state.file`",
        None,
        "the read starts again from the saved position: no event lost, none counted twice",
        checked_by="tests/test_audit_process.py",
    ),
)
INJECTED = tuple(row for row in AUDIT_ROWS if row.fault is not None)
