"""The admin key: where it comes from, how a rotated secret is picked up, and that it never leaks.

Every test runs the real exporter process against a simulated organization on loopback.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from exporter.simulator import OrganizationServer, SimulatedOrganization
from faultkit import (
    KEY, KEY_SECRET_PART, ROWS, Switchboard, assert_no_secret, error, events_between, http_get, records,
    ok, poll_outcome, real_document, run_exporter, timestamp, wait_event,
)
from helpers import free_port, header, snapshot_series, wait_for

NEW_KEY = "sk-admin-rotated-5e2b9d71c04a8f36"


def _serve(projects: int = 150, key: str = KEY, seed: int = 4) -> OrganizationServer:
    server = OrganizationServer(SimulatedOrganization(projects, seed=seed), key)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server


@pytest.fixture
def upstream():
    servers: list[OrganizationServer] = []

    def make(**kwargs) -> OrganizationServer:
        servers.append(_serve(**kwargs))
        return servers[-1]
    yield make
    for server in servers:
        server.fault = None
        server.stop()


def kubernetes_secret(directory: Path, key_text: str) -> Path:
    """A secret volume as the kubelet lays it out: key -> ..data/key, ..data -> ..<timestamp>."""
    directory.mkdir(parents=True, exist_ok=True)
    _swap_secret(directory, key_text, "..2024_01_01_00_00_00.000000001")
    (directory / "admin-key").symlink_to("..data/admin-key")
    return directory / "admin-key"


def _swap_secret(directory: Path, key_text: str, version: str) -> None:
    """The kubelet's atomic update: write a new version directory, then rename a new ..data link over the old."""
    (directory / version).mkdir()
    (directory / version / "admin-key").write_text(key_text, encoding="utf-8")
    (directory / "..data_tmp").symlink_to(version)
    os.replace(directory / "..data_tmp", directory / "..data")


def authorizations(server: OrganizationServer, since_number: int = 0) -> set[str]:
    return {header(r, "Authorization") for r in list(server.requests) if r.number > since_number}


# -- where the key comes from --------------------------------------------------------------


def test_key_from_the_environment_is_stripped(upstream, processes, tmp_path):
    server = upstream()
    process = processes(["--api.base-url", server.base_url, "--poll.interval", "1s"], tmp_path,
                        key=f"  {KEY}\n")
    process.wait_ready()
    assert authorizations(server) == {f"Bearer {KEY}"}


def test_rotated_kubernetes_secret_is_picked_up_at_the_next_poll_without_a_restart(upstream, processes, tmp_path):
    server = upstream()
    key_file = kubernetes_secret(tmp_path / "secret", KEY + " \t\n\n")
    # The key file wins over the variable, which here holds a key the upstream refuses.
    process = processes(["--api.base-url", server.base_url, "--poll.interval", "1s",
                         "--api.admin-key-file", str(key_file)], tmp_path,
                        env={"OPENAI_ADMIN_KEY": "sk-admin-stale-0000000000000000"})
    process.wait_ready()
    assert authorizations(server) == {f"Bearer {KEY}"}, "trailing whitespace and newlines are stripped"
    good = snapshot_series(process.metrics())

    # The organization revokes the old key: polls fail with reason auth, at the usual pace.
    server.admin_key = NEW_KEY
    revoked = time.time()
    failed = wait_event(process, "poll_failed", revoked, timeout=5)
    assert failed["reason"] == "auth" and "Admin API key" in failed["message"], failed
    wait_for(lambda: len(events_between(process, "poll_failed", revoked)) >= 2, timeout=5, what="2 failed polls")
    metrics = process.metrics()
    assert metrics.value("openai_up") == 0 and snapshot_series(metrics) == good
    failed_polls = events_between(process, "poll_failed", revoked)
    span = timestamp(failed_polls[-1]) - timestamp(failed_polls[0])
    assert 0.75 * (len(failed_polls) - 1) <= span <= 1.25 * (len(failed_polls) - 1) + 0.25, span

    # The secret is rotated the way the kubelet does it; the same process picks it up.
    mark = max(r.number for r in server.requests)
    _swap_secret(tmp_path / "secret", NEW_KEY + "\n", "..2024_02_01_00_00_00.000000002")
    rotated = time.time()
    recovered = wait_event(process, "poll_succeeded", rotated, timeout=2.5)
    assert timestamp(recovered) - rotated <= 2.0  # the next poll, or the one after if one was under way
    assert process.proc.poll() is None
    assert process.metrics().value("openai_up") == 1
    assert authorizations(server, mark) <= {f"Bearer {KEY}", f"Bearer {NEW_KEY}"}
    assert f"Bearer {NEW_KEY}" in authorizations(server, mark)
    for text in (process.stdout(), process.stderr()):
        assert_no_secret("the log", text, KEY, NEW_KEY, KEY_SECRET_PART, NEW_KEY[9:])


def test_key_file_emptied_while_running_fails_the_poll_without_a_request(upstream, processes, tmp_path):
    server = upstream()
    key_file = tmp_path / "admin-key"
    key_file.write_text(KEY + "\n")
    process = processes(["--api.base-url", server.base_url, "--poll.interval", "1s",
                         "--api.admin-key-file", str(key_file)], tmp_path, key=None)
    process.wait_ready()
    good = snapshot_series(process.metrics())

    key_file.write_text("\n  \n")
    emptied = time.time()
    failed = wait_event(process, "poll_failed", emptied, timeout=5)
    assert failed["reason"] == "auth" and f"the admin key file {key_file} is empty" in failed["message"], failed
    metrics = process.metrics()
    assert metrics.value("openai_up") == 0 and snapshot_series(metrics) == good
    # A poll without a key sends nothing: no request reaches the upstream while the file is empty.
    count = len(server.requests)
    wait_event(process, "poll_failed", timestamp(failed) + 0.001, timeout=5)
    assert len(server.requests) == count

    key_file.write_text(KEY)
    fixed = time.time()
    wait_event(process, "poll_succeeded", fixed, timeout=5)
    assert process.metrics().value("openai_up") == 1


@pytest.mark.parametrize("content", ["", "\n", "  \t\n\n"], ids=["empty", "newline", "whitespace"])
def test_empty_key_file_at_start_is_a_clear_error(tmp_path, content):
    key_file = tmp_path / "admin-key"
    key_file.write_text(content)
    result = run_exporter(["--api.admin-key-file", str(key_file)], key=None)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"openai-projects-exporter: error: the admin key file {key_file} is empty"]
    assert result.stdout == ""


def test_missing_key_file_and_missing_key_are_clear_errors(tmp_path):
    missing = tmp_path / "nope"
    result = run_exporter(["--api.admin-key-file", str(missing)], key=None)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"openai-projects-exporter: error: cannot read the admin key file {missing}: No such file or directory"]
    result = run_exporter([], key=None, env={"OPENAI_ADMIN_KEY": "   "})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "openai-projects-exporter: error: no admin key: set OPENAI_ADMIN_KEY or --api.admin-key-file "
        "(or run with --demo)"]


# -- the key never leaks -------------------------------------------------------------------

def _baits():
    """Upstream answers that quote the key back, as a careless proxy or an error page might."""
    return [
        lambda s, r, n: error(401, f"Incorrect API key provided: {KEY}. Authorization: Bearer {KEY}",
                              code="invalid_api_key"),
        lambda s, r, n: error(400, f"bad request from key {KEY}", headers={"X-Echo-Authorization": f"Bearer {KEY}"}),
        lambda s, r, n: ok(real_document(s, r), headers={"X-Echo-Authorization": f"Bearer {KEY}",
                                                          "Set-Cookie": f"session={KEY}"}),
        lambda s, r, n: error(500, KEY, headers={"WWW-Authenticate": f'Bearer error="{KEY}"'}),
    ]


def _every_endpoint(port: int) -> list[tuple[str, bytes]]:
    bodies = []
    for path in ("/metrics", "/", "/index.html", "/readyz", "/healthz", "/probe?organization=x", "/nope",
                 f"/{KEY}"):
        response = http_get(port, path)
        bodies.append((path, response.content + str(response.headers).encode()))
    gz = http_get(port, "/metrics", headers={"Accept-Encoding": "gzip"})
    bodies.append(("/metrics gzip", gz.content))
    om = http_get(port, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    bodies.append(("/metrics openmetrics", om.content))
    return bodies


def _sweep(process, board: Switchboard, faults, seen: list) -> None:
    for fault in faults:
        board.arm(fault)
        started = board.wait_active()
        poll_outcome(process, started, timeout=8)
        seen.extend(_every_endpoint(process.port))
    board.disarm()


def test_key_appears_nowhere_at_debug_level_through_every_fault(upstream, processes, tmp_path):
    """Debug logging, every fault of the matrix and answers that quote the key back: the key is
    nowhere in stdout, stderr, /metrics, / or any other body the exporter serves."""
    faults = [row.fault for row in ROWS] + _baits()
    common = ["--log.level", "debug", "--poll.interval", "1s", "--poll.timeout", "2.5s", "--api.timeout", "1s",
              "--api.max-retries", "3"]
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    servers = [upstream(projects=250, seed=s) for s in (5, 6, 7, 8)]
    boards = [Switchboard(server) for server in servers]
    swept = [  # four exporters share the faults, to keep the sweep short; three read the key from a file
        processes(["--api.base-url", servers[0].base_url, *common], tmp_path / "env"),
        *(processes(["--api.base-url", server.base_url, "--api.admin-key-file", str(key_file), *common],
                    tmp_path / f"file{i}", key=None) for i, server in enumerate(servers[1:])),
    ]
    # Faults that need their own upstream address: nothing listening, and a wrong base URL.
    refused = processes(["--api.base-url", f"http://127.0.0.1:{free_port()}/v1", *common], tmp_path / "refused")
    wrong = processes(["--api.base-url", f"{upstream(projects=10).base_url}/wrong", "--api.admin-key-file",
                       str(key_file), *common], tmp_path / "wrong", key=None)
    for process in (*swept, refused, wrong):
        process.wait_listening()

    seen: list = []
    threads = [threading.Thread(target=_sweep, args=(process, board, faults[i::len(swept)], seen))
               for i, (process, board) in enumerate(zip(swept, boards))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)

    swept_at = time.time()
    for process in swept:
        wait_event(process, "poll_succeeded", swept_at, timeout=8)  # still healthy afterwards
    # Every fault was really injected: between them the polls failed for every reason there is.
    failed = {r["reason"] for process in swept for r in events_between(process, "poll_failed", 0)}
    assert failed == {"auth", "rate_limited", "http_error", "connection", "timeout", "invalid_response",
                      "pagination"}, failed
    assert len([r for process in swept for r in events_between(process, "request_retried", 0)]) >= 10
    assert {r["reason"] for r in events_between(refused, "poll_failed", 0)} == {"connection"}
    assert {r["reason"] for r in events_between(wrong, "poll_failed", 0)} == {"http_error"}
    for process in (refused, wrong):
        seen.extend(_every_endpoint(process.port))

    # Debug logging was on: the HTTP libraries' own lines, headers included, went through it.
    logged = [r for process in swept for r in records(process)]
    assert any(r.get("logger", "").startswith(("httpx", "httpcore")) for r in logged)
    assert any("X-Echo-Authorization" in str(r.get("event")) for r in logged)  # headers were logged...
    assert any("<redacted>" in str(r.get("event")) for r in logged)  # ...with the key taken out
    assert any(r["event"] == "http_request" for r in logged)

    for process in (*swept, refused, wrong):
        process.proc.send_signal(signal.SIGTERM)
    for process in (*swept, refused, wrong):
        assert process.wait_exit(10) == 0, process.stderr()
        assert_no_secret(f"stdout of {process.args}", process.stdout())
        assert_no_secret(f"stderr of {process.args}", process.stderr())
    for path, body in seen:
        assert_no_secret(path, body)
    # And the sweep really showed the exporter the key: each upstream saw it on every request.
    for server in servers:
        assert authorizations(server) == {f"Bearer {KEY}"}
        assert len(server.requests) > 20
