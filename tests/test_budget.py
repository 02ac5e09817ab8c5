"""The shared request budget: spacing, priorities, and slowing down on 429."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import types

import pytest

from exporter import budget as budget_module
from exporter.budget import (
    AUDIT,
    DETAILS,
    HOLD_LATE,
    LIST,
    MIN_RATE_SHARE,
    PAGE_MARGIN,
    START_MARGIN,
    BudgetCancelled,
    RequestBudget,
)
from tests.support.upstream import most_in_one_second

TICK = 1 / 1024  # the fake clock's step: a binary fraction, so its sums are exact
NEVER = threading.Event()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def first_slot(budget: RequestBudget, clock: Clock, priority: int, until: float = 1e9) -> float | None:
    """Move the clock tick by tick to when `priority` gets a slot: its time, or None by `until`.

    Each attempt has the present as its deadline, so it never waits: a worker that asks
    again at every tick.
    """
    while clock.now <= until:
        if budget.acquire(priority, NEVER, deadline=clock.now):
            return clock.now
        clock.now += TICK
    return None


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


@pytest.mark.parametrize("rate", [20, 7.5])
def test_no_half_open_second_holds_more_than_the_whole_rate_under_many_threads_and_priorities(rate):
    # Threads of every priority ask at every tick, each skipping ticks at random as a worker
    # woken late does: the spacing catches up on late slots, and the second's share must
    # still hold. The clock stands still while they ask.
    clock = Clock()
    budget = RequestBudget(rate, clock=clock)
    priorities = [LIST, AUDIT, DETAILS, DETAILS, DETAILS, DETAILS]
    ticks = 6 * 1024
    barrier = threading.Barrier(len(priorities) + 1)
    granted: list[float] = []

    def worker(priority: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(ticks):
            barrier.wait()
            if rng.random() < 0.6 and budget.acquire(priority, NEVER, deadline=clock.now):
                granted.append(clock.now)
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(p, n)) for n, p in enumerate(priorities)]
    for thread in threads:
        thread.start()
    for _ in range(ticks):
        barrier.wait()
        barrier.wait()
        clock.now += TICK
    for thread in threads:
        thread.join(10)
    assert most_in_one_second(granted) <= int(rate)
    # ...and the budget keeps up with its rate all the same (a rate's fraction is not given:
    # 7.5 per second is 7 in every second).
    assert len(granted) >= ticks * TICK * int(rate) * 0.97


def test_a_late_slot_does_not_let_the_next_second_hold_one_more():
    clock = Clock()
    budget = RequestBudget(20, clock=clock)
    times = [first_slot(budget, clock, DETAILS)]
    clock.now += 2 * TICK  # the next waiter wakes two milliseconds late: the spacing catches up...
    times += [first_slot(budget, clock, DETAILS) for _ in range(20)]
    assert times[2] - times[1] < 1 / 20
    # ...but the 21st slot is not given before the first is a whole second old.
    assert times[20] - times[0] >= 1.0
    assert most_in_one_second(times) == 20


def test_a_lull_saves_no_burst():
    clock = Clock()
    budget = RequestBudget(20, clock=clock)
    first_slot(budget, clock, DETAILS)
    clock.now += 0.5  # ten slots' worth of silence
    times = [first_slot(budget, clock, DETAILS) for _ in range(5)]
    # The first after the lull is at once; the next four are spaced as ever.
    assert times[0] == 1000.5
    assert all(b - a >= 0.96 / 20 for a, b in zip(times, times[1:], strict=False))


def slow_page(budget: RequestBudget, clock: Clock, rtt: float) -> float:
    """One list page at a slow upstream: its slot, then the clock moves to its return; the slot's time."""
    granted = first_slot(budget, clock, LIST)
    clock.now = granted + rtt
    return granted


def test_at_a_slow_upstream_the_details_take_only_the_slots_that_fit_inside_a_page():
    clock = Clock()
    budget = RequestBudget(20, clock=clock)
    rtt = 215 * TICK  # 210 ms: four slots and a little
    with budget.listing(10):
        slow_page(budget, clock, rtt)  # the first page teaches the budget the round trip
        for _ in range(5):
            page = first_slot(budget, clock, LIST)
            assert page == clock.now  # the page, back, finds its slot free: it never waits
            details = []
            while (granted := first_slot(budget, clock, DETAILS, until=page + rtt - TICK)) is not None:
                details.append(granted)
                clock.now += TICK
            # Three slots fit before the page is back (the fourth would hold the slot it needs).
            assert len(details) == 3 and details[-1] + 1 / 20 <= page + rtt
            clock.now = page + rtt


def test_at_a_fast_upstream_a_page_read_slowly_still_finds_its_slot_free():
    clock = Clock()
    budget = RequestBudget(20, clock=clock)
    with budget.listing(10):
        for _ in range(3):
            first_slot(budget, clock, LIST)
            clock.now += 5 * TICK  # back and read in five milliseconds
        page = first_slot(budget, clock, LIST)
        # This one takes 60 ms to read: the details asking at its next slot are held back...
        clock.now = page + 1 / 20
        assert budget.acquire(DETAILS, NEVER, deadline=clock.now) is False
        clock.now = page + 60 * TICK
        assert budget.acquire(LIST, NEVER, deadline=clock.now) is True  # ...and it goes at once
        # A page that does not come back at all holds them back no longer than HOLD_LATE.
        assert first_slot(budget, clock, DETAILS) <= clock.now + HOLD_LATE + 5 * TICK


def test_the_slot_before_the_next_list_poll_is_left_free():
    clock = Clock()
    budget = RequestBudget(20, clock=clock)
    started = clock.now
    with budget.listing(10):
        first_slot(budget, clock, LIST)
    details = []
    while (granted := first_slot(budget, clock, DETAILS, until=started + 10)) is not None:
        details.append(granted)
        clock.now += TICK
    # The details went on until the slot before the poll: its first page finds its slot free.
    assert started + 10 - START_MARGIN - 2 / 20 <= details[-1] <= started + 10 - START_MARGIN - 1 / 20
    assert budget.acquire(LIST, NEVER, deadline=clock.now) is True
    assert clock.now == started + 10 + TICK


def test_a_list_poll_that_does_not_come_holds_the_details_back_no_longer_than_hold_late():
    clock = Clock()
    budget = RequestBudget(20, clock=clock)
    started = clock.now
    with budget.listing(10):
        first_slot(budget, clock, LIST)
    clock.now = started + 10 - START_MARGIN - 1 / 20  # the details' last slot before the poll
    first_slot(budget, clock, DETAILS)
    assert first_slot(budget, clock, DETAILS) == pytest.approx(started + 10 - START_MARGIN + HOLD_LATE, abs=TICK)


def test_a_list_poll_longer_than_its_interval_expects_the_next_at_the_interval_after_it():
    clock = Clock()
    budget = RequestBudget(20, clock=clock)
    started = clock.now
    with budget.listing(10):
        first_slot(budget, clock, LIST)
        clock.now += 12  # the scheduler skips the run at 10 s: it would overlap this one
    # The details are not held back now, but before 20 s.
    assert budget.acquire(DETAILS, NEVER, deadline=clock.now) is True
    clock.now = started + 20 - START_MARGIN - 1 / 20 + 4 * TICK  # the slot after it would be too late
    assert budget.acquire(DETAILS, NEVER, deadline=clock.now) is False


def test_a_slot_wakes_the_next_waiter_only():
    # Eight workers waiting for slots: each slot wakes the one whose turn it is, not all of them
    # (a thundering herd costs CPU, and delays the list's request just after its slot).
    calls = [0]

    def counting_clock() -> float:
        calls[0] += 1
        return time.monotonic()

    budget = RequestBudget(100, clock=counting_clock)
    threads = [threading.Thread(target=lambda: [budget.acquire(DETAILS, NEVER) for _ in range(10)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert budget.granted == 80
    # One look on arrival, one on becoming first, one at the slot, and some to spare for timers
    # and the waits bounded at half a second: about four. Waking them all took about eight.
    assert calls[0] < 6 * 80


def test_a_detail_waiting_out_its_backoff_does_not_hold_back_those_ready_before_it():
    arrived = threading.Event()

    class SignallingClock(Clock):
        def __call__(self) -> float:
            arrived.set()
            return self.now

    clock = SignallingClock()
    budget = RequestBudget(20, clock=clock)
    stop = threading.Event()
    retry = threading.Thread(target=lambda: pytest.raises(BudgetCancelled, budget.acquire, DETAILS, stop, None, 1005.0))
    retry.start()
    arrived.wait(5)  # it looked at the clock holding the lock: it is in line once we get the lock
    assert budget.acquire(DETAILS, NEVER, deadline=clock.now) is True
    stop.set()
    retry.join(5)


class LookingClock(Clock):
    """A fake clock that tells when a thread has looked at it."""

    def __init__(self) -> None:
        super().__init__()
        self.looked = threading.Event()

    def __call__(self) -> float:
        self.looked.set()
        return self.now

    def looked_at(self) -> None:
        """Wait until a thread waiting in the budget has looked at the clock since the last call."""
        self.looked.clear()
        assert self.looked.wait(5)


@pytest.fixture
def stopped():
    """An event set when the test ends: a thread still waiting in the budget then gives up."""
    stop = threading.Event()
    yield stop
    stop.set()


def notifications(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> list[float]:
    """The clock's time at each notification of a waiter of the budgets made from now on."""
    notified: list[float] = []

    class Turn(threading.Condition):
        def notify(self, n: int = 1) -> None:
            notified.append(clock.now)
            super().notify(n)

    monkeypatch.setattr(budget_module, "threading", types.SimpleNamespace(**{**vars(threading), "Condition": Turn}))
    return notified


def held_back_detail(
    budget: RequestBudget, clock: LookingClock, rtt: float, stop: threading.Event
) -> tuple[float, threading.Thread, list]:
    """Inside a list poll: a page out at a slow upstream, the details' slots that fit, and one
    more detail waiting in a thread, held back for the page. The page's slot time, the thread,
    and where the thread puts the clock's time at its slot; `stop` ends its wait."""
    slow_page(budget, clock, rtt)  # the first page teaches the budget the round trip
    page = first_slot(budget, clock, LIST)
    while first_slot(budget, clock, DETAILS, until=page + rtt - 8 * TICK) is not None:
        clock.now += TICK
    clock.now = page + rtt - 4 * TICK
    got: list[float] = []

    def wait() -> None:
        with contextlib.suppress(BudgetCancelled):
            if budget.acquire(DETAILS, stop):
                got.append(clock.now)

    detail = threading.Thread(target=wait, daemon=True)
    detail.start()
    clock.looked_at()
    with budget._lock:  # it looked holding the lock: once we have it, it is asleep in line
        assert budget._queue
    return page, detail, got


@contextlib.contextmanager
def detail_held_for_a_page(monkeypatch, stop: threading.Event):
    """20 requests a second, inside a list poll: a page out at a slow upstream and a detail held
    back for it (held_back_detail). Yields the clock, the notifications, the budget, the round
    trip, the page's slot time, the detail's thread and its slot times."""
    clock = LookingClock()
    notified = notifications(monkeypatch, clock)
    budget = RequestBudget(20, clock=clock)
    rtt = 215 * TICK
    with budget.listing(10):
        yield (clock, notified, budget, rtt, *held_back_detail(budget, clock, rtt, stop))


def test_a_detail_held_back_for_a_list_page_is_not_woken_when_the_page_takes_its_slot(monkeypatch, stopped):
    # Woken then, it would take the interpreter while the list thread sends its next page's
    # request: its own timer brings it back for its turn a slot later.
    with detail_held_for_a_page(monkeypatch, stopped) as (clock, notified, budget, rtt, page, detail, got):
        clock.now = page + rtt  # the page is back...
        assert budget.acquire(LIST, NEVER, deadline=clock.now) is True  # ...and takes its slot at once
        assert notified == []
        next_page = clock.now
        clock.now = next_page + 1 / 20  # the detail's turn
        detail.join(5)
        assert got == [next_page + 1 / 20]


def test_a_list_page_later_than_expected_wakes_the_detail_held_back_for_it(monkeypatch, stopped):
    with detail_held_for_a_page(monkeypatch, stopped) as (clock, notified, budget, rtt, page, detail, got):
        # The page is more than a slot late: the detail's timer finds it not back...
        clock.now = page + rtt - PAGE_MARGIN + 1 / 20 + 4 * TICK
        clock.looked_at()
        with budget._lock:
            assert not got
        clock.now += 100 * TICK
        assert budget.acquire(LIST, NEVER, deadline=clock.now) is True
        # ...and sleeps until the hold would end; the page, asking at last, wakes it for its turn.
        assert notified == [clock.now]
        late_page = clock.now
        clock.now = late_page + 1 / 20
        detail.join(5)
        assert got == [late_page + 1 / 20]
