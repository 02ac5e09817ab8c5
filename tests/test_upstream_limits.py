"""The upstream's answers past the exporter's bounds, through a real exporter process and socket.

The fault matrix (tests/support/faults.py) holds the faults the simulated organization can
serve: a body past --api.max-response-size, a gzip bomb, a page over the limit asked for,
JSON nested too deeply. Here are the ones it cannot: bodies that never end, plain or gzipped,
a body that trickles in a byte at a time, and 1,024 retries in a row. A small raw-socket
upstream serves them. Each failure must be a clean `poll_failed` with its reason, reached
in bounded time and memory.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.settings import AdminKey, parse_size
from exporter.simulator import Response
from exporter.upstream import BACKOFF_CAP, PAGE_SIZE, PollError, ProjectsClient, parse_page
from tests.support.keys import KEY
from tests.support.process import NO_COLLECTORS
from tests.support.procfs import rss_kib
from tests.support.upstream import Switchboard, error, fetch, header

MiB = 1024 * 1024
DEFAULT_BOUND = 16 * MiB  # --api.max-response-size's default
# Peak RSS allowed to an exporter that refuses a body at the default bound: its own size at
# start (about 40 MiB) and the 16 MiB bound read and joined, with room for a loaded machine.
# An unbounded read of these bodies peaks in gigabytes.
PEAK_RSS_KIB = 160 * 1024
SAFETY_CAP = 1024 * MiB  # the raw upstream never sends more than this, whatever the client does


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most the process has ever had resident."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def page_document(count: int = 3, has_more: bool = False) -> bytes:
    items = [
        {
            "id": f"proj_{i}",
            "object": "organization.project",
            "name": f"P{i}",
            "created_at": 1_700_000_000 + i,
            "archived_at": None,
            "status": "active",
        }
        for i in range(count)
    ]
    return json.dumps(
        {"object": "list", "data": items, "first_id": items[0]["id"], "last_id": items[-1]["id"], "has_more": has_more}
    ).encode()


# -- a raw upstream ------------------------------------------------------------------------


class RawUpstream:
    """A loopback HTTP/1.1 server that answers every request with `respond(connection)`.

    `respond` writes the whole answer, head and body, however it likes (a trickle, a body that
    never ends); a client that hangs up ends it. `arrivals` records when each request came.
    """

    def __init__(self, respond: Callable[[socket.socket, threading.Event], None]):
        self._respond = respond
        self.stopping = threading.Event()
        self.arrivals: list[float] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="raw-upstream", daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                while not self.stopping.is_set():
                    request = b""
                    while b"\r\n\r\n" not in request:
                        data = connection.recv(65536)
                        if not data:
                            return
                        request += data
                    self.arrivals.append(time.monotonic())
                    self._respond(connection, self.stopping)
            except OSError:  # the exporter hung up: what these tests expect it to do
                return

    def stop(self) -> None:
        self.stopping.set()
        self._listener.close()


@pytest.fixture
def raw_upstream():
    servers: list[RawUpstream] = []

    def start(respond: Callable[[socket.socket, threading.Event], None]) -> RawUpstream:
        servers.append(RawUpstream(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def head(status: str = "200 OK", **headers: str) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        "Content-Type: application/json",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def huge_declared_body(connection: socket.socket, stopping: threading.Event) -> None:
    """A valid page followed by whitespace up to 500 MB, all declared in Content-Length."""
    total = 500_000_000
    body = page_document()
    connection.sendall(head(Content_Length=str(total)) + body)
    sent, block = len(body), b" " * 65536
    while sent < total and not stopping.is_set():
        chunk = block[: total - sent]
        connection.sendall(chunk)
        sent += len(chunk)


def endless_chunked_body(connection: socket.socket, stopping: threading.Event) -> None:
    """A valid page's start, then chunks of whitespace that never end (up to the safety cap)."""
    connection.sendall(head(Transfer_Encoding="chunked"))
    block = b" " * 65536
    frame = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    sent = 0
    while sent < SAFETY_CAP and not stopping.is_set():
        connection.sendall(frame)
        sent += len(block)
    connection.shutdown(socket.SHUT_RDWR)  # no last chunk: the body never ends well


def endless_gzip_body(connection: socket.socket, stopping: threading.Event) -> None:
    """gzip of whitespace that never ends: about 1 KB on the wire per MiB inflated."""
    connection.sendall(head(Transfer_Encoding="chunked", Content_Encoding="gzip"))
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b" " * MiB
    inflated = 0
    while inflated < SAFETY_CAP and not stopping.is_set():
        data = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
        connection.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        inflated += len(block)
    connection.shutdown(socket.SHUT_RDWR)


ENDLESS = {
    "500 MB in Content-Length": huge_declared_body,
    "endless chunked body": endless_chunked_body,
    "endless gzip body": endless_gzip_body,
}


@pytest.mark.slow
@pytest.mark.parametrize("respond", ENDLESS.values(), ids=ENDLESS.keys())
def test_a_body_past_the_bound_fails_the_poll_at_once_in_bounded_memory(raw_upstream, start_exporter, respond):
    upstream = raw_upstream(respond)
    process = start_exporter("--api.base-url", upstream.base_url, "--poll.interval", "2s", "--poll.timeout", "10s")
    failed = process.wait_events("poll_failed", count=2, timeout=30)
    for record in failed[:2]:
        assert record["reason"] == "invalid_response", record
        assert f"larger than {DEFAULT_BOUND} bytes" in record["message"], record
        assert record["duration"] < 3.0, record  # read up to the bound, not to the end
    peak = peak_rss_kib(process.proc.pid)
    assert peak < PEAK_RSS_KIB, f"peak RSS {peak // 1024} MiB"
    assert rss_kib(process.proc.pid) < PEAK_RSS_KIB
    metrics = process.metrics()
    assert metrics.value("openai_up") == 0
    assert metrics.value("openai_poll_failures_total", reason="invalid_response") >= 2
    assert process.events("request_retried") == []  # a body too large is not asked for again
    assert process.get("/healthz").status_code == 200


def trickle(connection: socket.socket, stopping: threading.Event) -> None:
    """A valid page, declared in full, sent one byte every 0.2 s."""
    body = page_document(100)
    connection.sendall(head(Content_Length=str(len(body))))
    for byte in body:
        if stopping.wait(0.2):
            return
        connection.sendall(bytes([byte]))


@pytest.mark.slow
def test_a_trickling_body_fails_at_the_poll_deadline_and_the_next_polls_keep_their_schedule(
    raw_upstream, start_exporter
):
    upstream = raw_upstream(trickle)
    # Every byte arrives well within the request timeout: only the poll deadline can end the read.
    process = start_exporter(
        "--api.base-url",
        upstream.base_url,
        "--poll.interval",
        "4s",
        "--poll.timeout",
        "2.5s",
        "--api.timeout",
        "30s",
        *NO_COLLECTORS,  # the list's requests alone reach this upstream
    )
    failed = process.wait_events("poll_failed", count=3, timeout=30)[:3]
    for record in failed:
        assert record["reason"] == "timeout", record
        assert "deadline" in record["message"], record
        assert 2.5 <= record["duration"] <= 2.5 + 0.6, record
    # One request per poll, every 4 s: no poll is skipped or held up by the one before.
    starts = upstream.arrivals[:3]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 2 and all(abs(gap - 4.0) <= 0.5 for gap in gaps), gaps
    assert process.metrics().value("openai_poll_failures_total", reason="timeout") >= 3


@pytest.mark.slow
def test_the_response_size_flag_bounds_a_real_page(simulator, start_exporter):
    server = simulator(250)  # three pages, about 20 KB each
    small = start_exporter(
        "--api.base-url", server.base_url, "--poll.interval", "1s", "--api.max-response-size", "4KiB"
    )
    record = small.wait_event("poll_failed")
    assert record["reason"] == "invalid_response" and "larger than 4096 bytes" in record["message"], record
    enough = start_exporter(
        "--api.base-url", server.base_url, "--poll.interval", "1s", "--api.max-response-size", "64KiB"
    )
    assert enough.wait_event("poll_succeeded")["projects"] == 250


@pytest.mark.slow
def test_a_thousand_retries_then_a_computed_backoff_is_a_clean_failure(simulator, start_exporter):
    """1,024 answers that say `retry-after-ms: 0`, then one that says nothing: the backoff for
    attempt 1,024 is computed, capped, and the poll fails as it would on attempt 6."""
    server = simulator(50)
    Switchboard(server).arm(
        lambda s, r, n: error(503, "busy", {"retry-after-ms": "0"} if n < 1024 else {}, type_="server_error")
    )
    process = start_exporter(
        "--api.base-url",
        server.base_url,
        "--api.max-retries",
        "100000",
        "--poll.interval",
        "60s",
        "--poll.timeout",
        "7s",  # below the least backoff that attempt 1,025 may compute (8 s): it always fails there
        "--api.requests-per-second",
        "100000",  # a thousand retries within the deadline
        *NO_COLLECTORS,
    )
    record = process.wait_event("poll_failed", timeout=30)
    assert record["reason"] == "http_error", record
    assert "HTTP 503" in record["message"] and "would pass the poll deadline" in record["message"], record
    assert len(process.events("request_retried")) == 1024
    assert process.metrics().value("openai_poll_failures_total", reason="http_error") == 1


# -- the same bounds without a process -------------------------------------------------------


def _encoded(encoding: str, body: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "raw deflate":  # what some servers send as "deflate"
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return compressor.compress(body) + compressor.flush()
    return body


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "raw deflate"])
def test_the_bound_is_on_the_decoded_body_to_the_byte(scripted_upstream, encoding):
    body = page_document(100)
    headers = {} if encoding == "identity" else {"Content-Encoding": encoding.split()[-1]}
    board = scripted_upstream({None: Response(200, _encoded(encoding, body), headers)})
    for bound, accepted in ((len(body), True), (len(body) - 1, False)):
        client = ProjectsClient(
            base_url=board.base_url,
            admin_key=AdminKey(value=KEY),
            timeout=5,
            max_retries=0,
            max_pages=5,
            stop=threading.Event(),
            max_response_size=bound,
        )
        try:
            if accepted:
                assert len(fetch(client).projects) == 100
            else:
                with pytest.raises(PollError) as failure:
                    fetch(client)
                assert failure.value.reason == "invalid_response"
                assert f"larger than {bound} bytes" in failure.value.message
        finally:
            client.close()


def test_an_encoding_the_exporter_did_not_offer_is_an_invalid_response(scripted_upstream, make_client):
    board = scripted_upstream({None: Response(200, b"\x00\x01", {"Content-Encoding": "br"})})
    with pytest.raises(PollError) as failure:
        fetch(make_client(board.base_url, max_retries=0))
    assert (failure.value.reason, failure.value.message) == (
        "invalid_response",
        "unsupported Content-Encoding 'br'",
    )
    assert header(board.arrivals[0].request, "Accept-Encoding") == "gzip, deflate"


def test_backoff_stays_capped_for_any_attempt():
    client = ProjectsClient(
        base_url="http://127.0.0.1:9/v1",
        admin_key=AdminKey(value="sk-admin-x"),
        timeout=1,
        max_retries=10**9,
        max_pages=1,
        stop=threading.Event(),
    )
    try:
        for attempt in (1023, 1024, 5000, 10**9):
            assert BACKOFF_CAP / 2 <= client._backoff(attempt) <= BACKOFF_CAP
    finally:
        client.close()


def test_a_page_over_the_limit_is_refused_before_its_projects_are_built():
    body = page_document(PAGE_SIZE + 1, has_more=True)
    with pytest.raises(PollError) as failure:
        parse_page(body)
    assert failure.value.reason == "invalid_response"
    assert f"more than the {PAGE_SIZE} asked for" in failure.value.message
    assert len(parse_page(page_document(PAGE_SIZE)).projects) == PAGE_SIZE


@pytest.mark.parametrize("depth", [1025, 100_000])
def test_json_nested_past_what_a_parser_takes_is_an_invalid_response(depth):
    for body in (
        b'{"data": ' + b"[" * depth + b"]" * depth + b', "has_more": false}',
        b'{"data": [{"id": "\\ud800", "x": ' + b"[" * depth + b"]" * depth + b'}], "has_more": false}',
    ):
        with pytest.raises(PollError) as failure:
            parse_page(body)
        assert (failure.value.reason, failure.value.message) == (
            "invalid_response",
            "the response is nested too deeply",
        )


@pytest.mark.parametrize(
    "text, size",
    [
        ("16MiB", 16 * MiB),
        ("16Mi", 16 * MiB),
        ("64KiB", 65536),
        ("65536", 65536),
        ("1.5GB", 1_500_000_000),
        ("10 kb", 10_000),
        ("2gib", 2 * 1024 * MiB),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "16M", "16 MiBs", "-1", "1e9", "MiB", "2TiB", "9" * 400])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)
