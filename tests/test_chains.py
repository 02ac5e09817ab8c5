"""Parallel cursor chains under upstream pressure: a 429 lowers the requests in flight."""

from __future__ import annotations

import threading
import time

from exporter.chains import fetch_projects
from exporter.simulator import Response, error_body


class InFlight:
    """A fault hook that holds each request a moment and counts how many overlap."""

    def __init__(self, hold: float, refuse_after_seconds: float):
        self.hold = hold
        self.refuse_after_seconds = refuse_after_seconds
        self.first: float | None = None
        self.lock = threading.Lock()
        self.now = 0
        self.peak_before = 0
        self.peak_after = 0
        self.refused_at: float | None = None

    def __call__(self, request):
        with self.lock:
            self.now += 1
            self.first = self.first or time.monotonic()
            if self.refused_at is None:
                self.peak_before = max(self.peak_before, self.now)
            elif time.monotonic() > self.refused_at + 0.3:  # once the refused chain's backoff is over
                self.peak_after = max(self.peak_after, self.now)
            refuse = self.refused_at is None and time.monotonic() > self.first + self.refuse_after_seconds
            if refuse:
                self.refused_at = time.monotonic()
        try:
            time.sleep(self.hold)
        finally:
            with self.lock:
                self.now -= 1
        if refuse:
            return Response(
                429, error_body("Rate limit reached", "requests", "rate_limit_exceeded"), {"retry-after-ms": "200"}
            )
        return None


def test_first_429_halves_the_chains_in_flight(simulator, make_client):
    server = simulator(12000, seed=5)
    sequential = make_client(server.base_url)
    previous = [p.id for p in fetch_projects(sequential, time.monotonic() + 30).projects]
    chained = make_client(server.base_url, concurrency=8)
    hook = InFlight(0.05, refuse_after_seconds=0.3)  # once all eight chains are under way
    server.fault = hook

    result = fetch_projects(chained, time.monotonic() + 60, previous)

    assert [p.id for p in result.projects] == previous  # still exactly the sequential list
    assert hook.refused_at is not None
    assert hook.peak_before >= 6  # the chains really ran in parallel before the 429
    assert 1 <= hook.peak_after <= 4  # and at most half as many afterwards


def test_chains_are_faster_than_one_walk_over_slow_round_trips(simulator, make_client):
    server = simulator(3000, seed=9, page_delay=0.04)
    sequential = make_client(server.base_url)
    started = time.monotonic()
    previous = [p.id for p in fetch_projects(sequential, time.monotonic() + 60).projects]
    one_walk = time.monotonic() - started
    chained = make_client(server.base_url, concurrency=6)
    started = time.monotonic()
    result = fetch_projects(chained, time.monotonic() + 60, previous)
    six_chains = time.monotonic() - started

    assert [p.id for p in result.projects] == previous
    # 30 pages of 40 ms: about 1.2 s in one walk, about 0.2 s in six chains. A loose bound,
    # so a loaded machine does not fail it; the benchmark measures the real ratio.
    assert six_chains < one_walk / 2.5, (six_chains, one_walk)
