"""Benchmark the governance collectors: the request budget, a slow upstream, scrapes, refresh cost.

    python bench/governance.py                 # both parts, one after the other
    python bench/governance.py --part budget   # parts 1 and 2 (and the round metric check)
    python bench/governance.py --part scrape   # parts 3 and 4

Every upstream here is the simulator (exporter/simulator.py) in a child process of its own
(`python bench/governance.py serve`), with fixed counts per project and every project
active, whose fault hook timestamps each request as it arrives, counts the requests in
flight, and holds each response for `--rtt` seconds when asked to (the round trip).

Part "budget", side by side: for 0 and for `--rtt` seconds per response, one exporter with
the four default collectors and one with every collector off (the baseline of the list
poll's duration), each against its own simulator of `--projects` projects, all at
`--rate` requests per second, a list poll every `--poll-interval`, and a details interval far shorter than
a round needs at that rate, so that the budget is the limit. From the arrivals: the
backfill, the first round after it against its lower bound (requests / rate), the most
requests in any one-second window, the most in flight at once; from the logs, the list
polls' durations with details running and without. Beside them, a small exporter runs
several budget-bound rounds to compare openai_details_round_duration_seconds with the
arrivals.

Part "scrape": one simulator of `--scrape-projects` projects, the exporter with every
per-project series, loaded at `--load-rate`; in the quiet gap after its backfill (half a
details interval), scrapes in turns with the static floor serving its bytes
(bench/static_server.py), and the RSS of an exporter with every collector off at the same
size; then the CPU of its first round, in which nothing changed, spread over the details
interval, against an httpx client with as many threads fetching the same URLs at the same
pace (`python bench/governance.py read-only`).

It prints markdown tables and the verdicts and writes every figure to
bench/results/governance-<UTC time>.json. Every child is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import signal
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

LIST_PATH = "/v1/organization/projects"
RECORDS_PATH = "/bench/requests"
SIM_READY = "governance_sim_listening"
OFF = (
    "--no-collector.users",
    "--no-collector.service-accounts",
    "--no-collector.api-keys",
    "--no-collector.spend-limits",
)
PER_PROJECT = ("users", "service_accounts", "api_keys", "spend_limit")  # the default collectors' endpoints


# == child: the recording simulator =====================================================================


def serve(argv: list[str]) -> int:
    """The simulator with every project active, recording each request's arrival and completion."""
    import orjson

    from exporter.simulator import OrganizationServer, Response, SimulatedOrganization

    parser = argparse.ArgumentParser(prog="governance.py serve")
    parser.add_argument("--projects", type=int, required=True, help="active projects")
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--rtt", type=float, default=0.0, help="seconds each response is held")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--service-accounts", type=int, default=1)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--nice", type=int, default=0, help="niceness to run at: below 0 timestamps arrivals sooner")
    args = parser.parse_args(argv)
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError:
            pass  # not allowed: arrivals are timestamped a little later on a busy machine
    organization = SimulatedOrganization(
        args.projects,
        users_per_project=args.users,
        service_accounts_per_project=args.service_accounts,
        keys_per_project=args.keys,
    )
    for project in organization.all():
        if project["status"] != "active":
            organization.unarchive(project["id"])
    server = OrganizationServer(organization, args.admin_key)
    server.requests = type(server.requests)(maxlen=1)  # the recorder below keeps what the bench needs
    lock = threading.Lock()
    rows: list[list] = []  # [arrival, done, in flight at arrival, path, query string]
    state = {"in_flight": 0, "peak": 0}

    def hook(request):
        if request.path == RECORDS_PATH:
            since = int(request.query.get("since", "0"))
            with lock:
                body = orjson.dumps({"peak_in_flight": state["peak"], "records": rows[since:]})
            return Response(200, body)
        row = [time.time(), None, 0, request.path, urlencode(request.query)]
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
            row[2] = state["in_flight"]
            rows.append(row)
        if args.rtt:
            time.sleep(args.rtt)
        with lock:
            state["in_flight"] -= 1
            row[1] = time.time()
        return None  # the simulator answers

    server.fault = hook
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"event": SIM_READY, "base_url": server.base_url, "active": args.projects}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


# == child: the read-only client ========================================================================


def read_only(argv: list[str]) -> int:
    """GET every URL of a file with `--threads` threads sharing one httpx client, paced at `--rate`.

    The client is set up like the exporter's details client (same headers, as many
    connections as threads, no environment); the body is read and nothing is parsed. It
    prints one JSON line with its own CPU time (all threads) and wall time, imports excluded.
    """
    import httpx

    parser = argparse.ArgumentParser(prog="governance.py read-only")
    parser.add_argument("--base", required=True, help="scheme://host:port")
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--urls", type=Path, required=True, help="one path?query per line")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second, 0 for no pacing")
    args = parser.parse_args(argv)
    urls = args.urls.read_text().split()
    client = httpx.Client(
        headers={
            "User-Agent": "bench-read-only-client",
            "Accept-Encoding": "gzip, deflate",
            "Authorization": f"Bearer {args.admin_key}",
        },
        limits=httpx.Limits(max_connections=args.threads, max_keepalive_connections=args.threads),
        timeout=60,
        follow_redirects=False,
        trust_env=False,
    )
    lock = threading.Lock()
    state = {"next": 0, "slot": time.monotonic(), "bytes": 0, "errors": 0}

    def work() -> None:
        while True:
            with lock:
                index = state["next"]
                if index >= len(urls):
                    return
                state["next"] += 1
                slot = state["slot"] = max(state["slot"], time.monotonic()) + (1 / args.rate if args.rate else 0)
            wait = slot - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            response = client.get(args.base + urls[index])
            body = response.content
            with lock:
                state["bytes"] += len(body)
                state["errors"] += response.status_code not in (200, 404)

    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    with client:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        json.dumps(
            {"requests": len(urls), "bytes": state["bytes"], "errors": state["errors"], "cpu_s": cpu, "wall_s": wall}
        ),
        flush=True,
    )
    return 0


# == the driver =========================================================================================

if __name__ == "__main__" and sys.argv[1:2] in (["serve"], ["read-only"]):
    sys.exit({"serve": serve, "read-only": read_only}[sys.argv[1]](sys.argv[2:]))

import measure  # noqa: E402 - the children above need none of the bench's modules
from procs import BenchError, Proc, measure_and_report, python, run_json  # noqa: E402
from scrape import Scraper  # noqa: E402

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.M)


class Upstream:
    """A recording simulator child: its base URL, and the requests it saw in order of arrival."""

    def __init__(
        self,
        name: str,
        projects: int,
        rtt: float = 0.0,
        users: int = 3,
        accounts: int = 1,
        keys: int = 5,
        nice: int = 0,
    ):
        self.name, self.projects, self.rtt = name, projects, rtt
        self.proc = python(
            name,
            "bench/governance.py",
            "serve",
            "--projects",
            str(projects),
            "--admin-key",
            measure.ADMIN_KEY,
            "--rtt",
            str(rtt),
            "--users",
            str(users),
            "--service-accounts",
            str(accounts),
            "--keys",
            str(keys),
            "--nice",
            str(nice),
        )
        _, ready = self.proc.wait_event(SIM_READY, timeout=120 + projects / 500)
        self.base_url = ready["base_url"]
        split = urlsplit(self.base_url)
        self.host, self.port = split.hostname, split.port
        self.rows: list[list] = []
        self.peak_in_flight = 0

    def fetch(self) -> list[list]:
        """Every request so far: [arrival, done, in flight at arrival, path, query], arrival order."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            conn.request("GET", f"{RECORDS_PATH}?since={len(self.rows)}")
            data = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        self.rows.extend(data["records"])
        self.peak_in_flight = data["peak_in_flight"]
        return self.rows

    def details(self) -> list[list]:
        return [row for row in self.rows if row[3] != LIST_PATH]

    def stop(self) -> None:
        self.proc.stop()


def units_of(projects: int) -> int:
    """Units of one round with the four default collectors: four per project, and the organization's spend limit."""
    return len(PER_PROJECT) * projects + 1


def metrics(port: int) -> dict[str, float]:
    """The exporter's samples of interest, by name and labels."""
    with Scraper(port) as scraper:
        _, body = scraper.get()
    found = {}
    for name, labels, value in _SAMPLE.findall(body.decode()):
        if name.startswith(
            ("openai_details_", "openai_collector_", "openai_api_", "openai_poll_duration", "openai_governance_")
        ):
            found[name + labels] = float(value)
    return found


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most arrivals in any half-open interval of `window` seconds."""
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def densest(rows: list[list], window: float = 1.0) -> dict:
    """The arrivals of the busiest one-second window: offsets from its first, in ms, and which were list pages."""
    ordered = sorted(rows, key=lambda row: row[0])
    times = [row[0] for row in ordered]
    best, start, found = 0, 0, (0, 0)
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        if end - start + 1 > best:
            best, found = end - start + 1, (start, end)
    chosen = ordered[found[0] : found[1] + 1]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {
        "count": best,
        "offsets_ms": [round((row[0] - chosen[0][0]) * 1000, 1) for row in chosen],
        "list_pages": [i for i, row in enumerate(chosen) if row[3] == LIST_PATH],
        "gaps_under_half_a_slot": None if not gaps else sum(1 for g in gaps if g < 0.5 * statistics.median(gaps)),
    }


def rounds_of(details: list[list], units: int, gap: float) -> tuple[list[list], list[list[list]]]:
    """(backfill, complete rounds) of the detail requests, in order of arrival.

    The backfill ends at the first pause over `gap` seconds (the first round begins half an
    interval after it). After it, each request goes to the earliest round that has not had
    its unit yet: rounds that follow one another at once overlap by the few units in flight,
    which arrive out of order. A round is complete when it has every unit; its requests run
    from its first arrival to the one that completed it.
    """
    split = next((i for i in range(1, len(details)) if details[i][0] - details[i - 1][0] > gap), None)
    if split is None:
        return details, []
    backfill = details[:split]
    rounds: list[list[list]] = []
    seen: list[set] = []
    for row in details[split:]:
        key = (row[3], row[4])
        for taken, round_rows in zip(seen, rounds, strict=True):
            if key not in taken:
                taken.add(key)
                round_rows.append(row)
                break
        else:
            seen.append({key})
            rounds.append([row])
    return backfill, [r for r in rounds if len(r) >= units]


def round_figures(rows: list[list], window: list[list], rate: float) -> dict:
    """One round (or backfill): duration from first to last arrival, against requests / rate."""
    first, last = min(row[0] for row in window), max(row[0] for row in window)
    lists = sum(1 for row in rows if row[3] == LIST_PATH and first <= row[0] <= last)
    duration = last - first
    bound = len(window) / rate
    return {
        "requests": len(window),
        "distinct": len({(row[3], row[4]) for row in window}),
        "list_requests_inside": lists,
        "duration_s": duration,
        "lower_bound_s": bound,
        "ratio": duration / bound,
        "lower_bound_with_list_s": (len(window) + lists) / rate,
        "ratio_with_list": duration / ((len(window) + lists) / rate),
        "first": first,
        "last": last,
    }


def poll_durations(proc: Proc, start: float, end: float) -> list[float]:
    """`duration` of each poll_succeeded whose poll lies inside [start, end] (the first, cold poll excluded)."""
    found = []
    for _, record in proc.events("poll_succeeded")[1:]:
        at = datetime.fromisoformat(record["timestamp"]).timestamp()
        if start <= at - record["duration"] and at <= end:
            found.append(record["duration"])
    return found


def workers_for(rate: float) -> int:
    from exporter.details.engine import workers_for as exporter_workers_for

    return exporter_workers_for(rate)


# -- part "budget" ---------------------------------------------------------------------------------------


def budget_part(opts: argparse.Namespace, log) -> dict:
    """Parts 1 and 2 side by side, with the round metric check beside them."""
    rate, units = opts.rate, units_of(opts.projects)
    common = ("--api.requests-per-second", f"{rate:g}", "--poll.details-interval", f"{opts.details_interval:g}s")
    setups = {  # name: (rtt, collectors on)
        "fast": (0.0, True),
        "fast_off": (0.0, False),
        "slow": (opts.rtt, True),
        "slow_off": (opts.rtt, False),
    }
    result: dict = {
        "projects": opts.projects,
        "rate": rate,
        "units_per_round": units,
        "details_interval_s": opts.details_interval,
        "poll_interval_s": opts.poll_interval,
        "rtt_s": opts.rtt,
        "workers": workers_for(rate),
    }
    with ExitStack() as stack:
        upstreams, exporters = {}, {}
        for name, (rtt, on) in setups.items():
            upstreams[name] = up = Upstream(f"simulator[{name}]", opts.projects, rtt, nice=opts.upstream_nice)
            stack.callback(up.stop)
            extra = common if on else (*common, *OFF)
            proc, port = measure.start_exporter(up.base_url, f"{opts.poll_interval:g}s", *extra)
            stack.callback(proc.stop)
            exporters[name] = (proc, port)
        check_units = units_of(opts.check_projects)
        check_up = Upstream("simulator[check]", opts.check_projects, nice=opts.upstream_nice)
        stack.callback(check_up.stop)
        check, check_port = measure.start_exporter(
            check_up.base_url,
            "1h",
            "--api.requests-per-second",
            f"{rate:g}",
            "--poll.details-interval",
            f"{opts.check_interval:g}s",
        )
        stack.callback(check.stop)
        log(
            f"budget: {opts.projects:,} projects at {rate:g} rps, details every {opts.details_interval:g}s, "
            f"0 and {opts.rtt * 1000:.0f} ms per response, collectors on and off; waiting for the first "
            f"round after the backfill ({2 * units / rate:.0f} s or more)"
        )
        gap = opts.details_interval / 4
        deadline = time.monotonic() + opts.budget_timeout
        check_metric: list[tuple[float, float]] = []  # (time, openai_details_round_duration_seconds) as it changes
        done: set[str] = set()
        last_note = time.monotonic()
        while True:
            for name in ("fast", "slow"):
                proc = exporters[name][0]
                if proc.popen.poll() is not None:
                    raise BenchError(f"exporter[{name}] exited: {proc.tail()}")
                up = upstreams[name]
                _, rounds = rounds_of(up.fetch() and up.details(), units, gap)
                if rounds and name not in done:
                    done.add(name)
                    log(f"budget: {name}: first round complete")
            value = metrics(check_port).get("openai_details_round_duration_seconds", 0.0)
            if value and (not check_metric or check_metric[-1][1] != value):
                check_metric.append((time.time(), value))
            if len(done) == 2 and len(check_metric) >= opts.check_rounds:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"budget: no complete round within {opts.budget_timeout:.0f}s (done: {sorted(done)})")
            if time.monotonic() - last_note > 60:
                last_note = time.monotonic()
                counts = {n: len(upstreams[n].details()) for n in ("fast", "slow")}
                log(f"budget: detail requests so far {counts}")
            time.sleep(1.0)
        # The metric is set when the next round begins; with a late round that is at once.
        time.sleep(1.0)
        for name in ("fast", "slow"):
            result[name] = {"metrics_end": metrics(exporters[name][1])}
        for up in [*upstreams.values(), check_up]:
            up.fetch()
        for name in ("fast", "slow"):
            up, (proc, _) = upstreams[name], exporters[name]
            rows = up.rows
            backfill, rounds = rounds_of(up.details(), units, gap)
            first_round = rounds[0]
            expected = {(row[3], row[4]) for row in backfill}
            times = sorted(row[0] for row in rows)
            durations = [row[1] - row[0] for row in rows if row[1] is not None]
            baseline = exporters[f"{name}_off"][0]
            start, end = backfill[0][0], max(row[0] for row in first_round)
            round_first, mine = min(row[0] for row in first_round), {id(row) for row in first_round}
            polls_on = poll_durations(proc, start, end)
            polls_off = poll_durations(baseline, start, end)
            off_rows = upstreams[f"{name}_off"].rows
            metric_value = result[name]["metrics_end"].get("openai_details_round_duration_seconds")
            result[name].update(
                {
                    "rtt_s": up.rtt,
                    "backfill": round_figures(rows, backfill, rate),
                    "round": round_figures(rows, first_round, rate),
                    "round_covers_every_unit_once": len(first_round) == units
                    and {(row[3], row[4]) for row in first_round} == expected,
                    "next_round_requests_inside": sum(
                        1 for row in up.details() if id(row) not in mine and round_first < row[0] < end
                    ),
                    "densest_second": densest(rows),
                    "round_metric_s": metric_value,
                    "complete_rounds": len(rounds),
                    "max_requests_in_1s": max_in_window(times),
                    "max_requests_in_1s_round": max_in_window(sorted(row[0] for row in rows if start <= row[0] <= end)),
                    "min_gap_ms": min(b - a for a, b in zip(times, times[1:], strict=False)) * 1000,
                    "baseline_max_requests_in_1s": max_in_window(sorted(row[0] for row in off_rows)),
                    "peak_in_flight": up.peak_in_flight,
                    "in_flight_needed": math.ceil(rate * statistics.median(durations)) + 1,
                    "response_median_ms": statistics.median(durations) * 1000,
                    "requests": len(rows),
                    "polls_with_details_s": polls_on,
                    "polls_without_s": polls_off,
                    "poll_median_with_details_s": statistics.median(polls_on) if polls_on else None,
                    "poll_median_without_s": statistics.median(polls_off) if polls_off else None,
                    "failures": [r for _, r in proc.events("details_fetch_failed")][:5],
                    "memory": proc.memory(),
                }
            )
            if polls_on and polls_off:
                result[name]["poll_ratio"] = statistics.median(polls_on) / statistics.median(polls_off)
        result["check"] = check_rounds(check_up, check_units, opts, check_metric)
    return result


def check_rounds(up: Upstream, units: int, opts: argparse.Namespace, metric: list[tuple[float, float]]) -> dict:
    """Consecutive budget-bound rounds of the small exporter: the metric against the arrivals."""
    _, rounds = rounds_of(up.details(), units, opts.check_interval / 4)
    measured = [max(row[0] for row in r) - min(row[0] for row in r) for r in rounds]
    return {
        "projects": opts.check_projects,
        "units_per_round": units,
        "details_interval_s": opts.check_interval,
        "lower_bound_s": units / opts.rate,
        "rounds_from_arrivals_s": measured,
        "metric_values_s": [value for _, value in metric],
    }


# -- part "scrape" ---------------------------------------------------------------------------------------


def wait_loaded(proc: Proc, collectors: int, projects: int, timeout: float) -> float:
    """Until every collector's first refreshes cover every project (details_first_refresh lines)."""
    deadline = time.monotonic() + timeout
    while True:
        totals: dict[str, int] = {}
        for _, record in proc.events("details_first_refresh"):
            totals[record["collector"]] = totals.get(record["collector"], 0) + record["projects"]
        if len(totals) == collectors and all(n >= projects for n in totals.values()):
            return time.time()
        if proc.popen.poll() is not None:
            raise BenchError(f"exporter exited while loading: {proc.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"details not loaded within {timeout:.0f}s: {totals}")
        time.sleep(0.5)


class CpuSampler:
    """The process's CPU seconds every `every` seconds, with the wall time of each reading."""

    def __init__(self, proc: Proc, every: float = 0.2):
        self.samples: list[tuple[float, float]] = []
        self._proc, self._every, self._stop = proc, every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self._proc.cpu_seconds()))
            except OSError:
                return
            self._stop.wait(self._every)

    def at(self, when: float) -> float:
        """CPU seconds at `when`, interpolated between the two readings around it."""
        before = max((s for s in self.samples if s[0] <= when), default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= when), default=self.samples[-1])
        if after[0] == before[0]:
            return before[1]
        return before[1] + (after[1] - before[1]) * (when - before[0]) / (after[0] - before[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def scrape_part(opts: argparse.Namespace, log, workdir: Path) -> dict:
    n, rate, units = opts.scrape_projects, opts.load_rate, units_of(opts.scrape_projects)
    result: dict = {
        "projects": n,
        "keys": 5,
        "users": 3,
        "service_accounts": 1,
        "load_rate": rate,
        "details_interval_s": opts.scrape_interval,
        "units_per_round": units,
        "workers": workers_for(rate),
    }
    with ExitStack() as stack:
        up = Upstream("simulator[scrape]", n)
        stack.callback(up.stop)
        log(f"scrape: {n:,} projects, loading the details at {rate:g} rps")
        proc, port = measure.start_exporter(
            up.base_url,
            "1h",
            "--api.requests-per-second",
            f"{rate:g}",
            "--poll.details-interval",
            f"{opts.scrape_interval:g}s",
            "--metrics.per-project",
            "true",
        )
        stack.callback(proc.stop)
        sampler = CpuSampler(proc)
        stack.callback(sampler.stop)
        started = time.time()
        proc.wait_event("poll_succeeded", timeout=120, fail_on="poll_failed")
        loaded = wait_loaded(proc, 4, n, timeout=60 + 4 * units / rate)
        time.sleep(1.5)  # the publication follows the log line
        up.fetch()
        backfill = up.details()
        result["load"] = {
            "seconds_to_loaded": loaded - started,
            "backfill": round_figures(up.rows, backfill, rate),
            "memory": proc.memory(),
        }
        log(f"scrape: loaded in {loaded - started:.0f} s; scrapes in turns with the static floor")
        with Scraper(port) as scraper:
            _, body = scraper.get()
            _, gzipped = scraper.get(gzip=True)
        (workdir / "identity").write_bytes(body)
        (workdir / "gzip").write_bytes(gzipped)
        result["body"] = {
            "identity_bytes": len(body),
            "gzip_bytes": len(gzipped),
            "api_key_info_series": body.count(b"\nopenai_project_api_key_info{"),
            "user_series": body.count(b"\nopenai_project_users{"),
        }
        with measure.start_floor(workdir) as (floor, floor_port):
            both = [(proc, port), (floor, floor_port)]
            identity = measure.scrape_alternately(both, opts.scrapes, gzip=False)
            gzip = measure.scrape_alternately(both, opts.scrapes, gzip=True)
            floor_memory = floor.memory()
        scraped_until = time.time()
        result["scrape"] = {
            "exporter": {"identity": identity[0], "gzip": gzip[0]},
            "floor": {"identity": identity[1], "gzip": gzip[1], "memory": floor_memory},
        }
        for side in result["scrape"].values():
            for kind in ("identity", "gzip"):
                side[kind].pop("server_cpu_ms_each", None)
        result["memory_after_scrapes"] = proc.memory()
        # Still in the gap before the first round: a separate process, idle once its poll is done.
        log("scrape: the projects-only exporter (every collector off) at the same size")
        only, only_port = measure.start_exporter(up.base_url, "1h", "--api.requests-per-second", f"{rate:g}", *OFF)
        try:
            only.wait_event("poll_succeeded", timeout=120, fail_on="poll_failed")
            after_poll = only.memory()
            with Scraper(only_port) as scraper:
                scraper.get()
                scraper.get(gzip=True)
            result["projects_only"] = {"memory_after_poll": after_poll, "memory_after_scrapes": only.memory()}
        finally:
            only.stop()
        gap_used_until = time.time()
        log(f"scrape: waiting for the first round (an unchanged one), {units:,} requests")
        deadline = time.monotonic() + opts.scrape_interval + 120 + 2 * units / rate
        while True:
            up.fetch()
            _, rounds = rounds_of(up.details(), units, opts.scrape_interval / 4)
            if rounds:
                break
            if time.monotonic() > deadline or proc.popen.poll() is not None:
                raise BenchError(f"scrape: no complete round in time: {proc.tail()}")
            time.sleep(1.0)
        the_round = rounds[0]
        time.sleep(1.0)
        sampler.stop()
        first, last = min(row[0] for row in the_round), max(row[0] for row in the_round)
        # A worker finishes its last response after the last arrival: half a second more, quiet otherwise.
        cpu = sampler.at(last + 0.5) - sampler.at(first - 0.1)
        end_metrics = metrics(port)
        result["round"] = {
            **round_figures(up.rows, the_round, rate),
            "scrapes_before_round": scraped_until < first,
            "gap_work_before_round": gap_used_until < first,
            "cpu_s": cpu,
            "changes_logged": sum(v for k, v in end_metrics.items() if k.startswith("openai_governance_changes_total")),
            "memory": proc.memory(),
        }
        result["metrics_end"] = end_metrics
        proc.stop()

        urls = workdir / "urls"
        urls.write_text("\n".join(f"{row[3]}?{row[4]}" if row[4] else row[3] for row in the_round) + "\n")
        pace = len(the_round) / max(last - first, 1e-3)
        threads = workers_for(rate)
        log(f"scrape: read-only client, {threads} threads, the same {len(the_round):,} URLs at {pace:.0f} rps")
        root = f"http://{up.host}:{up.port}"
        result["read_only"] = run_json(
            "read-only-client",
            [
                "bench/governance.py",
                "read-only",
                "--base",
                root,
                "--admin-key",
                measure.ADMIN_KEY,
                "--urls",
                str(urls),
                "--threads",
                str(workers_for(rate)),
                "--rate",
                f"{pace:.3f}",
            ],
            timeout=120 + 2 * (last - first),
        )
        result["read_only"]["rate"] = pace
        result["cpu_ratio"] = cpu / result["read_only"]["cpu_s"]

    return result


# -- report ----------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def targets(results: dict) -> list[dict]:
    found = []

    def add(name, value, limit, detail, higher=False):
        ok = value is not None and (value >= limit if higher else value <= limit)
        found.append(
            {
                "target": name,
                "value": None if value is None else round(value, 3),
                "limit": ("≥ " if higher else "≤ ") + f"{limit:g}",
                "verdict": "PASS" if ok else "FAIL",
                "detail": detail,
            }
        )

    budget = results.get("budget")
    if budget:
        for name, label in (("fast", "no delay"), ("slow", f"{budget['rtt_s'] * 1000:.0f} ms per response")):
            b = budget[name]
            r = b["round"]
            add(
                f"round vs requests / rate ({label})",
                r["ratio"],
                1.15,
                f"{r['duration_s']:.1f} s vs {r['lower_bound_s']:.1f} s for {r['requests']:,} requests "
                f"({r['ratio_with_list']:.3f}x counting the {r['list_requests_inside']} list requests inside)",
            )
            add(
                f"most requests in a 1 s window ({label})",
                b["max_requests_in_1s"],
                budget["rate"] + 1,
                f"{b['requests']:,} requests, closest two {b['min_gap_ms']:.1f} ms apart",
            )
            if b.get("poll_ratio") is not None:
                add(
                    f"list poll with details vs collectors off ({label})",
                    b["poll_ratio"],
                    1.0,
                    f"median {b['poll_median_with_details_s']:.3f} s vs {b['poll_median_without_s']:.3f} s "
                    f"({(b['poll_median_with_details_s'] - b['poll_median_without_s']) * 1000:+.0f} ms; one slot is "
                    f"{1000 / budget['rate']:.0f} ms), {len(b['polls_with_details_s'])} and "
                    f"{len(b['polls_without_s'])} polls",
                )
        slow = budget["slow"]
        add(
            f"peak requests in flight ({budget['rtt_s'] * 1000:.0f} ms per response)",
            slow["peak_in_flight"],
            slow["in_flight_needed"],
            f"needed: ceil({budget['rate']:g} rps x {slow['response_median_ms']:.0f} ms) + 1; "
            f"{budget['workers']} workers",
        )
    scrape = results.get("scrape")
    if scrape:
        for kind in ("identity", "gzip"):
            e, f = scrape["scrape"]["exporter"][kind], scrape["scrape"]["floor"][kind]
            add(
                f"scrape median vs static floor ({kind}), {scrape['projects']:,} projects with details",
                e["median_ms"] / f["median_ms"],
                1.5,
                f"{e['median_ms']:.1f} ms vs {f['median_ms']:.1f} ms",
            )
    return found


def render(results: dict) -> str:
    out = []
    found = results.get("targets") or targets(results)
    if found:
        out.append("**Targets**\n")
        out.append(
            _table(
                ["target", "ratio or count", "limit", "verdict", "figures"],
                [[t["target"], t["value"], t["limit"], f"**{t['verdict']}**", t["detail"]] for t in found],
            )
        )
    budget = results.get("budget")
    if budget:
        out.append(
            f"\n**Budget** ({budget['projects']:,} projects, {budget['units_per_round']:,} units a round, "
            f"{budget['rate']:g} rps, details interval {budget['details_interval_s']:g} s, list poll every "
            f"{budget['poll_interval_s']:g} s, {budget['workers']} workers)\n"
        )
        rows = []
        for name in ("fast", "slow"):
            b = budget[name]
            for label, r in (("backfill", b["backfill"]), ("first round", b["round"])):
                rows.append(
                    [
                        f"{b['rtt_s'] * 1000:.0f} ms",
                        label,
                        f"{r['requests']:,}",
                        r["list_requests_inside"],
                        f"{r['duration_s']:.1f}",
                        f"{r['lower_bound_s']:.1f}",
                        f"{r['ratio']:.3f}x",
                        f"{r['ratio_with_list']:.3f}x",
                    ]
                )
        out.append(
            _table(
                [
                    "per response",
                    "phase",
                    "detail requests",
                    "list requests inside",
                    "duration s",
                    "requests / rate s",
                    "ratio",
                    "ratio with list",
                ],
                rows,
            )
        )
        rows = []
        for name in ("fast", "slow"):
            b = budget[name]
            rows.append(
                [
                    f"{b['rtt_s'] * 1000:.0f} ms",
                    b["round_covers_every_unit_once"],
                    "–" if b["round_metric_s"] is None else f"{b['round_metric_s']:.1f}",
                    b["max_requests_in_1s"],
                    b["baseline_max_requests_in_1s"],
                    f"{b['min_gap_ms']:.1f}",
                    f"{b['peak_in_flight']} (needed {b['in_flight_needed']})",
                    _median(b["poll_median_with_details_s"]),
                    _median(b["poll_median_without_s"]),
                    "–" if b.get("poll_ratio") is None else f"{b['poll_ratio']:.3f}x",
                    f"{b['memory']['rss_mib']:.0f}",
                ]
            )
        out.append("")
        out.append(
            _table(
                [
                    "per response",
                    "round: every unit once",
                    "round metric s",
                    "most requests in 1 s",
                    "same, collectors off",
                    "closest two ms",
                    "peak in flight",
                    "list poll s, details on",
                    "list poll s, collectors off",
                    "ratio",
                    "RSS MiB",
                ],
                rows,
            )
        )
        c = budget["check"]
        out.append(
            f"\nRound metric against the arrivals ({c['projects']} projects, {c['units_per_round']} units, "
            f"details interval {c['details_interval_s']:g} s, lower bound {c['lower_bound_s']:.1f} s): "
            f"rounds from the arrivals {', '.join(f'{x:.1f}' for x in c['rounds_from_arrivals_s'])} s; "
            f"openai_details_round_duration_seconds took the values "
            f"{', '.join(f'{x:.1f}' for x in c['metric_values_s'])} s."
        )
    scrape = results.get("scrape")
    if scrape:
        out.append(
            f"\n**Scrape and refresh cost** ({scrape['projects']:,} projects, {scrape['keys']} keys, "
            f"{scrape['users']} users and {scrape['service_accounts']} service account each, every per-project "
            f"series; loaded at {scrape['load_rate']:g} rps, {scrape['workers']} workers)\n"
        )
        body = scrape["body"]
        rows = []
        for side in ("exporter", "floor"):
            s = scrape["scrape"][side]
            rows.append(
                [
                    side,
                    _ms(s["identity"]),
                    _ms(s["gzip"]),
                    f"{s['identity']['n']} / {s['gzip']['n']}",
                    f"{s['identity']['server_cpu_ms_per_scrape']:.1f} / {s['gzip']['server_cpu_ms_per_scrape']:.1f}",
                ]
            )
        out.append(_table(["server", "identity ms (median / p99)", "gzip ms", "scrapes", "server CPU ms/scrape"], rows))
        out.append(
            f"\nBody: {body['identity_bytes'] / 1e6:.1f} MB plain, {body['gzip_bytes'] / 1e6:.1f} MB gzip; "
            f"{body['api_key_info_series']:,} API key series, {body['user_series']:,} user series. "
            f"Loaded in {scrape['load']['seconds_to_loaded']:.0f} s "
            f"({scrape['load']['backfill']['requests']:,} detail requests over "
            f"{scrape['load']['backfill']['duration_s']:.0f} s)."
        )
        r, ro = scrape["round"], scrape["read_only"]
        only = scrape["projects_only"]
        rows = [
            [
                "exporter, details loaded (before scrapes)",
                f"{scrape['load']['memory']['rss_mib']:.0f}",
                f"{scrape['load']['memory']['peak_mib']:.0f}",
            ],
            ["exporter, after the unchanged round", f"{r['memory']['rss_mib']:.0f}", f"{r['memory']['peak_mib']:.0f}"],
            [
                "projects only (collectors off), after its poll",
                f"{only['memory_after_poll']['rss_mib']:.0f}",
                f"{only['memory_after_poll']['peak_mib']:.0f}",
            ],
            [
                "**with details / projects only**",
                f"{scrape['load']['memory']['rss_mib'] / only['memory_after_poll']['rss_mib']:.2f}x",
                "",
            ],
        ]
        out.append("")
        out.append(_table(["process", "RSS MiB", "peak MiB"], rows))
        out.append("")
        out.append(
            _table(
                ["unchanged round", "requests", "wall s", "CPU s", "CPU ms per request"],
                [
                    [
                        "exporter",
                        f"{r['requests']:,}",
                        f"{r['duration_s']:.1f}",
                        f"{r['cpu_s']:.2f}",
                        f"{r['cpu_s'] / r['requests'] * 1000:.3f}",
                    ],
                    [
                        f"httpx read-only client, {scrape['workers']} threads, {ro['rate']:.0f} rps",
                        f"{ro['requests']:,}",
                        f"{ro['wall_s']:.1f}",
                        f"{ro['cpu_s']:.2f}",
                        f"{ro['cpu_s'] / ro['requests'] * 1000:.3f}",
                    ],
                    ["**exporter / client**", "", "", f"{scrape['cpu_ratio']:.2f}x", ""],
                ],
            )
        )
        out.append(
            f"\nChanges logged during the round: {r['changes_logged']:.0f}; the scrapes and the projects-only "
            f"exporter were done before it began: {r['gap_work_before_round']}."
        )
    return "\n".join(out)


def _ms(figure: dict) -> str:
    return f"{figure['median_ms']:.1f} / {figure['p99_ms']:.1f}" if figure.get("n") else "–"


def _median(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


# -- entry points ----------------------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    opt = parser.add_argument
    opt("--part", choices=("all", "budget", "scrape"), default="all", help="which parts to run")
    opt("--projects", type=int, default=1000, help="active projects of the budget part")
    opt("--rate", type=float, default=20, help="--api.requests-per-second of the budget part")
    opt("--details-interval", type=float, default=30, help="seconds; shorter than a round needs at --rate")
    opt("--poll-interval", type=float, default=10, help="seconds between list polls in the budget part")
    opt("--rtt", type=float, default=0.2, help="seconds per response of the slow upstream")
    opt(
        "--upstream-nice",
        type=int,
        default=-10,
        help="niceness of the budget part's simulators, so that a busy host delays their timestamps less",
    )
    opt("--check-projects", type=int, default=100, help="projects of the round metric check")
    opt("--check-interval", type=float, default=5, help="details interval of the round metric check, seconds")
    opt("--check-rounds", type=int, default=3, help="values of the round metric to wait for in that check")
    opt("--budget-timeout", type=float, default=900, help="seconds to wait for the budget part's rounds")
    opt("--scrape-projects", type=int, default=10_000, help="active projects of the scrape part")
    opt("--load-rate", type=float, default=500, help="--api.requests-per-second of the scrape part")
    opt("--scrape-interval", type=float, default=150, help="details interval of the scrape part, seconds")
    opt("--scrapes", type=int, default=100, help="timed scrapes per encoding, exporter and floor")


def defaults(**overrides) -> argparse.Namespace:
    """The options with their defaults, as run.py --governance uses them."""
    parser = argparse.ArgumentParser()
    add_options(parser)
    opts = parser.parse_args([])
    vars(opts).update(overrides)
    return opts


def run(opts: argparse.Namespace, log) -> dict:
    """The parts `opts.part` names; raises BenchError or KeyboardInterrupt, leaving children to stop_all()."""
    import tempfile

    results: dict = {"options": {k: v for k, v in vars(opts).items() if k != "out"}}
    if opts.part in ("all", "budget"):
        results["budget"] = budget_part(opts, log)
    if opts.part in ("all", "scrape"):
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            results["scrape"] = scrape_part(opts, log, Path(tmp))
    results["targets"] = targets(results)
    return results


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import run as bench_run

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="JSON results file (default bench/results/...)")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    results: dict = {"machine": bench_run.machine()}

    def measure() -> None:
        results["governance"] = run(args, log)

    return measure_and_report("governance", results, measure, lambda r: render(r["governance"]), args.out, began, log)


if __name__ == "__main__":
    sys.exit(main())
