"""One measurement phase per function; each starts its processes and stops them before returning.

All figures of one N come from the same upstream process, so every server sees the same
projects. CPU times come from /proc/PID/stat (all threads; per request, from each thread's
schedstat), memory from /proc/PID/status.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import statistics
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from procs import REPO, BenchError, Proc, cpu_ns_between, python, run_json
from scrape import Scrape, Scraper, summary

ADMIN_KEY = "sk-admin-bench-0000"
# The exporter runs as `python -m exporter` from this directory (run.py --exporter-src).
EXPORTER_SRC = REPO
UPSTREAMS = {"bench": ["bench/upstream.py"], "simulator": ["-m", "exporter.simulator"]}
_REQUESTS = re.compile(rb"^openai_api_requests_total\{[^}]*\} ([0-9.e+]+)$", re.M)
_PROJECT_SERIES = re.compile(
    rb"^openai_project_(?:info|created_timestamp_seconds|archived_timestamp_seconds)\{.*$", re.M
)


def _log_time(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


def _requests(body: bytes) -> int:
    return int(sum(float(v) for v in _REQUESTS.findall(body)))


def project_series(body: bytes) -> dict:
    """Count and digest of the per-project series of a /metrics body, to compare two snapshots."""
    lines = sorted(_PROJECT_SERIES.findall(body))
    return {"series": len(lines), "sha256": hashlib.sha256(b"\n".join(lines)).hexdigest()}


# -- upstream -------------------------------------------------------------------------


@contextmanager
def upstream(kind: str, projects: int, page_delay: float = 0.0):
    proc = python(
        f"upstream[{kind},{projects}]",
        *UPSTREAMS[kind],
        "--listen",
        "127.0.0.1:0",
        "--projects",
        str(projects),
        "--admin-key",
        ADMIN_KEY,
        "--page-delay",
        str(page_delay),
    )
    try:
        _, ready = proc.wait_event(
            "upstream_listening" if kind == "bench" else "simulator_listening", timeout=60 + projects / 1000
        )
        yield proc, ready["base_url"]
    finally:
        proc.stop()


def read_only(up: Proc, base_url: str, runs: int, timeout: float) -> dict:
    """The httpx read-only walk, `runs` times; medians, and the upstream's own CPU per page."""
    results, upstream_cpu = [], []
    for _ in range(runs):
        before = up.cpu_seconds()
        results.append(
            run_json(
                "read-only-client",
                ["bench/read_only_client.py", "--base-url", base_url, "--admin-key", ADMIN_KEY],
                timeout,
            )
        )
        upstream_cpu.append((up.cpu_seconds() - before) / results[-1]["pages"])
    return {
        "runs": runs,
        "pages": results[0]["pages"],
        "page_bytes": results[0]["bytes"],
        "cpu_s": statistics.median(r["cpu_s"] for r in results),
        "wall_s": statistics.median(r["wall_s"] for r in results),
        "upstream_cpu_ms_per_page": statistics.median(upstream_cpu) * 1000,
    }


# -- the exporter ---------------------------------------------------------------------


def start_exporter(base_url: str, interval: str, *extra: str) -> tuple[Proc, int]:
    # info, not warning: the poll_succeeded lines time each poll without scraping /metrics.
    proc = python(
        "exporter",
        "-m",
        "exporter",
        "--api.base-url",
        base_url,
        "--web.listen-address",
        "127.0.0.1:0",
        "--poll.interval",
        interval,
        "--log.level",
        "info",
        "--log.format",
        "json",
        *extra,
        env={"OPENAI_ADMIN_KEY": ADMIN_KEY},
        cwd=EXPORTER_SRC,
    )
    _, started = proc.wait_event("exporter_started", timeout=60)
    return proc, int(started["listen"].rpartition(":")[2])


def scrape_series(proc: Proc, port: int, count: int, gzip: bool, warmup: int = 2) -> dict:
    """`count` timed scrapes after `warmup` untimed ones, with the server's CPU per scrape."""
    with Scraper(port) as scraper:
        for _ in range(warmup):
            scraper.get(gzip=gzip)
        cpu = proc.cpu_seconds()
        scrapes = scraper.series(count, gzip=gzip, warmup=0)
        cpu = proc.cpu_seconds() - cpu
    return {**summary(scrapes), "server_cpu_ms_per_scrape": cpu / count * 1000}


def scrape_alternately(servers: list[tuple[Proc, int]], count: int, gzip: bool, warmup: int = 2) -> list[dict]:
    """`count` timed scrapes of each server, taken in turns (the order flips every round).

    Two servers measured one after the other each see a different machine: a neighbour's
    load, CPU frequency and cache state drift over seconds. Taken in turns, both see the
    same, and their ratio is fair. Each scrape's server CPU is read on its own, in
    nanoseconds, around that one request (the other servers are idle meanwhile), so a
    figure is a median over scrapes, like the latency, and two servers' figures can be
    compared scrape by scrape. Without schedstat, CPU is read over the whole series.
    """
    scrapers = [Scraper(port) for _, port in servers]
    try:
        for scraper in scrapers:
            for _ in range(warmup):
                scraper.get(gzip=gzip)
        series_cpu = [proc.cpu_seconds() for proc, _ in servers]
        taken: list[list] = [[] for _ in servers]
        cpu_each: list[list[float]] = [[] for _ in servers]
        order = list(range(len(servers)))
        for _ in range(count):
            for k in order:
                before = servers[k][0].thread_cpu_ns()
                taken[k].append(scrapers[k].get(gzip=gzip)[0])
                after = servers[k][0].thread_cpu_ns()
                if before and after:
                    cpu_each[k].append(cpu_ns_between(before, after) / 1e6)
            order.reverse()
        series_cpu = [proc.cpu_seconds() - before for (proc, _), before in zip(servers, series_cpu, strict=True)]
    finally:
        for scraper in scrapers:
            scraper.close()
    figures = []
    for scrapes, each, seconds in zip(taken, cpu_each, series_cpu, strict=True):
        if len(each) == count:
            figures.append(
                {
                    **summary(scrapes),
                    "server_cpu_ms_per_scrape": statistics.median(each),
                    "server_cpu_ms_each": [round(ms, 4) for ms in each],
                }
            )
        else:
            figures.append({**summary(scrapes), "server_cpu_ms_per_scrape": seconds / count * 1000})
    return figures


def cpu_over(first: dict, second: dict) -> float:
    """Server CPU per scrape of `first` over `second`: the median of scrape-by-scrape differences."""
    if "server_cpu_ms_each" in first and "server_cpu_ms_each" in second:
        return statistics.median(
            a - b for a, b in zip(first["server_cpu_ms_each"], second["server_cpu_ms_each"], strict=False)
        )
    return first["server_cpu_ms_per_scrape"] - second["server_cpu_ms_per_scrape"]


def exporter_idle(base_url: str, projects: int, scrapes: int, workdir: Path) -> tuple[dict, dict]:
    """Cold first poll; then idle scrapes (no poll running) of the exporter and, in turns, of the floor.

    The floor is a static server of the exporter's own bodies, taken after the first poll.
    Returns the exporter's figures and the floor's.
    """
    proc, port = start_exporter(base_url, "1h")
    try:
        cpu_start = proc.cpu_seconds()
        started_at = _log_time(proc.events("exporter_started")[0][1])
        _, done = proc.wait_event("poll_succeeded", timeout=120 + projects / 200, fail_on="poll_failed")
        cpu_done = proc.cpu_seconds()
        memory_after_poll = proc.memory()
        with Scraper(port) as scraper:
            _, body = scraper.get()
            _, gzipped = scraper.get(gzip=True)
        (workdir / "identity").write_bytes(body)
        (workdir / "gzip").write_bytes(gzipped)
        with start_floor(workdir) as (floor, floor_port):
            both = [(proc, port), (floor, floor_port)]
            identity = scrape_alternately(both, scrapes, gzip=False)
            gzip = scrape_alternately(both, scrapes, gzip=True)
            floor_memory = floor.memory()
        result = {
            "cold_poll": {
                "fetch_wall_s": done["duration"],
                "published_wall_s": _log_time(done) - started_at,
                "cpu_s": cpu_done - cpu_start,
                "pages": done["pages"],
                "requests": _requests(body),
            },
            "memory_after_poll": memory_after_poll,
            "identity": identity[0],
            "gzip": gzip[0],
            "snapshot": project_series(body),
            "memory": proc.memory(),
        }
        return result, {"identity": identity[1], "gzip": gzip[1], "memory": floor_memory}
    finally:
        proc.stop()


@contextmanager
def start_floor(workdir: Path):
    """The static floor serving the bodies in `workdir`; yields (process, port)."""
    proc = python(
        "static-server",
        "bench/static_server.py",
        "--identity",
        str(workdir / "identity"),
        "--gzip",
        str(workdir / "gzip"),
        "--listen",
        "127.0.0.1:0",
    )
    try:
        _, ready = proc.wait_event("static_listening", timeout=60)
        yield proc, ready["port"]
    finally:
        proc.stop()


def _poll_windows(proc: Proc) -> list[tuple[float, float]]:
    """[start, end] of each finished poll's fetch, by the exporter's own clock and log.

    `duration` covers the upstream fetch only; the log line comes after the render, so the
    window starts a little late and ends exactly: a scrape inside it overlapped the poll.
    """
    return [(_log_time(r) - r["duration"], _log_time(r)) for _, r in proc.events("poll_succeeded")]


def _inside(scrape: Scrape, windows: list[tuple[float, float]]) -> bool:
    return any(start <= scrape.started and scrape.ended <= end for start, end in windows)


def _alternate_scrapes(
    port: int, exporter: Proc, enough, time_limit: float, pause=lambda: 0.0
) -> dict[bool, list[Scrape]]:
    """Plain then gzip scrapes of `port`, `pause()` seconds after each pair, until
    `enough(scrapes of one encoding, poll windows of exporter)` holds for both encodings."""
    taken: dict[bool, list[Scrape]] = {False: [], True: []}
    deadline = time.monotonic() + time_limit
    with Scraper(port) as scraper:
        while time.monotonic() < deadline:
            for gzip in (False, True):
                taken[gzip].append(scraper.get(gzip=gzip)[0])
            time.sleep(pause())
            windows = _poll_windows(exporter)
            if all(enough(scrapes, windows) for scrapes in taken.values()):
                break
    return taken


def _scrape_during_polls(port: int, exporter: Proc, wanted: int, time_limit: float) -> dict:
    """Back-to-back plain and gzip scrapes of `port` until `wanted` of each fell inside a poll of `exporter`."""
    taken = _alternate_scrapes(
        port, exporter, lambda scrapes, windows: sum(_inside(s, windows) for s in scrapes) >= wanted, time_limit
    )
    windows = _poll_windows(exporter)
    during = {g: [s for s in taken[g] if _inside(s, windows)] for g in taken}
    # What the scrapes cost the polls: the exporter's polls step aside for scrapes in flight.
    began, ended = taken[False][0].started, taken[True][-1].ended
    polls = [
        r
        for _, r in exporter.events("poll_succeeded")
        if began <= _log_time(r) - r["duration"] and _log_time(r) <= ended
    ]
    return {
        "identity": summary(during[False]),
        "gzip": summary(during[True]),
        "scrapes_taken": len(taken[False]) + len(taken[True]),
        "polls": {
            "n": len(polls),
            "wall_s": statistics.median(r["duration"] for r in polls) if polls else None,
            "paused_s": statistics.median(r.get("paused_for_scrapes", 0) for r in polls) if polls else None,
        },
    }


def exporter_paced(base_url: str, projects: int, warm_wall_s: float, wanted: int, time_limit: float) -> dict:
    """Scrapes at random moments of the poll cycle, each counted as during a poll or between polls.

    The exporter polls every ~2.5 warm polls, so polls and quiet gaps alternate; the client
    scrapes plain then gzip, waits a random 0-20 ms, and goes on until `wanted` scrapes of
    each encoding fell inside polls and as many between them (or `time_limit` passes). Both
    figures come from the same process in the same seconds, so the machine's drift, which
    on a shared host moves a scrape by half within minutes, hits both alike.
    """
    interval = max(1, math.ceil(2.5 * warm_wall_s))
    proc, port = start_exporter(base_url, f"{interval}s", "--poll.timeout", "30m")
    pause = random.Random(7)
    try:
        proc.wait_event("poll_succeeded", 1, timeout=120 + projects / 200, fail_on="poll_failed")
        taken = _alternate_scrapes(
            port,
            proc,
            lambda scrapes, windows: min(map(len, _split(scrapes, windows))) >= wanted,
            time_limit,
            pause=lambda: pause.uniform(0, 0.02),
        )
        windows = _poll_windows(proc)
        split = {gzip: _split(scrapes, windows) for gzip, scrapes in taken.items()}
        return {
            "interval_s": interval,
            "during": {"identity": summary(split[False][0]), "gzip": summary(split[True][0])},
            "between": {"identity": summary(split[False][1]), "gzip": summary(split[True][1])},
        }
    finally:
        proc.stop()


def _split(scrapes: list[Scrape], windows: list[tuple[float, float]]) -> tuple[list[Scrape], list[Scrape]]:
    """(inside a poll, clear of every poll by 50 ms); scrapes that straddle an edge are in neither."""
    inside = [s for s in scrapes if _inside(s, windows)]
    clear = [s for s in scrapes if not any(start - 0.05 < s.ended and s.started < end + 0.05 for start, end in windows)]
    return inside, clear


def exporter_busy(
    up: Proc,
    base_url: str,
    projects: int,
    cold_wall_s: float,
    warm_polls: int,
    busy_scrapes: int,
    time_limit: float,
    workdir: Path,
) -> tuple[dict, dict]:
    """Warm polls, each followed by a run of the read-only client; then scrapes during polls.

    The exporter polls every ~2.5 cold polls, so that after each warm poll the read-only
    client walks the same pages midway through the gap: the poll CPU and its floor are taken
    in turns, each after a quiet moment, and the host's drift hits both alike. Steady memory is
    read after each warm poll.
    As a control, the static floor (a separate process) is then scraped during the same
    exporter's polls: it shows what the machine alone does to a scrape while a poll runs.
    Returns the exporter's figures and the read-only client's.
    """
    interval = max(1, math.ceil(2.5 * cold_wall_s))
    proc, port = start_exporter(base_url, f"{interval}s", "--poll.timeout", "30m")
    wait = 120 + projects / 200
    try:
        proc.wait_event("poll_succeeded", 1, timeout=wait, fail_on="poll_failed")
        cpu, rss, polls, client = [proc.cpu_seconds()], [proc.memory()["rss_mib"]], [], []
        for k in range(2, warm_polls + 2):
            _, done = proc.wait_event("poll_succeeded", k, timeout=wait, fail_on="poll_failed")
            cpu.append(proc.cpu_seconds())
            rss.append(proc.memory()["rss_mib"])
            polls.append(done)
            # Midway through the gap, so that the client, like the next poll, starts on a quiet machine.
            gap = interval - done["duration"] - (client[-1]["wall_s"] if client else done["duration"])
            time.sleep(max(0.0, gap / 2 - (time.time() - _log_time(done))))
            client.append(read_only(up, base_url, 1, timeout=wait))
        warm_cpu = [b - a for a, b in zip(cpu, cpu[1:], strict=False)]
        peak_without_scrapes = proc.memory()["peak_mib"]

        during = _scrape_during_polls(port, proc, busy_scrapes, time_limit)
        memory = proc.memory()
        with start_floor(workdir) as (_, floor_port):
            floor_during = _scrape_during_polls(floor_port, proc, busy_scrapes, time_limit)
        return {
            "interval_s": interval,
            "warm_poll": {
                "fetch_wall_s": statistics.median(p["duration"] for p in polls),
                "cpu_s": statistics.median(warm_cpu),
                "cpu_each_s": warm_cpu,
                "pages": polls[-1]["pages"],
            },
            "rss_after_each_poll_mib": rss,
            "steady_rss_mib": statistics.median(rss[1:]),
            "peak_without_scrapes_mib": peak_without_scrapes,
            "polls": len(_poll_windows(proc)),
            "during_poll": during,
            "static_during_poll": floor_during,
            "memory": memory,
        }, {
            "runs": len(client),
            "pages": client[0]["pages"],
            "page_bytes": client[0]["page_bytes"],
            **{
                key: statistics.median(c[key] for c in client)
                for key in ("cpu_s", "wall_s", "upstream_cpu_ms_per_page")
            },
        }
    finally:
        proc.stop()


# -- baselines ------------------------------------------------------------------------


def plain_exporter(base_url: str, projects: int, scrapes: int, polls: int) -> dict:
    proc = python(
        "plain-exporter",
        "bench/plain_exporter.py",
        "--base-url",
        base_url,
        "--admin-key",
        ADMIN_KEY,
        "--listen",
        "127.0.0.1:0",
        "--polls",
        str(polls),
    )
    try:
        _, ready = proc.wait_event("plain_listening", timeout=120 + polls * projects / 100)
        port = ready["port"]
        return {
            "poll": {
                "wall_s": ready["poll_wall_s"],
                "cpu_s": ready["poll_cpu_s"],
                "requests": ready["requests"],
                "polls": polls,
            },
            "identity": scrape_series(proc, port, scrapes, gzip=False, warmup=1),
            "gzip": scrape_series(proc, port, scrapes, gzip=True, warmup=1),
            "memory": proc.memory(),
        }
    finally:
        proc.stop()


# -- concurrency ----------------------------------------------------------------------


def two_polls(base_url: str, concurrency: int, pages: int, rtt: float) -> dict:
    """First (cold) and second poll of one exporter at `--poll.concurrency`, and its snapshot."""
    proc, port = start_exporter(base_url, "1s", "--poll.timeout", "30m", "--poll.concurrency", str(concurrency))
    wait = 120 + 3 * pages * (rtt + 0.005)
    try:
        _, first = proc.wait_event("poll_succeeded", 1, timeout=wait, fail_on="poll_failed")
        cpu_first = proc.cpu_seconds()
        _, second = proc.wait_event("poll_succeeded", 2, timeout=wait, fail_on="poll_failed")
        cpu_second = proc.cpu_seconds()
        with Scraper(port) as scraper:
            _, body = scraper.get()
        return {
            "concurrency": concurrency,
            "first_poll": {"fetch_wall_s": first["duration"], "pages": first["pages"]},
            "second_poll": {
                "fetch_wall_s": second["duration"],
                "pages": second["pages"],
                "cpu_s": cpu_second - cpu_first,
            },
            "snapshot": project_series(body),
            "memory": proc.memory(),
        }
    finally:
        proc.stop()


def workdir():
    return tempfile.TemporaryDirectory(prefix="bench-")


__all__ = [
    "BenchError",
    "upstream",
    "read_only",
    "exporter_idle",
    "exporter_busy",
    "exporter_paced",
    "plain_exporter",
    "two_polls",
    "workdir",
]
