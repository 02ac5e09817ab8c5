"""Scrapes first: a poll steps aside for a scrape in flight, within its budget, at a lower CPU priority."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from exporter.chains import fetch_projects
from exporter.priority import LONGEST_PAUSE, PAUSE_RATIO, POLL_NICENESS, SCRAPES, ScrapesFirst
from helpers import KEY, ExporterProcess, clean_environment, wait_for


class Requests:
    """A fault hook that holds each request `hold` seconds and notes when each one arrived."""

    def __init__(self, hold: float):
        self.hold = hold
        self.at: list[float] = []

    def __call__(self, request):
        self.at.append(time.monotonic())
        time.sleep(self.hold)
        return None


def hold_a_scrape(after: threading.Event, until: threading.Event, seconds: float,
                  window: list[float]) -> threading.Thread:
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
    assert time.monotonic() - started < 0.01


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
    assert 0.15 <= waited[0] < 1.0  # woken by the end of the scrape, not by the 5 s limit


def test_a_poll_sends_almost_nothing_upstream_while_a_scrape_is_in_flight(make_server, make_client):
    server = make_server(5000)  # 50 pages
    requests, twentieth, window = Requests(0.01), threading.Event(), []

    def fault(request):
        if len(requests.at) >= 20:
            twentieth.set()
        return requests(request)

    server.fault = fault
    client = make_client(server.base_url)
    scrape = hold_a_scrape(twentieth, threading.Event(), 0.3, window)

    result = fetch_projects(client, time.monotonic() + 30)
    scrape.join(5)

    assert len(result.projects) == 5000
    start, end = window
    during = [t for t in requests.at if start + 0.02 < t < end]
    # Without stepping aside the poll would send about 25 requests in those 0.3 s; it waits
    # up to LONGEST_PAUSE at each of two points per page, so at most one page per 2 x 50 ms.
    assert len(during) <= 0.3 / (2 * LONGEST_PAUSE) + 1, during
    assert result.paused_for_scrapes >= 0.2


def test_a_storm_of_scrapes_slows_a_poll_within_its_budget_and_never_stops_it(make_server, make_client):
    server = make_server(2000)  # 20 pages
    server.fault = Requests(0.005)
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


def _thread_niceness(pid: int) -> dict[int, int]:
    """Niceness of each thread of `pid` (field 19 of /proc/PID/task/TID/stat)."""
    niceness = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        niceness[int(task.name)] = int(fields[16])
    return niceness


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness and /proc are Linux's")
def test_only_the_poll_thread_runs_at_lower_priority(make_server, tmp_path):
    server = make_server(300, page_delay=0.3)  # three pages: the poll lasts about a second
    env = clean_environment(OPENAI_ADMIN_KEY=KEY)
    process = ExporterProcess(["--api.base-url", server.base_url, "--poll.interval", "1h"], env, tmp_path)
    try:
        process.wait_listening()
        polling = wait_for(lambda: [t for t, n in _thread_niceness(process.proc.pid).items()
                                    if n == POLL_NICENESS] or None, 5, what="a thread at the poll's niceness")
        assert len(polling) == 1
        assert process.get("/metrics").status_code == 200  # served by a thread of normal priority
        assert _thread_niceness(process.proc.pid)[process.proc.pid] == 0
        process.wait_events("poll_succeeded", timeout=10)
        wait_for(lambda: POLL_NICENESS not in _thread_niceness(process.proc.pid).values() or None, 5,
                 what="the poll thread to end")
        assert "paused_for_scrapes" in process.events("poll_succeeded")[0]
    finally:
        process.kill()


def test_an_http_0_9_request_gets_the_body_alone(make_server, tmp_path):
    server = make_server(50)
    env = clean_environment(OPENAI_ADMIN_KEY=KEY)
    process = ExporterProcess(["--api.base-url", server.base_url, "--poll.interval", "1h"], env, tmp_path)
    try:
        process.wait_ready()
        with socket.create_connection(("127.0.0.1", process.port), timeout=5) as connection:
            connection.sendall(b"GET /healthz\r\n\r\n")  # no version: HTTP/0.9
            received = b"".join(iter(lambda: connection.recv(65536), b""))
        assert received == b"ok\n"
    finally:
        process.kill()
