"""The scrape client: keep-alive GETs of /metrics, each timed until the last body byte.

One connection per Scraper, reused across scrapes (http.client reconnects by itself when
a server closes after each response, as prometheus_client's does). For gzip the client
sends `Accept-Encoding: gzip` and reads the compressed body; nothing is decompressed
inside the timing, for any server.
"""

from __future__ import annotations

import http.client
import math
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Scrape:
    started: float  # time.time()
    ended: float
    seconds: float
    size: int


class Scraper:
    def __init__(self, port: int, timeout: float = 60.0):
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def get(self, path: str = "/metrics", gzip: bool = False) -> tuple[Scrape, bytes]:
        headers = {"Accept-Encoding": "gzip" if gzip else "identity", "Accept": "text/plain"}
        started, t0 = time.time(), time.perf_counter()
        self._conn.request("GET", path, headers=headers)
        response = self._conn.getresponse()
        body = response.read()
        seconds = time.perf_counter() - t0
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
        if gzip != (response.getheader("Content-Encoding") == "gzip"):
            raise RuntimeError(f"GET {path}: Content-Encoding {response.getheader('Content-Encoding')!r}")
        return Scrape(started, started + seconds, seconds, len(body)), body

    def series(self, count: int, gzip: bool, warmup: int = 2) -> list[Scrape]:
        for _ in range(warmup):
            self.get(gzip=gzip)
        return [self.get(gzip=gzip)[0] for _ in range(count)]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Scraper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summary(scrapes: list[Scrape]) -> dict:
    """Median and p99 (nearest rank) in milliseconds, with the count and body size."""
    times = sorted(s.seconds for s in scrapes)
    if not times:
        return {"n": 0}
    p99 = times[max(0, math.ceil(0.99 * len(times)) - 1)]
    return {
        "n": len(times),
        "median_ms": statistics.median(times) * 1000,
        "p99_ms": p99 * 1000,
        "bytes": scrapes[-1].size,
    }
