"""The shared request budget: spacing, priorities, and slowing down on 429."""

from __future__ import annotations

import threading
import time

import pytest

from exporter.budget import DETAILS, LIST, MIN_RATE_SHARE, BudgetCancelled, RequestBudget
from tests.support.upstream import most_in_one_second


def take(budget: RequestBudget, priority: int, times: int, granted: list[tuple[float, int]], stop=None) -> None:
    stop = stop or threading.Event()
    for _ in range(times):
        budget.acquire(priority, stop)
        granted.append((time.monotonic(), priority))


def test_no_second_holds_more_than_the_rate_and_one_whoever_asks():
    budget = RequestBudget(40)
    granted: list[tuple[float, int]] = []
    threads = [threading.Thread(target=take, args=(budget, DETAILS, 25, granted)) for _ in range(4)]
    threads.append(threading.Thread(target=take, args=(budget, LIST, 20, granted)))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    elapsed = time.monotonic() - started
    assert len(granted) == 120
    assert most_in_one_second([t for t, _ in granted]) <= 41
    # 120 slots at 40 per second: the first is free, the rest take at least 119/40 s, and the
    # budget does not fall far behind its rate either.
    assert 119 / 40 * 0.95 <= elapsed <= 119 / 40 * 1.25


def test_a_lull_saves_no_burst():
    budget = RequestBudget(20)
    stop = threading.Event()
    budget.acquire(DETAILS, stop)
    time.sleep(0.5)  # ten slots' worth of silence
    started = time.monotonic()
    for _ in range(5):
        budget.acquire(DETAILS, stop)
    # The first after the lull is at once; the next four are spaced as ever.
    assert time.monotonic() - started >= 4 / 20 * 0.9


def test_the_list_goes_before_details_waiting_longer():
    budget = RequestBudget(10)
    stop = threading.Event()
    budget.acquire(DETAILS, stop)  # the next slot is 0.1 s away
    order: list[int] = []
    details = threading.Thread(target=lambda: [budget.acquire(DETAILS, stop), order.append(DETAILS)])
    details.start()
    time.sleep(0.03)  # details waits first...
    budget.acquire(LIST, stop)  # ...but the list is served first
    order.append(LIST)
    details.join(5)
    assert order == [LIST, DETAILS]


def test_a_429_halves_the_rate_and_waits_for_retry_after_then_success_wins_it_back():
    rates: list[float] = []
    budget = RequestBudget(16, on_rate_change=rates.append)
    stop = threading.Event()
    budget.acquire(LIST, stop)
    budget.rate_limited(0.4)
    assert budget.rate == 8
    started = time.monotonic()
    budget.acquire(LIST, stop)
    assert time.monotonic() - started >= 0.35  # Retry-After held every waiter
    for _ in range(10):
        budget.rate_limited(None)
    assert budget.rate == 16 * MIN_RATE_SHARE  # never below a floor: the exporter keeps going
    for _ in range(100):
        budget.succeeded()
    assert budget.rate == 16
    assert rates[0] == 8 and rates[-1] == 16


def test_a_deadline_ends_the_wait_and_a_stop_cancels_it():
    budget = RequestBudget(1)
    stop = threading.Event()
    budget.acquire(DETAILS, stop)
    assert budget.acquire(DETAILS, stop, deadline=time.monotonic() + 0.1) is False
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    with pytest.raises(BudgetCancelled):
        budget.acquire(DETAILS, stop)
    assert time.monotonic() - started < 0.9
