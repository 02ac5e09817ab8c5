"""Fixtures: simulated organizations on loopback, upstream clients, and exporter processes.

Each fixture tears down what it started, even when the test fails half way.
"""

from __future__ import annotations

import threading

import pytest

from exporter.settings import AdminKey
from exporter.simulator import OrganizationServer
from exporter.upstream import ProjectsClient
from faultkit import exporter, kill_quietly
from helpers import KEY, ExporterProcess, clean_environment, start_simulator


@pytest.fixture
def make_server():
    """Start a simulated organization; stopped at teardown."""
    servers: list[OrganizationServer] = []

    def make(projects: int = 250, *, seed: int = 11, key: str = KEY, page_delay: float = 0.0,
             now: float | None = None) -> OrganizationServer:
        server = start_simulator(projects, seed=seed, key=key, page_delay=page_delay, now=now)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.fault = None
        server.stop()


@pytest.fixture
def server(make_server) -> OrganizationServer:
    """250 projects: three pages of 100, some of them archived."""
    return make_server(250)


@pytest.fixture
def make_client():
    """A ProjectsClient with test-sized timeouts; closed at teardown."""
    clients: list[ProjectsClient] = []

    def make(base_url: str, *, key: str | AdminKey = KEY, timeout: float = 5.0, max_retries: int = 3,
             max_pages: int = 10_000, stop: threading.Event | None = None, on_response=None,
             concurrency: int = 1) -> ProjectsClient:
        admin_key = key if isinstance(key, AdminKey) else AdminKey(value=key)
        kwargs = {"on_response": on_response} if on_response else {}
        if concurrency != 1:
            kwargs["concurrency"] = concurrency
        client = ProjectsClient(base_url=base_url, admin_key=admin_key, timeout=timeout,
                                max_retries=max_retries, max_pages=max_pages,
                                stop=stop or threading.Event(), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def start_exporter(tmp_path):
    """Start `python -m exporter`; killed at teardown if the test left it running."""
    processes: list[ExporterProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, key: str | None = KEY, port: int | None = None,
              listen: bool = True, wait: str | None = "listening") -> ExporterProcess:
        environment = env if env is not None else clean_environment()
        if key is not None and "OPENAI_ADMIN_KEY" not in environment:
            environment["OPENAI_ADMIN_KEY"] = key
        process = ExporterProcess(list(args), environment, tmp_path, port=port, listen=listen)
        processes.append(process)
        if wait == "listening":
            process.wait_listening()
        elif wait == "ready":
            process.wait_ready()
        return process

    yield start
    for process in processes:
        process.kill()


@pytest.fixture
def processes():
    """Exporter processes started the fault tests' way (tests/faultkit.py); killed at teardown."""
    started = []

    def start(*args, **kwargs):
        started.append(exporter(*args, **kwargs))
        return started[-1]
    yield start
    for process in started:
        kill_quietly(process)
