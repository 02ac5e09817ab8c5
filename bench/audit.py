"""Benchmark the audit log: detail requests per hour against refreshing every project at every list poll.

    python bench/audit.py                # 1,000 projects, time compressed 10x, both runs side by side
    python bench/audit.py --k 20 --serial

Time runs K times faster than the target's (`--k`): a list poll every 300/K s, a details
interval of 3600/K s, a governance change every 60/K s. Each upstream is governance.py's
recording simulator (fixed counts per project, every project active) in a child process,
started through this file (`python bench/audit.py serve`) so that a change thread runs
beside it: it makes one change every 60/K s, each in a project not changed before, among
those the four default collectors detect (create an API key, delete one, add a user,
change a user's role, set the spend limit), each under an actor of its own, and prints
one JSON line per change (time, kind, project, resource id, actor).

Run "audit": the exporter with its default collectors (the audit log among them), costs and
usage off, `--poll.details-interval` 3600/K s. Run "baseline": the same with the audit log
off and the details interval equal to the list poll's, so that every project is refreshed at
every list poll. After each run's backfill (every collector's `details_first_refresh` lines),
its first round begins half a details interval later; from there a window of `--audit-window`
details intervals (audit) or `--baseline-window` list polls (baseline) is counted: the detail
requests (every path under /organization/projects/<id>/ and /organization/spend_limit) and,
apart, the audit log's and the list's requests, per hour of the target's time. For every
change after the backfill, the change line the exporter logged (same event, project and
resource id): its latency against the list-poll interval, and whether it named the actor.

It prints markdown tables and the verdicts and writes every figure to
bench/results/audit-<UTC time>.json. Every child is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

CHANGE_EVENT = "audit_bench_change"
# What the change thread does, and the change line (event, id field) the exporter logs for it.
KINDS = {
    "create_key": ("api_key_created", "api_key_id"),
    "delete_key": ("api_key_removed", "api_key_id"),
    "add_user": ("project_user_added", "user_id"),
    "change_role": ("project_user_role_changed", "user_id"),
    "spend_limit": ("spend_limit_changed", "project_id"),
}


# == child: the recording simulator with a change thread ================================================


def make_change(organization, project_id: str, kind: str, number: int, rng: random.Random) -> str:
    """One change of `kind` in the project; the id of what it changed."""
    governance = organization.governance
    if kind == "create_key":
        return governance.add_api_key(project_id)["id"]
    if kind == "add_user":
        return governance.add_user(project_id)["id"]
    if kind == "spend_limit":
        governance.set_spend_limit(project_id, 1_000_000 + number)  # cents: a value no project had
        return project_id
    snapshot = governance.snapshot(project_id)
    if kind == "delete_key":
        return governance.remove_api_key(project_id, rng.choice(snapshot["api_keys"])["id"])
    user = rng.choice(snapshot["users"])
    governance.set_user_role(project_id, user["id"], "member" if user["role"] == "owner" else "owner")
    return user["id"]


def change_loop(organization, every: float, seed: int) -> None:
    """One change in each slot of `every` seconds, at a random time in it, each in a project not changed
    before, under an actor of its own. At random, not at a fixed period: a period that divides the list
    poll's would put every change at the same few offsets from the polls, and so its latency."""
    rng = random.Random(seed)
    projects = [project["id"] for project in organization.all(include_archived=False)]
    rng.shuffle(projects)
    slot = time.time()
    for number, project_id in enumerate(projects):
        time.sleep(max(0.0, slot + rng.uniform(0, every) - time.time()))
        slot += every
        kind = rng.choice(list(KINDS))
        if number % 2:  # half at the dashboard, half through a service account's key
            actor_id, who = f"user-bench{number:05d}", {"session_user": f"user-bench{number:05d}"}
        else:
            actor_id, who = f"key_bench{number:05d}", {"api_key": f"key_bench{number:05d}", "service_account": "svc"}
        with organization.audit.actor(**who):
            resource_id = make_change(organization, project_id, kind, number, rng)
        record = {"event": CHANGE_EVENT, "at": time.time(), "kind": kind, "project_id": project_id}
        print(json.dumps(record | {"resource_id": resource_id, "actor_id": actor_id}), flush=True)


def serve(argv: list[str]) -> int:
    """governance.py's recording simulator, with the change thread started as it begins to serve."""
    import governance

    import exporter.simulator as simulator

    parser = argparse.ArgumentParser(prog="audit.py serve", add_help=False)
    parser.add_argument("--every", type=float, required=True, help="seconds between changes")
    parser.add_argument("--seed", type=int, default=1)
    args, rest = parser.parse_known_args(argv)

    class ChangingServer(simulator.OrganizationServer):
        def serve_forever(self, poll_interval: float = 0.5) -> None:
            thread = threading.Thread(target=change_loop, args=(self.organization, args.every, args.seed), daemon=True)
            thread.start()
            super().serve_forever(poll_interval)

    simulator.OrganizationServer = ChangingServer  # governance.serve imports it when called
    return governance.serve(rest)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    sys.exit(serve(sys.argv[2:]))

import measure  # noqa: E402 - the child above needs none of the bench's modules
from governance import LIST_PATH, SIM_READY, Upstream, _table, units_of, wait_loaded  # noqa: E402
from procs import BenchError, Proc, measure_and_report, python  # noqa: E402

AUDIT_PATH = "/v1/organization/audit_logs"
ORGANIZATION_SPEND_LIMIT = "/v1/organization/spend_limit"
COLLECTORS = 4  # users, service-accounts, api-keys, spend-limits: the defaults that read details


class ChangingUpstream(Upstream):
    """Upstream (governance.py) started through this file's `serve`: the same records, and a change thread."""

    def __init__(self, name: str, projects: int, every: float, seed: int, nice: int):
        self.name, self.projects, self.rtt = name, projects, 0.0
        self.proc = python(
            name,
            "bench/audit.py",
            "serve",
            *("--every", f"{every:g}", "--seed", str(seed)),
            *("--projects", str(projects), "--admin-key", measure.ADMIN_KEY, "--nice", str(nice)),
        )
        _, ready = self.proc.wait_event(SIM_READY, timeout=120 + projects / 500)
        self.base_url = ready["base_url"]
        self.host, _, port = self.base_url.split("/")[2].partition(":")
        self.port = int(port)
        self.rows = []
        self.peak_in_flight = 0

    def changes(self) -> list[dict]:
        return [record for _, record in self.proc.events(CHANGE_EVENT)]


def is_detail(path: str) -> bool:
    return path.startswith(LIST_PATH + "/") or path == ORGANIZATION_SPEND_LIMIT


def log_time(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


class Run:
    """One simulator and one exporter; the times that frame its window."""

    def __init__(self, name: str, opts: argparse.Namespace, audit: bool):
        self.name, self.audit = name, audit
        self.poll = 300 / opts.k
        self.details_interval = 3600 / opts.k if audit else self.poll
        self.window = self.details_interval * opts.audit_window if audit else self.poll * opts.baseline_window
        self.up = ChangingUpstream(f"simulator[{name}]", opts.projects, 60 / opts.k, opts.seed, opts.upstream_nice)
        extra = ["--no-collector.costs", "--no-collector.usage", "--api.requests-per-second", f"{opts.rate:g}"]
        extra += ["--poll.details-interval", f"{self.details_interval:g}s"]
        if not audit:
            extra.append("--no-collector.audit-log")
        self.proc: Proc
        self.proc, self.port = measure.start_exporter(self.up.base_url, f"{self.poll:g}s", *extra)
        self.started = time.time()
        self.loaded = self.backfill_end = self.window_start = self.window_end = 0.0

    def wait_loaded(self, projects: int, rate: float) -> None:
        self.loaded = wait_loaded(self.proc, COLLECTORS, projects, timeout=120 + 4 * units_of(projects) / rate)
        self.up.fetch()
        self.backfill_end = max(row[0] for row in self.up.rows if is_detail(row[3]) and row[0] <= self.loaded)
        # The schedule's first round begins half a details interval after the backfill ends.
        self.window_start = self.backfill_end + self.details_interval / 2
        self.window_end = self.window_start + self.window

    def stop(self) -> None:
        self.proc.stop()
        self.up.stop()


def figures(run: Run, opts: argparse.Namespace) -> dict:
    """Requests per hour of the target's time in the window, and each change's line after the backfill."""
    rows = run.up.fetch()
    start, end = run.window_start, run.window_end
    inside = [row for row in rows if start <= row[0] < end]
    count = {
        "details": sum(1 for row in inside if is_detail(row[3])),
        "audit_log": sum(1 for row in inside if row[3] == AUDIT_PATH),
        "list": sum(1 for row in inside if row[3] == LIST_PATH),
    }
    # A compressed second is K of the target's: an hour of the target's is 3600 / K compressed seconds.
    per_hour = {name: n / run.window * 3600 / opts.k for name, n in count.items()}
    units = units_of(opts.projects)
    result: dict = {
        "audit_log": run.audit,
        "poll_interval_s": run.poll,
        "details_interval_s": run.details_interval,
        "window_s": run.window,
        "seconds_to_loaded": run.loaded - run.started,
        "requests_in_window": count,
        "per_hour": per_hour,
        "rounds_in_window": run.window / run.details_interval,
        "details_beyond_rounds": count["details"] - units * run.window / run.details_interval,
        "failures": [record for _, record in run.proc.events("details_fetch_failed")][:5],
        "audit_failures": [record for _, record in run.proc.events("audit_log_read_failed")][:5],
    }
    # Changes after the backfill, up to one list poll before the window ends: each had a whole poll to be logged.
    last = end - run.poll
    changes = [c for c in run.up.changes() if run.backfill_end < c["at"] <= last]
    result["changes_after_window"] = sum(1 for c in run.up.changes() if last < c["at"] <= end)
    polls = sorted(log_time(record) for _, record in run.proc.events("poll_succeeded"))
    outcomes = []
    for change in changes:
        event, id_field = KINDS[change["kind"]]
        lines = [
            record
            for _, record in run.proc.events(event)
            if record.get("project_id") == change["project_id"] and record.get(id_field) == change["resource_id"]
        ]
        outcome = dict(change)
        if lines:
            actor = lines[0].get("actor") or {}
            outcome["latency_s"] = log_time(lines[0]) - change["at"]
            outcome["actor_named"] = change["actor_id"] in (actor.get("user_id"), actor.get("api_key_id"))
            outcome["actor"] = actor or None
            # A list poll reads the audit log just before it logs poll_succeeded: a line before the first
            # such poll after the change came from the round's own refresh, before the event was read.
            read = next((at for at in polls if at > change["at"]), None)
            outcome["before_event_read"] = read is None or log_time(lines[0]) < read
        outcomes.append(outcome)
    latencies = [o["latency_s"] for o in outcomes if "latency_s" in o]
    result["changes"] = {
        "made": len(outcomes),
        "logged": len(latencies),
        "latency_median_s": statistics.median(latencies) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "over_poll_interval": sum(1 for x in latencies if x > run.poll),
        "actor_named": sum(1 for o in outcomes if o.get("actor_named")),
        "unnamed_logged_before_event_read": sum(
            1 for o in outcomes if "latency_s" in o and not o["actor_named"] and o["before_event_read"]
        ),
        "by_kind": {kind: sum(1 for o in outcomes if o["kind"] == kind) for kind in KINDS},
        "each": outcomes,
    }
    return result


def measure_runs(opts: argparse.Namespace, log) -> dict:
    """Both runs, side by side (or one after the other with --serial); each stopped before returning."""
    specs = (("audit", True), ("baseline", False))
    results: dict = {}
    groups = [[spec] for spec in specs] if opts.serial else [list(specs)]
    for group in groups:
        runs = []
        try:
            for name, audit in group:
                runs.append(Run(name, opts, audit))
                log(f"{name}: started, {opts.projects:,} projects, K = {opts.k:g}")
            for run in runs:
                run.wait_loaded(opts.projects, opts.rate)
                log(
                    f"{run.name}: loaded in {run.loaded - run.started:.0f} s; window {run.window:.0f} s "
                    f"from {run.window_start - time.time():.0f} s from now"
                )
            for run in sorted(runs, key=lambda r: r.window_end):
                while time.time() < run.window_end + 1:
                    if run.proc.popen.poll() is not None or run.up.proc.popen.poll() is not None:
                        raise BenchError(f"{run.name}: a child exited: {run.proc.tail()} {run.up.proc.tail()}")
                    time.sleep(min(10.0, max(0.1, run.window_end + 1 - time.time())))
                results[run.name] = figures(run, opts)
                log(f"{run.name}: window done")
        finally:
            for run in runs:
                run.stop()
    a, b = results["audit"], results["baseline"]
    results["ratio"] = b["per_hour"]["details"] / a["per_hour"]["details"]
    return results


# -- report ----------------------------------------------------------------------------------------------


def targets(results: dict) -> list[dict]:
    a = results["audit"]
    c = a["changes"]
    ratio_ok = results["ratio"] >= 10
    logged_ok = c["made"] > 0 and c["logged"] == c["made"] and c["over_poll_interval"] == 0
    return [
        {
            "target": "detail requests per hour, baseline / audit log",
            "value": round(results["ratio"], 2),
            "limit": "≥ 10",
            "verdict": "PASS" if ratio_ok else "FAIL",
        },
        {
            "target": "changes logged within one list-poll interval",
            "value": f"{c['logged'] - c['over_poll_interval']} of {c['made']}",
            "limit": "all",
            "verdict": "PASS" if logged_ok else "FAIL",
        },
    ]


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def render(results: dict) -> str:
    out = ["**Targets**\n"]
    out.append(
        _table(
            ["target", "value", "limit", "verdict"],
            [[t["target"], t["value"], t["limit"], f"**{t['verdict']}**"] for t in results["targets"]],
        )
    )
    k = results["options"]["k"]
    rows = []
    for name in ("audit", "baseline"):
        r = results[name]
        n, h = r["requests_in_window"], r["per_hour"]
        rows.append(
            [
                name,
                f"{r['poll_interval_s']:g} / {r['details_interval_s']:g}",
                f"{r['window_s']:g}",
                f"{n['details']:,}",
                f"{h['details']:,.0f}",
                f"{h['audit_log']:,.0f}",
                f"{h['list']:,.0f}",
                f"{r['details_beyond_rounds']:+,.0f}",
            ]
        )
    out.append(f"\n**Requests** (K = {k:g}; per hour of the target's time = per compressed second × 3600 / K)\n")
    out.append(
        _table(
            [
                "run",
                "list poll / details interval s",
                "window s",
                "detail requests in window",
                "detail per hour",
                "audit log per hour",
                "list per hour",
                "detail beyond whole rounds",
            ],
            rows,
        )
    )
    rows = []
    for name in ("audit", "baseline"):
        c, poll = results[name]["changes"], results[name]["poll_interval_s"]
        audit = results[name]["audit_log"]
        rows.append(
            [
                name,
                c["made"],
                c["logged"],
                _s(c["latency_median_s"]),
                _s(c["latency_max_s"]),
                f"{c['over_poll_interval']} (> {poll:g} s)",
                c["actor_named"] if audit else "– (audit log off)",
                c["unnamed_logged_before_event_read"] if audit else "–",
            ]
        )
    out.append("\n**Changes after the backfill** (those of the window's last list poll left out)\n")
    out.append(
        _table(
            [
                "run",
                "made",
                "logged",
                "latency median s",
                "latency max s",
                "over the poll interval",
                "actor",
                "no actor: logged by the round before the event was read",
            ],
            rows,
        )
    )
    return "\n".join(out)


# -- entry point -----------------------------------------------------------------------------------------


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import run as bench_run

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    opt = parser.add_argument
    opt("--projects", type=int, default=1000, help="active projects")
    opt("--k", type=float, default=10, help="time compression: intervals and the change period divided by K")
    opt("--rate", type=float, default=200, help="--api.requests-per-second, high enough not to be the limit")
    opt("--audit-window", type=float, default=2, help="details intervals counted in the audit run")
    opt("--baseline-window", type=float, default=6, help="list polls counted in the baseline run")
    opt("--serial", action="store_true", help="the runs one after the other instead of side by side")
    opt("--seed", type=int, default=1, help="of the change thread: projects, kinds, keys and users")
    opt("--upstream-nice", type=int, default=0, help="niceness of the simulators")
    opt("--out", type=Path, default=None, help="JSON results file (default bench/results/...)")
    opts = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    results: dict = {"machine": bench_run.machine(), "options": {k: v for k, v in vars(opts).items() if k != "out"}}

    def measure() -> None:
        results.update(measure_runs(opts, log))
        results["targets"] = targets(results)

    return measure_and_report("audit", results, measure, render, opts.out, began, log)


if __name__ == "__main__":
    sys.exit(main())
