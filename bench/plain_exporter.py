"""Baseline: a plain prometheus_client exporter of the same projects.

It polls the upstream with httpx (parsing the JSON), sets labelled Gauges, one child
per project and metric, and serves the default registry with `start_http_server`, which
renders (and gzips, when asked) the whole registry on every scrape.

    python bench/plain_exporter.py --base-url URL --admin-key KEY [--listen 127.0.0.1:0]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import httpx
from prometheus_client import Gauge, start_http_server

INFO = Gauge(
    "openai_project_info",
    "Project metadata; always 1.",
    ["project_id", "name", "status", "external_key_id", "residency"],
)
CREATED = Gauge("openai_project_created_timestamp_seconds", "Unix time the project was created.", ["project_id"])


def poll(base_url: str, admin_key: str) -> int:
    """Set the gauges from every page; returns the number of requests."""
    url = f"{base_url}/organization/projects"
    after, requests = None, 0
    with httpx.Client(headers={"Authorization": f"Bearer {admin_key}"}, trust_env=False) as client:
        while True:
            params = {"limit": 100, "include_archived": "true"}
            if after is not None:
                params["after"] = after
            response = client.get(url, params=params, timeout=60)
            requests += 1
            response.raise_for_status()
            page = response.json()
            for project in page["data"]:
                INFO.labels(
                    project["id"],
                    project.get("name") or "",
                    project.get("status") or "",
                    project.get("external_key_id") or "",
                    project.get("residency") or "",
                ).set(1)
                CREATED.labels(project["id"]).set(project["created_at"])
            if not page["has_more"]:
                return requests
            after = page["last_id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument(
        "--polls",
        type=int,
        default=1,
        help="polls before serving: later ones update the same children, as a long-running exporter does",
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    cpu, wall = time.process_time(), time.perf_counter()
    requests = poll(args.base_url.rstrip("/"), args.admin_key)
    poll_cpu, poll_wall = time.process_time() - cpu, time.perf_counter() - wall
    for _ in range(args.polls - 1):
        poll(args.base_url.rstrip("/"), args.admin_key)
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        json.dumps(
            {
                "event": "plain_listening",
                "port": server.server_address[1],
                "requests": requests,
                "poll_cpu_s": poll_cpu,
                "poll_wall_s": poll_wall,
                "polls": args.polls,
            }
        ),
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
