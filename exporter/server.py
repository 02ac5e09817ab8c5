"""HTTP endpoints: /metrics, /healthz, /readyz and a small / page.

Each connection runs in its own thread, up to --web.max-connections at once. /metrics writes
bytes already rendered by the last poll plus the exporter's small live metrics; it never
calls upstream or waits on a poll.

The accept loop (`serve_forever`) only accepts. The web config's files, the TLS handshake
and every request run in the connection's own thread, so nothing a client sends and
nothing in the web config can stall or end the loop. The loop refuses connections beyond
the limit at once, backs off when the process is out of file descriptors, and shuts down
the sockets whose TLS handshake or request head outlives its deadline.
"""

from __future__ import annotations

import errno
import html
import io
import os
import re
import selectors
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, quote, urlsplit

import structlog
from prometheus_client import Counter

from exporter import __version__
from exporter.exposition import Buffer, Exposition, LiveTail
from exporter.priority import SCRAPES
from exporter.webconfig import WebConfig, WebConfigWatcher

if TYPE_CHECKING:
    from exporter.organizations import Fleet

log = structlog.get_logger("exporter.http")
REALM = 'Basic realm="openai-projects-exporter", charset="UTF-8"'
DEFAULT_IDLE_TIMEOUT = 120.0  # seconds; --web.idle-timeout
DEFAULT_READ_HEADER_TIMEOUT = 10.0  # seconds; --web.read-header-timeout
# --web.max-connections. Prometheus keeps one connection per target and scraping server; an
# HA pair, a probe or two and a person with curl are a handful. Scrapes share one GIL, so more
# threads add no throughput, only memory and descriptors: 64 leaves room for any real use and
# keeps a flood of idle connections to 64 threads, well inside a 1024-descriptor limit.
DEFAULT_MAX_CONNECTIONS = 64
_TURN = 0.5  # seconds the accept loop waits for a connection before it looks at its deadlines again
# /healthz answers 503 once the accept loop has not turned for this long; it turns every _TURN.
HEARTBEAT_LIMIT = 10.0
# accept() out of descriptors: wait 5 ms, doubling up to 1 s, as Go's net/http does.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.005, 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_LOG_EVERY = 10.0  # seconds between two lines of an event a client can make happen at will
_BUSY_BODY = b"too many connections\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
_DIGITS = re.compile(r"[0-9]+")


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
        sent = sock.sendmsg(views[first : first + _IOV_MAX])
        while first < len(views) and sent >= len(views[first]):
            sent -= len(views[first])
            first += 1
        if sent:
            views[first] = views[first][sent:]


_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16


@dataclass(frozen=True)
class Limits:
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def _timeval(seconds: float) -> bytes:
    """A struct timeval for SO_RCVTIMEO and SO_SNDTIMEO; never zero, which would mean no limit."""
    whole = int(seconds)
    micro = min(999_999, round((seconds - whole) * 1e6))
    return struct.pack("ll", whole, micro if whole or micro else 1)


class _Throttled:
    """A log event a client can cause at will: at most one line per `every` seconds.

    Each line says how many were left out since the one before (`suppressed`), and the
    accept loop writes a line of the count alone once a burst is over (`flush`).
    """

    def __init__(self, event: str, level: str = "info", every: float = _LOG_EVERY):
        self.event, self.level, self.every = event, level, every
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, **fields: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._next = self._suppressed, 0, now + self.every
        getattr(log, self.level)(self.event, suppressed=suppressed, **fields)

    def flush(self) -> None:
        if not self._suppressed:
            return
        now = time.monotonic()
        with self._lock:
            if not self._suppressed or now < self._next:
                return
            suppressed, self._suppressed, self._next = self._suppressed, 0, now + self.every
        getattr(log, self.level)(self.event, suppressed=suppressed)


class _Deadlines:
    """Sockets that must finish a phase, a TLS handshake or a request head, by a time.

    A socket timeout (or a kernel one) bounds each wait for data, not a whole phase: a client
    sending a byte every second renews it forever. The accept loop looks here each turn and
    shuts an overdue socket down, which ends the read its thread is blocked in.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[socket.socket, float] = {}
        self._expired: set[socket.socket] = set()

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._lock:
            self._due[sock] = time.monotonic() + seconds

    def disarm(self, sock: socket.socket) -> bool:
        """The phase is over: whether in time; if not, the socket has been shut down."""
        with self._lock:
            self._due.pop(sock, None)
            if sock in self._expired:
                self._expired.discard(sock)
                return False
            return True

    def reap(self) -> None:
        if not self._due:  # the usual case: no head or handshake in progress
            return
        now = time.monotonic()
        with self._lock:
            overdue = [sock for sock, due in self._due.items() if due <= now]
            for sock in overdue:
                del self._due[sock]
                self._expired.add(sock)
        for sock in overdue:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the descriptor itself, under any TLS layer
            except OSError:
                pass


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow scraper never holds up shutdown
    request_queue_size = 128

    def __init__(
        self,
        host: str,
        port: int,
        fleet: Fleet,
        healthy: Callable[[], bool],
        web_config: WebConfigWatcher | None = None,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ):
        self.fleet = fleet
        self.healthy = healthy
        self.web_config = web_config
        self.limits = Limits(idle_timeout, read_header_timeout, max_connections)
        self.deadlines = _Deadlines()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = False
        self._stopped = threading.Event()
        self._stopped.set()  # not serving yet
        self.heartbeat: float | None = None  # monotonic time of the accept loop's last turn; None: not running
        self._backoff = 0.0
        self._handshake_failed = _Throttled("tls_handshake_failed")
        self._refused = _Throttled("http_connection_refused", "warning")
        self._accept_failed = _Throttled("http_accept_failed", "error")
        self.handshake_failures: Counter | None = None
        if web_config is not None:  # TLS comes only with a web config; without one the count stays out
            self.handshake_failures = Counter(
                "openai_exporter_tls_handshake_failures_total",
                "TLS handshakes with clients of /metrics and the other endpoints that failed or timed out.",
                registry=fleet.registry,
            )
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

    # -- the accept loop --------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = _TURN) -> None:
        """Accept connections until shutdown(); an error in one turn is logged and the loop goes on."""
        self._stopped.clear()
        # Non-blocking, so a connection reset between select() and accept() cannot block the loop.
        self.socket.setblocking(False)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                while not self._stopping:
                    self.heartbeat = time.monotonic()
                    try:
                        if selector.select(poll_interval) and not self._stopping:
                            self._accept()
                        self.deadlines.reap()
                        for throttled in (self._handshake_failed, self._refused, self._accept_failed):
                            throttled.flush()
                    except Exception as exc:  # a bug of ours must not stop the serving for good
                        log.error("http_accept_loop_error", error=_one_line(exc))
                        time.sleep(_TURN)  # not a spin, should it repeat
        finally:
            self.heartbeat = None
            self._stopping = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever() and wait until it has returned."""
        self._stopping = True
        self._stopped.wait()

    def serving(self) -> bool:
        """Whether the accept loop runs and has turned lately: what /healthz reports besides the scheduler.

        /healthz is answered by a connection's thread, so a stuck or ended loop cannot answer it on a
        new connection at all: the probe times out, which a liveness probe counts as a failure. This
        covers the rest: a connection accepted before the loop stopped, kept alive, must not say ok.
        """
        beat = self.heartbeat
        return beat is not None and time.monotonic() - beat < HEARTBEAT_LIMIT

    def _accept(self) -> None:
        try:
            sock, address = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:  # ECONNABORTED and the like: that connection alone
                log.debug("http_accept_error", error=_one_line(exc))
                return
            # Out of file descriptors: the connection stays in the backlog and select() reports it
            # again at once, so retrying now would spin. The connections already accepted are
            # served meanwhile, and a closing one frees a descriptor for the next accept.
            self._backoff = min(max(2 * self._backoff, _BACKOFF_FIRST), _BACKOFF_MAX)
            self._accept_failed(error=_one_line(exc), retry_in=self._backoff)
            time.sleep(self._backoff)
            return
        self._backoff = 0.0
        if not self._slots.acquire(blocking=False):
            self._refuse(sock, address)
            return
        try:
            threading.Thread(target=self._connection, args=(sock, address), name="http-connection", daemon=True).start()
        except BaseException:
            self._slots.release()
            sock.close()
            raise

    def _refuse(self, sock: socket.socket, address: Any) -> None:
        """A connection past --web.max-connections: answered at once, without reading its request."""
        config = self.web_config.last if self.web_config is not None else None
        try:
            if config is None or config.tls is None:  # a TLS client could not read a plain 503
                sock.send(_BUSY, socket.MSG_DONTWAIT)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(65536, socket.MSG_DONTWAIT)  # what it sent already, so the close is no reset
        except OSError:
            pass
        finally:
            sock.close()
        self._refused(client=address[0], max_connections=self.limits.max_connections)

    # -- one connection, in its own thread --------------------------------------------------------

    def _connection(self, sock: socket.socket, address: Any) -> None:
        request = sock
        try:
            config = self.web_config.current() if self.web_config is not None else None
            if config is not None and config.tls is not None:
                request = config.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                if not self._handshake(request, address):
                    return
            self.finish_request(request, address)
        except Exception:
            self.handle_error(request, address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def _handshake(self, conn: ssl.SSLSocket, address: Any) -> bool:
        limit = self.limits.read_header_timeout
        conn.settimeout(limit)  # each wait for data; the deadline bounds the handshake as a whole
        self.deadlines.arm(conn, limit)
        try:
            conn.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self.deadlines.disarm(conn)
            self._handshake_failure(address, " ".join(str(exc).split())[:200])
            return False
        if not self.deadlines.disarm(conn):
            self._handshake_failure(address, f"not done within {limit:g}s")
            return False
        # Each later read and write waits at most the idle timeout. It must be Python's socket
        # timeout: ssl retries EAGAIN without end on a blocking socket, so the kernel timeouts
        # plain sockets use would never fire.
        conn.settimeout(self.limits.idle_timeout)
        return True

    def _handshake_failure(self, address: Any, reason: str) -> None:
        if self.handshake_failures is not None:
            self.handshake_failures.inc()
        self._handshake_failed(client=address[0], reason=reason)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a scraper that hangs up mid-body is routine, not a traceback
            log.debug("http_connection_error", client=client_address[0], error=_one_line(exc))
        else:
            log.error("http_request_failed", client=client_address[0], error=_one_line(exc))


def _one_line(exc: BaseException | None) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus scrapes the same target again and again
    disable_nagle_algorithm = True  # headers and body leave in separate writes; no 40 ms delayed-ACK stall
    timeout = None  # see setup(): the kernel times a plain socket out, not Python
    _armed = False  # the request head being read has a deadline (server.deadlines)
    _config: WebConfig | None = None  # the web config this request is answered under

    def setup(self) -> None:
        if not isinstance(self.request, ssl.SSLSocket):
            # A Python-level socket timeout turns one big send into a loop of partial sends, each
            # retaking the GIL, which during a poll costs a switch interval apiece. A blocking
            # socket with kernel timeouts sends the body in one call and still frees the thread
            # of a client that stops reading, or an idle keep-alive connection, after the idle
            # timeout. A TLS socket has a Python-level timeout instead (ExporterServer._handshake).
            limit = _timeval(self.server.limits.idle_timeout)
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        super().setup()

    def handle_one_request(self) -> None:
        # The idle timeout bounds the wait for a request's first byte; from that byte on, the
        # whole head has --web.read-header-timeout. A head that came in whole with its first
        # read, as a scrape's does, needs no deadline: peek() does the read readline() would.
        try:
            arrived = cast(io.BufferedReader, self.rfile).peek(1)
        except TimeoutError:
            arrived = b""
        if not arrived:
            self.close_connection = True
            return
        if b"\r\n\r\n" in arrived or b"\n\n" in arrived:
            super().handle_one_request()
            return
        self.server.deadlines.arm(self.connection, self.server.limits.read_header_timeout)
        self._armed = True
        try:
            super().handle_one_request()
        finally:
            if self._armed:
                self._head_in_time()

    def parse_request(self) -> bool:
        if not self._armed:
            return super().parse_request()
        try:
            parsed = super().parse_request()  # reads the headers
        except OSError:
            if self._head_in_time():
                raise
            return False  # it wrote an error answer to the socket its deadline shut down
        return self._head_in_time() and parsed

    def _head_in_time(self) -> bool:
        """Lift the head's deadline: whether it was read in time (if not, its socket is shut down)."""
        self._armed = False
        if self.server.deadlines.disarm(self.connection):
            return True
        self.close_connection = True
        return False

    server_version = f"openai-projects-exporter/{__version__}"

    def do_GET(self) -> None:
        if self._refused_body():
            return
        watcher = self.server.web_config
        self._config = watcher.current() if watcher is not None else None
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
            if not self.server.serving():
                self._text(503, "http accept loop not serving\n")
            elif not self.server.healthy():
                self._text(503, "scheduler not running\n")
            else:
                self._text(200, "ok\n")
        elif url.path == "/readyz":
            self._readyz()
        elif url.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", [self._index().encode()])
        else:
            self._text(404, "not found; try /metrics\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _authorized(self) -> bool:
        watcher, config = self.server.web_config, self._config
        if watcher is None or config is None:
            return True
        return watcher.authorized(config, self.headers.get("Authorization"))

    def _refused_body(self) -> bool:
        """A request with a body is answered 400 or 413 and its connection closed.

        Left unread, a body would be parsed as the next request on the connection. No endpoint
        takes one, so it is refused rather than read: nothing to bound, nothing to wait for.
        """
        lengths = [value.strip() for value in self.headers.get_all("Content-Length") or ()]
        if "Transfer-Encoding" in self.headers:
            status, text = 400, "request bodies are not accepted\n"
        elif not lengths:
            return False
        elif len(set(lengths)) > 1 or not _DIGITS.fullmatch(lengths[0]):
            status, text = 400, "bad Content-Length\n"
        elif int(lengths[0]) == 0:
            return False
        else:
            status, text = 413, "request bodies are not accepted\n"
        self.close_connection = True
        self._send(status, "text/plain; charset=utf-8", [text.encode()], {"Connection": "close"})
        return True

    def _probe(self, alias: str) -> None:
        fleet = self.server.fleet
        if not fleet.multi:
            self._text(400, "/probe serves the organizations of --config.file; this exporter has one: see /metrics\n")
            return
        organization = fleet.get(alias) if alias else None
        if organization is None:
            known = ", ".join(sorted(a for a in fleet.organizations if a))
            self._text(
                400,
                f"unknown organization {alias!r}; known: {known}\n"
                if alias
                else f"missing ?organization=ALIAS; known: {known}\n",
            )
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
        lines = [
            f"{alias}: {'ready' if o.published.ready else 'not ready: no successful poll yet'}"
            for alias, o in sorted(fleet.organizations.items())
        ]
        self._text(200 if fleet.ready else 503, "\n".join(lines) + "\n")

    def _text(self, status: int, text: str) -> None:
        self._send(status, "text/plain; charset=utf-8", [text.encode()])

    def _send(
        self, status: int, content_type: str, chunks: Sequence[Buffer], headers: dict[str, str] | None = None
    ) -> None:
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
                *(f"{name}: {value}" for name, value in (self._config.headers if self._config else ())),
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
                last = (
                    f"failed {time.time() - outcome.finished_at:.0f}s ago: "
                    f"{html.escape(outcome.reason)}: {html.escape(outcome.message)}"
                )
            counts = (
                "no snapshot yet"
                if snapshot is None
                else ", ".join(f"{html.escape(k)}: {v}" for k, v in snapshot.counts.items())
            )
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
