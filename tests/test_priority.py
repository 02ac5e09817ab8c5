"""Scrapes first: a poll steps aside for a scrape in flight, within its budget, at a lower CPU priority."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from exporter.chains import fetch_projects
from exporter.priority import LONGEST_PAUSE, PAUSE_RATIO, POLL_NICENESS, SCRAPES, ScrapesFirst
from tests.support.process import NO_COLLECTORS
from tests.support.procfs import thread_niceness
from tests.support.upstream import Switchboard
from tests.support.waiting import wait_for


def held(seconds: float):
    """A fault that holds each request `seconds` (a round trip), then lets the organization answer."""

    def fault(server, request, n):
        time.sleep(seconds)

    return fault


def hold_a_scrape(
    after: threading.Event, until: threading.Event, seconds: float, window: list[float]
) -> threading.Thread:
    """In a thread: once `after` is set, be a scrape in flight for `seconds` or until `until` is set.

    `window` gets the [start, end] of the scrape.
    """

    def scrape():
        after.wait(10)
        with SCRAPES.serving():
            window.append(time.monotonic())
            until.wait(seconds)
        window.append(time.monotonic())

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    return thread


def test_nothing_in_flight_means_no_wait():
    scrapes = ScrapesFirst()
    started = time.monotonic()
    assert scrapes.wait_for_scrapes(1.0) == 0.0
    assert time.monotonic() - started < 0.5  # no sleep, not even a short one


def test_the_wait_ends_when_the_scrape_is_written():
    scrapes = ScrapesFirst()
    entered, waited = threading.Event(), []

    def waiter():
        entered.wait(5)
        waited.append(scrapes.wait_for_scrapes(5.0))

    thread = threading.Thread(target=waiter)
    thread.start()
    with scrapes.serving():
        entered.set()
        time.sleep(0.2)
    thread.join(5)
    assert 0 < waited[0] < 2.0  # woken by the end of the scrape, not by the 5 s limit


def test_a_poll_sends_almost_nothing_upstream_while_a_scrape_is_in_flight(simulator, make_client):
    server = simulator(3000)  # 30 pages
    twentieth, window = threading.Event(), []
    hold = held(0.01)

    def fault(server, request, n):
        if n >= 20:
            twentieth.set()
        return hold(server, request, n)

    board = Switchboard(server).arm(fault)
    client = make_client(server.base_url)
    scrape = hold_a_scrape(twentieth, threading.Event(), 0.3, window)

    result = fetch_projects(client, time.monotonic() + 30)
    scrape.join(5)

    assert len(result.projects) == 3000
    start, end = window
    during = [a.monotonic for a in board.arrivals if start + 0.02 < a.monotonic < end]
    # Without stepping aside the poll would send about 25 requests in those 0.3 s; it waits
    # up to LONGEST_PAUSE at each of two points per page, so at most one page per 2 x 50 ms.
    assert len(during) <= 0.3 / (2 * LONGEST_PAUSE) + 1, during
    assert result.paused_for_scrapes >= 0.2


def test_a_storm_of_scrapes_slows_a_poll_within_its_budget_and_never_stops_it(simulator, make_client):
    server = simulator(2000)  # 20 pages
    Switchboard(server).arm(held(0.005))
    client = make_client(server.base_url)
    begin, end, window = threading.Event(), threading.Event(), []
    storm = hold_a_scrape(begin, end, 30.0, window)  # one scrape that lasts the whole poll
    begin.set()
    wait_for(lambda: window, 5, what="the storm to start")

    started = time.monotonic()
    try:
        result = fetch_projects(client, started + 30)
        elapsed = time.monotonic() - started
    finally:
        end.set()
        storm.join(5)

    assert len(result.projects) == 2000
    ran = elapsed - result.paused_for_scrapes
    assert result.paused_for_scrapes > 0
    assert result.paused_for_scrapes <= PAUSE_RATIO * ran + LONGEST_PAUSE
    assert elapsed < 30


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness and /proc are Linux's")
def test_only_the_poll_thread_runs_at_lower_priority(simulator, start_exporter):
    server = simulator(300, page_delay=0.3)  # three pages: the poll lasts about a second
    process = start_exporter("--api.base-url", server.base_url, "--poll.interval", "1h", *NO_COLLECTORS)
    polling = wait_for(
        lambda: [t for t, n in thread_niceness(process.proc.pid).items() if n == POLL_NICENESS] or None,
        what="a thread at the poll's niceness",
    )
    assert len(polling) == 1
    assert process.get("/metrics").status_code == 200  # served by a thread of normal priority
    assert thread_niceness(process.proc.pid)[process.proc.pid] == 0
    process.wait_event("poll_succeeded")
    wait_for(
        lambda: POLL_NICENESS not in thread_niceness(process.proc.pid).values() or None, what="the poll thread to end"
    )
    assert "paused_for_scrapes" in process.events("poll_succeeded")[0]


def test_the_collectors_refresh_at_the_polls_priority_too(simulator, start_exporter):
    server = simulator(20)
    process = start_exporter("--api.base-url", server.base_url, "--poll.interval", "1h", wait="ready")
    process.wait_event("details_first_refresh")
    niceness = thread_niceness(process.proc.pid)
    assert niceness[process.proc.pid] == 0  # the main thread, and the server's, keep the normal priority
    assert list(niceness.values()).count(POLL_NICENESS) >= 2  # the collectors' workers
    assert process.get("/metrics").status_code == 200
