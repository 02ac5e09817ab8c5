"""Scrapes first: a poll pauses between pages while a scrape is being served.

A poll is batch work that nobody waits on; a scrape has a deadline. Both are threads of one
interpreter: while a poll is busy on a fast upstream, a scrape waits for the GIL at each of
its steps, and the kernel's copy of its body between two processes slows as soon as
anything else runs on a small machine. Priority alone does not cure that last part:
`python bench/contention.py` shows a busy loop beside a static server slowing its gzip
scrapes at every priority, nice 0, 10 or 19 or SCHED_IDLE. What works is for the poll to
stop: at each page boundary it checks whether a scrape is in flight and, if so, waits
until the scrape has been written (milliseconds). The waits are bounded per page and
per poll: a poll's pauses add up to at most PAUSE_RATIO times the time it spent running,
so it is never stopped. That bounds the pauses only. Under a storm of back-to-back scrapes
the running itself is slower too, since the scrapes take the cores and the GIL between the
pauses, so the whole poll stretches by more than PAUSE_RATIO + 1 against a quiet one. The
poll's threads also run at a lower niceness, so that on a machine busy with other work the
CPU goes to scrapes first.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

LONGEST_PAUSE = 0.05  # seconds at one page boundary; long enough for even a large scrape to be written
PAUSE_RATIO = 3.0  # a poll pauses at most three times as long as it has run
POLL_NICENESS = 10


def lower_thread_priority() -> None:
    """Let scrapes win the CPU over the poll when both want it (Linux: niceness per thread).

    Not SCHED_IDLE: on a saturated machine a poll thread under it starves, and while it
    holds the GIL it starves the scrapes too.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), POLL_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: the poll just runs as is
        pass


class ScrapesFirst:
    """Counts the scrapes in flight; poll threads wait on it between pages."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._serving = 0

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around one scrape, from choosing its body to writing its last byte."""
        with self._cond:
            self._serving += 1
        try:
            yield
        finally:
            with self._cond:
                self._serving -= 1
                if not self._serving:
                    self._cond.notify_all()

    def wait_for_scrapes(self, longest: float) -> float:
        """Wait while a scrape is in flight, at most `longest` seconds; return the seconds waited."""
        if not self._serving or longest <= 0:  # the common case, without taking the lock
            return 0.0
        started = time.monotonic()
        with self._cond:
            self._cond.wait_for(lambda: not self._serving, longest)
        return time.monotonic() - started


SCRAPES = ScrapesFirst()  # one per process: every organization's poll yields to every scrape


class PauseBudget:
    """One poll's allowance for pausing: at most PAUSE_RATIO times its running time.

    Chains of one poll share it, and their pauses add up, so a chained poll pauses less.
    """

    def __init__(self, scrapes: ScrapesFirst = SCRAPES) -> None:
        self._scrapes = scrapes
        self._started = time.monotonic()
        self._paused = 0.0
        self._lock = threading.Lock()

    @property
    def paused(self) -> float:
        """Seconds this poll has waited for scrapes so far."""
        return self._paused

    def pause_for_scrapes(self) -> None:
        with self._lock:
            running = time.monotonic() - self._started - self._paused
            allowed = min(LONGEST_PAUSE, PAUSE_RATIO * running - self._paused)
        waited = self._scrapes.wait_for_scrapes(allowed)
        if waited:
            with self._lock:
                self._paused += waited
