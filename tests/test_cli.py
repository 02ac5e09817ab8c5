"""The command line as an operator meets it: flags, environment variables, and exit code 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from exporter import __version__
from exporter.cli import main
from helpers import KEY, PER_PROJECT_FAMILIES, REPO, clean_environment, free_port, wait_for


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], env=env or clean_environment(),
                          capture_output=True, text=True, timeout=20, cwd=REPO)


def main_in_process(args: list[str], env: dict[str, str], monkeypatch, capsys) -> subprocess.CompletedProcess:
    """cli.main in this process, for the many bad-value cases: it returns before anything starts."""
    for name in [n for n in os.environ if n.startswith("OPENAI_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(args)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("openai-projects-exporter: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert KEY not in result.stderr


def test_missing_key():
    assert_one_line_error(run_cli(), "OPENAI_ADMIN_KEY", "--api.admin-key-file")


def test_blank_key_variable_counts_as_missing():
    assert_one_line_error(run_cli(env=clean_environment(OPENAI_ADMIN_KEY="   ")), "no admin key")


@pytest.mark.parametrize("make_path, fragment", [
    (lambda tmp: tmp / "absent", "No such file"),
    (lambda tmp: tmp, "Is a directory"),
    (lambda tmp: (tmp / "empty").write_text("\n  \n") and tmp / "empty", "empty"),
    (lambda tmp: (tmp / "binary").write_bytes(b"\xff\xfe\xfa") and tmp / "binary", "cannot read"),
], ids=["absent", "directory", "blank", "not-utf8"])
def test_unreadable_key_file(tmp_path, make_path, fragment, monkeypatch, capsys):
    path = make_path(tmp_path)
    by_flag = run_cli("--api.admin-key-file", str(path))
    by_env = main_in_process([], {"OPENAI_ADMIN_KEY_FILE": str(path)}, monkeypatch, capsys)
    for result in (by_flag, by_env):
        assert_one_line_error(result, str(path), fragment)


@pytest.mark.parametrize("args, fragment", [
    (["--poll.interval", "0.5s"], "--poll.interval"),
    (["--poll.interval", "soon"], "--poll.interval"),
    (["--poll.timeout", "0s"], "--poll.timeout"),
    (["--api.timeout", "0"], "--api.timeout"),
    (["--api.timeout", "fast"], "--api.timeout"),
    (["--api.max-retries", "-1"], "--api.max-retries"),
    (["--api.max-retries", "three"], "--api.max-retries"),
    (["--poll.max-pages", "0"], "--poll.max-pages"),
    (["--poll.concurrency", "0"], "--poll.concurrency"),
    (["--metrics.per-project=maybe"], "--metrics.per-project"),
    (["--log.level", "loud"], "--log.level"),
    (["--log.format", "xml"], "--log.format"),
    (["--api.base-url", "ftp://example.com"], "--api.base-url"),
    (["--web.listen-address", "nowhere"], "--web.listen-address"),
    (["--web.listen-address", ":99999"], "--web.listen-address"),
    (["--demo.projects", "none", "--demo"], "--demo.projects"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--poll.interval"], "--poll.interval"),
])
def test_bad_flag_values(args, fragment, monkeypatch, capsys):
    assert_one_line_error(main_in_process(args, {"OPENAI_ADMIN_KEY": KEY}, monkeypatch, capsys), fragment)


@pytest.mark.parametrize("variable, value, fragment", [
    ("OPENAI_EXPORTER_POLL_INTERVAL", "soon", "--poll.interval"),
    ("OPENAI_EXPORTER_API_MAX_RETRIES", "x", "--api.max-retries"),
    ("OPENAI_EXPORTER_METRICS_PER_PROJECT", "sometimes", "--metrics.per-project"),
    ("OPENAI_BASE_URL", "api.openai.com", "--api.base-url"),
    ("OPENAI_EXPORTER_LOG_LEVEL", "verbose", "--log.level"),
])
def test_bad_environment_values(variable, value, fragment, monkeypatch, capsys):
    result = main_in_process([], {"OPENAI_ADMIN_KEY": KEY, variable: value}, monkeypatch, capsys)
    assert_one_line_error(result, fragment)


def test_a_bad_value_in_the_real_process():
    # The cases above call cli.main directly; this one checks the same path end to end.
    result = run_cli("--poll.interval", "soon", env=clean_environment(OPENAI_ADMIN_KEY=KEY))
    assert_one_line_error(result, "--poll.interval")


def test_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--web.listen-address", f"127.0.0.1:{port}",
                         env=clean_environment(OPENAI_ADMIN_KEY=KEY))
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}")


def test_version_and_help():
    version = run_cli("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"openai-projects-exporter {__version__}")
    usage = run_cli("--help")
    assert usage.returncode == 0
    for flag, variable in [
        ("--web.listen-address", "OPENAI_EXPORTER_WEB_LISTEN_ADDRESS"), ("--api.base-url", "OPENAI_BASE_URL"),
        ("--api.admin-key-file", "OPENAI_ADMIN_KEY_FILE"), ("--api.timeout", "OPENAI_EXPORTER_API_TIMEOUT"),
        ("--api.max-retries", "OPENAI_EXPORTER_API_MAX_RETRIES"),
        ("--poll.interval", "OPENAI_EXPORTER_POLL_INTERVAL"), ("--poll.timeout", "OPENAI_EXPORTER_POLL_TIMEOUT"),
        ("--poll.max-pages", "OPENAI_EXPORTER_POLL_MAX_PAGES"),
        ("--metrics.per-project", "OPENAI_EXPORTER_METRICS_PER_PROJECT"),
        ("--log.level", "OPENAI_EXPORTER_LOG_LEVEL"), ("--log.format", "OPENAI_EXPORTER_LOG_FORMAT"),
        ("--demo", "OPENAI_EXPORTER_DEMO"), ("--demo.projects", "OPENAI_EXPORTER_DEMO_PROJECTS"),
    ]:
        assert flag in usage.stdout and variable in " ".join(usage.stdout.split())


def test_configured_through_the_environment_alone(server, start_exporter, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    port = free_port()
    env = clean_environment(
        OPENAI_BASE_URL=server.base_url,
        OPENAI_ADMIN_KEY_FILE=str(key_file),
        OPENAI_EXPORTER_WEB_LISTEN_ADDRESS=f":{port}",  # the default's form: every address, both families
        OPENAI_EXPORTER_POLL_INTERVAL="1s",
        OPENAI_EXPORTER_METRICS_PER_PROJECT="false",
        OPENAI_EXPORTER_LOG_LEVEL="warning",
    )
    process = start_exporter(env=env, key=None, port=port)
    process.wait_ready()

    metrics = process.metrics()
    assert not set(PER_PROJECT_FAMILIES) & set(metrics.families)
    assert sum(metrics.values_by_label("openai_projects", "status").values()) == 250
    assert not [r for r in process.logs() if r["level"] == "info"]  # warning and up only


def test_a_flag_wins_over_its_variable(server, start_exporter):
    env = clean_environment(OPENAI_ADMIN_KEY=KEY, OPENAI_BASE_URL="http://127.0.0.1:9/v1",
                            OPENAI_EXPORTER_METRICS_PER_PROJECT="true")
    process = start_exporter("--api.base-url", server.base_url, "--metrics.per-project=false",
                             "--poll.interval", "1s", env=env)
    process.wait_ready()
    assert "openai_project_info" not in process.metrics().families


def test_console_log_format(server, start_exporter):
    process = start_exporter("--api.base-url", server.base_url, "--log.format", "console", "--poll.interval", "1h")
    text = wait_for(lambda: "poll_succeeded" in process.stdout() and process.stdout(), what="a console log line")
    assert "initial_snapshot" in text
    first = text.splitlines()[0]
    with pytest.raises(ValueError):
        json.loads(first)
