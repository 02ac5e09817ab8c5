"""exporter/selfmetrics.py: the exporter's own health metrics, before and after polls."""

from __future__ import annotations

import pytest

from exporter import __version__
from exporter.snapshot import CHANGE_KINDS, Change
from exporter.upstream import POLL_FAILURE_REASONS
from tests.support.metrics import promtool_check
from tests.support.rendering import Rendered, snapshot_of
from tests.support.rendering import make_project as project


def test_before_the_first_poll():
    rendered = Rendered()
    metrics = rendered.scrape()

    assert metrics.value("openai_up") == 0
    assert metrics.value("openai_last_successful_poll_timestamp_seconds") == 0
    assert metrics.value("openai_polls_total") == 0
    assert {k: metrics.value("openai_project_changes_total", change=k) for k in CHANGE_KINDS} == dict.fromkeys(
        CHANGE_KINDS, 0
    )
    assert {r: metrics.value("openai_poll_failures_total", reason=r) for r in POLL_FAILURE_REASONS} == dict.fromkeys(
        POLL_FAILURE_REASONS, 0
    )
    assert set(POLL_FAILURE_REASONS) == {
        "auth",
        "rate_limited",
        "http_error",
        "timeout",
        "connection",
        "invalid_response",
        "pagination",
    }
    assert set(CHANGE_KINDS) == {"created", "archived", "unarchived", "renamed", "removed"}
    assert metrics.value("openai_exporter_build_info", version=__version__) == 1
    # Nothing is known about the organization yet: no made-up zeros.
    assert "openai_projects" not in metrics.families
    assert "openai_project_age_seconds" not in metrics.families


def test_process_metrics_stay():
    metrics = Rendered().scrape()
    assert metrics.samples("process_cpu_seconds_total")
    assert metrics.samples("process_resident_memory_bytes")
    assert metrics.samples("python_info")
    assert metrics.samples("python_gc_objects_collected_total")


@pytest.mark.slow
def test_promtool_accepts_the_exposition_before_the_first_poll():
    body, _ = Rendered().scrape_bytes()
    result = promtool_check(body.decode())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_record_success_and_failure():
    rendered = Rendered()
    snapshot = snapshot_of([project("proj_a")], completed_at=1_750_000_000.5)
    rendered.publish(snapshot)
    rendered.record_success(
        [
            Change("created", snapshot.projects["proj_a"]),
            Change("renamed", snapshot.projects["proj_a"], "old"),
            Change("created", snapshot.projects["proj_a"]),
        ]
    )
    after_success = rendered.scrape()
    rendered.metrics.record_response(200)
    rendered.metrics.record_response(200)
    rendered.metrics.record_response(503)
    rendered.record_failure("timeout", 2.5)
    after_failure = rendered.scrape()

    assert after_success.value("openai_up") == 1
    assert after_success.value("openai_polls_total") == 1
    assert after_success.value("openai_last_successful_poll_timestamp_seconds") == 1_750_000_000.5
    assert after_success.value("openai_poll_duration_seconds") == 0.25
    assert after_success.value("openai_project_changes_total", change="created") == 2
    assert after_success.value("openai_project_changes_total", change="renamed") == 1
    assert after_success.value("openai_project_changes_total", change="removed") == 0

    assert after_failure.value("openai_up") == 0
    assert after_failure.value("openai_polls_total") == 2
    assert after_failure.value("openai_poll_failures_total", reason="timeout") == 1
    assert after_failure.value("openai_poll_duration_seconds") == 2.5
    assert after_failure.value("openai_last_successful_poll_timestamp_seconds") == 1_750_000_000.5
    assert after_failure.values_by_label("openai_api_requests_total", "code") == {"200": 2, "503": 1}
