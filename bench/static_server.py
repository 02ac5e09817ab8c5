"""The scrape floor: serve one pre-rendered /metrics body, plain or pre-compressed gzip.

It uses the same HTTP stack and settings as the exporter (ThreadingHTTPServer, HTTP/1.1
keep-alive, TCP_NODELAY, headers then body), so the difference between the two is the
exporter's per-scrape work. The bodies are taken from the exporter itself once.

    python bench/static_server.py --identity FILE --gzip FILE [--listen 127.0.0.1:0]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def accepts_gzip(header: str | None) -> bool:
    """Whether Accept-Encoding allows gzip (q=0 refuses it), as the exporter decides."""
    for token in (header or "").split(","):
        coding, _, params = token.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            params = params.strip().lower()
            return not params.startswith("q=") or params[2:].strip("0.") != ""
    return False


class StaticServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], identity: bytes, gzipped: bytes):
        self.identity = identity
        self.gzipped = gzipped
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: StaticServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        gzip = accepts_gzip(self.headers.get("Accept-Encoding"))
        body = self.server.gzipped if gzip else self.server.identity
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identity", type=Path, required=True, help="file with the plain body")
    parser.add_argument("--gzip", type=Path, required=True, help="file with the gzip body")
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = StaticServer((host or "127.0.0.1", int(port)), args.identity.read_bytes(), args.gzip.read_bytes())
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"event": "static_listening", "port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
