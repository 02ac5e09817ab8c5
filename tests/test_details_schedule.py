"""The details schedule on a fake clock: backfill first, then rounds spread evenly over the interval."""

from __future__ import annotations

from exporter.details.schedule import Schedule, Unit


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def units(*projects: str, collectors=("users", "api-keys")) -> list[Unit]:
    return [Unit(c, p) for p in projects for c in collectors]


def drain(schedule: Schedule) -> list[Unit]:
    taken = []
    while (unit := schedule.take()) is not None:
        taken.append(unit)
    return taken


def test_units_never_fetched_are_taken_at_once_then_rounds_are_spread_evenly():
    clock = Clock()
    schedule = Schedule(100.0, clock)
    work = units("a", "b", "c", "d", "e")
    schedule.replace(work, fetched=lambda unit: False)
    assert drain(schedule) == work  # backfill: as fast as the budget allows
    # The first round begins half an interval after the backfill, not at once.
    assert schedule.next_wake() == 1050.0
    clock.now = 1050.0
    due_at = []
    for _ in work:
        clock.now = schedule.next_wake()
        unit = schedule.take()
        assert unit is not None and schedule.take() is None  # one at a time, never a burst
        due_at.append(clock.now)
    gaps = {round(b - a, 6) for a, b in zip(due_at, due_at[1:], strict=False)}
    assert gaps == {10.0}  # ten units over 100 s
    # The next round begins an interval after this one began.
    assert schedule.next_wake() == 1150.0


def test_a_round_held_up_by_the_budget_is_followed_at_once_and_never_twice():
    clock = Clock()
    schedule = Schedule(10.0, clock)
    work = units("a", "b")
    schedule.replace(work, fetched=lambda unit: True)
    assert schedule.take() is None  # everything is fresh: the first round is half an interval away
    clock.now = schedule.next_wake()
    assert clock.now == 1005.0
    assert schedule.take() == work[0]
    clock.now += 30  # the budget was slow: every unit of the round is overdue
    # The rest of the round, then the next one begins at once (it was due at 1015), and it is
    # spread over an interval from now: no round is run twice to catch up.
    assert drain(schedule) == work[1:] + work[:1]
    assert schedule.rounds == 2
    assert schedule.next_wake() == clock.now + 10.0 / len(work)


def test_archived_projects_are_skipped_and_new_ones_backfilled():
    clock = Clock()
    schedule = Schedule(40.0, clock)
    schedule.replace(units("a", "b"), fetched=lambda unit: True)
    assert schedule.take() is None
    clock.now += 20
    first = schedule.take()
    assert first == Unit("users", "a")
    schedule.replace(units("b", "c"), fetched=lambda unit: unit.project_id != "c")
    # The new project comes first, then the round goes on without "a".
    assert drain(schedule) == units("c")
    clock.now += 100
    taken = drain(schedule)
    assert all(unit.project_id != "a" for unit in taken) and units("b")[0] in taken


def test_an_asked_unit_goes_before_everything_due():
    clock = Clock()
    schedule = Schedule(60.0, clock)
    schedule.replace(units("a", "b"), fetched=lambda unit: False)
    schedule.ask(Unit("api-keys", "b"))
    schedule.ask(Unit("api-keys", "zzz"))  # not a current unit: ignored
    assert schedule.take() == Unit("api-keys", "b")
    assert schedule.take() == Unit("users", "a")
