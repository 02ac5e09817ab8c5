"""`--web.config.file`: TLS and basic auth in the YAML format of Prometheus' exporter-toolkit.

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt                 # optional
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...                 # bcrypt hash

Operators reuse the files they already have. The file is read again when it changes; a
bad file is an error at start and, later, a warning that keeps the last good config.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import structlog
import yaml

from exporter.inputs import load_yaml
from exporter.settings import SettingsError

log = structlog.get_logger("exporter.webconfig")

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's client auth types, as close as Python's ssl module gets: it cannot ask for a
# certificate without verifying it, so the "any" types verify against client_ca_file.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
# Checked against when the user is unknown, so a wrong user costs as much time as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"unused", bcrypt.gensalt(rounds=10))
_BCRYPT_MAX = 72  # bytes of password bcrypt looks at; longer ones it refuses outright


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # the certificates and keys it was built from


def load(path: Path) -> WebConfig:
    """Parse and check the file; SettingsError with one line on any problem."""
    try:
        document = load_yaml(path) or {}
    except OSError as exc:
        raise SettingsError(f"--web.config.file: cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--web.config.file: {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, dict):
        raise SettingsError(f"--web.config.file: {path} must be a YAML mapping")
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise SettingsError(f"--web.config.file: unknown keys {sorted(unknown)}")
    base = path.parent
    tls = document.get("tls_server_config") or {}
    files = tuple(base / str(tls[key]) for key in ("cert_file", "key_file", "client_ca_file")
                  if isinstance(tls, dict) and tls.get(key))
    return WebConfig(_tls(document.get("tls_server_config"), base), _users(document.get("basic_auth_users")), files)


def _tls(section: object, base: Path) -> ssl.SSLContext | None:
    if not section:
        return None
    if not isinstance(section, dict) or set(section) - _TLS_KEYS:
        raise SettingsError(f"--web.config.file: tls_server_config takes only {sorted(_TLS_KEYS)}")
    if not section.get("cert_file") or not section.get("key_file"):
        raise SettingsError("--web.config.file: tls_server_config needs cert_file and key_file")
    auth_type = section.get("client_auth_type") or "NoClientCert"
    if auth_type not in _CLIENT_AUTH:
        raise SettingsError(f"--web.config.file: client_auth_type {auth_type!r} is not one of {list(_CLIENT_AUTH)}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key, attribute in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if section.get(key):
            if section[key] not in _TLS_VERSIONS:
                raise SettingsError(f"--web.config.file: {key} {section[key]!r} is not one of {list(_TLS_VERSIONS)}")
            setattr(context, attribute, _TLS_VERSIONS[section[key]])
    if not section.get("min_version"):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(base / section["cert_file"], base / section["key_file"])
        if section.get("client_ca_file"):
            context.load_verify_locations(base / section["client_ca_file"])
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"--web.config.file: cannot load the TLS files: {exc}") from None
    if _CLIENT_AUTH[auth_type] != ssl.CERT_NONE and not section.get("client_ca_file"):
        raise SettingsError(f"--web.config.file: client_auth_type {auth_type} needs client_ca_file")
    context.verify_mode = _CLIENT_AUTH[auth_type]
    return context


def _users(section: object) -> dict[str, bytes]:
    if not section:
        return {}
    if not isinstance(section, dict):
        raise SettingsError("--web.config.file: basic_auth_users must map user names to bcrypt hashes")
    users: dict[str, bytes] = {}
    for user, hashed in section.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise SettingsError(f"--web.config.file: the password of {user!r} is not a bcrypt hash")
        users[str(user)] = hashed.encode()
    return users


class WebConfigWatcher:
    """The current WebConfig; re-reads the file when its size, inode or mtime change."""

    def __init__(self, path: Path):
        self.path = path
        self._config = load(path)
        self._signature = self._stat()
        self._lock = threading.Lock()
        self._verified: set[bytes] = set()  # digests of credentials bcrypt already accepted

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
                        self._config = load(self.path)
                        self._signature = self._stat()  # the new config may name other files
                        self._verified = set()
                        log.info("web_config_reloaded", path=str(self.path))
                    except SettingsError as exc:
                        self._signature = signature  # warn once per change, not per request
                        log.warning("web_config_reload_failed", reason=str(exc), action="kept the last good config")
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
            bcrypt.checkpw(b"", _DUMMY_HASH)
            return False
        if not bcrypt.checkpw(secret, hashed or _DUMMY_HASH) or hashed is None:
            return False
        self._verified.add(digest)
        return True


def _basic_credentials(header: str | None) -> tuple[str | None, str]:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, ""
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, ""
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, "")
