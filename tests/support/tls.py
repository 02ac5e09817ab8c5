"""TLS material made with the `openssl` command, and bcrypt hashes, for `--web.config.file`."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def _new_key(name: str) -> tuple[str, ...]:
    """openssl req's arguments for a fresh P-256 key, unencrypted, in NAME.key."""
    return ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key")


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        *_new_key(name),
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )


def _leaf(directory: Path, name: str, ca: str, usage: str, san: str | None = None) -> None:
    _openssl(
        "req",
        *_new_key(name),
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        cwd=directory,
    )
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid",
    ]
    if san:
        extensions.append(f"subjectAltName={san}")
    (directory / f"{name}.ext").write_text("\n".join(extensions) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=directory,
    )


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate of that CA,
    and a client certificate of another CA."""

    directory: Path
    ca: Path = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "ca", self.directory / "ca.crt")

    def path(self, name: str) -> Path:
        return self.directory / name

    @classmethod
    def create(cls, directory: Path) -> Pki:
        if shutil.which("openssl") is None:
            pytest.skip("the openssl command is needed to make test certificates")
        directory.mkdir(parents=True, exist_ok=True)
        _ca(directory, "ca")
        _ca(directory, "rogue-ca")
        _leaf(directory, "server", "ca", "serverAuth", "IP:127.0.0.1,DNS:localhost")
        _leaf(directory, "client", "ca", "clientAuth")
        _leaf(directory, "rogue-client", "rogue-ca", "clientAuth")
        return cls(directory)

    def client_context(self, cert: str | None = None, maximum=None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert:
            context.load_cert_chain(self.path(f"{cert}.crt"), self.path(f"{cert}.key"))
        if maximum is not None:
            context.maximum_version = maximum
        return context


def bcrypt_hash(password: str, rounds: int = 10) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()
