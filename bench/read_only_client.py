"""The poll-CPU floor: page through the projects list with httpx, reading the bytes only.

It walks the same cursor as the exporter (limit=100, include_archived=true, `after` the
page's last_id) with an httpx client set up like the exporter's, but parses no JSON: the
cursor and `has_more` are found by a byte search near the end of each page. It prints one
JSON line with its own CPU time and wall time for the walk (imports excluded).

    python bench/read_only_client.py --base-url URL --admin-key KEY
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx

_LAST_ID = b'"last_id": "'


def walk(base_url: str, admin_key: str) -> dict:
    client = httpx.Client(
        headers={"User-Agent": "bench-read-only-client", "Authorization": f"Bearer {admin_key}"},
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        follow_redirects=False,
        trust_env=False,
    )
    url = f"{base_url}/organization/projects"
    pages = size = 0
    after = None
    cpu, wall = time.process_time(), time.perf_counter()
    with client:
        while True:
            params = {"limit": 100, "include_archived": "true"}
            if after is not None:
                params["after"] = after
            response = client.get(url, params=params, timeout=60)
            response.raise_for_status()
            body = response.content
            pages += 1
            size += len(body)
            tail = body[-300:]
            if b'"has_more": true' not in tail:
                break
            start = tail.rindex(_LAST_ID) + len(_LAST_ID)
            after = tail[start : tail.index(b'"', start)].decode()
    return {"pages": pages, "bytes": size, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--admin-key", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(walk(args.base_url.rstrip("/"), args.admin_key)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
