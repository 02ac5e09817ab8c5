"""`--state.file`: the last good snapshot on disk, served at once after a restart.

Real processes, real restarts, SIGKILL in the middle of a write.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from exporter import state
from tests.support.metrics import snapshot_series
from tests.support.process import NO_COLLECTORS, ExporterProcess
from tests.support.upstream import Switchboard, error, start_simulator, stop_simulator
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
ARGS = ("--poll.interval", "1s", "--api.max-retries", "0")


def _held(server, request, number):
    return error(503, "held back by the test")


def held_back(server) -> Switchboard:
    """The organization's answers held back (503) from the next poll on, until `disarm()`."""
    board = server.fault if isinstance(server.fault, Switchboard) else Switchboard(server)
    return board.arm(_held)


def read_state(path: Path) -> dict:
    document = json.loads(path.read_bytes())
    assert document["format"] == state.FORMAT and document["version"] == state.VERSION
    return document


def total(metrics) -> float:
    return metrics.value("openai_projects", status="active") + metrics.value("openai_projects", status="archived")


# -- writing --------------------------------------------------------------------------------


def test_each_good_poll_writes_the_state_and_a_failed_poll_does_not(simulator, start_exporter, tmp_path):
    source = simulator(150, seed=21)
    state_file = tmp_path / "state.json"
    process = start_exporter("--api.base-url", source.base_url, "--state.file", str(state_file), *ARGS, wait=None)
    process.wait_ready()
    wait_for(state_file.exists, what="the state file")
    document = read_state(state_file)
    assert [row["id"] for row in document["projects"]] == [p["id"] for p in source.organization.all()]
    assert not state_file.with_name(state_file.name + ".tmp").exists()

    # A second good poll writes again; a failed one leaves the file as it was.
    first = state_file.stat().st_mtime_ns
    wait_for(lambda: state_file.stat().st_mtime_ns != first, what="the state to be written again")
    held_back(source)
    held = time.time()
    process.wait_event("poll_failed", held)
    before = (state_file.read_bytes(), state_file.stat().st_mtime_ns)
    process.wait_event("poll_failed", time.time())
    assert (state_file.read_bytes(), state_file.stat().st_mtime_ns) == before


def test_write_failure_is_a_warning_and_polling_goes_on(simulator, start_exporter, tmp_path):
    source = simulator(30, seed=21)
    state_file = tmp_path / "missing-directory" / "state.json"
    process = start_exporter("--api.base-url", source.base_url, "--state.file", str(state_file), *ARGS, wait=None)
    process.wait_ready()
    warning = process.wait_event("state_file_write_failed", 0)
    assert warning["level"] == "warning" and warning["path"] == str(state_file)
    process.wait_events("poll_succeeded", count=2)
    assert process.metrics().value("openai_up") == 1


# -- restoring ------------------------------------------------------------------------------


def test_restart_serves_the_saved_snapshot_at_once_and_counts_what_changed_meanwhile(
    simulator, start_exporter, tmp_path
):
    source = simulator(150, seed=21)
    state_file = tmp_path / "state.json"
    args = ["--api.base-url", source.base_url, "--state.file", str(state_file), *ARGS]
    first = start_exporter(*args, wait=None)
    first.wait_ready()
    wait_for(state_file.exists, what="the state file")
    served = first.metrics()
    saved = read_state(state_file)
    assert first.stop(signal.SIGTERM)[0] == 0

    # While the exporter is down, the organization changes.
    organization = source.organization
    projects = organization.all()
    active = [p for p in projects if p["status"] == "active"]
    archived = [p for p in projects if p["status"] == "archived"]
    created = organization.create("Made while down ✨")
    organization.archive(active[0]["id"])
    organization.unarchive(archived[0]["id"])
    organization.update(active[1]["id"], name="Renamed while down")
    organization.remove(active[2]["id"])

    board = held_back(source)  # the first polls after the restart fail: what is served comes from the file
    second = start_exporter(*args, wait=None)
    second.wait_listening()
    restored = second.metrics()
    assert snapshot_series(restored) == snapshot_series(served)
    assert restored.value("openai_up") == 0  # stale until a poll succeeds
    assert restored.value("openai_last_successful_poll_timestamp_seconds") == pytest.approx(saved["completed_at"])
    loaded = second.wait_event("state_file_loaded", 0)
    assert loaded["projects"] == 150
    second.wait_event("poll_failed", 0)
    assert snapshot_series(second.metrics()) == snapshot_series(served)

    released = board.disarm()
    second.wait_event("poll_succeeded", released)
    events = {
        name: [r["project_id"] for r in second.events(name, released)]
        for name in ("project_created", "project_archived", "project_unarchived", "project_renamed", "project_removed")
    }
    assert events == {
        "project_created": [created["id"]],
        "project_archived": [active[0]["id"]],
        "project_unarchived": [archived[0]["id"]],
        "project_renamed": [active[1]["id"]],
        "project_removed": [active[2]["id"]],
    }
    assert second.events("initial_snapshot", 0) == []  # a restart is not a first sight
    metrics = second.metrics()
    assert metrics.value("openai_up") == 1
    for change in ("created", "archived", "unarchived", "renamed", "removed"):
        assert metrics.value("openai_project_changes_total", change=change) == 1
    assert [row["id"] for row in read_state(state_file)["projects"]] == [p["id"] for p in organization.all()]


UNUSABLE = {
    "truncated": lambda valid: valid[: len(valid) // 2],
    "empty": lambda valid: b"",
    "foreign-json": lambda valid: b'{"version": 1, "projects": []}',
    "binary": lambda valid: bytes(range(256)) * 4,
    "newer-version": lambda valid: valid.replace(b'"version":3', b'"version":4'),
    "positional-rows": lambda valid: valid.replace(b'"version":3', b'"version":1'),
}


@pytest.fixture(scope="module")
def valid_state(tmp_path_factory) -> bytes:
    """A real state file, written by the exporter."""
    source = start_simulator(40, seed=3)
    directory = tmp_path_factory.mktemp("valid")
    path = directory / "valid.json"
    process = ExporterProcess.start(["--api.base-url", source.base_url, "--state.file", str(path), *ARGS], directory)
    try:
        wait_for(lambda: path.exists() or process.check_alive(), what="a state file")
        wait_for(lambda: not path.with_name(path.name + ".tmp").exists(), what="the write to finish")
    finally:
        process.kill()
        stop_simulator(source)
    return path.read_bytes()


def _assert_ignored_then_replaced(process, board: Switchboard, state_file: Path, reason: str | None) -> None:
    process.wait_listening()
    warning = process.wait_event("state_file_ignored", 0)
    assert warning["level"] == "warning" and warning["path"] == str(state_file)
    if reason:
        assert reason in warning["reason"], warning
    metrics = process.metrics()
    assert metrics.get("openai_projects", status="active") is None  # nothing from the file is served
    assert metrics.value("openai_up") == 0
    released = board.disarm()
    process.wait_event("poll_succeeded", released)
    assert len(read_state(state_file)["projects"]) == 90  # replaced by a good one


@pytest.mark.parametrize("damage", list(UNUSABLE))
def test_unusable_state_file_is_ignored_with_a_warning(simulator, start_exporter, tmp_path, valid_state, damage):
    source = simulator(90, seed=21)
    board = held_back(source)
    state_file = tmp_path / "state.json"
    state_file.write_bytes(UNUSABLE[damage](valid_state))
    process = start_exporter("--api.base-url", source.base_url, "--state.file", str(state_file), *ARGS, wait=None)
    _assert_ignored_then_replaced(process, board, state_file, None)


def test_directory_in_place_of_the_state_file_is_a_warning(simulator, start_exporter, tmp_path):
    source = simulator(90, seed=21)
    board = held_back(source)
    state_file = tmp_path / "state.json"
    state_file.mkdir()
    process = start_exporter("--api.base-url", source.base_url, "--state.file", str(state_file), *ARGS, wait=None)
    process.wait_listening()
    assert process.wait_event("state_file_ignored", 0)["reason"].startswith("unreadable")
    released = board.disarm()
    process.wait_event("poll_succeeded", released)
    assert process.wait_event("state_file_write_failed", released)["level"] == "warning"
    assert process.metrics().value("openai_up") == 1


_ROW = {
    "id": "proj_a",
    "name": "A",
    "status": "active",
    "created_at": 1700000000,
    "archived_at": None,
    "external_key_id": None,
    "residency": None,
}


@pytest.mark.parametrize(
    "row",
    [
        {**_ROW, "name": 5},
        {**_ROW, "archived_at": "yesterday"},
        {k: v for k, v in _ROW.items() if k != "residency"},
        ["proj_a", "A", "active", 1700000000, None, None, None],
    ],
    ids=["name-number", "archived-at-text", "field-missing", "positional"],
)
def test_state_rows_of_the_wrong_types_are_ignored_not_a_crash(simulator, start_exporter, tmp_path, row):
    source = simulator(90, seed=21)
    board = held_back(source)
    state_file = tmp_path / "state.json"
    state_file.write_text(
        json.dumps(
            {
                "format": state.FORMAT,
                "version": state.VERSION,
                "completed_at": 1.0,
                "pages": 1,
                "duration": 0.1,
                "projects": [row],
            }
        )
    )
    process = start_exporter("--api.base-url", source.base_url, "--state.file", str(state_file), *ARGS, wait=None)
    _assert_ignored_then_replaced(process, board, state_file, None)


# -- SIGKILL in the middle of a write --------------------------------------------------------


def test_sigkill_during_a_write_leaves_the_old_state_or_the_new_never_half(simulator, start_exporter, tmp_path):
    projects = 12_000  # a write of about 1.5 MB: long enough to land a kill inside it
    source = simulator(projects, seed=8)
    state_file = tmp_path / "state.json"
    temporary = state_file.with_name(state_file.name + ".tmp")
    args = [
        "--api.base-url",
        source.base_url,
        "--state.file",
        str(state_file),
        "--poll.interval",
        "1s",
        "--poll.timeout",
        "30s",
        "--api.timeout",
        "10s",
        "--api.requests-per-second",
        "1000",
        *NO_COLLECTORS,
    ]
    rng = random.Random(4)
    mid_write = 0
    for attempt in range(4):
        if temporary.exists():
            temporary.unlink()  # so that the next one seen is this run's
        process = start_exporter(*args)
        try:
            if attempt == 0:  # the first run writes one whole state; the next ones are killed writing
                wait_for(
                    lambda: state_file.exists() and not temporary.exists(),
                    30,
                    interval=0.001,
                    what="a first state file",
                )
            wait_for(temporary.exists, 30, interval=0.0005, what="a state write to begin")
            time.sleep(rng.uniform(0, 0.03))  # somewhere in json.dump, fsync or the rename
            process.proc.send_signal(signal.SIGKILL)
            assert process.proc.wait(10) == -signal.SIGKILL
        finally:
            process.kill()
        mid_write += temporary.exists()  # left behind: the kill landed before the rename
        document = read_state(state_file)  # the old state or the new one: complete, valid JSON of ours
        assert len(document["projects"]) == projects
        assert state.load(state_file) is not None
        if attempt:
            # The killed run had loaded the file at start and served it before its first poll.
            assert [r["projects"] for r in process.events("state_file_loaded", 0)] == [projects]
    assert mid_write >= 2, "the kills should land while a write is in progress"

    # The organization changes while the exporter is down; the restarted one serves the file
    # at once, marked stale, and its first poll logs and counts the changes.
    saved = read_state(state_file)
    victim = saved["projects"][5]["id"]
    source.organization.remove(victim)
    made = source.organization.create("After the crash")
    board = held_back(source)
    restarted = start_exporter(*args, wait=None)
    try:
        restarted.wait_listening(20)
        metrics = restarted.metrics()
        assert total(metrics) == projects and metrics.value("openai_up") == 0
        served = metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id")
        assert set(served) == {row["id"] for row in saved["projects"]} and victim in served
        assert metrics.value("openai_last_successful_poll_timestamp_seconds") == pytest.approx(saved["completed_at"])
        released = board.disarm()
        restarted.wait_event("poll_succeeded", released)
        assert [r["project_id"] for r in restarted.events("project_removed", released)] == [victim]
        assert [r["project_id"] for r in restarted.events("project_created", released)] == [made["id"]]
        after = restarted.metrics()
        assert after.value("openai_project_changes_total", change="removed") == 1
        assert after.value("openai_project_changes_total", change="created") == 1
    finally:
        restarted.kill()
