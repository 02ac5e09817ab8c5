"""The HTTP server's limits (exporter/server.py), against a real exporter process on loopback.

What a hostile or broken client on the network can do to the exporter: hold connections
open (plain or TLS), send a request head one byte at a time, open more connections than the
process has file descriptors, send a body after a GET, fail TLS handshakes by the hundred.
Each test measures what the exporter process spends on it (threads, RSS, CPU, descriptors,
the time until the connection is closed) and that a Prometheus-like client, one keep-alive
connection made before the attack, goes on scraping with a bounded latency.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import select
import socket
import ssl
import threading
import time

import pytest

from exporter.server import DEFAULT_MAX_CONNECTIONS, ExporterServer
from exporter.settings import SettingsError, load
from tests.support.keys import KEY
from tests.support.metrics import Metrics
from tests.support.net import get
from tests.support.process import NO_COLLECTORS, upstream_args
from tests.support.procfs import latency_probe, rss_kib
from tests.support.tls import Pki
from tests.support.waiting import wait_for

# --- readings of the exporter process -------------------------------------------------------


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of the whole process (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether `sock` has data (or an EOF) to read within `timeout`; poll, not select, which
    cannot watch a descriptor above 1023."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def closed_by_peer(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the other end closes `sock` (EOF or reset), reading and discarding what
    arrives; None if it is still open at `timeout`."""
    began = time.monotonic()
    while (left := began + timeout - time.monotonic()) > 0:
        if not readable(sock, left):
            break
        try:
            if not sock.recv(65536):
                return time.monotonic() - began
        except (ssl.SSLWantReadError, TimeoutError):
            continue
        except (ConnectionError, ssl.SSLError):
            return time.monotonic() - began
    return None


def probe_samples(probe) -> list[list]:
    """The [offset, latency, whole body] samples of a `latency_probe` process, once it is done."""
    out, _ = probe.communicate(timeout=120)
    samples = json.loads(out)
    assert samples, "the latency probe made no scrape"
    return samples


def assert_scrapes_unaffected(samples: list[list], bound: float) -> None:
    broken = [s for s in samples if not s[2]]
    assert not broken, f"{len(broken)} of {len(samples)} scrapes were not a whole 200: {broken[:3]}"
    worst = max(latency for _, latency, _ in samples)
    assert worst < bound, f"a scrape took {worst:.3f}s during the attack (bound {bound}s)"


# --- exporters ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def plain(simulator, start_exporter):
    """A plain-HTTP exporter with a first good poll served, polling again only after an hour."""
    server = simulator(250, seed=5)

    def start(*flags: str):
        # The server alone under test: no collector's refreshes growing the heap meanwhile.
        return start_exporter(*upstream_args(server, *NO_COLLECTORS, *flags, interval="1h"), wait="ready")

    return start


@pytest.fixture
def tls(simulator, start_exporter, pki, tmp_path):
    """A TLS exporter (its web config at tmp_path/web.yml) and a client context for it."""
    server = simulator(250, seed=5)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.path('server.crt')}\n  key_file: {pki.path('server.key')}\n")
    context = pki.client_context()

    def start(*flags: str):
        process = start_exporter(
            *upstream_args(server, "--web.config.file", str(web), *NO_COLLECTORS, *flags, interval="1h"), wait=None
        )
        process.wait_ready(tls=context)
        return process

    return start, context


def tls_connection(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A TLS connection to the exporter with its handshake done."""
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1")


def steady(pid: int) -> int:
    """The process's number of threads once it has not changed for half a second."""
    seen: list[int] = []

    def unchanged() -> int | None:
        seen.append(threads(pid))
        return seen[-1] if len(seen) >= 6 and len(set(seen[-6:])) == 1 else None

    return wait_for(unchanged, 20, interval=0.1, what="a steady number of threads")


def settle(pid: int, at_most: int, timeout: float = 20.0) -> int:
    """Wait until the process runs at most `at_most` threads; their number then."""
    return wait_for(lambda: (n := threads(pid)) <= at_most and n, timeout, what=f"at most {at_most} threads")


# --- idle connections -----------------------------------------------------------------------


@pytest.mark.slow
def test_tls_connections_that_send_nothing_are_closed_after_the_idle_timeout(tls):
    start, context = tls
    process = start("--web.idle-timeout", "2s")
    pid = process.proc.pid
    baseline = steady(pid)

    # 50 completed handshakes that then send nothing: 50 threads, until the idle timeout.
    silent: list[socket.socket] = []
    try:
        silent += [tls_connection(process.port, context) for _ in range(50)]
        began = time.monotonic()
        assert threads(pid) <= baseline + 50
        for connection in silent:
            waited = closed_by_peer(connection, began + 15 - time.monotonic())
            assert waited is not None, "a silent TLS connection was still open 15 s on (idle timeout 2 s)"
        took = time.monotonic() - began
        assert 1.5 <= took <= 2 + 4, f"the silent TLS connections were closed after {took:.1f}s; idle timeout 2s"
        settle(pid, baseline, timeout=10)
    finally:
        for connection in silent:
            connection.close()

    # A keep-alive scraper that stops reading: requests pipelined and never read, until the
    # exporter's writes make no progress for the idle timeout.
    with socket.socket() as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", process.port))
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as stalled:
            stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nAccept-Encoding: identity\r\n\r\n" * 200)
            began = time.monotonic()
            settle(pid, baseline, timeout=10)
            took = time.monotonic() - began
            assert took <= 2 + 4, f"the stalled TLS reader's thread was freed after {took:.1f}s; idle timeout 2s"
    assert get(process.port, "/healthz", tls=context).status_code == 200


# --- request heads --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_request_head_has_a_deadline_from_its_first_byte_and_idle_keep_alive_does_not(plain):
    process = plain("--web.read-header-timeout", "1s", "--web.idle-timeout", "4s")
    port = process.port

    # One byte every 0.25 s: each read gets data long before the idle timeout, and only a
    # deadline on the whole head ends it.
    trickle = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nX-Slow: " + b"a" * 200
    began = time.monotonic()
    closed_after = None
    for byte in head:
        try:
            trickle.send(bytes([byte]))
        except OSError:
            closed_after = time.monotonic() - began
            break
        if closed_by_peer(trickle, 0.25) is not None:
            closed_after = time.monotonic() - began
            break
    trickle.close()
    assert closed_after is not None, "a head sent one byte every 0.25 s was never cut off"
    assert 0.9 <= closed_after <= 1 + 2, f"the trickled head was cut off after {closed_after:.2f}s; deadline 1s"

    # A keep-alive connection idle between scrapes for longer than the head's deadline is
    # governed by the idle timeout alone.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.connect()
    kept = connection.sock
    for gap in (2.5, 0.0):  # idle between two scrapes: past the 1 s head deadline, inside the 4 s idle timeout
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "identity"})
        response = connection.getresponse()
        assert response.status == 200 and b"openai_up" in response.read()
        assert connection.sock is kept, "the kept-alive connection was closed between two scrapes"
        time.sleep(gap)
    waited = closed_by_peer(kept, 10)
    assert waited is not None and 3.5 <= waited <= 4 + 2, f"the idle connection was closed after {waited}s"
    connection.close()


# --- too many connections -------------------------------------------------------------------


@pytest.mark.slow
def test_a_flood_of_idle_connections_is_capped_and_scrapes_go_on(plain):
    process = plain()
    pid, port = process.proc.pid, process.port
    before = steady(pid)
    probe = latency_probe(port, 12.0)  # a Prometheus-like scraper: one keep-alive connection
    wait_for(lambda: threads(pid) > before, 10, what="the scraper's connection")
    baseline, rss_before = threads(pid), rss_kib(pid)

    flood: list[socket.socket] = []
    try:
        peak_threads, peak_rss = 0, 0
        for n in range(1000):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            flood[-1].setblocking(False)  # looked at below without waiting
            if n % 50 == 49:
                peak_threads, peak_rss = max(peak_threads, threads(pid)), max(peak_rss, rss_kib(pid))
        # The scraper holds one of the 64 connections (the harness's keep-alive client may hold one).
        assert peak_threads <= baseline + DEFAULT_MAX_CONNECTIONS - 1, (baseline, peak_threads)
        assert peak_rss - rss_before < 16 * 1024, f"RSS grew by {(peak_rss - rss_before) // 1024} MiB"

        # Every connection past the limit is answered 503 at once, without its request being read.
        def answered() -> int:
            count = 0
            for sock in flood:
                try:
                    count += sock.recv(64, socket.MSG_PEEK).startswith(b"HTTP/1.1 503 ")
                except (BlockingIOError, ConnectionError):
                    pass
            return count

        refused = 1000 - (DEFAULT_MAX_CONNECTIONS - 1)
        wait_for(lambda: answered() >= refused, 20, what="the 503s of the refused connections")
        assert answered() <= refused + 1
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            assert extra.recv(64).startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - began < 1.0, "a refused connection waited for its answer"

        assert_scrapes_unaffected(probe_samples(probe), bound=1.0)
        assert process.events("http_connection_refused"), "the refusals were not logged"
        assert len(process.events("http_connection_refused")) <= 3, "one line per refusal"
    finally:
        for sock in flood:
            sock.close()
    settle(pid, before + 1)
    assert get(port, "/healthz").status_code == 200


@pytest.mark.slow
def test_out_of_file_descriptors_backs_off_instead_of_spinning(plain):
    process = plain()
    pid, port = process.proc.pid, process.port
    before = steady(pid)
    probe = latency_probe(port, 8.0)
    wait_for(lambda: threads(pid) > before, 10, what="the scraper's connection")

    # Leave the exporter four descriptors to spare, then open forty connections: the first few
    # are accepted, the rest wait in the backlog while accept() fails with EMFILE.
    limit = open_descriptors(pid) + 4
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))  # the soft limit: no privilege needed
    flood: list[socket.socket] = []
    try:
        flood += [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        wait_for(lambda: open_descriptors(pid) >= limit, 10, what="the exporter out of descriptors")
        used, began = cpu_seconds(pid), time.monotonic()
        wait_for(lambda: time.monotonic() - began >= 3.0, 5, what="three seconds out of descriptors")
        share = (cpu_seconds(pid) - used) / (time.monotonic() - began)
        # The probe's scrapes are in that CPU too: about one every 20 ms.
        assert share < 0.25, f"the exporter used {share:.0%} of a CPU while out of descriptors"
        assert_scrapes_unaffected(probe_samples(probe), bound=1.0)
        failed = process.events("http_accept_failed")
        assert failed and "Too many open files" in failed[0]["error"], failed
        assert len(failed) <= 2, "one line per failed accept"
    finally:
        for sock in flood:
            sock.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    # Descriptors freed, connections are accepted again.
    wait_for(lambda: get(port, "/healthz", timeout=5).status_code == 200, 20, what="a new connection served")


# --- bodies ---------------------------------------------------------------------------------


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send `data` on a new connection; everything that came back, and whether the exporter closed it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received, began = b"", time.monotonic()
        while (left := began + timeout - time.monotonic()) > 0:
            if not readable(sock, left):
                return received, False
            chunk = sock.recv(65536)
            if not chunk:
                return received, True
            received += chunk
        return received, False


SMUGGLED = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n"


@pytest.mark.slow
def test_a_request_with_a_body_is_refused_and_its_body_never_read_as_a_request(plain):
    port = plain().port
    for head, status in (
        (b"Content-Length: %d\r\n" % len(SMUGGLED), b"413"),
        (b"Transfer-Encoding: chunked\r\n", b"400"),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"400"),
        (b"Content-Length: -1\r\n", b"400"),
    ):
        body = SMUGGLED if b"chunked" not in head else b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
        received, closed = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: exporter\r\n" + head + b"\r\n" + body)
        assert received.startswith(b"HTTP/1.1 " + status + b" "), (head, received[:200])
        assert received.count(b"HTTP/1.1 ") == 1, f"the body was answered as a request: {received[:400]!r}"
        assert b"openai_" not in received
        assert closed, f"the connection stayed open after a refused body ({head!r})"

    # An empty body is no body: answered, and the connection kept for the next request.
    received, closed = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + SMUGGLED, 3)
    assert received.startswith(b"HTTP/1.1 200 ") and received.count(b"HTTP/1.1 200 ") == 2 and not closed


# --- failed TLS handshakes ------------------------------------------------------------------


@pytest.mark.slow
def test_failed_tls_handshakes_are_counted_and_their_log_lines_limited(tls):
    start, context = tls
    process = start()
    began = time.time()
    for _ in range(200):  # plain HTTP to the TLS port
        received, _ = exchange(process.port, b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n", 5)
        assert b"openai_" not in received

    def counted() -> float:
        metrics = Metrics(get(process.port, "/metrics", tls=context).text)
        return metrics.value("openai_exporter_tls_handshake_failures_total")

    wait_for(lambda: counted() >= 200, 10, what="200 failed handshakes counted")
    assert counted() == 200
    text = get(process.port, "/metrics", tls=context).text
    assert "# HELP openai_exporter_tls_handshake_failures_total TLS handshakes" in text
    assert "# TYPE openai_exporter_tls_handshake_failures_total counter" in text

    # At most one line per 10 s, each with the count of those left out, and a line with the
    # rest once the burst is over: the lines account for every failure.
    def accounted() -> int:
        lines = process.events("tls_handshake_failed", since=began - 1)
        return sum(("client" in line) + line["suppressed"] for line in lines)

    wait_for(lambda: accounted() == 200, 20, what="log lines accounting for all 200 failures")
    lines = process.events("tls_handshake_failed", since=began - 1)
    assert len(lines) <= 4, f"{len(lines)} log lines for 200 failed handshakes"


# --- the accept loop's heartbeat ------------------------------------------------------------


class _Fleet:
    """What ExporterServer needs of a fleet to answer /healthz."""

    def __init__(self):
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()


def test_healthz_is_503_on_a_kept_alive_connection_once_the_accept_loop_has_stopped():
    server = ExporterServer("127.0.0.1", 0, _Fleet(), healthy=lambda: True)
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"ok\n")
        server.shutdown()  # the accept loop ends; this connection's thread still answers
        loop.join(10)
        assert not loop.is_alive()
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert response.status == 503 and b"accept loop not serving" in response.read()
    finally:
        connection.close()
        server.server_close()


# --- the flags ------------------------------------------------------------------------------


def test_the_limits_have_flags_with_defaults():
    settings = load([], {"OPENAI_ADMIN_KEY": KEY})
    assert (settings.web_idle_timeout, settings.web_read_header_timeout) == (120.0, 10.0)
    assert settings.web_max_connections == DEFAULT_MAX_CONNECTIONS == 64
    settings = load(
        ["--web.idle-timeout", "1.5s", "--web.read-header-timeout", "500ms", "--web.max-connections", "8"],
        {"OPENAI_ADMIN_KEY": KEY},
    )
    assert (settings.web_idle_timeout, settings.web_read_header_timeout, settings.web_max_connections) == (1.5, 0.5, 8)
    settings = load([], {"OPENAI_ADMIN_KEY": KEY, "OPENAI_EXPORTER_WEB_IDLE_TIMEOUT": "5m"})
    assert settings.web_idle_timeout == 300


@pytest.mark.parametrize(
    "flag, text, reason",
    [
        ("--web.idle-timeout", "0", "must be above zero"),
        ("--web.idle-timeout", "soon", "not a duration"),
        ("--web.read-header-timeout", "0s", "must be above zero"),
        ("--web.read-header-timeout", "-1s", "not a duration"),
        ("--web.max-connections", "0", "not a positive whole number"),
        ("--web.max-connections", "many", "not a positive whole number"),
    ],
)
def test_a_bad_limit_is_one_line(flag, text, reason):
    with pytest.raises(SettingsError) as error:
        load([f"{flag}={text}"], {"OPENAI_ADMIN_KEY": KEY})
    assert str(error.value).startswith(f"{flag}: ") and reason in str(error.value)
    assert "\n" not in str(error.value)
