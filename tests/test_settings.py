"""Flags and environment variables into Settings, without starting anything."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from exporter.collectors import COLLECTORS
from exporter.config import OrganizationConfig, from_settings, load_config
from exporter.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_PORT,
    PER_ORGANIZATION,
    SETTINGS,
    AdminKey,
    Settings,
    SettingsError,
    build_parser,
    load,
    parse_bool,
    parse_duration,
    parse_listen_address,
)
from tests.support.keys import KEY

ENV = {"OPENAI_ADMIN_KEY": KEY}


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30", 30),
        ("30s", 30),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("1m30s", 90),
        ("1h1m1s", 3661),
        (" 2s ", 2),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5x", "-5s", "1m 30s", "30S", "five", "1.2.3s", "s30"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("1", True),
        ("YES", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("off", False),
    ],
)
def test_booleans(text, value):
    assert parse_bool(text) is value


@pytest.mark.parametrize(
    "text, address",
    [
        (":9186", ("", 9186)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9186", ("::1", 9186)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_listen_addresses(text, address):
    assert parse_listen_address(text) == address


@pytest.mark.parametrize("text", ["9186", "host:", "host:99999", "host:abc", ""])
def test_bad_listen_addresses(text):
    with pytest.raises(ValueError):
        parse_listen_address(text)


def test_defaults():
    settings = load([], ENV)
    organization = from_settings(settings)
    assert (settings.listen_host, settings.listen_port) == ("", DEFAULT_PORT) == ("", 9186)
    assert organization.base_url == DEFAULT_BASE_URL == "https://api.openai.com/v1"
    assert settings.admin_key.read() == organization.admin_key.read() == KEY
    assert (organization.api_timeout, organization.api_max_retries) == (30, 5)
    assert (organization.poll_interval, organization.poll_timeout, organization.poll_max_pages) == (300, 300, 10000)
    assert (organization.poll_concurrency, organization.per_project_metrics) == (1, True)
    assert (settings.log_level, settings.log_format, settings.demo) == ("info", "json", False)


def test_every_flag():
    settings = load(
        [
            "--web.listen-address",
            "127.0.0.1:9999",
            "--api.base-url",
            "http://127.0.0.1:1234/v1/",
            "--api.timeout",
            "2s",
            "--api.max-retries",
            "0",
            "--poll.interval",
            "1m",
            "--poll.timeout",
            "45s",
            "--poll.max-pages",
            "7",
            "--metrics.per-project=false",
            "--log.level",
            "DEBUG",
            "--log.format",
            "console",
        ],
        ENV,
    )
    organization = from_settings(settings)
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 9999)
    assert organization.base_url == "http://127.0.0.1:1234/v1"  # no trailing slash to double up
    assert (organization.api_timeout, organization.api_max_retries) == (2, 0)
    assert (organization.poll_interval, organization.poll_timeout, organization.poll_max_pages) == (60, 45, 7)
    assert organization.per_project_metrics is False
    assert (settings.log_level, settings.log_format) == ("debug", "console")


def test_every_variable():
    settings = load(
        [],
        {
            **ENV,
            "OPENAI_EXPORTER_WEB_LISTEN_ADDRESS": ":1",
            "OPENAI_BASE_URL": "http://127.0.0.1:5/v1",
            "OPENAI_EXPORTER_API_TIMEOUT": "3s",
            "OPENAI_EXPORTER_API_MAX_RETRIES": "2",
            "OPENAI_EXPORTER_POLL_INTERVAL": "10s",
            "OPENAI_EXPORTER_POLL_TIMEOUT": "9s",
            "OPENAI_EXPORTER_POLL_MAX_PAGES": "3",
            "OPENAI_EXPORTER_METRICS_PER_PROJECT": "false",
            "OPENAI_EXPORTER_LOG_LEVEL": "warning",
            "OPENAI_EXPORTER_LOG_FORMAT": "console",
        },
    )
    organization = from_settings(settings)
    assert (settings.listen_host, settings.listen_port, organization.base_url) == ("", 1, "http://127.0.0.1:5/v1")
    assert (organization.api_timeout, organization.api_max_retries) == (3, 2)
    assert (organization.poll_interval, organization.poll_timeout, organization.poll_max_pages) == (10, 9, 3)
    assert organization.per_project_metrics is False
    assert (settings.log_level, settings.log_format) == ("warning", "console")


def organization(argv: list[str], env: dict[str, str]):
    """The flags' single organization, as the CLI builds it without --config.file."""
    return from_settings(load(argv, env))


def test_flag_wins_and_empty_variable_is_unset():
    env = {**ENV, "OPENAI_EXPORTER_POLL_INTERVAL": "10s", "OPENAI_EXPORTER_API_TIMEOUT": ""}
    assert organization(["--poll.interval", "20s"], env).poll_interval == 20
    assert organization([], env).poll_interval == 10
    assert organization([], env).api_timeout == 30


def test_poll_timeout_follows_the_interval_unless_given():
    assert organization(["--poll.interval", "42s"], ENV).poll_timeout == 42
    assert organization(["--poll.interval", "42s", "--poll.timeout", "5s"], ENV).poll_timeout == 5


def test_bare_boolean_flags_mean_true():
    assert organization(["--metrics.per-project"], ENV).per_project_metrics is True
    demo = load(["--demo"], {})
    assert demo.demo is True and from_settings(demo).poll_interval == 15


def test_key_file_is_stripped_and_wins_over_the_variable(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("  sk-admin-from-file \n")
    settings = load(["--api.admin-key-file", str(key_file)], {"OPENAI_ADMIN_KEY": "sk-admin-from-env"})
    assert settings.admin_key.read() == "sk-admin-from-file"
    assert load([], {"OPENAI_ADMIN_KEY": f"  {KEY}\n"}).admin_key.read() == KEY


def test_the_key_is_never_in_a_repr(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    for settings in (load([], ENV), load(["--api.admin-key-file", str(key_file)], {})):
        assert KEY not in repr(settings) and KEY not in str(settings.admin_key)
    assert KEY not in repr(AdminKey(value=KEY))


@pytest.mark.parametrize(
    "argv, env",
    [
        ([], {}),
        ([], {"OPENAI_ADMIN_KEY": ""}),
        (["--poll.interval", "999ms"], ENV),
        (["--poll.timeout", "0"], ENV),
        (["--api.max-retries", "1.5"], ENV),
        (["--log.format", "yaml"], ENV),
        (["--bogus"], ENV),
    ],
)
def test_errors_are_one_line(argv, env):
    with pytest.raises(SettingsError) as error:
        load(argv, env)
    assert "\n" not in str(error.value) and str(error.value)


# -- the table is the single source ------------------------------------------------------------


def test_every_row_is_in_help_with_its_variable_and_default():
    help_text = " ".join(build_parser().format_help().split())
    for row in SETTINGS:
        default = f" (default {row.default})" if row.default is not None else ""
        assert f"{row.flag} {row.metavar}" in help_text or f"{row.flag} [{row.metavar}]" in help_text
        # argparse wraps lines at hyphens too ("--no-" / "collector.costs"): compare without spaces.
        assert "".join(f"{row.help}{default} [env {row.variable}]".split()) in "".join(help_text.split())
    options = {o for action in build_parser()._actions for o in action.option_strings}
    negations = {f"--no-{row.name}" for row in SETTINGS if row.group == "collectors"}
    assert options == {"-h", "--help", "--version"} | {row.flag for row in SETTINGS} | negations


def test_variables_are_named_after_the_flags_but_two():
    renamed = {"api.base-url": "OPENAI_BASE_URL", "api.admin-key-file": "OPENAI_ADMIN_KEY_FILE"}
    for row in SETTINGS:
        assert row.variable == renamed.get(
            row.name, "OPENAI_EXPORTER_" + row.name.upper().replace(".", "_").replace("-", "_")
        )


def test_the_rows_are_the_fields_of_settings_and_organization_config():
    assert [row.key for row in PER_ORGANIZATION] == [
        "base_url",
        "api_timeout",
        "api_max_retries",
        "poll_interval",
        "poll_timeout",
        "poll_max_pages",
        "poll_concurrency",
        "api_requests_per_second",
        "poll_details_interval",
        *(f"collector_{c.name.replace('-', '_')}" for c in COLLECTORS),
        "collector_costs",
        "collector_usage",
        "collector_audit_log",
        "usage_endpoints",
        "poll_spend_interval",
        "poll_spend_lookback",
        "log_emails",
        "per_project_metrics",
    ]
    special = {"alias", "admin_key", "state_file", "key_source", "collectors"}
    ungrouped = {row.key for row in PER_ORGANIZATION if not row.group}
    assert {f.name for f in fields(OrganizationConfig)} - special == ungrouped
    assert {f.name for f in fields(Settings)} - {"admin_key", "organization_texts"} == {
        row.key for row in SETTINGS if not row.per_organization
    }


def write_organization(path: Path, **keys: str) -> Path:
    """An organization `a` with these keys; a key `collectors.NAME` goes in its `collectors` mapping."""
    # Quoted, so YAML hands each text over exactly as written here.
    lines = ["organizations:", "  - alias: a", "    admin_key_env: K"]
    lines += [f"    {key}: {json.dumps(text)}" for key, text in keys.items() if not key.startswith("collectors.")]
    switched = {key.removeprefix("collectors."): text for key, text in keys.items() if key.startswith("collectors.")}
    if switched:
        lines += ["    collectors:", *(f"      {name}: {json.dumps(text)}" for name, text in switched.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def config_key(row) -> str:
    """Where --config.file sets a row: its key, or a collector's name under `collectors`."""
    return "collectors." + row.name.removeprefix("collector.") if row.group else row.key


def value(config: OrganizationConfig, row):
    if row.group:
        return row.name.removeprefix("collector.") in config.collectors
    return getattr(config, row.key)


def file_organization(path: Path, argv: list[str] = (), **keys: str) -> OrganizationConfig:
    config = write_organization(path, **keys)
    [configured] = load_config(config, load(["--config.file", str(config), *argv], {}), {"K": KEY})
    return configured


# A value for each per-organization row other than its default, as an operator would write it.
OTHER_VALUES = {
    "base_url": "http://127.0.0.1:9/v1/",
    "api_timeout": "7s",
    "api_max_retries": "0",
    "poll_interval": "2m",
    "poll_timeout": "45s",
    "poll_max_pages": "3",
    "poll_concurrency": "4",
    "per_project_metrics": "off",
    "api_requests_per_second": "0.5",
    "poll_details_interval": "10m",
    "log_emails": "yes",
    **{f"collector_{c.name.replace('-', '_')}": str(not c.default) for c in COLLECTORS},
    "collector_costs": "false",
    "collector_usage": "false",
    "collector_audit_log": "false",
    "usage_endpoints": "completions, images",
    "poll_spend_interval": "1h",
    "poll_spend_lookback": "3d",
}


@pytest.mark.parametrize("row", PER_ORGANIZATION, ids=lambda row: row.key)
def test_each_config_key_means_what_its_flag_means(tmp_path, row):
    assert set(OTHER_VALUES) == {r.key for r in PER_ORGANIZATION}  # a new row needs its example here
    text = OTHER_VALUES[row.key]
    by_flag = value(organization([f"{row.flag}={text}"], ENV), row)
    by_variable = value(organization([], {**ENV, row.variable: text}), row)
    by_key = value(file_organization(tmp_path / "organizations.yml", **{config_key(row): text}), row)
    assert by_flag == by_variable == by_key != value(organization([], ENV), row)


def test_an_organization_without_keys_has_the_flags_organization_values(tmp_path):
    argv = ["--api.base-url", "http://127.0.0.1:9/v1", "--poll.interval", "1m", "--api.max-retries", "2"]
    flags, configured = organization(argv, ENV), file_organization(tmp_path / "organizations.yml", argv)
    for row in PER_ORGANIZATION:
        assert value(configured, row) == value(flags, row), row.key


def test_poll_timeout_follows_an_organizations_own_interval_unless_a_flag_sets_it(tmp_path):
    path = tmp_path / "organizations.yml"
    assert file_organization(path, poll_interval="2m").poll_timeout == 120
    assert file_organization(path, ["--poll.interval", "1m"], poll_interval="2m").poll_timeout == 120
    assert file_organization(path, ["--poll.timeout", "1m"], poll_interval="2m").poll_timeout == 60
    # Set to the interval's value, the flag is still set: the organization keeps it.
    assert (
        file_organization(path, ["--poll.interval", "1m", "--poll.timeout", "1m"], poll_interval="2m").poll_timeout
        == 60
    )
    assert file_organization(path, poll_interval="2m", poll_timeout="5s").poll_timeout == 5


BAD_VALUES = [
    ("api.base-url", "ftp://example.com"),
    ("api.base-url", "api.openai.com/v1"),
    ("api.timeout", "0s"),
    ("api.timeout", "fast"),
    ("api.max-retries", "-1"),
    ("api.max-retries", "1.5"),
    ("poll.interval", "500ms"),
    ("poll.interval", "0"),
    ("poll.interval", "soon"),
    ("poll.timeout", "0"),
    ("poll.timeout", "-5s"),
    ("poll.max-pages", "0"),
    ("poll.concurrency", "0"),
    ("poll.concurrency", "many"),
    ("metrics.per-project", "maybe"),
    ("api.requests-per-second", "0"),
    ("api.requests-per-second", "fast"),
    ("poll.details-interval", "500ms"),
    ("log.emails", "perhaps"),
    *((f"collector.{c.name}", "sometimes") for c in COLLECTORS),
    ("collector.costs", "maybe"),
    ("collector.usage", "maybe"),
    ("collector.audit-log", "perhaps"),
    ("collector.usage.endpoints", "completions,chat"),
    ("poll.spend-interval", "0.5s"),
    ("poll.spend-lookback", "12h"),
]


def test_every_per_organization_row_and_check_has_a_bad_value_below():
    named = {name for name, _ in BAD_VALUES}
    assert named >= {row.name for row in PER_ORGANIZATION}
    assert named >= {row.name for row in SETTINGS if row.check is not None}


@pytest.mark.parametrize("name, text", BAD_VALUES)
def test_a_bad_value_has_one_reason_from_a_flag_a_variable_and_a_config_key(tmp_path, name, text):
    [row] = [r for r in SETTINGS if r.name == name]
    config = write_organization(tmp_path / "organizations.yml", **{config_key(row): text})
    errors = []
    for attempt in (
        lambda: load([f"{row.flag}={text}"], ENV),
        lambda: load([], {**ENV, row.variable: text}),
        lambda: load(["--config.file", str(config), f"{row.flag}={text}"], {}),  # the flag fails even so
        lambda: load_config(config, load(["--config.file", str(config)], {}), {"K": KEY}),
    ):
        with pytest.raises(SettingsError) as error:
            attempt()
        errors.append(str(error.value))
    by_flag, by_variable, by_flag_with_file, by_key = errors
    assert by_flag == by_variable == by_flag_with_file
    assert by_flag.startswith(f"{row.flag}: ")
    assert by_key == f"--config.file: organization 'a': {config_key(row)}: " + by_flag.removeprefix(f"{row.flag}: ")
