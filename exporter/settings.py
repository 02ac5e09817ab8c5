"""Command-line flags and environment variables, validated into one frozen Settings.

Every setting is one row of SETTINGS: its flag, its environment variable, its default,
its parser and its range check, and whether each organization of --config.file may set
it too (exporter/config.py). The parser, the variables and the config-file keys are all
read off that table, so a setting is declared once.

Every flag has an environment variable; a flag given on the command line wins, and an
empty variable counts as unset. Bad input raises SettingsError with a one-line reason,
which the CLI prints and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, NoReturn, TypeVar

from exporter import __version__
from exporter.audit import AUDIT_COLLECTOR
from exporter.collectors import COLLECTORS
from exporter.inputs import KEY_FILE_LIMIT, read_regular_file
from exporter.redaction import add_secret
from exporter.spend import SPEND_COLLECTORS
from exporter.spend.feeds import USAGE_ENDPOINTS

DEFAULT_PORT = 9186
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_POLL_INTERVAL = 300.0
DEMO_POLL_INTERVAL = 15.0
DEMO_DETAILS_INTERVAL = 30.0
DEMO_SPEND_INTERVAL = 10.0
KEY_ENV = "OPENAI_ADMIN_KEY"

T = TypeVar("T")


class SettingsError(Exception):
    """A bad flag, variable or key file; the message is one line for the operator."""


# -- parsers: text to value, or ValueError with the reason --------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Longer than any sensible interval or timeout, and far inside what timers and the
# scheduler's datetimes can hold: a larger value is a typo, refused at parse time.
MAX_DURATION = 365 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds from `30`, `30s`, `1.5s`, `500ms`, `5m`, `1h`, or Prometheus-style `1m30s`; at most 365d."""
    seconds = _duration_seconds(text.strip())
    if not seconds <= MAX_DURATION:  # also refuses an infinite value from thousands of digits
        raise ValueError(f"{text.strip()!r} is above the maximum of 365d")
    return seconds


def _duration_seconds(text: str) -> float:
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30, 30s, 5m, 1h)")
    return total


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?", re.IGNORECASE)
_UNIT_BYTES = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
MAX_SIZE = 1024**4  # far past any response; a larger value is a typo


def parse_size(text: str) -> int:
    """Bytes from `65536`, `64KiB`, `16MiB`, `1.5GB`, `16Mi`, any case; KB, MB, GB are powers of 1000."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 65536, 512KiB, 16MiB)")
    unit = (match.group(2) or "").lower()
    if unit.endswith("ib"):
        unit = unit[:-1]  # KiB and Ki are the same
    if unit not in _UNIT_BYTES:  # a bare K, M, G, T: decimal or binary? ask for one or the other
        raise ValueError(f"not a size: {text!r} (say KB or KiB, MB or MiB, GB or GiB)")
    size = float(match.group(1)) * _UNIT_BYTES[unit]
    if not size <= MAX_SIZE:
        raise ValueError(f"{text.strip()!r} is above the maximum of 1TiB")
    return int(size)


def _response_size(text: str) -> int:
    size = parse_size(text)
    if size < 1024:
        raise ValueError(f"{text.strip()!r} is below the minimum of 1KiB")
    return size


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def parse_listen_address(text: str) -> tuple[str, int]:
    """`:9186`, `0.0.0.0:9186`, `127.0.0.1:9186` or `[::1]:9186` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"not a listen address: {text!r} (use HOST:PORT or :PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"not a positive whole number: {text!r}")
    return int(text)


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be above zero")
    return seconds


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"{text.strip()!r} must be above zero")
    return value


def _non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"not a whole number: {text!r}")
    return int(text)


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return text.lower()

    return parse


def _base_url(text: str) -> str:
    if not re.match(r"https?://[^/\s]+", text):
        raise ValueError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")  # paths are appended to it; a trailing slash would double up


def _path(text: str) -> Path | None:
    return Path(text) if text else None  # an empty flag value names no file, as an empty variable does


# -- range checks: a reason to refuse a parsed value, or None ------------------------------------
# They get the text as written as well, so a refusal can quote what the operator wrote.


def _at_least(minimum: float, shown: str) -> Callable[[float, str], str | None]:
    def check(value: float, text: str) -> str | None:
        return f"{text!r} is below the minimum of {shown}" if value < minimum else None

    return check


def _above_zero(value: float, text: str) -> str | None:
    return "must be above zero" if value <= 0 else None


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting, declared once: flag, variable, default, parser, check, config-file key."""

    name: str  # the flag without its dashes: `poll.interval`
    key: str  # the field of Settings, or with per_organization of OrganizationConfig and the config-file key
    parse: Callable[[str], T]  # text to value; ValueError says why not
    help: str
    metavar: str
    default: str | None = None  # as an operator would write it; --help shows it
    # A default that depends on other settings; it reads their values, and its help says it.
    derive: Callable[[Mapping[str, Any]], T] | None = None
    check: Callable[[T, str], str | None] | None = None  # the range, for a flag, a variable and a config key alike
    per_organization: bool = False  # each organization of --config.file may set it under `key`
    env: str = ""  # the variable, when it is not OPENAI_EXPORTER_ and the flag
    # Rows of a group are one field of OrganizationConfig together, and one mapping of
    # --config.file: the collectors, each switched on or off (`--no-collector.NAME` too).
    group: str = ""

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def variable(self) -> str:
        return self.env or "OPENAI_EXPORTER_" + re.sub(r"[.-]", "_", self.name.upper())

    def value(self, text: str, where: str) -> T:
        """`text` parsed and checked; otherwise SettingsError, `where` naming the flag or config key."""
        try:
            value = self.parse(text)
        except ValueError as exc:
            raise SettingsError(f"{where}: {exc}") from None
        reason = self.check(value, text) if self.check is not None else None
        if reason:
            raise SettingsError(f"{where}: {reason}")
        return value


def _poll_interval_default(values: Mapping[str, Any]) -> float:
    return DEMO_POLL_INTERVAL if values["demo"] else DEFAULT_POLL_INTERVAL  # the simulator churns fast


def _requests_per_second_default(values: Mapping[str, Any]) -> float:
    # The simulator's few hundred projects, refreshed each DEMO_DETAILS_INTERVAL, need about 40.
    return 100.0 if values["demo"] else 5.0


def _details_interval_default(values: Mapping[str, Any]) -> float:
    return DEMO_DETAILS_INTERVAL if values["demo"] else 3600.0  # the demo shows changes within a minute


def _spend_interval_default(values: Mapping[str, Any]) -> float:
    return DEMO_SPEND_INTERVAL if values["demo"] else 600.0  # the demo shows spend rising within a minute


def _usage_endpoints(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if names == ("all",):
        return USAGE_ENDPOINTS
    unknown = [name for name in names if name not in USAGE_ENDPOINTS]
    if unknown or not names:
        raise ValueError(f"unknown usage endpoints {unknown or [text]}; known: {', '.join(USAGE_ENDPOINTS)}")
    return names


def _poll_timeout_default(values: Mapping[str, Any]) -> float:
    # A poll may use its whole interval; a config-file organization's own interval, when it sets one.
    return float(values["poll_interval"])


SETTINGS: tuple[Setting[Any], ...] = (
    Setting(
        "web.listen-address",
        "listen_address",
        parse_listen_address,
        "address for /metrics, /healthz, /readyz and /",
        "HOST:PORT",
        default=f":{DEFAULT_PORT}",
    ),
    Setting(
        "config.file",
        "config_file",
        _path,
        "YAML list of organizations to serve on /probe?organization=ALIAS (several organizations)",
        "PATH",
    ),
    Setting(
        "config.check",
        "config_check",
        parse_bool,
        "check --config.file, print the verdict and exit (0 good, 2 bad)",
        "BOOL",
        default="false",
    ),
    Setting(
        "web.config.file", "web_config_file", _path, "exporter-toolkit web config (YAML) for TLS and basic auth", "PATH"
    ),
    Setting(
        "web.idle-timeout",
        "web_idle_timeout",
        _positive_duration,
        "close a connection that waits this long for a request, or for a read or write to make progress",
        "DURATION",
        default="120s",
    ),
    Setting(
        "web.read-header-timeout",
        "web_read_header_timeout",
        _positive_duration,
        "deadline for a request's line and headers, counted from its first byte; also the TLS handshake's",
        "DURATION",
        default="10s",
    ),
    Setting(
        "web.max-connections",
        "web_max_connections",
        _positive_int,
        "connections served at once; one more is answered 503 (or closed, with TLS) at once",
        "N",
        default="64",
    ),
    Setting(
        "api.base-url",
        "base_url",
        _base_url,
        "OpenAI API base URL",
        "URL",
        default=DEFAULT_BASE_URL,
        per_organization=True,
        env="OPENAI_BASE_URL",
    ),
    # Not per organization: each organization of --config.file names its key its own way (config.py).
    Setting(
        "api.admin-key-file",
        "admin_key_file",
        _path,
        f"file holding the Admin API key, read again before each poll; otherwise the key itself comes from {KEY_ENV}",
        "PATH",
        env="OPENAI_ADMIN_KEY_FILE",
    ),
    Setting(
        "api.timeout",
        "api_timeout",
        parse_duration,
        "timeout of one upstream request",
        "DURATION",
        default="30s",
        check=_above_zero,
        per_organization=True,
    ),
    Setting(
        "api.max-retries",
        "api_max_retries",
        _non_negative_int,
        "retries per page on 429, 5xx, timeouts and connection errors",
        "N",
        default="5",
        per_organization=True,
    ),
    Setting(
        "api.max-response-size",
        "api_max_response_size",
        _response_size,
        "largest upstream response accepted, counted once decoded (gunzipped); a larger one fails the poll",
        "SIZE",
        default="16MiB",
    ),
    Setting(
        "poll.interval",
        "poll_interval",
        parse_duration,
        f"time between polls, at least 1s (default 5m; {DEMO_POLL_INTERVAL:g}s with --demo)",
        "DURATION",
        derive=_poll_interval_default,
        check=_at_least(1, "1s"),
        per_organization=True,
    ),
    Setting(
        "poll.timeout",
        "poll_timeout",
        parse_duration,
        "deadline of one whole poll (default: the poll interval)",
        "DURATION",
        derive=_poll_timeout_default,
        check=_above_zero,
        per_organization=True,
    ),
    Setting(
        "poll.max-pages",
        "poll_max_pages",
        _positive_int,
        "fail a poll that needs more pages than this (guards against cursor loops)",
        "N",
        default="10000",
        per_organization=True,
    ),
    Setting(
        "poll.concurrency",
        "poll_concurrency",
        _positive_int,
        "parallel cursor chains per poll, seeded from the previous snapshot",
        "N",
        default="1",
        per_organization=True,
    ),
    Setting(
        "api.requests-per-second",
        "api_requests_per_second",
        _positive_number,
        "requests per second to the API, the project list and every collector together; 429s lower it for a "
        "while (default 5; 100 with --demo)",
        "N",
        derive=_requests_per_second_default,
        per_organization=True,
    ),
    Setting(
        "poll.details-interval",
        "poll_details_interval",
        parse_duration,
        "time between two refreshes of a project's details, spread evenly over it, at least 1s (default 1h; "
        f"{DEMO_DETAILS_INTERVAL:g}s with --demo)",
        "DURATION",
        derive=_details_interval_default,
        check=_at_least(1, "1s"),
        per_organization=True,
    ),
    *(
        Setting(
            f"collector.{name}",
            "collector_" + name.replace("-", "_"),
            parse_bool,
            f"collect {help_text} (--no-collector.{name} to turn it off)",
            "BOOL",
            default=str(default).lower(),
            per_organization=True,
            group="collectors",
        )
        for name, help_text, default in (
            *((c.name, c.help, c.default) for c in COLLECTORS),
            *SPEND_COLLECTORS,  # (name, help, default) too
            AUDIT_COLLECTOR,
        )
    ),
    Setting(
        "collector.usage.endpoints",
        "usage_endpoints",
        _usage_endpoints,
        "the usage endpoints the usage collector reads, separated by commas (default all: "
        + ", ".join(USAGE_ENDPOINTS)
        + ")",
        "LIST",
        default="all",
        per_organization=True,
    ),
    Setting(
        "poll.spend-interval",
        "poll_spend_interval",
        parse_duration,
        f"time between two polls of the costs and usage (default 10m; {DEMO_SPEND_INTERVAL:g}s with --demo)",
        "DURATION",
        derive=_spend_interval_default,
        check=_at_least(1, "1s"),
        per_organization=True,
    ),
    Setting(
        "poll.spend-lookback",
        "poll_spend_lookback",
        parse_duration,
        "days of buckets each poll of the costs and usage reads again, to see late revisions; whole days",
        "DURATION",
        default="2d",
        check=_at_least(86400, "1d"),
        per_organization=True,
    ),
    Setting(
        "log.emails",
        "log_emails",
        parse_bool,
        "show email addresses in the change log lines of members and keys; never in a metric",
        "BOOL",
        default="false",
        per_organization=True,
    ),
    Setting(
        "metrics.per-project",
        "per_project_metrics",
        parse_bool,
        "expose per-project series (_info, _created_, _archived_)",
        "BOOL",
        default="true",
        per_organization=True,
    ),
    Setting(
        "state.file",
        "state_file",
        _path,
        "keep the last good snapshot here, to serve it at once after a restart",
        "PATH",
    ),
    Setting(
        "log.level",
        "log_level",
        _choice("debug", "info", "warning", "error"),
        "debug, info, warning or error",
        "LEVEL",
        default="info",
    ),
    Setting("log.format", "log_format", _choice("json", "console"), "json or console", "FORMAT", default="json"),
    Setting(
        "demo",
        "demo",
        parse_bool,
        "poll a simulated organization on loopback; needs no key and no network",
        "BOOL",
        default="false",
    ),
    Setting(
        "demo.projects", "demo_projects", _positive_int, "projects in the simulated organization", "N", default="300"
    ),
)
PER_ORGANIZATION: tuple[Setting[Any], ...] = tuple(row for row in SETTINGS if row.per_organization)


def resolve(
    rows: Iterable[Setting[Any]],
    texts: Mapping[str, str],
    where: Callable[[Setting[Any]], str],
    known: Mapping[str, Any],
) -> dict[str, Any]:
    """The value of each row by key: its text parsed and checked, else its default.

    `texts` holds what was given, by key. Derived defaults come last, in table order, so
    they may read any plain value, a derived one above them, or one in `known` (values
    resolved elsewhere, as the flags' for a config-file organization).
    """
    values = dict(known)
    for row in sorted(rows, key=lambda row: row.derive is not None):  # stable: table order otherwise
        text = texts.get(row.key)
        if text is not None:
            values[row.key] = row.value(text, where(row))
        elif row.derive is not None:
            values[row.key] = row.derive(values)  # from values already checked
        elif row.default is not None:
            values[row.key] = row.value(row.default, where(row))
        else:
            values[row.key] = None
    return values


# -- the admin key -------------------------------------------------------------------------------


def _checked(key: str, what: str) -> str:
    """A key fit for an HTTP header; anything else would be quoted back in an HTTP library's error."""
    if not re.fullmatch(r"[\x21-\x7e]+", key):
        raise SettingsError(f"{what} holds spaces, line breaks or other characters no API key has")
    return key


def _registered(key: str) -> str:
    add_secret(key)  # from its first read on, no output of the exporter prints it
    return key


class AdminKey:
    """Where the admin key comes from; the file is read again before every poll.

    Reading per poll lets a rotated Kubernetes secret take effect without a restart.
    The key never appears in repr() or str(), so it cannot leak through a log line.
    """

    def __init__(self, *, value: str | None = None, path: Path | None = None) -> None:
        self._value = value
        self.path = path

    def read(self) -> str:
        if self.path is None:
            if not self._value:
                raise SettingsError("the admin key is empty")
            return _registered(_checked(self._value, "the admin key"))
        try:
            key = read_regular_file(self.path, KEY_FILE_LIMIT).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise SettingsError(f"cannot read the admin key file {self.path}: {reason}") from None
        if not key:
            raise SettingsError(f"the admin key file {self.path} is empty")
        return _registered(_checked(key, f"the admin key in {self.path}"))

    def __repr__(self) -> str:
        source = f"file {str(self.path)!r}" if self.path else "environment"
        return f"AdminKey(<redacted, from {source}>)"

    __str__ = __repr__


# -- Settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The process-wide settings, one field per row that is not per organization.

    The per-organization rows stay as the texts the flags and variables gave: the flags'
    single organization and each organization of --config.file are built from them by
    exporter/config.py, the same way.
    """

    listen_address: tuple[str, int]
    config_file: Path | None
    config_check: bool
    web_config_file: Path | None
    web_idle_timeout: float
    web_read_header_timeout: float
    web_max_connections: int
    admin_key_file: Path | None
    state_file: Path | None
    log_level: str
    log_format: str
    demo: bool
    demo_projects: int
    api_max_response_size: int
    admin_key: AdminKey | None  # None with --config.file, where each organization names its own
    organization_texts: Mapping[str, str]  # per-organization rows given by a flag or variable, by key

    @property
    def listen_host(self) -> str:
        return self.listen_address[0]

    @property
    def listen_port(self) -> int:
        return self.listen_address[1]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line and exit 2, not argparse's usage block
        raise SettingsError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="openai-projects-exporter",
        description="Prometheus exporter for the projects of an OpenAI organization.",
        epilog=f"The admin key itself comes from ${KEY_ENV} when no key file is given. "
        "An empty environment variable counts as unset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for row in SETTINGS:
        default = f" (default {row.default})" if row.default is not None else ""
        # A bare boolean flag means true: `--demo` as well as `--demo=false`.
        optional: dict[str, Any] = {"nargs": "?", "const": "true"} if row.parse is parse_bool else {}
        parser.add_argument(
            row.flag,
            dest=row.key,
            metavar=row.metavar,
            default=None,
            help=f"{row.help}{default} [env {row.variable}]",
            **optional,
        )
        if row.group == "collectors":
            parser.add_argument(
                f"--no-{row.name}", dest=row.key, action="store_const", const="false", help=argparse.SUPPRESS
            )
    return parser


def _given(argv: list[str] | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The text of each row given by its flag or, failing that, by its non-empty variable."""
    args = vars(build_parser().parse_args(argv))
    texts: dict[str, str] = {}
    for row in SETTINGS:
        text = args[row.key]
        if text is None:
            text = environ.get(row.variable) or None
        if text is not None:
            texts[row.key] = text
    return texts


def load(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    texts = _given(argv, environ)
    # Every row, the per-organization ones too: a bad flag fails at start under its own name,
    # even when --config.file organizations set the same key.
    values = resolve(SETTINGS, texts, lambda row: row.flag, {})
    if values["config_file"] and values["demo"]:
        raise SettingsError("--demo and --config.file exclude each other")
    if values["config_file"] and values["state_file"]:
        raise SettingsError("--state.file keeps the single organization of the flags; it cannot go with --config.file")
    if values["config_check"] and not values["config_file"]:
        raise SettingsError("--config.check needs --config.file")

    admin_key: AdminKey | None
    if values["demo"]:
        admin_key = AdminKey(value="sk-admin-demo")
    elif values["admin_key_file"]:
        admin_key = AdminKey(path=values["admin_key_file"])
        admin_key.read()  # fail at start, not at the first poll
    elif environ.get(KEY_ENV, "").strip():
        admin_key = AdminKey(value=environ[KEY_ENV].strip())
    elif values["config_file"]:
        admin_key = None
    else:
        raise SettingsError(f"no admin key: set {KEY_ENV} or --api.admin-key-file (or run with --demo)")

    return Settings(
        **{row.key: values[row.key] for row in SETTINGS if not row.per_organization},
        admin_key=admin_key,
        organization_texts=MappingProxyType({row.key: texts[row.key] for row in PER_ORGANIZATION if row.key in texts}),
    )
