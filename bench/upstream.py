"""A fast loopback upstream for the benchmark: the projects list, pre-serialised.

It serves the same organization as `python -m exporter.simulator` (same generator, same
seed) and follows the same contract: GET /v1/organization/projects with `limit` 1..100
(default 20), `after` any known project id, `include_archived` false by default, Bearer
auth, the `{"error": {...}}` shape, and an `x-request-id` on every response.

Each project is serialised once at start; a page is a join of 100 ready fragments, so
the upstream costs a small fraction of what the exporter spends on a page, and a poll's
wall time is the exporter's own. An optional --page-delay sleeps before each list page
(asyncio, so concurrent cursor chains overlap their delays as real round trips do).

    python bench/upstream.py --listen 127.0.0.1:0 --projects 100000 --admin-key KEY [--page-delay 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import signal
import sys
from urllib.parse import parse_qs, urlsplit

from exporter.simulator import SimulatedOrganization, error_body

LIST_PATH = "/v1/organization/projects"
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}


class Catalog:
    """The organization's projects as JSON fragments, with a cursor index per view."""

    def __init__(self, projects: list[dict]):
        self.ids = [p["id"] for p in projects]
        self.fragments = [json.dumps(p, ensure_ascii=False).encode() for p in projects]
        self.position = {pid: i for i, pid in enumerate(self.ids)}
        self.active = [i for i, p in enumerate(projects) if p["status"] != "archived"]

    def page(self, after: str | None, limit: int, include_archived: bool) -> bytes | None:
        """The list document, or None when `after` is not a known project id."""
        if after is None:
            start = -1
        elif after in self.position:
            start = self.position[after]
        else:
            return None
        if include_archived:
            chosen = range(start + 1, min(start + 1 + limit, len(self.ids)))
            has_more = start + 1 + limit < len(self.ids)
        else:
            first = bisect.bisect_right(self.active, start)
            chosen = self.active[first : first + limit]
            has_more = first + limit < len(self.active)
        chosen = list(chosen)
        first_id = json.dumps(self.ids[chosen[0]]) if chosen else "null"
        last_id = json.dumps(self.ids[chosen[-1]]) if chosen else "null"
        return b"".join(
            (
                b'{"object": "list", "data": [',
                b", ".join(self.fragments[i] for i in chosen),
                f'], "first_id": {first_id}, "last_id": {last_id}, '
                f'"has_more": {"true" if has_more else "false"}}}'.encode(),
            )
        )


class Upstream:
    def __init__(self, catalog: Catalog, admin_key: str, page_delay: float):
        self.catalog = catalog
        self.authorization = f"Bearer {admin_key}"
        self.page_delay = page_delay
        self.request_ids = itertools.count(1)

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = (lines[0].split(" ") + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                status, body, delay = self.respond(method, target, headers)
                if delay:
                    await asyncio.sleep(delay)
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    f"x-request-id: req_bench_{next(self.request_ids)}\r\n"
                    f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()

    def respond(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes, float]:
        if headers.get("authorization") != self.authorization:
            return (
                401,
                error_body("Incorrect API key provided. You need an Admin API key.", code="invalid_api_key"),
                0.0,
            )
        url = urlsplit(target)
        if url.path.rstrip("/") != LIST_PATH:
            return 404, error_body(f"Invalid URL ({method} {url.path})"), 0.0
        if method != "GET":
            return 405, error_body(f"Invalid method ({method} {url.path})"), 0.0
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return 400, error_body("limit must be between 1 and 100", param="limit"), 0.0
        include_archived = query.get("include_archived", "false").lower() == "true"
        body = self.catalog.page(query.get("after"), limit, include_archived)
        if body is None:
            return 400, error_body("No such object for the `after` cursor", param="after"), 0.0
        return 200, body, self.page_delay


async def serve(host: str, port: int, upstream: Upstream) -> None:
    server = await asyncio.start_server(upstream.serve_connection, host, port, backlog=256)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    print(
        json.dumps(
            {
                "event": "upstream_listening",
                "base_url": f"http://{bound_host}:{bound_port}/v1",
                "projects": len(upstream.catalog.ids),
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT on loopback (default a free port)")
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--admin-key", default="sk-admin-bench")
    parser.add_argument("--page-delay", type=float, default=0.0, help="seconds slept before each list page")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    organization = SimulatedOrganization(args.projects, seed=args.seed)
    upstream = Upstream(Catalog(organization.all()), args.admin_key, args.page_delay)
    del organization
    asyncio.run(serve(host or "127.0.0.1", int(port), upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
