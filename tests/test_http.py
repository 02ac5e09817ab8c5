"""The HTTP server (exporter/server.py): content negotiation of /metrics, and the wire."""

from __future__ import annotations

import socket

import pytest

from exporter.server import accepts_gzip


@pytest.mark.parametrize(
    "header, gzip",
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.1", True),
        ("gzip; q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("identity", False),
        ("deflate, br", False),
        ("*", True),
        ("gzip;q=0, *", False),  # an explicit refusal beats the wildcard
        ("*;q=0, gzip", True),  # an explicit gzip beats the wildcard (RFC 9110 12.5.3)
    ],
)
def test_accepts_gzip(header, gzip):
    assert accepts_gzip(header) is gzip


@pytest.mark.slow
def test_an_http_0_9_request_gets_the_body_alone(simulator, start_exporter):
    server = simulator(50)
    process = start_exporter("--api.base-url", server.base_url, "--poll.interval", "1h", wait="ready")
    with socket.create_connection(("127.0.0.1", process.port), timeout=10) as connection:
        connection.sendall(b"GET /healthz\r\n\r\n")  # no version: HTTP/0.9
        received = b"".join(iter(lambda: connection.recv(65536), b""))
    assert received == b"ok\n"
