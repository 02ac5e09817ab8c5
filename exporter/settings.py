"""Command-line flags and environment variables, validated into one frozen Settings.

Every flag has an environment variable; a flag given on the command line wins, and an
empty variable counts as unset. Bad input raises SettingsError with a one-line reason,
which the CLI prints and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from exporter import __version__

DEFAULT_PORT = 9186
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEMO_POLL_INTERVAL = 15.0


class SettingsError(Exception):
    """A bad flag, variable or key file; the message is one line for the operator."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from `30`, `30s`, `1.5s`, `500ms`, `5m`, `1h`, or Prometheus-style `1m30s`."""
    text = text.strip()
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


def _checked(key: str, what: str) -> str:
    """A key fit for an HTTP header; anything else would be quoted back in an HTTP library's error."""
    if not re.fullmatch(r"[\x21-\x7e]+", key):
        raise SettingsError(f"{what} holds spaces, line breaks or other characters no API key has")
    return key


class AdminKey:
    """Where the admin key comes from; the file is read again before every poll.

    Reading per poll lets a rotated Kubernetes secret take effect without a restart.
    The key never appears in repr() or str(), so it cannot leak through a log line.
    """

    def __init__(self, *, value: str | None = None, path: Path | None = None):
        self._value = value
        self.path = path

    def read(self) -> str:
        if self.path is None:
            if not self._value:
                raise SettingsError("the admin key is empty")
            return _checked(self._value, "the admin key")
        try:
            key = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise SettingsError(f"cannot read the admin key file {self.path}: {reason}") from None
        if not key:
            raise SettingsError(f"the admin key file {self.path} is empty")
        return _checked(key, f"the admin key in {self.path}")

    def __repr__(self) -> str:
        source = f"file {str(self.path)!r}" if self.path else "environment"
        return f"AdminKey(<redacted, from {source}>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    listen_host: str
    listen_port: int
    base_url: str
    admin_key: AdminKey | None  # None with --config.file, where each organization names its own
    api_timeout: float
    api_max_retries: int
    poll_interval: float
    poll_timeout: float
    poll_max_pages: int
    poll_concurrency: int
    per_project_metrics: bool
    log_level: str
    log_format: str
    demo: bool
    demo_projects: int
    web_config_file: Path | None = None
    state_file: Path | None = None
    config_file: Path | None = None
    config_check: bool = False


@dataclass(frozen=True)
class _Flag:
    name: str
    env: str
    help: str
    default: str | None = None
    metavar: str | None = None


def _env_name(flag: str) -> str:
    return "OPENAI_EXPORTER_" + flag.upper().replace(".", "_").replace("-", "_")


_FLAGS = [
    _Flag("web.listen-address", _env_name("web.listen-address"),
          "address for /metrics, /healthz, /readyz and /", f":{DEFAULT_PORT}", "HOST:PORT"),
    _Flag("config.file", _env_name("config.file"),
          "YAML list of organizations to serve on /probe?organization=ALIAS (several organizations)",
          None, "PATH"),
    _Flag("config.check", _env_name("config.check"),
          "check --config.file, print the verdict and exit (0 good, 2 bad)", "false", "BOOL"),
    _Flag("web.config.file", _env_name("web.config.file"),
          "exporter-toolkit web config (YAML) for TLS and basic auth", None, "PATH"),
    _Flag("api.base-url", "OPENAI_BASE_URL", "OpenAI API base URL", DEFAULT_BASE_URL, "URL"),
    _Flag("api.admin-key-file", "OPENAI_ADMIN_KEY_FILE",
          "file holding the Admin API key, read again before each poll; "
          "otherwise the key itself comes from OPENAI_ADMIN_KEY", None, "PATH"),
    _Flag("api.timeout", _env_name("api.timeout"), "timeout of one upstream request", "30s", "DURATION"),
    _Flag("api.max-retries", _env_name("api.max-retries"),
          "retries per page on 429, 5xx, timeouts and connection errors", "5", "N"),
    _Flag("poll.interval", _env_name("poll.interval"),
          f"time between polls, at least 1s (default 5m; {DEMO_POLL_INTERVAL:g}s with --demo)", None, "DURATION"),
    _Flag("poll.timeout", _env_name("poll.timeout"),
          "deadline of one whole poll (default: the poll interval)", None, "DURATION"),
    _Flag("poll.max-pages", _env_name("poll.max-pages"),
          "fail a poll that needs more pages than this (guards against cursor loops)", "10000", "N"),
    _Flag("poll.concurrency", _env_name("poll.concurrency"),
          "parallel cursor chains per poll, seeded from the previous snapshot", "1", "N"),
    _Flag("metrics.per-project", _env_name("metrics.per-project"),
          "expose per-project series (_info, _created_, _archived_)", "true", "BOOL"),
    _Flag("state.file", _env_name("state.file"),
          "keep the last good snapshot here, to serve it at once after a restart", None, "PATH"),
    _Flag("log.level", _env_name("log.level"), "debug, info, warning or error", "info", "LEVEL"),
    _Flag("log.format", _env_name("log.format"), "json or console", "json", "FORMAT"),
    _Flag("demo", _env_name("demo"),
          "poll a simulated organization on loopback; needs no key and no network", "false", "BOOL"),
    _Flag("demo.projects", _env_name("demo.projects"), "projects in the simulated organization", "300", "N"),
]
KEY_ENV = "OPENAI_ADMIN_KEY"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, not argparse's usage block
        raise SettingsError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="openai-projects-exporter",
        description="Prometheus exporter for the projects of an OpenAI organization.",
        epilog=f"The admin key itself comes from ${KEY_ENV} when no key file is given. "
        "An empty environment variable counts as unset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for flag in _FLAGS:
        default = f" (default {flag.default})" if flag.default is not None else ""
        kwargs = {"nargs": "?", "const": "true"} if flag.metavar == "BOOL" else {}
        parser.add_argument(
            f"--{flag.name}", dest=flag.name, metavar=flag.metavar, default=None,
            help=f"{flag.help}{default} [env {flag.env}]", **kwargs,
        )
    return parser


def _raw_values(argv: list[str] | None, environ: dict[str, str]) -> dict[str, str | None]:
    args = vars(build_parser().parse_args(argv))
    values = {}
    for flag in _FLAGS:
        value = args[flag.name]
        if value is None:
            value = environ.get(flag.env) or None
        values[flag.name] = value if value is not None else flag.default
    return values


def _convert(name: str, text: str | None, parse):
    try:
        return parse(text)
    except ValueError as exc:
        raise SettingsError(f"--{name}: {exc}") from None


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"not a positive whole number: {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"not a whole number: {text!r}")
    return int(text)


def _choice(*options: str):
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return text.lower()
    return parse


def _base_url(text: str) -> str:
    if not re.match(r"https?://[^/\s]+", text):
        raise ValueError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


def load(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    raw = _raw_values(argv, environ)
    demo = _convert("demo", raw["demo"], parse_bool)
    if raw["config.file"] and demo:
        raise SettingsError("--demo and --config.file exclude each other")
    if raw["config.file"] and raw["state.file"]:
        raise SettingsError("--state.file keeps the single organization of the flags; it cannot go with --config.file")
    if _convert("config.check", raw["config.check"], parse_bool) and not raw["config.file"]:
        raise SettingsError("--config.check needs --config.file")

    interval_text = raw["poll.interval"] or (f"{DEMO_POLL_INTERVAL}s" if demo else "5m")
    poll_interval = _convert("poll.interval", interval_text, parse_duration)
    if poll_interval < 1:
        raise SettingsError(f"--poll.interval: {interval_text!r} is below the minimum of 1s")
    poll_timeout = poll_interval
    if raw["poll.timeout"] is not None:
        poll_timeout = _convert("poll.timeout", raw["poll.timeout"], parse_duration)
        if poll_timeout <= 0:
            raise SettingsError("--poll.timeout: must be above zero")
    api_timeout = _convert("api.timeout", raw["api.timeout"], parse_duration)
    if api_timeout <= 0:
        raise SettingsError("--api.timeout: must be above zero")
    host, port = _convert("web.listen-address", raw["web.listen-address"], parse_listen_address)

    if demo:
        admin_key = AdminKey(value="sk-admin-demo")
    elif raw["api.admin-key-file"]:
        admin_key = AdminKey(path=Path(raw["api.admin-key-file"]))
        admin_key.read()  # fail at start, not at the first poll
    elif environ.get(KEY_ENV, "").strip():
        admin_key = AdminKey(value=environ[KEY_ENV].strip())
    elif raw["config.file"]:
        admin_key = None
    else:
        raise SettingsError(
            f"no admin key: set {KEY_ENV} or --api.admin-key-file (or run with --demo)"
        )

    return Settings(
        listen_host=host,
        listen_port=port,
        base_url=_convert("api.base-url", raw["api.base-url"], _base_url),
        admin_key=admin_key,
        api_timeout=api_timeout,
        api_max_retries=_convert("api.max-retries", raw["api.max-retries"], _non_negative_int),
        poll_interval=poll_interval,
        poll_timeout=poll_timeout,
        poll_max_pages=_convert("poll.max-pages", raw["poll.max-pages"], _positive_int),
        poll_concurrency=_convert("poll.concurrency", raw["poll.concurrency"], _positive_int),
        per_project_metrics=_convert("metrics.per-project", raw["metrics.per-project"], parse_bool),
        log_level=_convert("log.level", raw["log.level"], _choice("debug", "info", "warning", "error")),
        log_format=_convert("log.format", raw["log.format"], _choice("json", "console")),
        demo=demo,
        demo_projects=_convert("demo.projects", raw["demo.projects"], _positive_int),
        web_config_file=Path(raw["web.config.file"]) if raw["web.config.file"] else None,
        state_file=Path(raw["state.file"]) if raw["state.file"] else None,
        config_file=Path(raw["config.file"]) if raw["config.file"] else None,
        config_check=_convert("config.check", raw["config.check"], parse_bool),
    )
