"""The admin key: where it comes from, how a rotated secret is picked up, and that it never leaks.

Every test runs the real exporter process against a simulated organization on loopback.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from exporter.simulator import OrganizationServer, Response
from tests.support.faults import MATRIX_ARGS, ROWS
from tests.support.keys import KEY, KEY_SECRET_PART, assert_no_secret
from tests.support.metrics import snapshot_series
from tests.support.net import ReservedPort
from tests.support.process import NO_COLLECTORS, upstream_args
from tests.support.upstream import Switchboard, error, header, ok, real_document
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
NEW_KEY = "sk-admin-rotated-5e2b9d71c04a8f36"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


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


def test_key_from_the_environment_is_stripped(simulator, start_exporter):
    server = simulator(150, seed=4)
    start_exporter(*upstream_args(server), key=f"  {KEY}\n", wait="ready")
    assert authorizations(server) == {f"Bearer {KEY}"}


def test_rotated_kubernetes_secret_is_picked_up_at_the_next_poll_without_a_restart(simulator, start_exporter, tmp_path):
    server = simulator(150, seed=4)
    key_file = kubernetes_secret(tmp_path / "secret", KEY + " \t\n\n")
    # The key file wins over the variable, which here holds a key the upstream refuses.
    process = start_exporter(
        *upstream_args(server),
        "--api.admin-key-file",
        str(key_file),
        key="sk-admin-stale-0000000000000000",
        wait="ready",
    )
    assert authorizations(server) == {f"Bearer {KEY}"}, "trailing whitespace and newlines are stripped"
    good = snapshot_series(process.metrics())

    # The organization revokes the old key: polls fail with reason auth, at the usual pace.
    server.admin_key = NEW_KEY
    revoked = time.time()
    failed = process.wait_event("poll_failed", revoked)
    assert failed["reason"] == "auth" and "Admin API key" in failed["message"], failed
    failed_polls = process.wait_events("poll_failed", count=3, since=revoked)
    metrics = process.metrics()
    assert metrics.value("openai_up") == 0 and snapshot_series(metrics) == good
    span = failed_polls[-1]["_time"] - failed_polls[0]["_time"]
    assert 0.75 * (len(failed_polls) - 1) <= span <= 1.25 * (len(failed_polls) - 1) + 0.5, span

    # The secret is rotated the way the kubelet does it; the same process picks it up.
    mark = max(r.number for r in server.requests)
    _swap_secret(tmp_path / "secret", NEW_KEY + "\n", "..2024_02_01_00_00_00.000000002")
    rotated = time.time()
    recovered = process.wait_event("poll_succeeded", rotated)
    # The next poll, or the one after if one was under way: two intervals, and time to poll.
    assert recovered["_time"] - rotated <= 3.0
    assert process.proc.poll() is None
    assert process.metrics().value("openai_up") == 1
    assert authorizations(server, mark) <= {f"Bearer {KEY}", f"Bearer {NEW_KEY}"}
    assert f"Bearer {NEW_KEY}" in authorizations(server, mark)
    for text in (process.stdout(), process.stderr()):
        assert_no_secret("the log", text, KEY, NEW_KEY, KEY_SECRET_PART, NEW_KEY[9:])


def test_key_file_emptied_while_running_fails_the_poll_without_a_request(simulator, start_exporter, tmp_path):
    server = simulator(150, seed=4)
    key_file = tmp_path / "admin-key"
    key_file.write_text(KEY + "\n")
    # The list alone: a detail refresh that read the key before the file was emptied may still
    # send its request after a list poll failed.
    process = start_exporter(
        *upstream_args(server, *NO_COLLECTORS),
        "--api.admin-key-file",
        str(key_file),
        key=None,
        wait="ready",
    )
    good = snapshot_series(process.metrics())

    key_file.write_text("\n  \n")
    emptied = time.time()
    failed = process.wait_event("poll_failed", emptied)
    assert failed["reason"] == "auth" and f"the admin key file {key_file} is empty" in failed["message"], failed
    metrics = process.metrics()
    assert metrics.value("openai_up") == 0 and snapshot_series(metrics) == good
    # A poll without a key sends nothing: no request reaches the upstream while the file is empty.
    count = len(server.requests)
    process.wait_event("poll_failed", failed["_time"] + 0.001)
    assert len(server.requests) == count

    key_file.write_text(KEY)
    fixed = time.time()
    process.wait_event("poll_succeeded", fixed)
    assert process.metrics().value("openai_up") == 1


# -- the key never leaks -------------------------------------------------------------------


def every_output(process) -> list[tuple[str, str]]:
    """What the exporter shows now: each endpoint with its headers, /metrics plain, OpenMetrics and gzip."""
    outputs = []
    for path in ("/metrics", "/", "/index.html", "/readyz", "/healthz", "/probe?organization=x", "/nope", f"/{KEY}"):
        response = process.get(path)
        outputs.append((path, response.text + str(response.headers)))
    outputs.append(("/metrics openmetrics", process.get("/metrics", {"Accept": OPENMETRICS}).text))
    _, headers, zipped = process.raw("/metrics", {"Accept-Encoding": "gzip"})
    outputs.append(("/metrics gzip", gzip.decompress(zipped).decode() + str(headers)))
    return outputs


def process_output(process) -> list[tuple[str, str]]:
    return [(f"stdout of {process.args}", process.stdout()), (f"stderr of {process.args}", process.stderr())]


def assert_nowhere(outputs: list[tuple[str, str]], *secrets: str) -> None:
    for where, text in outputs:
        assert_no_secret(where, text, *secrets)


def _baits():
    """Upstream answers that quote the key back, as a careless proxy or an error page might."""
    return [
        lambda s, r, n: error(
            401, f"Incorrect API key provided: {KEY}. Authorization: Bearer {KEY}", code="invalid_api_key"
        ),
        lambda s, r, n: error(400, f"bad request from key {KEY}", headers={"X-Echo-Authorization": f"Bearer {KEY}"}),
        lambda s, r, n: ok(
            real_document(s, r), headers={"X-Echo-Authorization": f"Bearer {KEY}", "Set-Cookie": f"session={KEY}"}
        ),
        lambda s, r, n: error(500, KEY, headers={"WWW-Authenticate": f'Bearer error="{KEY}"'}),
    ]


def _sweep(process, board: Switchboard, faults, seen: list) -> None:
    for fault in faults:
        board.arm(fault)
        started = board.wait_active()
        process.poll_outcome(started)
        seen.extend(every_output(process))
    board.disarm()


def test_key_appears_nowhere_at_debug_level_through_every_fault(simulator, start_exporter, tmp_path):
    """Debug logging, every fault of the matrix and answers that quote the key back: the key is
    nowhere in stdout, stderr, /metrics, / or any other body the exporter serves."""
    faults = [row.fault for row in ROWS] + _baits()
    common = ["--log.level", "debug", *MATRIX_ARGS]
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    servers = [simulator(250, seed=s) for s in (5, 6, 7, 8)]
    boards = [Switchboard(server) for server in servers]
    swept = [  # four exporters share the faults, to keep the sweep short; three read the key from a file
        start_exporter("--api.base-url", servers[0].base_url, *common, wait=None),
        *(
            start_exporter(
                "--api.base-url", server.base_url, "--api.admin-key-file", str(key_file), *common, key=None, wait=None
            )
            for server in servers[1:]
        ),
    ]
    # Faults that need their own upstream address: nothing listening, and a wrong base URL.
    nothing_listens = ReservedPort()
    refused = start_exporter("--api.base-url", nothing_listens.base_url, *common, wait=None)
    wrong = start_exporter(
        "--api.base-url",
        f"{simulator(10).base_url}/wrong",
        "--api.admin-key-file",
        str(key_file),
        *common,
        key=None,
        wait=None,
    )
    for process in (*swept, refused, wrong):
        process.wait_listening()

    seen: list = []
    threads = [
        threading.Thread(target=_sweep, args=(process, board, faults[i :: len(swept)], seen))
        for i, (process, board) in enumerate(zip(swept, boards, strict=False))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert not any(thread.is_alive() for thread in threads)

    swept_at = time.time()
    for process in swept:
        process.wait_event("poll_succeeded", swept_at)  # still healthy afterwards
    # Every fault was really injected: between them the polls failed for every reason there is.
    failed = {r["reason"] for process in swept for r in process.events("poll_failed")}
    assert failed == {
        "auth",
        "rate_limited",
        "http_error",
        "connection",
        "timeout",
        "invalid_response",
        "pagination",
    }, failed
    assert len([r for process in swept for r in process.events("request_retried")]) >= 10
    assert {r["reason"] for r in refused.events("poll_failed")} == {"connection"}
    assert {r["reason"] for r in wrong.events("poll_failed")} == {"http_error"}
    for process in (refused, wrong):
        seen.extend(every_output(process))
    nothing_listens.release()

    # Debug logging was on: the HTTP libraries' own lines, headers included, went through it.
    logged = [r for process in swept for r in process.records()]
    assert any(r.get("logger", "").startswith(("httpx", "httpcore")) for r in logged)
    assert any("X-Echo-Authorization" in str(r.get("event")) for r in logged)  # headers were logged...
    assert any("<redacted>" in str(r.get("event")) for r in logged)  # ...with the key taken out
    assert any(r["event"] == "http_request" for r in logged)

    for process in (*swept, refused, wrong):
        process.send_signal(signal.SIGTERM)
    for process in (*swept, refused, wrong):
        assert process.wait_exit() == 0, process.stderr()
        seen.extend(process_output(process))
    assert_nowhere(seen)
    # And the sweep really showed the exporter the key: each upstream saw it on every request.
    for server in servers:
        assert authorizations(server) == {f"Bearer {KEY}"}
        assert len(server.requests) > 20


def quoting_faults(key: str) -> dict:
    """Upstream faults that quote the whole key back, by the failure reason each causes."""
    return {
        "auth": lambda s, r, n: error(401, f"Incorrect API key provided: {key}. You can find your key at ..."),
        "http_error": lambda s, r, n: (
            error(500, f"Internal error while checking {key}", {"retry-after-ms": "10"})
            if r.query.get("after")
            else None
        ),
    }


@pytest.mark.parametrize(
    "key, source",
    [
        ("sk-admin-Leak7Check0-9f3a1c5e7b2d4f60", "file"),
        # The key's format is the operator's business: the exporter knows the exact key and hides it.
        ("org-admin-token-0a1b2c3d4e5f60718293", "environment"),
    ],
)
def test_a_key_of_any_format_never_appears_in_any_output(simulator, start_exporter, tmp_path, key, source):
    server = simulator(250, key=key)
    board = Switchboard(server)
    args = [
        *upstream_args(server),
        "--log.level",
        "debug",
        "--api.max-retries",
        "1",
    ]
    if source == "file":
        key_file = tmp_path / "admin-key"
        key_file.write_text(key + "\n")
        args += ["--api.admin-key-file", str(key_file)]
    process = start_exporter(*args, key=None if source == "file" else key)

    outputs = []
    for reason, fault in quoting_faults(key).items():
        board.arm(fault)
        process.wait_event("poll_failed", board.wait_active(), where=lambda r, reason=reason: r["reason"] == reason)
        # The fault holds, so every later poll fails alike: / shows this failure now.
        now = every_output(process)
        assert reason in dict(now)["/"]
        outputs += now
    board.disarm()
    process.wait_ready()
    outputs += every_output(process)
    code, _ = process.stop()
    outputs += process_output(process)

    assert code == 0
    assert process.events("request_retried")
    assert any(r["level"] == "debug" for r in process.records())  # debug lines were written, and checked
    assert_nowhere(outputs, key)


def test_the_key_stays_hidden_when_upstream_data_quotes_it(simulator, start_exporter):
    server = simulator()
    bad_page = json.dumps({"data": [{"id": KEY, "created_at": "yesterday"}], "has_more": False}).encode()
    Switchboard(server).arm(lambda s, r, n: Response(200, bad_page))
    process = start_exporter("--api.base-url", server.base_url, "--poll.interval", "1s")
    process.wait_event("poll_failed", where=lambda r: r["reason"] == "invalid_response")
    assert_nowhere(every_output(process) + process_output(process), KEY)


def test_a_two_line_key_file_never_leaks(simulator, start_exporter, tmp_path):
    server = simulator()
    # A rotation gone wrong: the new key appended to the old one.
    old, new = "sk-admin-old-1b2c3d4e5f60718293a4", "sk-admin-new-9e8d7c6b5a4f3e2d1c0b"
    key_file = tmp_path / "admin-key"
    key_file.write_text(f"{old}\n{new}\n")
    process = start_exporter(
        *upstream_args(server),
        "--api.admin-key-file",
        str(key_file),
        "--api.max-retries",
        "0",
        key=None,
        wait=None,
    )

    def verdict():
        if process.proc.poll() is not None:
            return "exited"
        return process.events("poll_failed") and "failed"

    if wait_for(verdict, what="a refusal at start or a failed poll") == "exited":
        assert process.proc.returncode == 2  # refusing such a key at start is a fine answer too
        outputs = process_output(process)
    else:
        outputs = every_output(process) + process_output(process)
    assert_nowhere(outputs, old, new)
