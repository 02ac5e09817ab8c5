"""The collectors through the real process: flags, /metrics, the change log, several organizations, the demo."""

from __future__ import annotations

import pytest

from exporter.collectors import COLLECTORS
from tests.support.metrics import Metrics, promtool_check
from tests.support.process import upstream_args
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
FAST = ("--poll.details-interval", "2s", "--api.requests-per-second", "200")


def loaded(metrics: Metrics, *collectors: str) -> bool:
    """Every project's details of these collectors fetched, and published (a moment later)."""
    fetched = all(
        metrics.get("openai_collector_up", collector=c) == 1
        and metrics.get("openai_collector_projects_stale", collector=c) == 0
        for c in collectors
    )
    return fetched and all(metrics.samples(FAMILY[c]) for c in collectors)


FAMILY = {c.name: c.families[0].name for c in COLLECTORS}


def test_default_collectors_publish_valid_series_and_log_each_change(simulator, start_exporter):
    server = simulator(30, seed=21)
    process = start_exporter(*upstream_args(server, *FAST), wait="ready")
    defaults = [c.name for c in COLLECTORS if c.default]
    metrics = process.wait_metric(lambda m: loaded(m, *defaults), timeout=30, what="the default collectors loaded")
    text = process.get("/metrics").text
    assert promtool_check(text).returncode == 0
    zipped = process.get("/metrics", headers={"Accept-Encoding": "gzip"})  # httpx decodes it
    assert zipped.headers["content-encoding"] == "gzip" and "openai_project_api_key_info{" in zipped.text
    for family in ("openai_project_users", "openai_project_api_keys", "openai_api_key_idle_seconds"):
        assert f"# HELP {family} " in text and "background poll" in text.split(f"# HELP {family} ")[1].split("\n")[0]
    assert "openai_project_rate_limit{" not in text  # off by default
    active = [p["id"] for p in server.organization.all() if p["status"] == "active"]
    assert {s.labels["project_id"] for s in metrics.samples("openai_project_users")} == set(active)

    governance = server.organization.governance
    key = governance.add_api_key(active[0], name="added by the test")
    event = process.wait_event("api_key_created", timeout=15, where=lambda r: r["api_key_id"] == key["id"])
    assert event["project_id"] == active[0] and event["collector"] == "api-keys"
    process.wait_metric(
        lambda m: m.get("openai_governance_changes_total", resource="api_key", change="created") == 1,
        what="the change counted",
    )

    # An archived project's details leave with it, in the list poll's own render.
    server.organization.archive(active[1])
    process.wait_event("project_archived", timeout=15, where=lambda r: r["project_id"] == active[1])
    after = process.metrics()
    for family in ("openai_project_users", "openai_project_api_keys", "openai_project_service_accounts"):
        assert not [s for s in after.samples(family) if s.labels["project_id"] == active[1]], family
    assert not process.events("details_fetch_failed")


def test_collectors_are_switched_by_flags_and_per_organization(simulator, start_exporter, tmp_path):
    server = simulator(10, seed=4)
    process = start_exporter(
        *upstream_args(server, *FAST, "--no-collector.users", "--collector.certificates"), wait="ready"
    )
    metrics = process.wait_metric(lambda m: loaded(m, "api-keys", "certificates"), timeout=30, what="loaded")
    names = {name for name, _ in metrics.names()}
    assert "openai_project_certificates" in names
    assert "openai_project_users" not in names
    assert metrics.get("openai_collector_up", collector="users") is None
    process.kill()

    config = tmp_path / "organizations.yml"
    config.write_text(
        "organizations:\n"
        f"  - alias: lean\n    admin_key_env: OPENAI_ADMIN_KEY\n    base_url: {server.base_url}\n"
        "    collectors:\n      api-keys: false\n      rate-limits: true\n"
        f"  - alias: plain\n    admin_key_env: OPENAI_ADMIN_KEY\n    base_url: {server.base_url}\n"
    )
    fleet = start_exporter("--config.file", str(config), *FAST, wait="ready")

    def probe(alias: str) -> Metrics:
        return Metrics(fleet.get(f"/probe?organization={alias}").text)

    wait_for(lambda: loaded(probe("lean"), "users", "rate-limits") and loaded(probe("plain"), "api-keys"), 30)
    lean, plain = probe("lean"), probe("plain")
    assert lean.samples("openai_project_rate_limit") and not lean.samples("openai_project_api_keys")
    assert plain.samples("openai_project_api_keys") and not plain.samples("openai_project_rate_limit")


def test_the_demo_shows_governance_changes_within_a_minute(start_exporter):
    process = start_exporter("--demo", "--demo.projects", "60", key=None, wait="ready")
    changes = ("api_key_created", "api_key_removed", "project_user_added", "project_user_role_changed")
    changes += ("spend_limit_changed", "service_account_created", "project_user_removed")
    process.wait_event(changes, timeout=75)
    metrics = process.metrics()
    assert sum(s.value for s in metrics.samples("openai_governance_changes_total")) >= 1
