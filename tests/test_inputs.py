"""Files and values the operator gives, at their worst: a YAML bomb, a FIFO, a device, a huge
or deeply nested file, a duration past any timer. Each is a clean refusal, through the real
process, in well under a second, never a hang, a traceback or a gigabyte."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from exporter.inputs import UnusableFile, load_yaml, read_regular_file
from exporter.settings import MAX_DURATION, AdminKey, SettingsError, parse_duration
from tests.support.keys import KEY
from tests.support.process import assert_one_line_error, run_exporter, upstream_args


def _bomb(anchored_value: str = '"lol"') -> str:
    """Nine levels of nine aliases each: 9^9 copies of the first value once expanded."""
    lines = [f"l0: &l0 [{', '.join([anchored_value] * 9)}]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    return "\n".join(lines) + "\n"


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


# -- in this process -----------------------------------------------------------------------


def test_yaml_aliases_are_refused_before_anything_expands(tmp_path):
    path = tmp_path / "bomb.yml"
    path.write_text(_bomb())
    with pytest.raises(UnusableFile, match="aliases"):
        load_yaml(path)
    plain = tmp_path / "plain.yml"
    plain.write_text("organizations:\n  - alias: a\n    poll_interval: 1m\n")
    assert load_yaml(plain) == {"organizations": [{"alias": "a", "poll_interval": "1m"}]}


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "too-large"])
def test_only_regular_files_of_a_bounded_size_are_read(tmp_path, kind):
    target = {
        "fifo": lambda: _fifo(tmp_path),
        "device": lambda: Path("/dev/zero"),
        "directory": lambda: tmp_path,
        "too-large": lambda: _sparse(tmp_path / "large", 100 * 1024 * 1024),
    }[kind]()
    started = time.monotonic()
    with pytest.raises(OSError) as refused:
        read_regular_file(target, 64 * 1024)
    assert time.monotonic() - started < 1.0
    assert refused.value.strerror in ("not a regular file", f"larger than {64 * 1024} bytes")
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    assert read_regular_file(small, 100) == b"x" * 100


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


@pytest.mark.parametrize("text", ["99999999999d", "9" * 400, "366d", "1e9"])
def test_durations_past_a_year_or_not_numbers_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)
    assert parse_duration("365d") == MAX_DURATION


# -- through the real process --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "where",
    ["base_url", "admin_key"],
)
def test_a_yaml_bomb_in_the_config_file_is_one_line_and_exit_2(tmp_path, where):
    config = tmp_path / "organizations.yml"
    value = "https://example.invalid/v1" if where == "base_url" else KEY
    config.write_text(_bomb(f'"{value}"') + f"organizations:\n  - alias: a\n    admin_key_env: K\n    {where}: *l8\n")
    started = time.monotonic()
    result = run_exporter(["--config.file", str(config), "--config.check"], env={"K": KEY})
    assert time.monotonic() - started < 5.0  # the interpreter's start; the refusal itself is instant
    assert_one_line_error(result, "aliases (*name) are not allowed")


@pytest.mark.slow
def test_a_yaml_bomb_in_the_web_config_is_one_line_and_exit_2(tmp_path, simulator):
    web = tmp_path / "web.yml"
    web.write_text(_bomb('"cert.pem"') + "tls_server_config:\n  cert_file: *l8\n  key_file: key.pem\n")
    result = run_exporter([*upstream_args(simulator(10)), "--web.config.file", str(web)])
    assert_one_line_error(result, "aliases (*name) are not allowed")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fifo", "too-large"])
def test_an_admin_key_file_that_is_no_small_regular_file_is_refused_at_once(tmp_path, kind):
    path = _fifo(tmp_path) if kind == "fifo" else _sparse(tmp_path / "key", 100 * 1024 * 1024)
    result = run_exporter(
        ["--api.admin-key-file", str(path), "--web.listen-address", "127.0.0.1:0"], key=None, timeout=10
    )
    assert_one_line_error(result, "not a regular file" if kind == "fifo" else "larger than")


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--poll.interval", "--poll.timeout", "--api.timeout"])
def test_an_overflowing_duration_flag_is_one_line_and_exit_2(flag):
    result = run_exporter(["--web.listen-address", "127.0.0.1:0", flag, "99999999999d"])
    assert_one_line_error(result, "above the maximum of 365d", starts=flag)


@pytest.mark.slow
def test_an_overflowing_duration_on_reload_keeps_the_running_config(tmp_path, simulator, start_exporter):
    server = simulator(20)
    config = tmp_path / "organizations.yml"
    entry = f"organizations:\n  - alias: a\n    admin_key_env: K\n    base_url: {server.base_url}\n"
    config.write_text(entry + "    poll_interval: 1s\n")
    process = start_exporter("--config.file", str(config), env={"K": KEY}, wait="ready")
    config.write_text(entry + "    poll_interval: 99999999999d\n")
    checked = run_exporter(["--config.file", str(config), "--config.check"], env={"K": KEY})
    assert_one_line_error(checked, "above the maximum of 365d")
    reloaded = time.time()
    process.send_signal(signal.SIGHUP)
    failed = process.wait_event("config_reload_failed", reloaded)
    assert "above the maximum of 365d" in failed["reason"]
    process.poll_outcome(time.time())  # still polling on the running config
    assert process.get("/probe?organization=a").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fifo", "device", "deep-nesting"])
def test_a_state_file_that_cannot_be_one_is_ignored_and_the_start_goes_on(tmp_path, simulator, start_exporter, kind):
    if kind == "fifo":
        state = _fifo(tmp_path)
    elif kind == "device":
        state = _device_like_dev_full(tmp_path)
    else:
        state = tmp_path / "state.json"
        state.write_text("[" * 200_000)
    started = time.monotonic()
    process = start_exporter(*upstream_args(simulator(30)), "--state.file", str(state))
    ignored = process.wait_event("state_file_ignored", 0)
    assert time.monotonic() - started < 10
    assert ("not a regular file" if kind != "deep-nesting" else "recursion") in ignored["reason"].lower()
    process.wait_ready()
    assert process.metrics().value("openai_up") == 1
    assert process.proc.poll() is None
    if kind != "deep-nesting":  # nor is the FIFO or the device replaced by a state file
        process.wait_event("state_file_write_failed", 0)
        assert not state.is_file() and not state.with_name(state.name + ".tmp").exists()


def _device_like_dev_full(tmp_path: Path) -> Path:
    """A node of /dev/full's device (endless zeros to read), made where nothing else uses it."""
    path = tmp_path / "full"
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


@pytest.mark.slow
def test_a_failed_state_write_leaves_no_temporary_file(tmp_path, simulator, start_exporter):
    state = tmp_path / "state.json"
    state.mkdir()  # the rename over it fails on every poll
    (state / "occupant").write_text("so the directory is not empty")
    process = start_exporter(*upstream_args(simulator(30)), "--state.file", str(state))
    process.wait_event("state_file_write_failed", 0)
    process.wait_event("state_file_write_failed", time.time())  # a second poll, the first write long over
    assert not (tmp_path / "state.json.tmp").exists()


@pytest.mark.slow
def test_a_symlinked_state_file_stays_a_link_and_its_target_holds_the_state(tmp_path, simulator, start_exporter):
    volume = tmp_path / "volume"
    volume.mkdir()
    target = volume / "state.json"
    link = tmp_path / "state.json"
    link.symlink_to(target)
    # One poll in the test's time: its write is over once it logs poll_succeeded, and no other begins.
    process = start_exporter(*upstream_args(simulator(30), interval="1h"), "--state.file", str(link))
    process.wait_event("poll_succeeded", 0)
    assert target.exists()
    assert link.is_symlink() and link.resolve() == target
    assert b'"projects"' in target.read_bytes()
    assert not (volume / "state.json.tmp").exists() and not (tmp_path / "state.json.tmp").exists()


def test_settings_error_is_the_refusal_of_a_bad_key_file(tmp_path):
    with pytest.raises(SettingsError, match="not a regular file"):
        AdminKey(path=tmp_path).read()
