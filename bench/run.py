"""Benchmark the exporter against a plain prometheus_client exporter and a static floor.

    python bench/run.py            # N = 1,000, 10,000, 100,000, then concurrent paging at 100 ms RTT
    python bench/run.py --quick    # N = 1,000 and 10,000 only, no RTT part (about a minute)
    python bench/run.py --spend    # then bench/spend.py with its defaults (about 5 minutes more)
    python bench/run.py --governance all   # then bench/governance.py's parts, with its defaults

For each N it starts a loopback upstream, then: the exporter, idle, scraped in turns with a
static server of its own bytes (the scrape floor); the exporter's warm polls, each followed
by a run of the httpx read-only client (the poll-CPU floor), then scrapes during polls; the
exporter scraped at random moments of its poll cycle, during polls and between them; a
plain prometheus_client exporter. It prints markdown tables and the targets' verdicts, and
writes everything to bench/results/bench-<date>.json. Every child process is stopped on
exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import governance
import measure
import report
from procs import REPO, BenchError, measure_and_report


def machine() -> dict:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def bench_size(n: int, args: argparse.Namespace, log) -> dict:
    result = {}
    with measure.upstream(args.upstream, n) as (up, base_url), measure.workdir() as tmp:
        log(
            f"N={n:,}: exporter, cold poll, then {args.scrapes} idle scrapes per encoding of it and, "
            f"in turns, of the static floor"
        )
        result["exporter"], result["static"] = measure.exporter_idle(base_url, n, args.scrapes, Path(tmp))
        log(
            f"N={n:,}: exporter, {args.warm_polls} warm polls, each followed by the httpx read-only client, "
            f"then scrapes during polls (and of the floor)"
        )
        result["busy"], result["read_only"] = measure.exporter_busy(
            up,
            base_url,
            n,
            result["exporter"]["cold_poll"]["fetch_wall_s"],
            args.warm_polls,
            args.busy_scrapes,
            args.busy_seconds,
            Path(tmp),
        )
        log(f"N={n:,}: exporter, scrapes at random moments, during polls and between them")
        result["paced"] = measure.exporter_paced(
            base_url, n, result["busy"]["warm_poll"]["fetch_wall_s"], args.busy_scrapes, args.busy_seconds
        )
        log(
            f"N={n:,}: plain prometheus_client exporter, {args.plain_polls} polls, "
            f"{args.plain_scrapes} scrapes per encoding"
        )
        result["plain"] = measure.plain_exporter(base_url, n, args.plain_scrapes, args.plain_polls)
    return result


def bench_concurrency(args: argparse.Namespace, log) -> dict:
    n, pages = args.rtt_projects, -(-args.rtt_projects // 100)
    result = {"projects": n, "rtt_s": args.rtt}
    with measure.upstream(args.upstream, n, page_delay=args.rtt) as (_, base_url):
        for label, chains in (("sequential", 1), ("concurrent", args.chains)):
            log(f"concurrency: N={n:,}, {args.rtt * 1000:.0f} ms per page, --poll.concurrency {chains}, two polls")
            result[label] = measure.two_polls(base_url, chains, pages, args.rtt)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 1,000 and 10,000 only, and no RTT part")
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated project counts")
    parser.add_argument("--scrapes", type=int, default=100, help="timed scrapes per figure (exporter, floor)")
    parser.add_argument(
        "--plain-scrapes",
        type=int,
        default=30,
        help="timed scrapes per figure for the plain exporter (seconds each at N=100,000)",
    )
    parser.add_argument(
        "--busy-scrapes", type=int, default=30, help="scrapes per encoding that must fall inside a running poll"
    )
    parser.add_argument(
        "--busy-seconds",
        type=float,
        default=30,
        help="time limit for those scrapes, per server (at small N polls last milliseconds)",
    )
    parser.add_argument(
        "--warm-polls",
        type=int,
        default=5,
        help="polls after the first, timed without scrapes; steady RSS is the median after them",
    )
    parser.add_argument("--plain-polls", type=int, default=3, help="polls of the plain exporter before it serves")
    parser.add_argument(
        "--rtt", type=float, default=0.1, help="seconds per page for the concurrent-paging part; 0 skips it"
    )
    parser.add_argument("--rtt-projects", type=int, default=100_000)
    parser.add_argument("--chains", type=int, default=8, help="--poll.concurrency of the concurrent run")
    parser.add_argument(
        "--upstream",
        choices=sorted(measure.UPSTREAMS),
        default="bench",
        help="bench: pre-serialised pages (bench/upstream.py); simulator: python -m exporter.simulator",
    )
    parser.add_argument(
        "--exporter-src",
        type=Path,
        default=REPO,
        help="directory holding the exporter package to run (e.g. an exported older commit)",
    )
    parser.add_argument(
        "--spend",
        action="store_true",
        help="then the costs and usage measurements of bench/spend.py, with its defaults",
    )
    parser.add_argument(
        "--governance",
        choices=("off", "all", "budget", "scrape"),
        default="off",
        help="then these parts of bench/governance.py, with its defaults",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON results file (default bench/results/...)")
    args = parser.parse_args(argv)
    args.sizes = [1000, 10000] if args.quick else [int(x) for x in args.sizes.split(",") if x.strip()]
    if args.quick:
        args.rtt = 0.0
    return args


def _interrupt(*_) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the Ctrl-C path: stop every child, keep partial results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measure.EXPORTER_SRC = args.exporter_src.resolve()
    for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT too: a background job may inherit it ignored
        signal.signal(signum, _interrupt)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    results = {
        "machine": machine(),
        "upstream": args.upstream,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": {},
    }

    def measure_all() -> None:
        for n in args.sizes:
            results["sizes"][str(n)] = bench_size(n, args, log)
        if args.rtt > 0:
            results["concurrency"] = bench_concurrency(args, log)
        if args.spend:
            import spend

            results["spend"] = spend.run(spend.parse_args([]), log)
        if args.governance != "off":
            results["governance"] = governance.run(governance.defaults(part=args.governance), log)
        try:
            results["targets"] = report.targets(results)
        except (KeyError, ZeroDivisionError) as exc:
            raise BenchError(f"incomplete results: {exc!r}") from None

    def render(results: dict) -> str:
        parts = [report.render(results)]
        if "spend" in results:
            import spend

            parts += ["\n## Costs and usage (bench/spend.py)\n", spend.render(results["spend"])]
        if "governance" in results:
            parts += ["\n## Governance collectors (bench/governance.py)\n", governance.render(results["governance"])]
        return "\n".join(parts)

    return measure_and_report("bench", results, measure_all, render, args.out, began, log)


if __name__ == "__main__":
    sys.exit(main())
