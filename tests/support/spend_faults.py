"""The fault matrix of the costs and usage feeds: one `SpendFaultRow` per fault, with its outcome.

tests/test_spend_faults.py injects each row into a running exporter that polls the costs and
usage every second; the restart rows are checked under a real Prometheus by
tests/test_spend_process.py. `python -m tests.support.faultmatrix` renders the rows as the
third table of docs/fault-matrix.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from exporter.simulator import OrganizationServer, Request, Response
from tests.support.upstream import error, ok

SPEND_INTERVAL = 1.0
SPEND_ARGS = ("--poll.spend-interval", "1s", "--api.requests-per-second", "100", "--api.max-retries", "0")
COST_GROUPS = ["project_id", "line_item"]


@dataclass(frozen=True)
class SpendFaultRow:
    id: str
    description: str
    fault: Callable[[OrganizationServer, Request], Response | None] | None  # on the costs endpoint
    outcome: str  # what the exporter does, in one line
    up: bool = True  # openai_collector_up{collector="costs"} while the fault holds
    reason: str | None = None  # openai_collector_failures_total{collector="costs"} that moves
    event: str | None = None  # a log event the fault must bring
    checked_by: str = "tests/test_spend_faults.py"


def real_costs(server: OrganizationServer, request: Request) -> dict:
    """The costs page the simulated organization would answer (the exporter groups by project and line item)."""
    # The first page's, whatever cursor the request names: a fault's cursor means nothing upstream.
    params = {name: [value] for name, value in request.query.items() if name not in ("group_by[]", "page")}
    params["group_by[]"] = COST_GROUPS
    return server.organization.spend.read("costs", params)


def _every_amount_a_string(server, request):
    document = real_costs(server, request)
    for bucket in document["data"]:
        for result in bucket["results"]:
            result["amount"]["value"] = format(Decimal(str(result["amount"]["value"])), ".28f")
    return ok(document)


def _a_null_project(server, request):
    document = real_costs(server, request)
    if document["data"]:
        document["data"][-1]["results"].append(
            {
                "object": "organization.costs.result",
                "amount": {"value": "1.2500000000000000000000000000", "currency": "usd"},
                "line_item": "fault: organization support",
                "project_id": None,
            }
        )
    return ok(document)


def _halved(server, request):
    document = real_costs(server, request)
    for bucket in document["data"]:
        for result in bucket["results"]:
            result["amount"]["value"] = str(Decimal(str(result["amount"]["value"])) / 2)
    return ok(document)


def _next_page_loop(server, request):
    document = real_costs(server, request)
    document["has_more"], document["next_page"] = True, "page_again"
    return ok(document)


def _group_by_refused(server, request):
    return error(400, "Invalid value for group_by.", param="group_by", type_="invalid_request_error")


SPEND_ROWS = (
    SpendFaultRow(
        "string-amounts",
        "every `amount.value` arrives as a 28-place string",
        _every_amount_a_string,
        "counted as exactly as numbers are: the counters and gauges do not move",
    ),
    SpendFaultRow(
        "null-project",
        "a cost with `project_id: null` appears in the newest bucket",
        _a_null_project,
        'counted under `project_id=""`, and in `openai_organization_cost_month_to_date`',
    ),
    SpendFaultRow(
        "revised-down",
        "every amount comes back halved",
        _halved,
        "`usage_revised_down` logged per amount and `openai_usage_revisions_total` counted; no counter goes down",
        event="usage_revised_down",
    ),
    SpendFaultRow(
        "next-page-loop",
        "`has_more` with a `next_page` that leads back to itself",
        _next_page_loop,
        "the window fails with `pagination`; the counters keep their values, usage goes on",
        up=False,
        reason="pagination",
    ),
    SpendFaultRow(
        "group-by-400",
        "the costs endpoint refuses the grouping with 400",
        _group_by_refused,
        "costs fail alone with `http_error`; usage and the project list go on",
        up=False,
        reason="http_error",
    ),
    SpendFaultRow(
        "restart-with-state",
        "the exporter restarts with `--state.file` between two polls while a bucket grows",
        None,
        "the counters go on from the saved totals and count the growth of the downtime: "
        "`increase()` equals the upstream's growth within 0.5 %, no reset",
        checked_by="tests/test_spend_process.py",
    ),
    SpendFaultRow(
        "restart-without-state",
        "the exporter restarts without a state file between two polls while a bucket grows",
        None,
        "the counters start again from zero at a new baseline: the downtime's growth is lost, nothing is counted twice",
        checked_by="tests/test_spend_process.py",
    ),
)
INJECTED = tuple(row for row in SPEND_ROWS if row.fault is not None)
