"""Load: a scrape storm during slow polls of a changing organization."""

from __future__ import annotations

import json
import statistics
import threading
import time

import httpx
import pytest

from exporter.simulator import start_churn
from tests.support.metrics import Metrics
from tests.support.procfs import latency_probe, rss_kib

pytestmark = pytest.mark.slow

# The storm is 50 scrapers for 30 s; on a 2-core CI box this one is 20 for 10 s.
SCRAPERS = 20
STORM_SECONDS = 10.0
PROJECTS = 300
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def check_body(response: httpx.Response, openmetrics: bool) -> int:
    """A complete, consistent scrape: parse it whole; return the number of projects it holds."""
    assert response.status_code == 200, response.status_code
    text = response.text
    if openmetrics:
        assert text.endswith("# EOF\n")
    metrics = Metrics(text, openmetrics=openmetrics)
    count = metrics.value("openai_projects", status="active") + metrics.value("openai_projects", status="archived")
    assert len(metrics.samples("openai_project_info")) == count
    assert len(metrics.samples("openai_project_created_timestamp_seconds")) == count
    assert metrics.value("openai_up") == 1
    assert (
        metrics.value(
            "openai_exporter_build_info", version=metrics.samples("openai_exporter_build_info")[0].labels["version"]
        )
        == 1
    )
    return int(count)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _probe(port: int, seconds: float) -> list[tuple[float, float]]:
    output, _ = latency_probe(port, seconds).communicate(timeout=seconds + 30)
    samples = json.loads(output)
    assert samples and all(whole for _, _, whole in samples), "a probe scrape was not whole"
    return [(offset, latency) for offset, latency, _ in samples]


def test_scrape_storm_during_slow_polls(simulator, start_exporter):
    """Twenty scrapers for ten seconds (the issue's example is 50 for 30 s; this is sized for a
    2-core CI box) while polls of a slow, changing organization run back to back. Every scrape
    is parsed whole; a probe process of its own measures latency; RSS is sampled from /proc."""
    # Three pages at 0.7 s each: a poll is always under way, and the organization changes under it.
    server = simulator(PROJECTS, seed=12, page_delay=0.7)
    stop_churn = threading.Event()
    start_churn(server.organization, 0.5, stop_churn)
    process = start_exporter("--api.base-url", server.base_url, "--poll.interval", "1s", "--poll.timeout", "10s")
    try:
        process.wait_ready()
        url = process.url("/metrics")
        idle = [latency for _, latency in _probe(process.port, 1.0)]

        results: list[tuple[float, int]] = []  # (start, projects)
        failures: list[str] = []
        lock = threading.Lock()
        storm_started = time.monotonic()
        deadline = storm_started + STORM_SECONDS

        def scraper(number: int) -> None:
            openmetrics, gzip = number % 4 == 1, number % 2 == 0
            headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
            if openmetrics:
                headers["Accept"] = OPENMETRICS
            with httpx.Client(trust_env=False, timeout=10) as client:
                while time.monotonic() < deadline:
                    began = time.monotonic()
                    try:
                        response = client.get(url, headers=headers)
                        assert (response.headers.get("Content-Encoding") == "gzip") == gzip
                        count = check_body(response, openmetrics)
                    except Exception as exc:  # noqa: BLE001 - every failure is reported below
                        with lock:
                            failures.append(f"{type(exc).__name__}: {exc}"[:300])
                        continue
                    with lock:
                        results.append((began - storm_started, count))

        rss: list[tuple[float, int]] = []
        threads = [threading.Thread(target=scraper, args=(n,), daemon=True) for n in range(SCRAPERS)]
        polls_before = len(process.events("poll_succeeded"))
        for thread in threads:
            thread.start()
        probe = latency_probe(process.port, STORM_SECONDS - 0.5)
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - storm_started, rss_kib(process.proc.pid)))
            time.sleep(0.25)
        output, _ = probe.communicate(timeout=30)
        for thread in threads:
            thread.join(20)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        stop_churn.set()

    assert failures == [], failures[:5]
    assert len(results) >= SCRAPERS * 5, f"only {len(results)} scrapes"
    # Polls ran and swapped new snapshots in during the storm; every scrape saw a whole one.
    assert len(process.events("poll_succeeded")) - polls_before >= 2
    assert len({count for _, count in results}) >= 2

    samples = json.loads(output)
    assert len(samples) >= 20 and all(whole for _, _, whole in samples)
    storm = [latency for _, latency, _ in samples]
    idle_p99, p99 = percentile(idle, 0.99), percentile(storm, 0.99)
    # The exporter shares two cores with twenty parsing scrapers, so a scrape is slower than
    # idle; but it never waits for a poll (a page takes 0.7 s), and it does not get worse.
    assert p99 < max(0.25, 10 * idle_p99), f"p99 {p99:.3f}s under the storm, {idle_p99:.3f}s idle"
    third = (STORM_SECONDS - 0.5) / 3
    early = [latency for began, latency, _ in samples if began < third]
    late = [latency for began, latency, _ in samples if began >= 2 * third]
    assert statistics.median(late) <= 2 * statistics.median(early) + 0.01, (
        f"latency grew: {statistics.median(early):.4f}s -> {statistics.median(late):.4f}s"
    )
    # Memory: flat once warm.
    warm = [kib for at, kib in rss if 1.0 <= at < 1.0 + third]
    end = [kib for at, kib in rss if at >= STORM_SECONDS - third]
    assert max(end) - min(warm) < 10 * 1024, f"RSS grew from {min(warm)} KiB to {max(end)} KiB"
