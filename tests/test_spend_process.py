"""Spend and usage through the real process: the SDK's figures, restarts under a real Prometheus, the demo."""

from __future__ import annotations

import shutil
import time
from decimal import Decimal

import pytest

from exporter.spend.poller import month_start
from tests.support.metrics import Metrics
from tests.support.net import free_port
from tests.support.process import NO_DETAILS, ExporterProcess, upstream_args
from tests.support.prometheus import Prometheus
from tests.support.sdk import sdk
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
SPEND = ("--poll.spend-interval", "1s", "--api.requests-per-second", "200", *NO_DETAILS)
JOB = "spend-under-test"


def costs(metrics: Metrics, name: str = "openai_project_cost_total") -> dict[tuple, Decimal]:
    """The series of a cost family, read from the text to keep every digit."""
    found = {}
    for line in metrics.text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            found[labels] = Decimal(value)
    return found


def test_the_sdk_and_the_exporter_agree_on_this_months_costs_to_the_cent(simulator, start_exporter):
    server = simulator(12, seed=5, now=time.time())  # a clock that stands still: nothing moves meanwhile
    process = start_exporter(*upstream_args(server, *SPEND), wait="ready")
    metrics = process.wait_metric(lambda m: m.samples("openai_organization_cost_month_to_date"), what="the costs")
    start = month_start(time.time())
    with sdk(server) as client:  # the SDK does not page this endpoint: follow next_page by hand
        costs_of = client.admin.organization.usage.costs
        pages = [costs_of(start_time=start, group_by=["project_id", "line_item"], limit=7)]
        while pages[-1].has_more:
            pages.append(costs_of(start_time=start, group_by=["project_id", "line_item"], page=pages[-1].next_page))
        buckets = [bucket for page in pages for bucket in page.data]
    by_sdk: dict[tuple[str, str], Decimal] = {}
    for bucket in buckets:
        for result in bucket.results:
            key = (result.project_id or "", result.line_item)
            by_sdk[key] = by_sdk.get(key, Decimal(0)) + Decimal(str(result.amount.value))
    exported = {
        (s.labels["project_id"], s.labels["line_item"]): Decimal(str(s.value))
        for s in metrics.samples("openai_project_cost_month_to_date")
    }
    assert exported.keys() == by_sdk.keys()
    for key, amount in by_sdk.items():  # the SDK reads string amounts as floats: compare to the cent
        assert abs(exported[key] - amount) < Decimal("0.005"), key
    truth = server.organization.spend.cost_total(start)
    organization = Decimal(str(metrics.value("openai_organization_cost_month_to_date", currency="usd")))
    assert abs(organization - truth) < Decimal("0.005")


def _total(prometheus: Prometheus, at: float) -> Decimal:
    [result] = prometheus.query(f'sum(increase(openai_project_cost_total{{job="{JOB}"}}[10m]))', at=at)
    return Decimal(result["value"][1])


@pytest.mark.parametrize("keep_state", [True, False], ids=["with-state-file", "without-state-file"])
def test_a_restart_neither_loses_nor_counts_twice_with_a_state_file_and_never_counts_twice_without(
    simulator, tmp_path, keep_state
):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus binary not found (Debian package: prometheus)")
    server = simulator(8, seed=7, now=time.time())
    clock, spend = server.organization.spend.clock, server.organization.spend
    start = month_start(time.time())
    state = ["--state.file", str(tmp_path / "state.json")] if keep_state else []
    port = free_port()  # both processes on one port: Prometheus scrapes one target
    args = upstream_args(server, *SPEND, *state)

    def exporter(name: str) -> ExporterProcess:
        process = ExporterProcess.start(args, tmp_path / name, port=port)
        process.wait_ready()
        return process

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    prometheus = Prometheus(binary, tmp_path, f"127.0.0.1:{port}", JOB, interval="500ms")
    try:
        first = exporter("a")
        first.wait_metric(lambda m: m.samples("openai_project_cost_total"), what="the first poll's baseline")
        baseline = spend.cost_total(start)
        # increase() counts from the first sample Prometheus has: let it scrape the baseline first.
        wait_for(lambda: prometheus.query(f'openai_project_cost_total{{job="{JOB}"}}'), 30, what="a first scrape")

        def counted(process: ExporterProcess, expected: Decimal) -> bool:
            total = sum(costs(process.metrics()).values(), Decimal(0))
            return abs(total - expected) < Decimal("0.000001")

        clock.advance(600)  # ten minutes of use, counted by the first exporter
        grown = spend.cost_total(start) - baseline
        assert grown > 0
        wait_for(lambda: counted(first, grown), 20, what="the first exporter to count the growth")
        time.sleep(2)  # Prometheus scrapes it
        first.stop()
        clock.advance(600)  # ten more minutes while no exporter runs
        second = exporter("b")
        truth = spend.cost_total(start) - baseline
        if keep_state:
            wait_for(lambda: counted(second, truth), 20, what="the restarted exporter to count the downtime")
        else:  # a fresh baseline: the downtime's growth is lost, nothing is counted twice
            wait_for(lambda: second.metrics().samples("openai_project_cost_total"), 20, what="the new baseline")
            clock.advance(300)
            later = spend.cost_total(start) - baseline
            wait_for(lambda: counted(second, later - truth), 20, what="the growth after the restart")
        time.sleep(2)
        [newest] = prometheus.query(f'max(timestamp(openai_project_cost_total{{job="{JOB}"}}))')
        at = float(newest["value"][1])
        increase = _total(prometheus, at)
        resets = prometheus.query(f'sum(resets(openai_project_cost_total{{job="{JOB}"}}[10m]))', at=at)
        if keep_state:
            assert abs(increase - truth) <= truth * Decimal("0.005"), (increase, truth)
            assert Decimal(resets[0]["value"][1]) == 0  # the counters went on from where they were
        else:
            upstream = spend.cost_total(start) - baseline
            assert increase <= upstream * Decimal("1.005"), (increase, upstream)  # never twice
            assert increase >= grown * Decimal("0.995")  # what each process saw is all there
        second.stop()
    finally:
        prometheus.stop()


def test_the_demo_shows_spend_rising_within_a_minute(start_exporter):
    process = start_exporter("--demo", "--demo.projects", "30", *NO_DETAILS, key=None, wait="ready")

    def spent() -> Decimal:
        return sum(costs(process.metrics()).values(), Decimal(0))

    first = wait_for(lambda: process.metrics().samples("openai_project_cost_total"), 30, what="the costs")
    assert first
    before = spent()
    wait_for(lambda: spent() > before, 60, what="spend to rise")


def test_the_sdk_and_the_exporter_agree_on_the_tokens_used_since_the_start(simulator, start_exporter):
    server = simulator(10, seed=17, now=time.time())
    process = start_exporter(*upstream_args(server, *SPEND), wait="ready")
    process.wait_metric(lambda m: m.samples("openai_project_tokens_total"), what="the usage baseline")
    start = int(time.time()) // 86_400 * 86_400 - 2 * 86_400

    def by_sdk() -> dict[tuple[str, str], int]:
        with sdk(server) as client:
            completions = client.admin.organization.usage.completions
            pages = [completions(start_time=start, bucket_width="1d", group_by=["project_id", "model"], limit=31)]
            while pages[-1].has_more:
                pages.append(
                    completions(
                        start_time=start, bucket_width="1d", group_by=["project_id", "model"], page=pages[-1].next_page
                    )
                )
        totals: dict[tuple[str, str], int] = {}
        for bucket in (b for page in pages for b in page.data):
            for result in bucket.results:
                key = (result.project_id or "", result.model or "")
                totals[key] = totals.get(key, 0) + result.input_tokens
        return totals

    before = by_sdk()
    server.organization.spend.clock.advance(900)
    after = by_sdk()
    grown = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert grown

    def exported() -> dict[tuple[str, str], float]:
        return {
            (s.labels["project_id"], s.labels["model"]): s.value
            for s in process.metrics().samples("openai_project_tokens_total")
            if s.labels["endpoint"] == "completions" and s.labels["type"] == "input" and s.value
        }

    wait_for(lambda: exported() == grown, 20, what="the exporter to count what the SDK reads")
