"""The Grafana dashboard against a real Prometheus scraping the exporter in demo mode.

Every panel query runs, with the template variables substituted as Grafana would, through
Prometheus' HTTP API and must parse and return data. The JSON itself is checked for what
makes it importable anywhere: stable uid, unique panel ids, no hard-coded data source or job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from exporter.collectors import COLLECTORS
from tests.support.process import ExporterProcess
from tests.support.prometheus import Prometheus
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_PATH = ROOT / "dashboards" / "openai-projects.json"
PROVISIONING = ROOT / "dashboards" / "provisioning"
COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
DASHBOARD = json.loads(DASHBOARD_PATH.read_text())
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# Not "openai-projects-exporter": the dashboard must not depend on the job's name.
JOB = "dashboard-under-test"
# What Grafana puts in for its built-in variables, for a 5 minute range at a 15s scrape interval.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300"}


def all_panels(panels=None):
    for panel in DASHBOARD["panels"] if panels is None else panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def all_targets():
    for panel in all_panels():
        for target in panel.get("targets", []):
            yield panel, target


TARGETS = [
    pytest.param(target["expr"], id=f"{panel['id']}-{panel['title']}-{target['refId']}")
    for panel, target in all_targets()
]


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# --- the JSON ------------------------------------------------------------------------------


def test_uid_is_stable_and_schema_is_grafana_10():
    assert DASHBOARD["uid"] == "openai-projects"
    assert DASHBOARD["schemaVersion"] >= 37  # Grafana 10.0 writes 37 and reads older ones
    assert "__inputs" not in DASHBOARD, "an export 'for sharing externally' pins a data source"


def test_panel_ids_are_unique():
    ids = [panel["id"] for panel in all_panels()]
    assert len(ids) == len(set(ids)), ids


def test_panels_do_not_overlap():
    cells = {}
    for panel in all_panels():
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_no_hard_coded_datasource():
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    refs = [node["datasource"] for node in walk(DASHBOARD) if "datasource" in node]
    assert refs, "no panel names its data source"
    for ref in refs:
        assert ref == DATASOURCE_REF, ref


def test_every_selector_is_scoped_by_the_job_and_instance_variables():
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["job"]["datasource"] == DATASOURCE_REF
    assert variables["instance"]["datasource"] == DATASOURCE_REF
    for panel, target in all_targets():
        expr = target["expr"]
        names = re.findall(r"\b(openai_\w+|up)\b(\s*\{[^}]*\})?", expr)
        assert names, expr
        for name, selector in names:
            assert 'job="$job"' in selector and 'instance=~"$instance"' in selector, (panel["title"], name)


def test_dashboard_covers_the_exporters_metrics():
    exprs = " ".join(target["expr"] for _, target in all_targets())
    for metric in (
        "openai_projects",
        "openai_project_info",
        "openai_project_created_timestamp_seconds",
        "openai_project_age_seconds_bucket",
        "openai_project_changes_total",
        "up",
        "openai_up",
        "openai_last_successful_poll_timestamp_seconds",
        "openai_poll_duration_seconds",
        "openai_api_requests_total",
        # The Governance row, from the governance collectors.
        "openai_project_users",
        "openai_project_api_keys",
        "openai_api_key_idle_seconds_count",
        "openai_api_key_idle_seconds_bucket",
        "openai_api_keys_never_used",
        "openai_project_spend_limit",
        "openai_project_spend_limit_enforcing",
        "openai_project_certificate_expiry_timestamp_seconds",
        "openai_collector_up",
        "openai_collector_failures_total",
        "openai_collector_projects_stale",
        # The Spend row, from the costs and usage collectors.
        "openai_project_cost_total",
        "openai_project_cost_month_to_date",
        "openai_organization_cost_month_to_date",
        "openai_organization_spend_limit",
        "openai_project_tokens_total",
        "openai_project_requests_total",
        "openai_usage_last_bucket_timestamp_seconds",
        "openai_usage_revisions_total",
        # The Security row, from the audit log.
        "openai_audit_events_total",
        "openai_audit_last_event_timestamp_seconds",
    ):
        assert re.search(rf"\b{metric}\{{", exprs), metric


def test_costs_meet_spend_limits_whatever_the_currencys_case():
    """Costs say currency "usd", limits "USD": a query with both sums currency away on each side."""
    joins = 0
    for panel, target in all_targets():
        expr = target["expr"]
        selectors = list(re.finditer(r"\bopenai_\w*(?:cost|spend_limit)\w*\{", expr))
        if len({"spend_limit" in match[0] for match in selectors}) < 2:
            continue
        joins += 1
        for labels in re.findall(r"\b(?:on|by)\s*\(([^)]*)\)", expr):
            assert "currency" not in labels, (panel["title"], expr)
        for match in selectors:
            before = expr[: match.start()]
            assert re.search(r"\bsum(\s+by\s*\([^)]*\))?\s*\(\s*(increase\(\s*)?$", before), (panel["title"], match[0])
    assert joins >= 5


def test_provisioning_loads_this_dashboard_in_the_compose_stack():
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "openai-projects.yaml").read_text())["providers"]
    grafana = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = (COMPOSE_FILE.parent / source).resolve()
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    assert mounts[provider["options"]["path"] + "/" + DASHBOARD_PATH.name] == DASHBOARD_PATH


# --- the queries against a real Prometheus --------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed; CI must apt-get install prometheus")
        pytest.skip("prometheus binary not found (Debian package: prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    # Every collector, the ones off by default too: each Governance panel has data to show.
    every = [f"--collector.{collector.name}" for collector in COLLECTORS]
    exporter = ExporterProcess.start(["--demo", "--poll.interval", "2s", *every], tmp, key=None)
    server = None
    try:
        exporter.wait_ready()  # on its port for good: Prometheus is told where to scrape
        server = Prometheus(binary, tmp, f"127.0.0.1:{exporter.port}", JOB)

        # Enough history for the range functions: 10 scrapes with the exporter's poll good.
        def history():
            exporter.check_alive()
            assert server.process.poll() is None, f"prometheus exited:\n{server.log.read_text()[-3000:]}"
            return server.query(
                f'count_over_time(openai_up{{job="{JOB}"}}[1m]) >= 10 and openai_up{{job="{JOB}"}} == 1'
            )

        wait_for(history, 90, interval=0.5, what="Prometheus to get 10 good scrapes")
        # The demo's churn keeps adding projects, so a collector may always have one to catch up
        # on: wait for the last families of the first round of details instead.
        wait_for(
            lambda: (
                server.query(f'count(openai_project_certificate_expiry_timestamp_seconds{{job="{JOB}"}}) > 5')
                and server.query(f'min(openai_collector_up{{job="{JOB}"}}) == 1')
            ),
            90,
            interval=0.5,
            what="every collector's details",
        )
        yield server
    finally:
        if server is not None:
            server.stop()
        exporter.kill()


def label_values(prometheus: Prometheus, definition: str, values: dict) -> list[str]:
    """Grafana's label_values(selector, label) for a query variable, via the series API."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
    assert match, definition
    selector = substitute(match[1], values)
    return prometheus.api(f"label/{match[2]}/values", **{"match[]": selector})


def substitute(expr: str, values: dict) -> str:
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


@pytest.fixture(scope="module")
def variables(prometheus):
    """The values Grafana's template variables take for this Prometheus, resolved in order."""
    values = dict(BUILTINS)
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = label_values(prometheus, variable["definition"], values)
        assert found, f"variable ${variable['name']} has no values"
        if variable.get("multi"):
            # As Grafana formats it for Prometheus: a regex alternation, escaped for a PromQL string.
            values[variable["name"]] = "(" + "|".join(re.escape(v).replace("\\", "\\\\") for v in found) + ")"
        else:
            values[variable["name"]] = found[0]
    assert values["job"] == JOB
    return values


@pytest.mark.slow
@pytest.mark.parametrize("expr", TARGETS)
def test_panel_query_returns_data(prometheus, variables, expr):
    result = prometheus.query(substitute(expr, variables))
    assert result, f"no data for {substitute(expr, variables)}"


@pytest.mark.slow
def test_table_query_lists_every_project(prometheus, variables):
    (table,) = [panel for panel in all_panels() if panel["type"] == "table" and panel["title"] == "Projects"]
    # One evaluation time for all, so every answer comes from the same scrape.
    at = time.time() - 1
    info, age, created = (prometheus.query(substitute(t["expr"], variables), at) for t in table["targets"])
    total_expr = 'sum(openai_projects{job="$job", instance=~"$instance"})'
    (total,) = prometheus.query(substitute(total_expr, variables), at)
    assert len(info) == int(float(total["value"][1])) > 0
    # The rows merge on project_id, so each query must have exactly one series per project.
    ids = {series["metric"]["project_id"] for series in info}
    assert {series["metric"]["project_id"] for series in age} == ids
    assert {series["metric"]["project_id"] for series in created} == ids
    assert all(float(series["value"][1]) >= 0 for series in age)
