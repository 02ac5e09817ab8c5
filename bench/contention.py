"""What one busy thread elsewhere on the machine does to a scrape, by its CPU priority.

    python bench/contention.py [--projects 100000] [--rounds 5] [--scrapes 20]

Why the exporter's polls stop for a scrape in flight rather than only run at a lower
CPU priority (exporter/priority.py). It takes the exporter's own /metrics bodies (one poll
of a loopback upstream), serves them from the static floor (bench/static_server.py), and
scrapes them while a pure-Python busy loop runs beside it: none, at nice 0, at nice 10, at nice 19,
and under SCHED_IDLE. The modes take turns, round after round, so that they all see the
same machine; it prints the median scrape of each mode and its ratio to the quiet one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import measure
from procs import BenchError, python, stop_all
from scrape import Scraper

MODES = ("quiet", "nice 0", "nice 10", "nice 19", "SCHED_IDLE")


def busy_loop(mode: str):
    """A child spinning on one core at the given priority, or None for the quiet mode."""
    if mode == "quiet":
        return None
    proc = python(f"busy-loop[{mode}]", "-c", "while True: pass")
    if mode == "SCHED_IDLE":
        os.sched_setscheduler(proc.pid, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.setpriority(os.PRIO_PROCESS, proc.pid, int(mode.split()[1]))
    time.sleep(0.2)  # let it start spinning
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="turns of every mode")
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes per encoding, mode and round")
    args = parser.parse_args(argv)
    taken = {(mode, gzip): [] for mode in MODES for gzip in (False, True)}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-") as tmp,
            measure.upstream("bench", args.projects) as (_, base_url),
        ):
            exporter, port = measure.start_exporter(base_url, "1h")
            exporter.wait_event("poll_succeeded", timeout=120 + args.projects / 200, fail_on="poll_failed")
            with Scraper(port) as scraper:
                Path(tmp, "identity").write_bytes(scraper.get()[1])
                Path(tmp, "gzip").write_bytes(scraper.get(gzip=True)[1])
            exporter.stop()
            with measure.start_floor(Path(tmp)) as (_, floor_port), Scraper(floor_port) as scraper:
                for round_ in range(args.rounds):
                    for mode in MODES if round_ % 2 == 0 else reversed(MODES):
                        competitor = busy_loop(mode)
                        try:
                            for gzip in (False, True):
                                scraper.get(gzip=gzip)
                                taken[mode, gzip] += [scraper.get(gzip=gzip)[0].seconds for _ in range(args.scrapes)]
                        finally:
                            if competitor:
                                competitor.stop()
    except (BenchError, KeyboardInterrupt) as exc:
        print(f"contention: {exc or 'interrupted'}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    print(
        f"{os.cpu_count()} cores; N={args.projects:,}; static floor; median ms over "
        f"{args.rounds * args.scrapes} scrapes per cell (ratio to quiet)\n"
    )
    print("| busy loop beside it | identity | gzip |\n|---|---|---|")
    quiet = {gzip: statistics.median(taken["quiet", gzip]) for gzip in (False, True)}
    for mode in MODES:
        cells = []
        for gzip in (False, True):
            median = statistics.median(taken[mode, gzip])
            cells.append(f"{median * 1000:.1f} ({median / quiet[gzip]:.2f}x)")
        print(f"| {mode} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
