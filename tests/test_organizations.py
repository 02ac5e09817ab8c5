"""Several organizations (`--config.file`): each on its own loopback upstream and schedule,
probed one by one, reloaded with SIGHUP, checked with `--config.check` (in this process: the
check returns before anything starts)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from exporter.simulator import OrganizationServer
from tests.support.keys import assert_no_secret
from tests.support.metrics import Metrics
from tests.support.process import assert_one_line_error
from tests.support.upstream import Switchboard, error
from tests.support.waiting import wait_for

KEYS = {
    "good": "sk-admin-good-1f2e3d4c5b6a7980",
    "failing": "sk-admin-failing-0a9b8c7d6e5f4031",
    "slow": "sk-admin-slow-77aa88bb99cc00dd",
    "added": "sk-admin-added-4455667788990011",
}
DUPLICATE_KEY = "sk-admin-duplicate-5566778899aabbcc"


def probe(process, alias: str | None):
    path = "/probe" if alias is None else f"/probe?organization={alias}"
    return process.get(path)


def probe_metrics(process, alias: str) -> Metrics:
    response = probe(process, alias)
    assert response.status_code == 200, response.text
    return Metrics(response.text)


def first_pages(server: OrganizationServer) -> list:
    return [r for r in list(server.requests) if r.path.endswith("/projects") and "after" not in r.query]


def organization_entry(alias: str, server: OrganizationServer, key_line: str, **options: str) -> str:
    lines = [f"  - alias: {alias}", f"    {key_line}", f"    base_url: {server.base_url}"]
    lines += [f"    {name}: {value}" for name, value in options.items()]
    return "\n".join(lines) + "\n"


def write_config(path: Path, *entries: str) -> None:
    temporary = path.with_name(path.name + ".new")
    temporary.write_text("organizations:\n" + "".join(entries))
    temporary.replace(path)


@pytest.mark.slow
def test_three_organizations_one_failing_one_slow_each_probed(simulator, start_exporter, tmp_path):
    good = simulator(120, key=KEYS["good"], seed=31)
    failing = simulator(80, key=KEYS["failing"], seed=32)
    Switchboard(failing).arm(lambda server, request, n: error(500, "The server had an error"))
    slow = simulator(250, key=KEYS["slow"], page_delay=1.2, seed=33)  # three pages: a 3.6 s poll
    (tmp_path / "failing.key").write_text(KEYS["failing"] + "\n")
    config = tmp_path / "organizations.yml"
    write_config(
        config,
        organization_entry("good", good, "admin_key_env: OPENAI_ADMIN_KEY_GOOD", poll_interval="1s"),
        organization_entry("failing", failing, "admin_key_file: failing.key", poll_interval="1s", api_max_retries="0"),
        organization_entry(
            "slow", slow, f"admin_key: {KEYS['slow']}", poll_interval="1s", poll_timeout="20s", api_timeout="5s"
        ),
    )
    process = start_exporter("--config.file", str(config), key=None, env={"OPENAI_ADMIN_KEY_GOOD": KEYS["good"]})
    began = time.time()

    # The inline key is accepted with a warning that does not quote it.
    warning = process.wait_event("inline_admin_key", 0)
    assert warning["organization"] == "slow" and warning["level"] == "warning"

    # The good organization is served while the slow one's first poll is still under way.
    wait_for(lambda: probe_metrics(process, "good").project_total() == 120, what="good to be probed")
    assert probe_metrics(process, "slow").project_total() is None
    metrics = process.metrics()
    assert metrics.value("openai_up", organization="good") == 1
    assert metrics.value("openai_up", organization="slow") == 0
    assert metrics.get("openai_projects", status="active") is None  # projects are on /probe only

    slow_done = process.wait_event("poll_succeeded", began, where=lambda r: r["organization"] == "slow")
    assert slow_done["duration"] >= 3.0
    # While the slow poll ran, the good organization kept its one-second schedule.
    times = [r.number for r in first_pages(good)]
    assert len(times) >= 3
    good_polls = process.events("poll_succeeded", began, slow_done["_time"])
    assert len([r for r in good_polls if r["organization"] == "good"]) >= 3

    good_metrics, slow_metrics = probe_metrics(process, "good"), probe_metrics(process, "slow")
    assert good_metrics.project_total() == 120 and slow_metrics.project_total() == 250
    assert set(slow_metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id")) == {
        p["id"] for p in slow.organization.all()
    }
    assert not set(good_metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id")) & set(
        slow_metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id")
    )
    failing_metrics = probe_metrics(process, "failing")
    assert failing_metrics.project_total() is None  # it never had a good poll

    metrics = process.metrics()
    assert {a: metrics.value("openai_up", organization=a) for a in ("good", "failing", "slow")} == {
        "good": 1,
        "failing": 0,
        "slow": 1,
    }
    assert metrics.value("openai_poll_failures_total", organization="failing", reason="http_error") >= 3
    assert metrics.value("openai_poll_failures_total", organization="good", reason="http_error") == 0
    assert metrics.value("openai_poll_failures_total", organization="slow", reason="timeout") == 0
    assert metrics.value("openai_api_requests_total", organization="failing", code="500") >= 3
    assert metrics.value("openai_last_successful_poll_timestamp_seconds", organization="failing") == 0
    assert metrics.value("openai_last_successful_poll_timestamp_seconds", organization="good") > began
    assert metrics.value("openai_poll_duration_seconds", organization="slow") >= 3.0
    for record in process.events("poll_failed", 0):
        assert record["organization"] == "failing" and record["reason"] == "http_error"

    ready = process.get("/readyz")
    assert ready.status_code == 503  # not every organization is ready
    assert ready.text.splitlines() == ["failing: not ready: no successful poll yet", "good: ready", "slow: ready"]
    index = process.get("/").text
    for alias in ("good", "failing", "slow"):
        assert f'href="/probe?organization={alias}"' in index
    assert "HTTP 500" in index and "succeeded" in index

    unknown = probe(process, "nope")
    assert unknown.status_code == 400
    assert unknown.text == "unknown organization 'nope'; known: failing, good, slow\n"
    missing = probe(process, None)
    assert missing.status_code == 400 and "missing ?organization=ALIAS" in missing.text

    # A probe is served from the cache: it never makes an upstream request.
    counts = [len(s.requests) for s in (good, failing, slow)]
    for _ in range(20):
        probe(process, "slow")
    assert len(slow.requests) - counts[2] <= 3  # only the slow organization's own polls, not 20 probes

    # Each organization sent its own key, and no key was logged or served.
    for server, alias in ((good, "good"), (failing, "failing"), (slow, "slow")):
        assert {r.headers.get("Authorization") for r in list(server.requests)} == {f"Bearer {KEYS[alias]}"}
    bodies = process.stdout() + process.stderr() + index + process.get("/metrics").text
    for alias in ("good", "failing", "slow"):
        bodies += probe(process, alias).text
    assert_no_secret("the logs and bodies", bodies, *KEYS.values())


@pytest.mark.slow
def test_sighup_reload_adds_removes_changes_and_keeps_a_bad_file_out(simulator, start_exporter, tmp_path):
    good = simulator(60, key=KEYS["good"], seed=41)
    doomed = simulator(50, key=KEYS["slow"], seed=42)
    added = simulator(70, key=KEYS["added"], seed=43)
    config = tmp_path / "organizations.yml"
    good_entry = organization_entry("good", good, f"admin_key: {KEYS['good']}", poll_interval="1s")
    write_config(
        config, good_entry, organization_entry("doomed", doomed, f"admin_key: {KEYS['slow']}", poll_interval="1s")
    )
    process = start_exporter("--config.file", str(config), key=None, wait="ready")
    wait_for(lambda: probe_metrics(process, "doomed").project_total() == 50, what="doomed to be probed")
    polls_of_good = process.wait_metric(
        lambda m: m.value("openai_polls_total", organization="good") >= 2, what="two polls of good"
    ).value("openai_polls_total", organization="good")

    # Reload: one removed, one added, the other untouched.
    write_config(
        config, good_entry, organization_entry("added", added, f"admin_key: {KEYS['added']}", poll_interval="1s")
    )
    reloaded_at = time.time()
    process.send_signal(signal.SIGHUP)
    process.wait_event("config_reloaded", reloaded_at)
    assert [r["organization"] for r in process.events("organization_removed", reloaded_at)] == ["doomed"]
    assert [r["organization"] for r in process.events("organization_added", reloaded_at)] == ["added"]
    assert process.events("organization_changed", reloaded_at) == []
    # The untouched organization was not restarted: its snapshot and its counters went on.
    assert probe_metrics(process, "good").project_total() == 60
    assert process.metrics().value("openai_polls_total", organization="good") >= polls_of_good
    wait_for(lambda: probe_metrics(process, "added").project_total() == 70, what="added to be probed")
    assert probe(process, "doomed").status_code == 400
    doomed_requests = len(doomed.requests)
    metrics = process.metrics()
    assert 'organization="doomed"' not in metrics.text
    assert metrics.value("openai_up", organization="added") == 1
    assert process.proc.poll() is None

    # Bad files are logged and kept out; the running organizations go on.
    for bad in (
        "organizations: [unclosed\n",
        "organizations:\n  - alias: x\n    admin_key_env: OPENAI_ADMIN_KEY_UNSET_FOR_SURE\n",
        f"organizations:\n  - alias: a\n    admin_key: {DUPLICATE_KEY}\n  - alias: a\n    admin_key: {DUPLICATE_KEY}\n",
        "organizations: []\n",
    ):
        config.write_text(bad)
        sent = time.time()
        process.send_signal(signal.SIGHUP)
        failed = process.wait_event("config_reload_failed", sent)
        assert failed["level"] == "error" and "kept the running config" in failed["action"]
    assert "OPENAI_ADMIN_KEY_UNSET_FOR_SURE" in " ".join(r["reason"] for r in process.events("config_reload_failed", 0))
    kept = time.time()
    for alias in ("good", "added"):
        process.wait_event("poll_succeeded", kept, where=lambda r, a=alias: r["organization"] == a)
        assert probe_metrics(process, alias).project_total() is not None
    assert len(doomed.requests) == doomed_requests  # the removed organization is not polled again

    # A changed organization is restarted with its new settings.
    write_config(
        config, good_entry, organization_entry("added", added, f"admin_key: {KEYS['added']}", poll_interval="3s")
    )
    sent = time.time()
    process.send_signal(signal.SIGHUP)
    process.wait_event("config_reloaded", sent)
    assert [r["organization"] for r in process.events("organization_changed", sent)] == ["added"]
    assert process.proc.poll() is None and process.get("/healthz").status_code == 200


@pytest.mark.slow
def test_removed_organization_leaves_no_series_behind_even_mid_request(simulator, start_exporter, tmp_path):
    good = simulator(30, key=KEYS["good"], seed=51)
    doomed = simulator(150, key=KEYS["slow"], page_delay=2.0, seed=52)
    config = tmp_path / "organizations.yml"
    good_entry = organization_entry("good", good, f"admin_key: {KEYS['good']}", poll_interval="1s")
    write_config(
        config,
        good_entry,
        organization_entry("doomed", doomed, f"admin_key: {KEYS['slow']}", poll_interval="1s", poll_timeout="30s"),
    )
    process = start_exporter("--config.file", str(config), key=None)
    wait_for(lambda: len(doomed.requests) >= 1, what="a request of doomed in flight")
    write_config(config, good_entry)
    sent = time.time()
    process.send_signal(signal.SIGHUP)
    process.wait_event("config_reloaded", sent)
    process.wait_event(
        "poll_cancelled", sent
    )  # the removed organization's poll gives up  # its request in flight was answered
    metrics = process.metrics()
    assert not [
        s for family in metrics.families.values() for s in family.samples if s.labels.get("organization") == "doomed"
    ], "a removed organization's series came back"
    assert probe(process, "doomed").status_code == 400


@pytest.mark.slow
def test_single_organization_ignores_sighup_and_has_no_probe(simulator, start_exporter, tmp_path):
    server = simulator(20, key=KEYS["good"])
    process = start_exporter("--api.base-url", server.base_url, "--poll.interval", "1s", key=KEYS["good"], wait="ready")
    sent = time.time()
    process.send_signal(signal.SIGHUP)
    process.wait_event("reload_ignored", sent)
    assert process.proc.poll() is None
    response = probe(process, "good")
    assert response.status_code == 400 and "see /metrics" in response.text
    metrics = process.metrics()
    assert metrics.project_total() == 20 and "organization=" not in metrics.text


# -- --config.check ------------------------------------------------------------------------------


def test_config_check_accepts_a_good_file(cli_main, tmp_path):
    (tmp_path / "b.key").write_text("sk-admin-b\n")
    config = tmp_path / "organizations.yml"
    config.write_text(
        "organizations:\n"
        "  - alias: a\n    admin_key_env: OPENAI_ADMIN_KEY_A\n    poll_interval: 2m\n"
        "  - alias: b\n    admin_key_file: b.key\n    base_url: http://127.0.0.1:9/v1\n    api_timeout: 5s\n"
        "  - alias: c.prod-1\n    admin_key_env: OPENAI_ADMIN_KEY_A\n    per_project_metrics: false\n"
    )
    result = cli_main(["--config.file", str(config), "--config.check"], {"OPENAI_ADMIN_KEY_A": "sk-admin-a"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: good, 3 organizations: a, b, c.prod-1\n"
    assert result.stderr == ""


BAD_CONFIGS = {
    "not-yaml": ("organizations: [\n", "is not valid YAML"),
    "no-organizations": ("alias: a\n", "needs a non-empty `organizations` list"),
    "empty-list": ("organizations: []\n", "needs a non-empty `organizations` list"),
    "duplicate-alias": (
        "organizations:\n  - {alias: a, admin_key_env: K}\n  - {alias: a, admin_key_env: K}\n",
        "alias 'a' appears more than once",
    ),
    "bad-alias": ("organizations:\n  - {alias: 'a b', admin_key_env: K}\n", "`alias` must be"),
    "no-key": ("organizations:\n  - {alias: a}\n", "give exactly one of"),
    "two-keys": ("organizations:\n  - {alias: a, admin_key_env: K, admin_key_file: f}\n", "give exactly one of"),
    "unset-variable": (
        "organizations:\n  - {alias: a, admin_key_env: UNSET_VARIABLE}\n",
        "environment variable UNSET_VARIABLE is unset or empty",
    ),
    "missing-key-file": (
        "organizations:\n  - {alias: a, admin_key_file: /nonexistent/key}\n",
        "cannot read the admin key file",
    ),
    "unknown-key": ("organizations:\n  - {alias: a, admin_key_env: K, pol_interval: 5s}\n", "unknown keys"),
    "bad-interval": (
        "organizations:\n  - {alias: a, admin_key_env: K, poll_interval: soon}\n",
        "poll_interval: not a duration",
    ),
    "interval-too-short": (
        "organizations:\n  - {alias: a, admin_key_env: K, poll_interval: 100ms}\n",
        "poll_interval: '100ms' is below the minimum of 1s",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_config_check_refuses_a_bad_file_with_the_reason(cli_main, tmp_path, name):
    text, reason = BAD_CONFIGS[name]
    config = tmp_path / "organizations.yml"
    config.write_text(text)
    result = cli_main(["--config.file", str(config), "--config.check"], {"K": "sk-admin-k"})
    # The message names the config file, but for a missing key file, which it names instead.
    assert_one_line_error(result, reason, starts="" if name == "missing-key-file" else "--config.file")
