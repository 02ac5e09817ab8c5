"""Costs and usage: a spend poll's requests, its CPU, and scrapes with the spend's series.

    python bench/spend.py            # about 6 minutes on 2 cores
    python bench/spend.py --help

Three measurements, each against a baseline taken in the same run:

1. Requests. A simulated organization (1,000 projects, 20 models) whose clock stands at the
   last day of a 31-day month, 23:00 UTC; a SpendPoller runs in this process with its clock
   at the same instant and reads every feed (costs and the ten usage endpoints). Its requests,
   counted by the upstream, against the lower bound the page limits allow: per feed,
   ceil(daily buckets in its window / the endpoint's most buckets a page), the maximum taken
   from the simulator's contract, not from the exporter. Once with the default
   --api.max-response-size, once with a bound large enough for the costs page, and once with a
   longer look-back, so that the usage windows take several pages.
2. CPU. Warm polls after the upstream's clock and the poller's moved on by 5 minutes (the
   current day's buckets grow), and polls of a still upstream; after each, in turns, an httpx
   client in a process of its own that sends the same requests and reads the bodies (bytes
   only, the cursor found by a byte search), and one that also parses them with orjson. CPU is
   time.process_time() around the poll (in a thread of its own) and around the client's walk;
   the median of each. Then where the
   time goes: a growing and a still poll done step by step, each step timed alone, and one
   growing poll under cProfile.
3. Scrapes. The exporter as a real process against a simulated organization of 10,000
   projects with its default collectors (users, service accounts, API keys, spend limits,
   costs, usage), once every detail is fetched and the spend polled; scraped in turns with the
   static floor serving its own bodies (bench/static_server.py), identity and gzip. The spend
   side is reduced to fewer projects when the costs window is long (see
   --scrape-spend-project-days). Then the memory the spend takes: the RSS of two exporters
   without the detail collectors, one with costs and usage and one without.

The upstream is this file run with --serve: exporter.simulator's organization and server, with
a manual clock, a memo of the spend pages of the current clock (the simulator computes a
month of costs for 1,000 projects in seconds; the memo makes later reads of the same page
cheap, which only shortens the run: CPU is measured in this process, not the upstream's), and
/bench/advance and /bench/requests for the clock and the request log. With --read-only, this
file is the read-only client.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import pstats
import re
import signal
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this repository's exporter, not another checkout's installed in the venv

import httpx  # noqa: E402
import measure  # noqa: E402
import orjson  # noqa: E402
import structlog  # noqa: E402
from procs import BenchError, measure_and_report, python, run_json  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from scrape import Scraper  # noqa: E402

from exporter.budget import DETAILS, RequestBudget  # noqa: E402
from exporter.details.health import CollectorHealth  # noqa: E402
from exporter.settings import AdminKey  # noqa: E402
from exporter.simulated_spend_query import COSTS_LIMITS, USAGE_LIMITS  # noqa: E402
from exporter.spend.feeds import FAMILIES, FEEDS  # noqa: E402
from exporter.spend.poller import SpendPoller, month_start  # noqa: E402
from exporter.spend.render import MONTH, ORGANIZATION_MONTH  # noqa: E402
from exporter.upstream import KEEPALIVE_EXPIRY, MAX_RESPONSE_SIZE, ApiClient, shared_ssl_context  # noqa: E402

ADMIN_KEY = measure.ADMIN_KEY
DAY = 86_400
DEFAULT_NOW = "2026-01-31T23:00:00Z"  # the last day of a 31-day month
SPEND_FAMILIES = {family.name for family in (*FAMILIES, MONTH, ORGANIZATION_MONTH)}
DETAIL_COLLECTORS = ("users", "service-accounts", "api-keys", "spend-limits")  # the default ones
_SAMPLE = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^\n]*\})? ([^ \n]+)$", re.M)


# -- the upstream (--serve) ---------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """The simulated organization with a manual clock, spend pages memoised per clock, and controls."""
    from exporter.simulator import OrganizationServer, Response, SimulatedOrganization

    organization = SimulatedOrganization(args.projects, seed=args.seed, now=args.now, models=args.models)
    spend = organization.spend
    if args.spend_projects is not None and args.spend_projects < args.projects:
        every = spend._projects  # (id, created_at, archived_at) of every project, oldest first
        spend._projects = lambda: every()[: args.spend_projects]
    read, memo, memo_lock = spend.read, {}, threading.Lock()

    def remembered(resource, params):
        key = (resource, tuple(sorted((name, tuple(values)) for name, values in params.items())))
        now = spend.clock()
        with memo_lock:
            if memo.get("now") != now:
                memo.clear()
                memo["now"] = now
            page = memo.get(key)
        if page is None:
            page = read(resource, params)
            with memo_lock:
                if memo.get("now") == now:
                    memo[key] = page
        return page

    spend.read = remembered
    requests: list[dict] = []
    lock = threading.Lock()

    def control(request):
        if request.path == "/bench/advance":
            now = spend.clock.advance(float(request.query["seconds"]))
            return Response(200, json.dumps({"now": now}).encode())
        if request.path == "/bench/requests":
            with lock:
                body = json.dumps(requests).encode()
                requests.clear()
            return Response(200, body)
        if "/organization/costs" in request.path or "/organization/usage/" in request.path:
            with lock:
                requests.append(
                    {
                        "path": request.path.removeprefix("/v1"),
                        "start_time": request.query.get("start_time"),
                        "limit": request.query.get("limit"),
                        "page": "page" in request.query,
                    }
                )
        return None

    host, _, port = args.listen.rpartition(":")
    server = OrganizationServer(organization, args.admin_key, host=host or "127.0.0.1", port=int(port))
    server.fault = control
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"event": "spend_upstream_listening", "base_url": server.base_url}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


@contextmanager
def upstream(projects: int, models: int, now: float, spend_projects: int | None = None):
    """The --serve child; yields (process, base_url)."""
    extra = ["--spend-projects", str(spend_projects)] if spend_projects is not None else []
    proc = python(
        f"spend-upstream[{projects}]",
        "bench/spend.py",
        "--serve",
        "--projects",
        str(projects),
        "--models",
        str(models),
        "--now",
        str(now),
        "--admin-key",
        ADMIN_KEY,
        *extra,
    )
    try:
        _, ready = proc.wait_event("spend_upstream_listening", timeout=60)
        yield proc, ready["base_url"]
    finally:
        proc.stop()


def _advance(base_url: str, poller: InProcessPoller, seconds: float) -> None:
    """Move the upstream's clock and the poller's; within the same UTC day, so that the windows stay."""
    now = _control(base_url, f"/bench/advance?seconds={seconds}")["now"]
    if int(now) // DAY != int(poller.now) // DAY:
        raise BenchError("the clock passed midnight: fewer --warm-polls, a smaller --advance or an earlier --now")
    poller.now = now


def _control(base_url: str, path: str):
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(root + path, timeout=60) as response:  # noqa: S310 - loopback only
        return json.loads(response.read())


# -- the poll, in this process --------------------------------------------------------------------


def windows(now: float, lookback: float, month_read: bool = False) -> list[tuple[str, str, int, int]]:
    """(endpoint, path, window start, buckets) of each feed, as SpendPoller.poll computes its windows.

    Every feed from the look-back window's start; with `month_read`, costs from the first of
    the month as well, as the first poll after a start without a saved month reads them.
    """
    day = int(now) // DAY * DAY
    window = day - int(lookback // DAY) * DAY
    found = []
    for feed in FEEDS:
        start = min(window, month_start(now)) if feed.endpoint == "costs" and month_read else window
        found.append((feed.endpoint, feed.path, start, (day - start) // DAY + 1))
    return found


def plan(logged: list[dict]) -> list[tuple[str, str, int, list[int]]]:
    """(endpoint, path, start, the limit of each page) of each feed, from the requests the upstream logged.

    What the read-only client asks, so that it reads exactly the pages the poll read.
    """
    by_path = {feed.path: feed for feed in FEEDS}
    found: dict[str, tuple[str, str, int, list[int]]] = {}
    for r in logged:
        if not r["page"]:
            found[r["path"]] = (by_path[r["path"]].endpoint, r["path"], int(r["start_time"]), [])
        found[r["path"]][3].append(int(r["limit"]))
    return list(found.values())


def most_per_page(endpoint: str) -> int:
    """The contract's most daily buckets per page (exporter.simulated_spend_query), not the exporter's."""
    return COSTS_LIMITS[1] if endpoint == "costs" else USAGE_LIMITS["1d"][1]


class GcTime:
    """Process CPU spent in the cyclic garbage collector, from gc.callbacks, while registered."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began: float | None = None

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.process_time()
        elif self._began is not None:
            self.seconds += time.process_time() - self._began
            self._began = None

    def __enter__(self) -> GcTime:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)


def _in_thread(work, profile: cProfile.Profile | None = None) -> tuple[float, float, float]:
    """(CPU, wall, CPU in the garbage collector) seconds of `work` run in a thread of its own.

    Process CPU: nothing else of this process runs meanwhile (the upstream is another process).
    """
    gc.collect()
    failure: list[BaseException] = []

    def run():
        try:
            if profile is not None:
                profile.runcall(work)
            else:
                work()
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="bench-spend")
    with GcTime() as collector:
        cpu, wall = time.process_time(), time.perf_counter()
        thread.start()
        thread.join()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if failure:
        raise failure[0]
    return cpu, wall, collector.seconds


class InProcessPoller:
    """A SpendPoller set up as exporter.organizations does, every feed, on a clock the bench moves."""

    def __init__(self, base_url: str, now: float, lookback: float, max_response_size: int, rate: float):
        self.now = now
        self.registry = CollectorRegistry()
        self.health = CollectorHealth(self.registry, [], ["costs", "usage"])
        self.client = ApiClient(
            base_url=base_url,
            admin_key=AdminKey(value=ADMIN_KEY),
            timeout=120.0,
            max_retries=0,
            stop=threading.Event(),
            max_response_size=max_response_size,
            budget=RequestBudget(rate),
            priority=DETAILS,
        )
        self.published = 0  # parts published, the last one kept

        def publish(part) -> None:
            self.part, self.published = part, self.published + 1

        self.poller = SpendPoller(
            client=self.client,
            feeds=FEEDS,
            lookback=lookback,
            deadline=900.0,
            max_pages=10_000,
            health=self.health,
            registry=self.registry,
            publish=publish,
            save=lambda: True,
            clock=lambda: self.now,
        )

    def _sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def poll(self, profile: cProfile.Profile | None = None) -> dict:
        requests = {c: self._sample("openai_collector_requests_total", collector=c) for c in ("costs", "usage")}
        with structlog.testing.capture_logs() as logs:
            cpu, wall, in_gc = _in_thread(self.poller.poll, profile)
        return {
            "cpu_s": cpu,
            "wall_s": wall,
            "gc_s": in_gc,
            "requests": {
                c: int(self._sample("openai_collector_requests_total", collector=c) - requests[c]) for c in requests
            },
            "up": {c: self._sample("openai_collector_up", collector=c) for c in ("costs", "usage")},
            "failures": [
                {k: str(v) for k, v in log.items() if k in ("collector", "endpoint", "reason", "message")}
                for log in logs
                if log.get("event") == "spend_fetch_failed"
            ],
            "published": self.published,
        }

    def close(self) -> None:
        self.client.close()


class ReadOnlyClient:
    """The CPU floor: the same requests with an httpx client set up like the exporter's, bodies read.

    `parse=False` finds `has_more` and `next_page` by a byte search at the end of the body;
    `parse=True` parses the whole body with orjson, as the exporter does before anything else.
    """

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.client = httpx.Client(
            headers={
                "User-Agent": "bench-read-only-client",
                "Accept-Encoding": "gzip, deflate",
                "Authorization": f"Bearer {ADMIN_KEY}",
            },
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_EXPIRY),
            timeout=120.0,
            verify=shared_ssl_context(),
            follow_redirects=False,
            trust_env=False,
        )

    def pages(self, feed, start: int, parse: bool, limits: list[int]) -> tuple[list[bytes], int]:
        """The bodies of a feed's window, page by page, each page of the limit the poll asked, and the
        buckets they hold (parsed only, else 0)."""
        bodies, page, buckets = [], None, 0
        while True:
            limit = limits[min(len(bodies), len(limits) - 1)]
            params: list[tuple[str, str | int]] = [("start_time", start), ("bucket_width", "1d"), ("limit", limit)]
            params += [("group_by[]", field) for field in feed.group_by]
            if page is not None:
                params.append(("page", page))
            response = self.client.get(self.base_url + feed.path, params=params)
            response.raise_for_status()
            body = response.content
            bodies.append(body)
            if parse:
                document = orjson.loads(body)
                buckets += len(document["data"])
                more, page = document["has_more"], document["next_page"]
            else:
                tail = body[-400:]
                more = b'"has_more": true' in tail
                if more:
                    at = tail.index(b'"next_page": "') + len(b'"next_page": "')
                    page = tail[at : tail.index(b'"', at)].decode()
            if not more:
                return bodies, buckets

    def walk(self, feeds: list[tuple[str, str, int, list[int]]], parse: bool) -> dict:
        by_path = {feed.path: feed for feed in FEEDS}
        found = {"requests": 0, "bytes": 0, "buckets": {}, "bytes_by_feed": {}}

        def work():
            for endpoint, path, start, limits in feeds:
                bodies, buckets = self.pages(by_path[path], start, parse, limits)
                found["requests"] += len(bodies)
                found["bytes"] += sum(map(len, bodies))
                found["bytes_by_feed"][endpoint] = sum(map(len, bodies))
                if parse:
                    found["buckets"][endpoint] = buckets

        found["cpu_s"], found["wall_s"], found["gc_s"] = _in_thread(work)
        return found

    def close(self) -> None:
        self.client.close()


def read_only(base_url: str, feeds: list[tuple[str, str, int, list[int]]], parse: bool) -> dict:
    """One walk of the read-only client in a process of its own (bench/spend.py --read-only).

    Its own process, as the exporter is: a client in this one would pay for the collector's
    passes over the poller's state, which is none of its business.
    """
    argv = ["bench/spend.py", "--read-only", "--base-url", base_url, "--windows", json.dumps(feeds)]
    return run_json("read-only-client", [*argv, *(["--parse"] if parse else [])], timeout=300)


def read_only_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="the read-only client of bench/spend.py")
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--windows", required=True, help="JSON: [[endpoint, path, start, [limit, ...]], ...]")
    parser.add_argument("--parse", action="store_true")
    args = parser.parse_args(argv)
    client = ReadOnlyClient(args.base_url)
    gc.freeze()  # as the exporter does after start-up
    try:
        found = client.walk([tuple(w) for w in json.loads(args.windows)], args.parse)
    finally:
        client.close()
    print(json.dumps(found), flush=True)
    return 0


# -- 1. requests ----------------------------------------------------------------------------------


def request_count(base_url: str, now: float, lookback: float, max_response_size: int, rate: float) -> dict:
    """A poll's requests per feed, as the upstream logged them, against the page-limit bound.

    The poll after the first: the first also reads the month's costs from its first day
    (reported apart, with the largest page it read, found by reading its pages again).
    """
    _control(base_url, "/bench/requests")  # empty the log
    poller = InProcessPoller(base_url, now, lookback, max_response_size, rate)
    try:
        first = poller.poll()
        first_logged = _control(base_url, "/bench/requests")
        outcome = poller.poll()
        logged = _control(base_url, "/bench/requests")
    finally:
        poller.close()
    costs = next(feed for feed in FEEDS if feed.endpoint == "costs")
    [(_, _, month_from, month_limits)] = [p for p in plan(first_logged) if p[1] == costs.path] or [(0, 0, 0, [1])]
    client = ReadOnlyClient(base_url)
    try:
        month_pages, _ = client.pages(costs, month_from, False, month_limits) if month_from else ([], 0)
    finally:
        client.close()
    month_buckets = (int(now) // DAY * DAY - month_from) // DAY + 1 if month_from else 0
    month_read = {
        "poll": first,
        "from": datetime.fromtimestamp(month_from, UTC).date().isoformat() if month_from else None,
        "buckets": month_buckets,
        "requests": len(month_limits) if month_from else 0,
        "limits": month_limits,
        "bound": math.ceil(month_buckets / most_per_page("costs")),
        "largest_page_mb": max(map(len, month_pages), default=0) / 1e6,
        "all_requests": len(first_logged),
    }
    asked = Counter(r["path"] for r in logged)
    starts = {r["path"]: int(r["start_time"]) for r in logged if not r["page"]}
    limits = {r["path"]: int(r["limit"]) for r in logged}
    feeds = []
    for endpoint, path, start, buckets in windows(now, lookback):
        bound = math.ceil(buckets / most_per_page(endpoint))
        feeds.append(
            {
                "endpoint": endpoint,
                "window_start": datetime.fromtimestamp(start, UTC).date().isoformat(),
                "start_as_asked": starts.get(path) == start,
                "buckets": buckets,
                "most_per_page": most_per_page(endpoint),
                "limit_asked": limits.get(path),
                "bound": bound,
                "requests": asked[path],
            }
        )
    return {
        "lookback_days": lookback / DAY,
        "max_response_size": max_response_size,
        "poll": outcome,
        "feeds": feeds,
        "requests": sum(f["requests"] for f in feeds),
        "bound": sum(f["bound"] for f in feeds),
        "equal": all(f["requests"] == f["bound"] for f in feeds),
        "month_read": month_read,
    }


# -- 2. CPU ---------------------------------------------------------------------------------------


def _profile_summary(profile: cProfile.Profile, top: int = 20) -> list[dict]:
    """The functions with the most CPU of their own."""
    table = pstats.Stats(profile).stats  # {(file, line, function): (calls, primitive calls, own, cumulative, callers)}
    own = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{Path(file).name if file != '~' else ''}:{line}({name})",
            "calls": calls,
            "own_s": round(tt, 4),
            "cumulative_s": round(ct, 4),
        }
        for (file, line, name), (_, calls, tt, ct, _) in own
    ]


ANATOMY = (
    "HTTP: request and read the body",
    "for reference, not a step: every page's JSON parsed (orjson.loads), as the parsed client does",
    "the rest of SpendPoller.fetch: the parse of what changed, result hashes, new results' rows",
    "count: ledgers, month sums (SpendPoller.count)",
    "render (SpendPoller.compose)",
    "garbage collector, in all of these",
)


def anatomy(poller: InProcessPoller, client: ReadOnlyClient, base_url: str) -> dict:
    """One poll's steps done by hand, as SpendPoller.poll does them, each timed without a profiler.

    Per feed, through the poller's public steps: SpendPoller.fetch (request, read, the parse
    of the buckets that changed, the result hashes and the rows of the new results: what it
    takes beyond the next step), the read-only client's request and read of the same pages
    (the limits the upstream logged), orjson.loads of the same bodies (for reference: the
    poll parses less), SpendPoller.count; then SpendPoller.compose. The fetch and
    the count run with the collector paused, as in a poll. Each step's CPU is counted without
    the garbage collector's, which has a row of its own (that of fetch, count and compose: the
    client's steps are done again by fetch). The poller's state moves on as in a poll. Process
    CPU in one thread.
    """
    from exporter.spend.poller import paused_collector

    sp = poller.poller
    now = poller.now
    by_path = {feed.path: feed for feed in FEEDS}
    read, parse, fetched, count, render, collected = ANATOMY
    spent = dict.fromkeys(ANATOMY, 0.0)
    collector = GcTime()

    def timed(step, *args):
        """(CPU outside the collector, CPU in it, the step's result)."""
        before, at = collector.seconds, time.process_time()
        result = step(*args)
        cpu, in_gc = time.process_time() - at, collector.seconds - before
        return cpu - in_gc, in_gc, result

    def parse_all(bodies: list[bytes]) -> None:
        for body in bodies:
            orjson.loads(body)

    def work():
        for feed in FEEDS:
            start = sp.start_of(feed, now)
            _control(base_url, "/bench/requests")  # empty the log
            with paused_collector():
                cpu_fetch, gc_fetch, read_window = timed(sp.fetch, feed, start)
            [(_, path, asked, limits)] = plan(_control(base_url, "/bench/requests"))
            cpu_read, _, (bodies, _) = timed(client.pages, by_path[path], asked, False, limits)
            cpu_parse, _, _ = timed(parse_all, bodies)
            with paused_collector():
                cpu_count, gc_count, _ = timed(sp.count, feed, read_window, start, now)
            spent[read] += cpu_read
            spent[parse] += cpu_parse
            spent[fetched] += cpu_fetch - cpu_read
            spent[count] += cpu_count
            spent[collected] += gc_fetch + gc_count
        cpu_render, gc_render, _ = timed(sp.compose)
        spent[render] += cpu_render
        spent[collected] += gc_render

    with collector:
        _in_thread(work)
    return spent


def cpu(base_url: str, now: float, args: argparse.Namespace, log) -> dict:
    """Cold poll, then growing and still polls, each followed by the two read-only clients in turns."""
    poller = InProcessPoller(base_url, now, args.lookback, args.max_response_size, args.rate)
    client = ReadOnlyClient(base_url)
    rounds: list[dict] = []
    try:
        cold = poller.poll()
        if cold["failures"]:
            raise BenchError(f"the cold poll failed: {cold['failures']}")
        kinds = ["growing"] * args.warm_polls + ["still"] * args.still_polls
        for k, kind in enumerate(kinds):
            if kind == "growing":
                _advance(base_url, poller, args.advance)
            _control(base_url, "/bench/requests")  # empty the log
            polled = poller.poll()
            if polled["failures"]:
                raise BenchError(f"a warm poll failed: {polled['failures']}")
            feeds = plan(_control(base_url, "/bench/requests"))  # the pages the poll read, no other
            order = (False, True) if k % 2 == 0 else (True, False)
            read = {parse: read_only(base_url, feeds, parse) for parse in order}
            rounds.append({"kind": kind, "poll": polled, "bytes_only": read[False], "parsed": read[True]})
            log(
                f"CPU: {kind} poll {polled['cpu_s']:.2f} s, read-only {read[False]['cpu_s']:.2f} s bytes only, "
                f"{read[True]['cpu_s']:.2f} s parsed"
            )
        steps = {}
        for kind in ("growing", "still"):
            if kind == "growing":
                _advance(base_url, poller, args.advance)
            steps[kind] = anatomy(poller, client, base_url)
        _advance(base_url, poller, args.advance)
        profile = cProfile.Profile(time.thread_time)  # CPU of the poll's thread, not the wait for the upstream
        profiled = poller.poll(profile)
        summary = {"cpu_s_under_profile": profiled["cpu_s"], "top_own_time": _profile_summary(profile)}
    finally:
        poller.close()
        client.close()
    figures = {}
    for kind in ("growing", "still"):
        chosen = [r for r in rounds if r["kind"] == kind]
        if not chosen:
            continue
        figures[kind] = {
            "polls": len(chosen),
            "poll_cpu_s": statistics.median(r["poll"]["cpu_s"] for r in chosen),
            "poll_wall_s": statistics.median(r["poll"]["wall_s"] for r in chosen),
            "bytes_only_cpu_s": statistics.median(r["bytes_only"]["cpu_s"] for r in chosen),
            "parsed_cpu_s": statistics.median(r["parsed"]["cpu_s"] for r in chosen),
            "poll_gc_s": statistics.median(r["poll"]["gc_s"] for r in chosen),
            "parsed_gc_s": statistics.median(r["parsed"]["gc_s"] for r in chosen),
            "requests": chosen[-1]["poll"]["requests"],
            "read_only_requests": chosen[-1]["bytes_only"]["requests"],
            "page_bytes": chosen[-1]["bytes_only"]["bytes"],
            "bytes_by_feed": chosen[-1]["bytes_only"]["bytes_by_feed"],
            "buckets": chosen[-1]["parsed"]["buckets"],
        }
    return {"cold": cold, "rounds": rounds, "figures": figures, "anatomy": steps, "profile": summary}


# -- 3. scrapes -----------------------------------------------------------------------------------


def _loaded(body: bytes, detail_collectors: tuple[str, ...], spend: bool) -> tuple[bool, str]:
    def value(name: str, collector: str | None = None) -> float | None:
        labels = "" if collector is None else f'{{collector="{collector}"}}'
        found = re.search(rb"^" + re.escape(f"{name}{labels} ".encode()) + rb"(\S+)$", body, re.M)
        return float(found.group(1)) if found else None

    if value("openai_up") != 1:
        return False, "no list poll yet"
    for collector in detail_collectors:
        if value("openai_collector_projects_stale", collector) != 0:
            return False, f"{collector}: {value('openai_collector_projects_stale', collector)} projects stale"
    for collector, wanted in (("costs", 1), ("usage", 10)) if spend else ():
        if (value("openai_collector_requests_total", collector) or 0) < wanted:
            return False, f"{collector}: not polled yet"
        if value("openai_collector_up", collector) != 1:
            return False, f"{collector}: not up"
    return True, "loaded"


def _series(body: bytes) -> dict:
    names = [m.group(1) for m in _SAMPLE.finditer(body)]
    spend = sum(1 for n in names if n.decode() in SPEND_FAMILIES)
    project = sum(
        1
        for n in names
        if n.startswith((b"openai_project_info", b"openai_project_created", b"openai_project_archived"))
    )
    return {"samples": len(names), "spend": spend, "project_list": project, "other": len(names) - spend - project}


def _wait_loaded(exporter, port: int, details: tuple[str, ...], spend: bool, timeout: float) -> tuple[bytes, float]:
    """The body once the list is polled, every detail fetched and the spend polled, and two reads agree."""
    began = time.monotonic()
    previous, state = None, "not scraped yet"
    with Scraper(port, timeout=120) as scraper:
        while True:
            if exporter.popen.poll() is not None:
                raise BenchError(f"the exporter exited: {exporter.tail()}")
            if time.monotonic() - began > timeout:
                raise BenchError(f"the exporter was not loaded within {timeout:.0f}s: {state}")
            _, body = scraper.get()
            done, state = _loaded(body, details, spend)
            if done and previous is not None and len(previous) == len(body):
                return body, time.monotonic() - began
            previous = body if done else None
            time.sleep(3)


def scrapes(args: argparse.Namespace, log) -> dict:
    """The exporter with every default collector, loaded, scraped in turns with the static floor.

    Then its memory: two more exporters without the detail collectors, with the spend and without.
    """
    now = time.time()
    day = int(now) // DAY * DAY
    costs_days = (day - min(day - int(args.lookback // DAY) * DAY, month_start(now))) // DAY + 1
    spend_projects = min(args.scrape_projects, max(1, args.scrape_spend_project_days // costs_days))
    log(
        f"scrapes: N={args.scrape_projects:,}, spend of {spend_projects:,} projects "
        f"(costs window {costs_days} days today), exporter with its default collectors"
    )
    flags = (
        *("--poll.timeout", "10m", "--poll.details-interval", "1h", "--poll.spend-interval", "1h"),
        *("--api.requests-per-second", str(args.scrape_rate), "--api.max-response-size", "1GiB"),
    )
    no_details = tuple(f"--no-collector.{name}" for name in DETAIL_COLLECTORS)
    memory = {}
    with (
        upstream(args.scrape_projects, args.scrape_models, now, spend_projects) as (_, base_url),
        measure.workdir() as tmp,
    ):
        exporter, port = measure.start_exporter(base_url, "1h", *flags)
        try:
            body, loaded_s = _wait_loaded(exporter, port, DETAIL_COLLECTORS, True, args.load_seconds)
            log(f"scrapes: loaded in {loaded_s:.0f} s, {len(body) / 1e6:.1f} MB; scraping in turns with the floor")
            with Scraper(port, timeout=120) as scraper:
                _, body = scraper.get()
                _, gzipped = scraper.get(gzip=True)
            Path(tmp, "identity").write_bytes(body)
            Path(tmp, "gzip").write_bytes(gzipped)
            with measure.start_floor(Path(tmp)) as (floor, floor_port):
                both = [(exporter, port), (floor, floor_port)]
                identity = measure.scrape_alternately(both, args.scrapes, gzip=False)
                gzip = measure.scrape_alternately(both, args.scrapes, gzip=True)
            memory["every default collector"] = exporter.memory()
        finally:
            exporter.stop()
        log("memory: exporters without the detail collectors, with the spend and without")
        for label, extra in (
            ("list and spend", no_details),
            ("list alone", (*no_details, "--no-collector.costs", "--no-collector.usage")),
        ):
            alone, alone_port = measure.start_exporter(base_url, "1h", *flags, *extra)
            try:
                _wait_loaded(alone, alone_port, (), label == "list and spend", args.load_seconds)
                memory[label] = alone.memory()
            finally:
                alone.stop()
    return {
        "projects": args.scrape_projects,
        "spend_projects": spend_projects,
        "costs_days": costs_days,
        "models": args.scrape_models,
        "loaded_s": loaded_s,
        "series": _series(body),
        "exporter": {"identity": identity[0], "gzip": gzip[0]},
        "static": {"identity": identity[1], "gzip": gzip[1]},
        "server_cpu_over_floor_ms": {
            "identity": measure.cpu_over(identity[0], identity[1]),
            "gzip": measure.cpu_over(gzip[0], gzip[1]),
        },
        "memory_mib": memory,
    }


# -- all three ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, log) -> dict:
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00")).timestamp()
    results: dict = {"now": args.now, "projects": args.projects, "models": args.models}
    if not args.skip_polls:
        log(f"requests and CPU: N={args.projects:,}, {args.models} models, upstream and poller at {args.now}")
        with upstream(args.projects, args.models, now) as (_, base_url):
            log("requests: one poll with the default --api.max-response-size")
            results["requests_default_bound"] = request_count(
                base_url, now, args.lookback, MAX_RESPONSE_SIZE, args.rate
            )
            log(f"requests: one poll with --api.max-response-size {args.max_response_size // 2**20} MiB")
            results["requests"] = request_count(base_url, now, args.lookback, args.max_response_size, args.rate)
            if args.long_lookback:
                log(f"requests: one poll with a look-back of {args.long_lookback / DAY:g} days")
                results["requests_long"] = request_count(
                    base_url, now, args.long_lookback, args.max_response_size, args.rate
                )
            log(f"CPU: cold poll, {args.warm_polls} growing and {args.still_polls} still polls, read-only clients")
            results["cpu"] = cpu(base_url, now, args, log)
    if args.scrape_projects:
        results["scrapes"] = scrapes(args, log)
    return results


# -- the report -----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def targets(results: dict) -> list[dict]:
    found = []

    def add(name, value, limit, ok, detail):
        found.append(
            {"target": name, "value": value, "limit": limit, "verdict": "PASS" if ok else "FAIL", "detail": detail}
        )

    if "requests" in results:
        r = results["requests"]
        add(
            "spend poll requests vs page-limit bound",
            f"{r['requests']} vs {r['bound']}",
            "equal",
            r["equal"],
            "every feed",
        )
        if "requests_long" in results:
            r = results["requests_long"]
            add(
                f"same, {r['lookback_days']:g}-day look-back",
                f"{r['requests']} vs {r['bound']}",
                "equal",
                r["equal"],
                "usage windows over several pages",
            )
        d = results["requests_default_bound"]
        failures = d["poll"]["failures"] + d["month_read"]["poll"]["failures"]
        add(
            "every feed read with the default --api.max-response-size, the month's first read included",
            f"costs up={d['poll']['up']['costs']:g}, usage up={d['poll']['up']['usage']:g}",
            "up=1",
            not failures,
            "; ".join(f"{f['endpoint']}: {f['message']}" for f in failures) or "no failure",
        )
        m = d["month_read"]
        add(
            "the month's first read, default --api.max-response-size: largest page",
            f"{m['largest_page_mb']:.2f} MB",
            f"≤ {d['max_response_size'] / 1e6:.2f} MB",
            m["largest_page_mb"] * 1e6 <= d["max_response_size"],
            f"costs from {m['from']}, {m['buckets']} buckets in {m['requests']} requests (limits {m['limits']}; "
            f"bound {m['bound']} at the contract's most per page); {m['all_requests']} requests in that poll",
        )
    if "cpu" in results:
        for kind, f in results["cpu"]["figures"].items():
            for base in ("bytes_only", "parsed"):
                ratio = f["poll_cpu_s"] / f[f"{base}_cpu_s"]
                add(
                    f"{kind} spend poll CPU vs read-only client ({base.replace('_', ' ')})",
                    f"{ratio:.2f}",
                    "≤ 1.5",
                    ratio <= 1.5,
                    f"{f['poll_cpu_s']:.3f} s vs {f[f'{base}_cpu_s']:.3f} s, median of {f['polls']}",
                )
    if "scrapes" in results:
        s = results["scrapes"]
        for kind in ("identity", "gzip"):
            a, b = s["exporter"][kind]["median_ms"], s["static"][kind]["median_ms"]
            add(
                f"scrape median vs static floor ({kind}), with spend series",
                f"{a / b:.3f}",
                "≤ 1.5",
                a / b <= 1.5,
                f"{a:.1f} ms vs {b:.1f} ms, N={s['projects']:,}",
            )
    return found


def render(results: dict) -> str:
    out = []
    if "machine" in results:
        m = results["machine"]
        out.append(
            f"{m['cpu_count']} cores ({m['cpu_model']}), Python {m['python']}; load average at start "
            f"{m['loadavg_start']}, at end {m.get('loadavg_end', '?')}\n"
        )
    out.append("**Targets**\n")
    out.append(
        _table(
            ["target", "figure", "limit", "verdict", "detail"],
            [[t["target"], t["value"], t["limit"], f"**{t['verdict']}**", t["detail"]] for t in targets(results)],
        )
    )
    for key, title in (
        ("requests_default_bound", "default --api.max-response-size"),
        ("requests", "--api.max-response-size raised"),
        ("requests_long", "longer look-back"),
    ):
        if key not in results:
            continue
        r = results[key]
        out.append(
            f"\n**Requests of one spend poll** (N={results['projects']:,}, {results['models']} models, clock at "
            f"{results['now']}; look-back {r['lookback_days']:g} days; {title}: "
            f"{r['max_response_size'] / 2**20:g} MiB)\n"
        )
        rows = [
            [
                f["endpoint"],
                f["window_start"] + ("" if f["start_as_asked"] or not f["requests"] else " (asked otherwise)"),
                f["buckets"],
                f["most_per_page"],
                f["limit_asked"],
                f["bound"],
                f["requests"],
                "yes" if f["requests"] == f["bound"] else "**no**",
            ]
            for f in r["feeds"]
        ]
        rows.append(["**all 11**", "", "", "", "", r["bound"], r["requests"], "yes" if r["equal"] else "**no**"])
        out.append(
            _table(
                ["feed", "window from", "daily buckets", "most per page", "limit asked", "bound", "requests", "equal"],
                rows,
            )
        )
        m = r["month_read"]
        out.append(
            f"\nThe first poll (no saved month): costs from {m['from']}, {m['buckets']} buckets in "
            f"{m['requests']} requests, limits {m['limits']}, largest page {m['largest_page_mb']:.2f} MB; "
            f"{m['all_requests']} requests in all."
        )
        if r["poll"]["failures"]:
            out.append(
                "\nFailed: "
                + "; ".join(f"{f['endpoint']}: {f['reason']}: {f['message']}" for f in r["poll"]["failures"])
            )
    if "cpu" in results:
        c = results["cpu"]
        read = next(iter(c["figures"].values()))["bytes_by_feed"]
        sizes = ", ".join(f"{endpoint} {size / 1e6:.2f}" for endpoint, size in read.items())
        out.append(
            f"\n**Spend poll CPU** (s, process CPU around the poll in a thread; median per kind; cold poll "
            f"{c['cold']['cpu_s']:.3f} s CPU, {c['cold']['wall_s']:.2f} s wall; MB per feed: {sizes})\n"
        )
        rows = []
        for kind, f in c["figures"].items():
            rows.append(
                [
                    kind,
                    f["polls"],
                    f"{f['requests']['costs'] + f['requests']['usage']} / {f['read_only_requests']}",
                    f"{f['page_bytes'] / 1e6:.1f}",
                    f"{f['poll_cpu_s']:.3f} ({f['poll_gc_s']:.3f})",
                    f"{f['bytes_only_cpu_s']:.3f}",
                    f"{f['parsed_cpu_s']:.3f} ({f['parsed_gc_s']:.3f})",
                    f"{f['poll_cpu_s'] / f['bytes_only_cpu_s']:.2f}x",
                    f"{f['poll_cpu_s'] / f['parsed_cpu_s']:.2f}x",
                ]
            )
        out.append(
            _table(
                [
                    "polls",
                    "n",
                    "requests (poll / client)",
                    "MB read",
                    "poll CPU (in the GC)",
                    "read-only, bytes",
                    "read-only, parsed (in the GC)",
                    "poll / bytes",
                    "poll / parsed",
                ],
                rows,
            )
        )
        out.append(
            "\n**Where a poll's CPU goes** (s; the poll's steps done by hand, each timed alone, after the "
            "measured polls: one growing, one still)\n"
        )
        steps = c["anatomy"]
        rows = []
        totals = {kind: sum(v for stage, v in steps[kind].items() if stage != ANATOMY[1]) for kind in steps}
        for stage in ANATOMY:
            rows.append([stage, *(f"{steps[k][stage]:.3f} ({steps[k][stage] / totals[k]:.0%})" for k in steps)])
        rows.append(["**sum**", *(f"{totals[k]:.3f}" for k in steps)])
        out.append(_table(["step", *steps], rows))
        p = c["profile"]
        out.append(
            f"\nTop functions by own CPU time, one growing poll under cProfile "
            f"({p['cpu_s_under_profile']:.2f} s CPU under the profiler):\n"
        )
        out.append(
            _table(
                ["function", "calls", "own s", "cumulative s"],
                [[t["function"], t["calls"], t["own_s"], t["cumulative_s"]] for t in p["top_own_time"]],
            )
        )
    if "scrapes" in results:
        s = results["scrapes"]
        out.append(
            f"\n**Scrapes with the spend's series** (N={s['projects']:,} projects, default collectors; spend of "
            f"{s['spend_projects']:,} projects, {s['models']} models, costs window {s['costs_days']} days; "
            f"loaded in {s['loaded_s']:.0f} s; {s['series']['samples']:,} samples, of which "
            f"{s['series']['spend']:,} spend and {s['series']['project_list']:,} project list; ms median / p99, "
            f"in turns)\n"
        )
        rows = []
        for label, side in (("exporter, idle", s["exporter"]), ("static floor", s["static"])):
            rows.append(
                [
                    label,
                    f"{side['identity']['median_ms']:.1f} / {side['identity']['p99_ms']:.1f}",
                    f"{side['gzip']['median_ms']:.1f} / {side['gzip']['p99_ms']:.1f}",
                    f"{side['identity']['n']} / {side['gzip']['n']}",
                    f"{side['identity']['bytes'] / 1e6:.2f} / {side['gzip']['bytes'] / 1e6:.2f}",
                    " / ".join(f"{side[kind]['server_cpu_ms_per_scrape']:.2f}" for kind in ("identity", "gzip")),
                ]
            )
        e, f = s["exporter"], s["static"]
        over = s["server_cpu_over_floor_ms"]
        rows.append(
            [
                "**exporter / floor**",
                f"{e['identity']['median_ms'] / f['identity']['median_ms']:.2f}x",
                f"{e['gzip']['median_ms'] / f['gzip']['median_ms']:.2f}x",
                "",
                "",
                f"{over['identity']:+.2f} / {over['gzip']:+.2f}",
            ]
        )
        out.append(_table(["server", "identity", "gzip", "scrapes", "body MB", "server CPU ms/scrape"], rows))
        out.append(
            f"\n**Exporter memory** (N={s['projects']:,}; MiB, VmRSS / peak VmHWM once loaded; the first after its "
            f"scrapes)\n"
        )
        out.append(
            _table(
                ["exporter", "RSS", "peak"],
                [[label, f"{m['rss_mib']:.0f}", f"{m['peak_mib']:.0f}"] for label, m in s["memory_mib"].items()],
            )
        )
    return "\n".join(out)


# -- command line ---------------------------------------------------------------------------------


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": DAY}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of this benchmark; run.py --spend takes their defaults."""
    parser = argparse.ArgumentParser(
        prog="python bench/spend.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--projects", type=int, default=1000, help="requests and CPU: projects")
    parser.add_argument("--models", type=int, default=20, help="requests and CPU: models")
    parser.add_argument("--now", default=DEFAULT_NOW, help="requests and CPU: the upstream's and the poller's clock")
    parser.add_argument("--lookback", type=_duration, default="2d", help="--poll.spend-lookback")
    parser.add_argument(
        "--long-lookback",
        type=_duration,
        default="35d",
        help="a second request count with this look-back (several usage pages); 0 skips it",
    )
    parser.add_argument(
        "--max-response-size",
        type=lambda t: int(t) * 2**20,
        default="256",
        help="MiB; --api.max-response-size of the measured poller (the default 16 MiB is tried once too)",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="--api.requests-per-second")
    parser.add_argument("--warm-polls", type=int, default=5, help="growing polls")
    parser.add_argument("--still-polls", type=int, default=3, help="polls of a still upstream")
    parser.add_argument(
        "--advance",
        type=float,
        default=300.0,
        help="seconds the clocks move before a growing poll; all of them must stay within --now's day",
    )
    parser.add_argument("--skip-polls", action="store_true", help="only the scrape part")
    parser.add_argument("--scrape-projects", type=int, default=10_000, help="scrapes: projects; 0 skips")
    parser.add_argument("--scrape-models", type=int, default=20, help="scrapes: models")
    parser.add_argument(
        "--scrape-spend-project-days",
        type=int,
        default=40_000,
        help="scrapes: the spend covers at most this many projects x days of the costs window "
        "(the simulator's costs take about 0.1 s per 1,000 project-days)",
    )
    parser.add_argument("--scrape-rate", type=float, default=2000.0, help="scrapes: --api.requests-per-second")
    parser.add_argument("--scrapes", type=int, default=100, help="timed scrapes per encoding")
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=300.0,
        help="scrapes: longest wait for every detail and the spend to be loaded",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON results file (default bench/results/...)")
    return parser.parse_args(argv)


def _serve_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="the upstream of bench/spend.py")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--projects", type=int, required=True)
    parser.add_argument("--models", type=int, default=None)
    parser.add_argument("--now", type=float, required=True)
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--spend-projects", type=int, default=None)
    return parser.parse_args(argv)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--serve" in argv:
        return serve(_serve_options(argv))
    if "--read-only" in argv:
        return read_only_main(argv)
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    from run import machine

    results = {"machine": machine(), "options": {k: str(v) for k, v in vars(args).items()}}
    gc.freeze()  # as the exporter does after start-up

    return measure_and_report("spend", results, lambda: results.update(run(args, log)), render, args.out, began, log)


if __name__ == "__main__":
    sys.exit(main())
