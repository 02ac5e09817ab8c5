"""The fixtures of the test harness, registered by tests/conftest.py.

Each one tears down what it started, even when the test fails half way:

- `simulator(...)`: a simulated organization on loopback (exporter.simulator).
- `scripted_upstream(pages)`: an upstream that answers every list request from a script
  of pages keyed by cursor; its `Switchboard` records the requests.
- `make_client(base_url, ...)`: an upstream client (ProjectsClient) with test-sized timeouts.
- `start_exporter(*args, ...)`: `python -m exporter` as a process (`ExporterProcess`).
- `cli_main(args, env)`: `exporter.cli.main` in this process, for what returns before
  anything starts (refused flags, `--config.check`).
- `hang`: an event a fault can wait on to hold a request open; set at teardown.
"""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from exporter.cli import main
from exporter.settings import AdminKey
from exporter.simulator import OrganizationServer
from exporter.upstream import ProjectsClient
from tests.support.keys import KEY
from tests.support.process import ExporterProcess
from tests.support.upstream import Switchboard, scripted, start_simulator, stop_simulator


@pytest.fixture
def simulator():
    """Start a simulated organization: `simulator(projects=250, seed=11, key=KEY, page_delay=0, now=None)`."""
    servers: list[OrganizationServer] = []

    def make(
        projects: int = 250, *, seed: int = 11, key: str = KEY, page_delay: float = 0.0, now: float | None = None
    ) -> OrganizationServer:
        servers.append(start_simulator(projects, seed=seed, key=key, page_delay=page_delay, now=now))
        return servers[-1]

    yield make
    for server in servers:
        stop_simulator(server)


@pytest.fixture
def scripted_upstream(simulator):
    """An upstream that answers from `pages` ({cursor: Response}, None for the first page), or from
    `fault(server, request, n)`; returns the Switchboard that records its requests."""

    def make(pages: dict | None = None, *, fault=None) -> Switchboard:
        assert (pages is None) != (fault is None), "give pages or a fault"
        return Switchboard(simulator(0)).arm(fault or scripted(pages))

    return make


@pytest.fixture
def make_client():
    """A ProjectsClient with test-sized timeouts; closed at teardown."""
    clients: list[ProjectsClient] = []

    def make(
        base_url: str,
        *,
        key: str | AdminKey = KEY,
        timeout: float = 5.0,
        max_retries: int = 3,
        max_pages: int = 10_000,
        stop: threading.Event | None = None,
        on_response=None,
        concurrency: int = 1,
    ) -> ProjectsClient:
        admin_key = key if isinstance(key, AdminKey) else AdminKey(value=key)
        kwargs = {"on_response": on_response} if on_response else {}
        if concurrency != 1:
            kwargs["concurrency"] = concurrency
        client = ProjectsClient(
            base_url=base_url,
            admin_key=admin_key,
            timeout=timeout,
            max_retries=max_retries,
            max_pages=max_pages,
            stop=stop or threading.Event(),
            **kwargs,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def start_exporter(tmp_path):
    """Start `python -m exporter *args`; killed at teardown if the test left it running.

    `key` is OPENAI_ADMIN_KEY (None: unset), `env` adds to a clean environment, `port` pins the
    port, `wait` is "listening", "ready" or None.
    """
    processes: list[ExporterProcess] = []

    def start(
        *args: str,
        key: str | None = KEY,
        env: dict[str, str] | None = None,
        port: int | None = None,
        listen: bool = True,
        wait: str | None = "listening",
    ) -> ExporterProcess:
        process = ExporterProcess.start(list(args), tmp_path, key=key, env=env, port=port, listen=listen)
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
def cli_main(monkeypatch, capsys):
    """`exporter.cli.main(args)` in this process with `env` as its only OPENAI_* variables;
    returns a CompletedProcess. Only for runs that return before anything starts."""

    def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        for name in [n for n in os.environ if n.startswith("OPENAI_")]:
            monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


@pytest.fixture
def hang():
    """An event a fault can wait on to hold a request open; set at teardown so nothing stays stuck."""
    event = threading.Event()
    yield event
    event.set()
