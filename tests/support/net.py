"""Loopback ports and HTTP requests: the one HTTP get of the tests, and ports that stay free."""

from __future__ import annotations

import http.client
import socket
import ssl

import httpx


def free_port() -> int:
    """A port free at this instant. A child process that binds it later may lose it to another
    process: `ExporterProcess` starts again on another port when that happens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReservedPort:
    """A loopback port held by a bound socket that does not listen: a connection to it is
    refused, and no other process can take it, until `release()`. A server that sets
    SO_REUSEADDR (the simulated organization does) can bind it while it is held."""

    def __init__(self):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def release(self) -> None:
        self._socket.close()

    def __enter__(self) -> ReservedPort:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_PLAIN = httpx.Client(trust_env=False)  # one client: building one costs an SSL context each time


def get(
    port: int,
    path: str,
    *,
    headers: dict | None = None,
    auth: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
    method: str = "GET",
) -> httpx.Response:
    """One request to a loopback server. httpx would ask for gzip by default; the tests say
    what they accept, identity unless `headers` says otherwise."""
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    if tls is None:
        return _PLAIN.request(method, f"http://{host}:{port}{path}", headers=sent, auth=auth, timeout=timeout)
    with httpx.Client(verify=tls, trust_env=False, timeout=timeout) as client:
        return client.request(method, f"https://{host}:{port}{path}", headers=sent, auth=auth)


def raw_get(
    port: int, path: str, headers: dict | None = None, method: str = "GET", timeout: float = 10.0
) -> tuple[int, dict, bytes]:
    """Status, headers and the body exactly as sent: no client-side decompression."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()
