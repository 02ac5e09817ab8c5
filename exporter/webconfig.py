"""`--web.config.file`: TLS and basic auth in the YAML format of Prometheus' exporter-toolkit.

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt                 # optional
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
      cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]   # TLS 1.2 and below
    http_server_config:
      headers: {X-Content-Type-Options: nosniff}
    basic_auth_users:
      prometheus: $2y$10$...                 # bcrypt hash

Operators reuse the files they already have. Every key is checked for its type, so a slip
(a list where a string belongs) is one line naming the key, never an exception in a
request. A key exporter-toolkit takes that Python's ssl cannot honour is accepted and logged
as ignored, saying why. The file is read again when it changes; a bad file is an error at
start and, later, a warning that keeps the last good config.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import structlog

from exporter.inputs import UnusableFile, load_yaml
from exporter.settings import SettingsError, parse_duration

log = structlog.get_logger("exporter.webconfig")

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's client auth types, as close as Python's ssl module gets: it cannot ask for a
# certificate without verifying it, so the "any" types verify against client_ca_file.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireClientCert": ssl.CERT_REQUIRED,  # exporter-toolkit's old name of RequireAnyClientCert
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# exporter-toolkit's cipher suite names (Go's, which are IANA's) and OpenSSL's names for them.
# Go's list of secure suites, and the RSA key exchange and 3DES suites older Go releases
# still counted as secure; RC4 and the CBC-SHA256 suites exporter-toolkit has always refused.
_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",  # Go 1.13's names
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
}
# TLS 1.3's suites are not configurable, in Go as in Python's ssl: TLS 1.3 offers all three.
_TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
# The response headers exporter-toolkit lets a config set, with the values it allows (None: any).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "min_version",
    "max_version",
    "cipher_suites",
    "curve_preferences",
    "prefer_server_cipher_suites",
}
_HTTP_KEYS = {"http2", "headers"}
_RATE_LIMIT_KEYS = {"burst", "interval"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config", "rate_limit"}
# Checked against when the user is unknown and no user is configured: a cost of 10, as htpasswd makes.
_DUMMY_HASH = bcrypt.hashpw(b"unused", bcrypt.gensalt(rounds=10))
_BCRYPT_MAX = 72  # bytes of password bcrypt looks at; longer ones it refuses outright
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_WHERE = "--web.config.file"


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # the certificates and keys it was built from
    # What an unknown user's password is checked against: the costliest configured hash, so
    # an unknown user costs what a wrong password does (the outcome is thrown away).
    dummy: bytes = _DUMMY_HASH
    headers: tuple[tuple[str, str], ...] = ()  # http_server_config.headers, sent with every response
    ignored: tuple[tuple[str, str], ...] = ()  # (key, why): accepted from exporter-toolkit, not applied


def _kind(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _fail(message: str) -> SettingsError:
    return SettingsError(f"{_WHERE}: {message}")


def _mapping(value: object, where: str, message: str = "") -> dict[object, object] | None:
    """A section: absent or null gives None; anything but a mapping is an error."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(message or f"{where} must be a mapping, not {_kind(value)}")
    return value


def _text(section: dict[object, object], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(f"{where}.{key} must be a string, not {_kind(value)}")
    return value


def _names(section: dict[object, object], key: str, where: str) -> list[str]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(f"{where}.{key} must be a list of names, not {_kind(value)}")
    return value


def _flag(section: dict[object, object], key: str, where: str) -> bool | None:
    value = section.get(key)
    if value is not None and not isinstance(value, bool):
        raise _fail(f"{where}.{key} must be true or false, not {_kind(value)}")
    return value


def load(path: Path) -> WebConfig:
    """Parse and check the file; SettingsError with one line on any problem."""
    try:
        return _load(path)
    except SettingsError:
        raise
    except Exception as exc:  # a case the checks below missed: still one line, never a traceback
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise _fail(f"{path} cannot be used: {reason}") from None


def _load(path: Path) -> WebConfig:
    try:
        document = load_yaml(path)
    except UnusableFile as exc:
        raise _fail(str(exc)) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise _fail(f"{path} must be a YAML mapping")
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise _fail(f"unknown keys {sorted(map(str, unknown))}")
    ignored: list[tuple[str, str]] = []
    tls, files = _tls(_mapping(document.get("tls_server_config"), "tls_server_config"), path.parent, ignored)
    users, dummy = _users(
        _mapping(
            document.get("basic_auth_users"),
            "basic_auth_users",
            "basic_auth_users must map user names to bcrypt hashes",
        )
    )
    headers = _http(_mapping(document.get("http_server_config"), "http_server_config"), ignored)
    _rate_limit(_mapping(document.get("rate_limit"), "rate_limit"), ignored)
    return WebConfig(tls, users, files, dummy, headers, tuple(ignored))


def _tls(
    section: dict[object, object] | None, base: Path, ignored: list[tuple[str, str]]
) -> tuple[ssl.SSLContext | None, tuple[Path, ...]]:
    if not section:
        return None, ()
    where = "tls_server_config"
    if set(section) - _TLS_KEYS:
        raise _fail(f"tls_server_config takes only {sorted(_TLS_KEYS)}")
    cert, key = _text(section, "cert_file", where), _text(section, "key_file", where)
    ca = _text(section, "client_ca_file", where)
    if not cert or not key:
        raise _fail("tls_server_config needs cert_file and key_file")
    auth_type = _text(section, "client_auth_type", where) or "NoClientCert"
    if auth_type not in _CLIENT_AUTH:
        raise _fail(f"client_auth_type {auth_type!r} is not one of {list(_CLIENT_AUTH)}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = {}
    for name in ("min_version", "max_version"):
        text = _text(section, name, where)
        if text is not None and text not in _TLS_VERSIONS:
            raise _fail(f"{name} {text!r} is not one of {list(_TLS_VERSIONS)}")
        versions[name] = _TLS_VERSIONS[text] if text else None
    context.minimum_version = versions["min_version"] or ssl.TLSVersion.TLSv1_2
    if versions["max_version"] is not None:
        if versions["max_version"] < context.minimum_version:
            raise _fail("tls_server_config: max_version is below min_version")
        context.maximum_version = versions["max_version"]
    prefer = _flag(section, "prefer_server_cipher_suites", where)
    if prefer is False:  # exporter-toolkit's default, and the ssl module's, is true
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _cipher_suites(context, _names(section, "cipher_suites", where), versions["max_version"], ignored)
    _curves(context, _names(section, "curve_preferences", where), ignored)
    try:
        context.load_cert_chain(base / cert, base / key)
        if ca:
            context.load_verify_locations(base / ca)
    except (OSError, ssl.SSLError) as exc:
        raise _fail(f"cannot load the TLS files: {exc}") from None
    if _CLIENT_AUTH[auth_type] != ssl.CERT_NONE and not ca:
        raise _fail(f"client_auth_type {auth_type} needs client_ca_file")
    context.verify_mode = _CLIENT_AUTH[auth_type]
    return context, tuple(base / name for name in (cert, key, ca) if name)


def _cipher_suites(
    context: ssl.SSLContext, names: list[str], maximum: ssl.TLSVersion | None, ignored: list[tuple[str, str]]
) -> None:
    """cipher_suites, for TLS 1.2 and below: OpenSSL's names for the IANA names the file gives."""
    if not names:
        return  # OpenSSL's defaults, as Go's are exporter-toolkit's
    for name in names:
        if name not in _CIPHER_SUITES and name not in _TLS13_SUITES:
            raise _fail(f"cipher_suites: unknown cipher suite {name!r}")
    tls13 = [name for name in names if name in _TLS13_SUITES]
    if tls13:
        ignored.append(
            (
                "cipher_suites",
                f"{', '.join(tls13)}: TLS 1.3 suites cannot be chosen, "
                "in Go as in Python's ssl; TLS 1.3 offers all three",
            )
        )
    wanted = [name for name in names if name in _CIPHER_SUITES]
    if not wanted:
        # As in Go: only TLS 1.3 suites named leaves none for TLS 1.2 and below.
        if maximum is not None and maximum < ssl.TLSVersion.TLSv1_3:
            raise _fail("cipher_suites names TLS 1.3 suites only, but max_version is below TLS13")
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return
    try:
        context.set_ciphers(":".join(_CIPHER_SUITES[name] for name in wanted))
    except ssl.SSLError:
        raise _fail(f"cipher_suites: this OpenSSL offers none of {wanted}") from None
    offered = {cipher["name"] for cipher in context.get_ciphers()}
    missing = [name for name in wanted if _CIPHER_SUITES[name] not in offered]
    if missing:
        ignored.append(("cipher_suites", f"{', '.join(missing)}: not offered by this OpenSSL"))


def _curves(context: ssl.SSLContext, names: list[str], ignored: list[tuple[str, str]]) -> None:
    """curve_preferences: applied when it names one curve; Python's ssl cannot set a list."""
    for name in names:
        if name not in _CURVES:
            raise _fail(f"curve_preferences: unknown curve {name!r}; known: {list(_CURVES)}")
    if len(set(names)) == 1:
        context.set_ecdh_curve(_CURVES[names[0]])  # that curve alone, as Go would
    elif names:
        ignored.append(
            (
                "curve_preferences",
                "Python's ssl module sets one curve, not a list; "
                "OpenSSL's default curves apply (X25519, P-256, P-384, P-521 among them)",
            )
        )


def _users(section: dict[object, object] | None) -> tuple[dict[str, bytes], bytes]:
    if not section:
        return {}, _DUMMY_HASH
    users: dict[str, bytes] = {}
    for user, hashed in section.items():
        if isinstance(user, bool) or not isinstance(user, (str, int)):
            raise _fail(f"basic_auth_users: the user name {user!r} is not a string")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise _fail(f"the password of {str(user)!r} is not a bcrypt hash")
        if not _BCRYPT_HASH.fullmatch(hashed) or not _bcrypt_parses(hashed):
            # The hash itself stays out of the message: it is a secret of sorts.
            raise _fail(
                f"the password of {str(user)!r} is a malformed bcrypt hash "
                "($2y$, a cost from 04 to 31, $, then 53 characters of [./A-Za-z0-9])"
            )
        users[str(user)] = hashed.encode()
    costliest = max(users.values(), key=lambda hashed: int(hashed[4:6]))
    return users, costliest


def _bcrypt_parses(hashed: str) -> bool:
    """Whether bcrypt takes the hash: checked at the lowest cost, so it costs a millisecond."""
    try:
        bcrypt.checkpw(b"", f"{hashed[:4]}04{hashed[6:]}".encode())
    except ValueError:
        return False
    return True


def _http(section: dict[object, object] | None, ignored: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    if not section:
        return ()
    where = "http_server_config"
    if set(section) - _HTTP_KEYS:
        raise _fail(f"http_server_config takes only {sorted(_HTTP_KEYS)}")
    if _flag(section, "http2", where):  # exporter-toolkit's default; HTTP/2 is offered over TLS only
        ignored.append(("http_server_config.http2", "this server speaks HTTP/1.1 only"))
    headers = _mapping(section.get("headers"), f"{where}.headers") or {}
    chosen = []
    for name, value in headers.items():
        if not isinstance(name, str) or name not in _HEADERS:
            raise _fail(f"{where}.headers: {name!r} cannot be set; only {list(_HEADERS)}")
        if not isinstance(value, str):
            raise _fail(f"{where}.headers.{name} must be a string, not {_kind(value)}")
        if "\r" in value or "\n" in value:
            raise _fail(f"{where}.headers.{name} must be one line")
        allowed = _HEADERS[name]
        if allowed is not None and value not in allowed:
            raise _fail(f"{where}.headers.{name} must be one of {list(allowed)}")
        chosen.append((name, value))
    return tuple(chosen)


def _rate_limit(section: dict[object, object] | None, ignored: list[tuple[str, str]]) -> None:
    if not section:
        return
    if set(section) - _RATE_LIMIT_KEYS:
        raise _fail(f"rate_limit takes only {sorted(_RATE_LIMIT_KEYS)}")
    burst, interval = section.get("burst"), section.get("interval")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 0):
        raise _fail(f"rate_limit.burst must be a whole number, not {_kind(burst)}")
    seconds = 0.0
    if interval is not None:
        if not isinstance(interval, str):
            raise _fail(f"rate_limit.interval must be a duration such as 1s, not {_kind(interval)}")
        try:
            seconds = parse_duration(interval)
        except ValueError as exc:
            raise _fail(f"rate_limit.interval: {exc}") from None
    if seconds > 0:  # an interval of 0 is exporter-toolkit's "no limit"
        ignored.append(
            (
                "rate_limit",
                "requests are not rate limited here; --web.max-connections bounds the connections served at once",
            )
        )


class WebConfigWatcher:
    """The current WebConfig; re-reads the file when its size, inode or mtime change."""

    def __init__(self, path: Path):
        self.path = path
        self._config = load(path)
        self._signature = self._stat()
        self._lock = threading.Lock()
        self._verified: set[bytes] = set()  # digests of credentials bcrypt already accepted
        _log_ignored(self._config)

    @property
    def last(self) -> WebConfig:
        """The config in force, without looking at the files: for the accept loop, which must not block."""
        return self._config

    def _stat(self) -> tuple[tuple[int, int, int], ...] | None:
        """What changes when the file, or a certificate or key it names, is replaced or edited."""
        signature: list[tuple[int, int, int]] = []
        for path in (self.path, *self._config.files):
            try:
                st = os.stat(path)
            except OSError:
                return None
            signature.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(signature)

    def current(self) -> WebConfig:
        signature = self._stat()
        if signature != self._signature and signature is not None:
            with self._lock:
                if signature != self._signature:
                    try:
                        config = load(self.path)
                    except SettingsError as exc:
                        self._signature = signature  # warn once per change, not per request
                        log.warning("web_config_reload_failed", reason=str(exc), action="kept the last good config")
                    else:
                        self._config = config
                        self._signature = self._stat()  # the new config may name other files
                        self._verified = set()
                        log.info("web_config_reloaded", path=str(self.path))
                        _log_ignored(config)
        return self._config

    def authorized(self, config: WebConfig, header: str | None) -> bool:
        """Basic auth against bcrypt hashes; a success is remembered so scrapes skip bcrypt."""
        if not config.users:
            return True
        user, password = _basic_credentials(header)
        if user is None:
            return False
        hashed = config.users.get(user)
        digest = hashlib.sha256(b"\0".join([user.encode(), password.encode(), hashed or b""])).digest()
        if hashed is not None and digest in self._verified:
            return True
        secret = password.encode()
        if len(secret) > _BCRYPT_MAX:  # bcrypt refuses these; still spend the same time
            bcrypt.checkpw(b"", config.dummy)
            return False
        if not bcrypt.checkpw(secret, hashed or config.dummy) or hashed is None:
            return False
        self._verified.add(digest)
        return True


def _log_ignored(config: WebConfig) -> None:
    for key, reason in config.ignored:
        log.warning("web_config_setting_ignored", key=key, reason=reason)


def _basic_credentials(header: str | None) -> tuple[str | None, str]:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, ""
    try:
        # ValueError covers binascii.Error and a token with non-ASCII characters, which
        # b64decode refuses before it looks at the alphabet.
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None, ""
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, "")
