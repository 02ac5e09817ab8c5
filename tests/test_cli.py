"""The command line as an operator meets it: flags, environment variables, and exit code 2.

Every refused flag, variable or key source is one row of `ERRORS`, run through `cli.main` in
this process (it returns before anything starts); the slow tests run the real process.
"""

from __future__ import annotations

import json
import socket

import pytest

from exporter import __version__
from exporter.cli import main
from tests.support.keys import KEY
from tests.support.metrics import PER_PROJECT_FAMILIES
from tests.support.process import assert_one_line_error, run_exporter
from tests.support.waiting import wait_for

NO_KEY = "no admin key: set OPENAI_ADMIN_KEY or --api.admin-key-file (or run with --demo)"


def _key_file_rows():
    """Each unreadable key file, named by the flag and by the variable."""
    kinds = {
        "absent": (None, "cannot read the admin key file {file}: No such file or directory"),
        "directory": ("directory", "cannot read the admin key file {file}: "),
        "empty": ("", "the admin key file {file} is empty"),
        "newline": ("\n", "the admin key file {file} is empty"),
        "whitespace": ("  \t\n\n", "the admin key file {file} is empty"),
        "not-utf8": (b"\xff\xfe\xfa", "cannot read the admin key file {file}"),
    }
    for kind, (content, message) in kinds.items():
        yield pytest.param(["--api.admin-key-file", "{file}"], {}, content, message, id=f"key-file-{kind}-flag")
        yield pytest.param([], {"OPENAI_ADMIN_KEY_FILE": "{file}"}, content, message, id=f"key-file-{kind}-variable")


WITH_KEY = {"OPENAI_ADMIN_KEY": KEY}
# (arguments, the OPENAI_* variables, key file content or None, message); {file} is the key file's path.
ERRORS = [
    pytest.param([], {}, None, NO_KEY, id="missing-key"),
    pytest.param([], {"OPENAI_ADMIN_KEY": "   "}, None, NO_KEY, id="blank-key-variable"),
    *_key_file_rows(),
    # flags
    pytest.param(
        ["--poll.intervall", "5s"], WITH_KEY, None, "unrecognized arguments: --poll.intervall", id="unknown-flag"
    ),
    pytest.param(["--poll.interval"], WITH_KEY, None, "--poll.interval", id="flag-without-value"),
    pytest.param(["--poll.interval", "5x"], WITH_KEY, None, "--poll.interval: not a duration: '5x'", id="bad-duration"),
    pytest.param(
        ["--poll.interval", "500ms"],
        WITH_KEY,
        None,
        "--poll.interval: '500ms' is below the minimum of 1s",
        id="duration-below-minimum",
    ),
    pytest.param(["--poll.timeout", "0s"], WITH_KEY, None, "--poll.timeout", id="zero-poll-timeout"),
    pytest.param(["--poll.timeout=-5s"], WITH_KEY, None, "--poll.timeout: not a duration", id="negative-poll-timeout"),
    pytest.param(["--api.timeout", "0s"], WITH_KEY, None, "--api.timeout: must be above zero", id="zero-api-timeout"),
    pytest.param(["--api.timeout", "fast"], WITH_KEY, None, "--api.timeout", id="bad-api-timeout"),
    pytest.param(["--api.max-retries", "-1"], WITH_KEY, None, "--api.max-retries", id="negative-retries"),
    pytest.param(
        ["--api.max-retries", "many"], WITH_KEY, None, "--api.max-retries: not a whole number", id="bad-number"
    ),
    pytest.param(["--poll.max-pages", "0"], WITH_KEY, None, "--poll.max-pages", id="zero-max-pages"),
    pytest.param(["--poll.concurrency", "0"], WITH_KEY, None, "--poll.concurrency", id="zero-concurrency"),
    pytest.param(
        ["--metrics.per-project", "maybe"], WITH_KEY, None, "--metrics.per-project: not a boolean", id="bad-bool"
    ),
    pytest.param(["--metrics.per-project=maybe"], WITH_KEY, None, "--metrics.per-project", id="bad-bool-with-equals"),
    pytest.param(["--log.level", "verbose"], WITH_KEY, None, "--log.level: 'verbose' is not one of", id="bad-level"),
    pytest.param(["--log.format", "xml"], WITH_KEY, None, "--log.format", id="bad-log-format"),
    pytest.param(
        ["--api.base-url", "api.openai.com/v1"],
        WITH_KEY,
        None,
        "--api.base-url: not an http(s) URL",
        id="base-url-without-scheme",
    ),
    pytest.param(["--api.base-url", "ftp://example.com"], WITH_KEY, None, "--api.base-url", id="base-url-not-http"),
    pytest.param(
        ["--web.listen-address", "localhost"],
        WITH_KEY,
        None,
        "--web.listen-address: not a listen address",
        id="bad-listen-address",
    ),
    pytest.param(["--web.listen-address", ":99999"], WITH_KEY, None, "--web.listen-address", id="port-out-of-range"),
    pytest.param(["--demo.projects", "none", "--demo"], WITH_KEY, None, "--demo.projects", id="bad-demo-projects"),
    pytest.param(["--config.check"], WITH_KEY, None, "--config.check needs --config.file", id="config-check-alone"),
    # environment variables
    pytest.param(
        [],
        {**WITH_KEY, "OPENAI_EXPORTER_POLL_INTERVAL": "often"},
        None,
        "--poll.interval: not a duration",
        id="variable-bad-duration",
    ),
    pytest.param(
        [], {**WITH_KEY, "OPENAI_EXPORTER_API_MAX_RETRIES": "x"}, None, "--api.max-retries", id="variable-bad-number"
    ),
    pytest.param(
        [],
        {**WITH_KEY, "OPENAI_EXPORTER_METRICS_PER_PROJECT": "sometimes"},
        None,
        "--metrics.per-project",
        id="variable-bad-bool",
    ),
    pytest.param(
        [], {**WITH_KEY, "OPENAI_BASE_URL": "api.openai.com"}, None, "--api.base-url", id="variable-bad-base-url"
    ),
    pytest.param(
        [], {**WITH_KEY, "OPENAI_EXPORTER_LOG_LEVEL": "verbose"}, None, "--log.level", id="variable-bad-level"
    ),
]


@pytest.mark.parametrize("args, env, key_file, message", ERRORS)
def test_refused_start_is_one_line_and_exit_2(cli_main, tmp_path, args, env, key_file, message):
    path = tmp_path / "admin-key"
    if key_file == "directory":
        path.mkdir()
    elif isinstance(key_file, bytes):
        path.write_bytes(key_file)
    elif key_file is not None:
        path.write_text(key_file)
    args = [a.replace("{file}", str(path)) for a in args]
    env = {name: value.replace("{file}", str(path)) for name, value in env.items()}
    assert_one_line_error(cli_main(args, env), message.replace("{file}", str(path)))


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code in (0, None)
    assert capsys.readouterr().out.strip() == f"openai-projects-exporter {__version__}"
    with pytest.raises(SystemExit) as usage:
        main(["--help"])
    assert usage.value.code in (0, None)
    text = capsys.readouterr().out
    for flag, variable in [
        ("--web.listen-address", "OPENAI_EXPORTER_WEB_LISTEN_ADDRESS"),
        ("--api.base-url", "OPENAI_BASE_URL"),
        ("--api.admin-key-file", "OPENAI_ADMIN_KEY_FILE"),
        ("--api.timeout", "OPENAI_EXPORTER_API_TIMEOUT"),
        ("--api.max-retries", "OPENAI_EXPORTER_API_MAX_RETRIES"),
        ("--poll.interval", "OPENAI_EXPORTER_POLL_INTERVAL"),
        ("--poll.timeout", "OPENAI_EXPORTER_POLL_TIMEOUT"),
        ("--poll.max-pages", "OPENAI_EXPORTER_POLL_MAX_PAGES"),
        ("--metrics.per-project", "OPENAI_EXPORTER_METRICS_PER_PROJECT"),
        ("--log.level", "OPENAI_EXPORTER_LOG_LEVEL"),
        ("--log.format", "OPENAI_EXPORTER_LOG_FORMAT"),
        ("--demo", "OPENAI_EXPORTER_DEMO"),
        ("--demo.projects", "OPENAI_EXPORTER_DEMO_PROJECTS"),
    ]:
        assert flag in text and variable in " ".join(text.split())


# -- the real process ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_bad_value_in_the_real_process():
    # The table above calls cli.main directly; this one checks the same path end to end.
    assert_one_line_error(run_exporter(["--poll.interval", "soon"]), "--poll.interval")


@pytest.mark.slow
def test_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_exporter(["--web.listen-address", f"127.0.0.1:{port}"])
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert '"exporter_started"' not in result.stdout


@pytest.mark.slow
def test_configured_through_the_environment_alone(simulator, start_exporter, tmp_path):
    server = simulator()
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    process = start_exporter(
        key=None,
        env={
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_ADMIN_KEY_FILE": str(key_file),
            "OPENAI_EXPORTER_WEB_LISTEN_ADDRESS": ":{port}",  # the default's form: every address, both families
            "OPENAI_EXPORTER_POLL_INTERVAL": "1s",
            "OPENAI_EXPORTER_METRICS_PER_PROJECT": "false",
            "OPENAI_EXPORTER_LOG_LEVEL": "warning",
        },
    )
    process.wait_ready()

    metrics = process.metrics()
    assert not set(PER_PROJECT_FAMILIES) & set(metrics.families)
    assert metrics.project_total() == 250
    assert not [r for r in process.records() if r["level"] == "info"]  # warning and up only


@pytest.mark.slow
def test_a_flag_wins_over_its_variable(simulator, start_exporter):
    server = simulator()
    process = start_exporter(
        "--api.base-url",
        server.base_url,
        "--metrics.per-project=false",
        "--poll.interval",
        "1s",
        env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_EXPORTER_METRICS_PER_PROJECT": "true"},
    )
    process.wait_ready()
    assert "openai_project_info" not in process.metrics().families


@pytest.mark.slow
def test_console_log_format(simulator, start_exporter):
    server = simulator()
    process = start_exporter("--api.base-url", server.base_url, "--log.format", "console", "--poll.interval", "1h")
    text = wait_for(lambda: "poll_succeeded" in process.stdout() and process.stdout(), what="a console log line")
    assert "initial_snapshot" in text
    first = text.splitlines()[0]
    with pytest.raises(ValueError):
        json.loads(first)
