"""HTTP endpoints: /metrics, /healthz, /readyz and a small / page.

Each request runs in its own thread. /metrics writes bytes already rendered by the last
poll plus the exporter's small live metrics; it never calls upstream or waits on a poll.
"""

from __future__ import annotations

import html
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import structlog

from exporter import __version__
from exporter.exposition import Buffer, Exposition, LiveTail
from exporter.priority import SCRAPES
from exporter.webconfig import WebConfigWatcher

if TYPE_CHECKING:
    from exporter.organizations import Fleet

log = structlog.get_logger("exporter.http")
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120  # seconds
REALM = 'Basic realm="openai-projects-exporter", charset="UTF-8"'


def accepts_gzip(header: str | None) -> bool:
    """Whether Accept-Encoding allows gzip; an explicit `gzip` outranks `*` (RFC 9110 12.5.3)."""
    qualities: dict[str, float] = {}
    for token in (header or "").split(","):
        coding, _, params = token.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[coding.strip().lower()] = quality
    return qualities.get("gzip", qualities.get("*", 0.0)) > 0


def write_all(sock: socket.socket, chunks: Sequence[Buffer]) -> None:
    """Write the chunks in as few system calls as possible.

    One sendmsg carries up to IOV_MAX buffers. Each system call gives up the GIL and must
    win it back afterwards, which during a poll can take a switch interval: the response
    head, the body and its live tail leave together.
    """
    if isinstance(sock, ssl.SSLSocket):
        # TLS has no scatter-gather. Joining would copy the whole body at every scrape;
        # a few separate writes cost a few records instead.
        for chunk in chunks:
            sock.sendall(chunk)
        return
    views = [memoryview(chunk) for chunk in chunks if chunk]
    first = 0
    while first < len(views):
        sent = sock.sendmsg(views[first:first + _IOV_MAX])
        while first < len(views) and sent >= len(views[first]):
            sent -= len(views[first])
            first += 1
        if sent:
            views[first] = views[first][sent:]


_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow scraper never holds up shutdown
    request_queue_size = 128

    def __init__(self, host: str, port: int, fleet: Fleet, healthy: Callable[[], bool],
                 web_config: WebConfigWatcher | None = None):
        self.fleet = fleet
        self.healthy = healthy
        self.web_config = web_config
        if host in ("", "::") and socket.has_ipv6:
            self.address_family = socket.AF_INET6
            host = "::"
        elif ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Listen on IPv4 too when bound to "::", as Go exporters do for ":PORT".
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        # A scraper that hangs up mid-body is routine, not a traceback on stderr.
        exc = sys.exc_info()[1]
        log.debug("http_connection_error", client=client_address[0], error=f"{type(exc).__name__}: {exc}"[:200])

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        tls = self.web_config.current().tls if self.web_config else None
        if tls is not None:
            # The handshake happens in the request's own thread (finish_request), so a slow
            # or plain-HTTP client never holds up the accept loop.
            sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.info("tls_handshake_failed", client=client_address[0], reason=" ".join(str(exc).split())[:200])
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus scrapes the same target again and again
    disable_nagle_algorithm = True  # headers and body leave in separate writes; no 40 ms delayed-ACK stall
    timeout = None  # see setup(): the kernel times the socket out, not Python

    def setup(self) -> None:
        # A Python-level socket timeout turns one big send into a loop of partial sends, each
        # retaking the GIL, which during a poll costs a switch interval apiece. A blocking
        # socket with kernel timeouts sends the body in one call and still frees the thread
        # of a client that stops reading, or an idle keep-alive connection, after IDLE_TIMEOUT.
        limit = struct.pack("ll", IDLE_TIMEOUT, 0)
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        super().setup()
    server_version = f"openai-projects-exporter/{__version__}"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/healthz" and not self._authorized():  # liveness probes carry no credentials
            self._send(401, "text/plain; charset=utf-8", [b"unauthorized\n"], {"WWW-Authenticate": REALM})
            return
        fleet = self.server.fleet
        if url.path == "/metrics":
            self._scrape(*fleet.metrics_page())
        elif url.path == "/probe":
            self._probe(parse_qs(url.query).get("organization", [""])[-1])
        elif url.path == "/healthz":
            ok = self.server.healthy()
            self._text(200 if ok else 503, "ok\n" if ok else "scheduler not running\n")
        elif url.path == "/readyz":
            self._readyz()
        elif url.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", [self._index().encode()])
        else:
            self._text(404, "not found; try /metrics\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _authorized(self) -> bool:
        watcher = self.server.web_config
        if watcher is None:
            return True
        return watcher.authorized(watcher.current(), self.headers.get("Authorization"))

    def _probe(self, alias: str) -> None:
        fleet = self.server.fleet
        if not fleet.multi:
            self._text(400, "/probe serves the organizations of --config.file; this exporter has one: see /metrics\n")
            return
        organization = fleet.get(alias) if alias else None
        if organization is None:
            known = ", ".join(sorted(a for a in fleet.organizations if a))
            self._text(400, f"unknown organization {alias!r}; known: {known}\n" if alias else
                       f"missing ?organization=ALIAS; known: {known}\n")
            return
        self._scrape(organization.published.current, organization.tail)

    def _scrape(self, exposition: Exposition, tail: LiveTail) -> None:
        with SCRAPES.serving():  # polls pause at their next page boundary until it is written
            gzip = accepts_gzip(self.headers.get("Accept-Encoding"))
            chunks, content_type = tail.scrape(exposition, self.headers.get("Accept"), gzip)
            self._send(200, content_type, chunks, {"Content-Encoding": "gzip"} if gzip else {})

    def _readyz(self) -> None:
        fleet = self.server.fleet
        if not fleet.multi:
            ready = fleet.ready
            self._text(200 if ready else 503, "ready\n" if ready else "not ready: no successful poll yet\n")
            return
        lines = [f"{alias}: {'ready' if o.published.ready else 'not ready: no successful poll yet'}"
                 for alias, o in sorted(fleet.organizations.items())]
        self._text(200 if fleet.ready else 503, "\n".join(lines) + "\n")

    def _text(self, status: int, text: str) -> None:
        self._send(status, "text/plain; charset=utf-8", [text.encode()])

    def _send(self, status: int, content_type: str, chunks: Sequence[Buffer],
              headers: dict[str, str] | None = None) -> None:
        self.log_request(status)
        # The head is built here and leaves in the body's system call (send_header and
        # end_headers would write it on its own): one GIL round trip per response, not two.
        # HTTP/0.9 has no head at all.
        head = b""
        if self.request_version != "HTTP/0.9":
            lines = [
                f"{self.protocol_version} {status} {self.responses[status][0]}",
                f"Server: {self.version_string()}",
                f"Date: {self.date_time_string()}",
                f"Content-Type: {content_type}",
                f"Content-Length: {sum(len(c) for c in chunks)}",
                "Cache-Control: no-store",
                *(f"{name}: {value}" for name, value in (headers or {}).items()),
            ]
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        write_all(self.connection, [head] if self.command == "HEAD" else [head, *chunks])

    def _index(self) -> str:
        fleet = self.server.fleet
        rows = []
        for alias, organization in sorted(fleet.organizations.items(), key=lambda item: item[0] or ""):
            published = organization.published
            outcome, snapshot = published.last_outcome, published.current.snapshot
            if outcome is None:
                last = "no poll has finished yet"
            elif outcome.ok:
                last = f"succeeded {time.time() - outcome.finished_at:.0f}s ago in {outcome.duration:.2f}s"
            else:
                last = (f"failed {time.time() - outcome.finished_at:.0f}s ago: "
                        f"{html.escape(outcome.reason)}: {html.escape(outcome.message)}")
            counts = ("no snapshot yet" if snapshot is None else
                      ", ".join(f"{html.escape(k)}: {v}" for k, v in snapshot.counts.items()))
            link = f' (<a href="/probe?organization={quote(alias)}">/probe</a>)' if alias else ""
            name = html.escape(alias) if alias else "Organization"
            rows.append(f"<li><b>{name}</b>{link}: last poll {last}; projects: {counts}.</li>")
        return (
            "<!doctype html><html><head><meta charset=utf-8><title>OpenAI projects exporter</title></head>"
            f"<body><h1>OpenAI projects exporter {__version__}</h1><ul>{''.join(rows)}</ul>"
            '<ul><li><a href="/metrics">/metrics</a></li><li><a href="/healthz">/healthz</a></li>'
            '<li><a href="/readyz">/readyz</a></li></ul></body></html>\n'
        )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("http_request", client=self.client_address[0], request=format % args)
