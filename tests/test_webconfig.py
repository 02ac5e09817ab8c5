"""`--web.config.file`: TLS, mutual TLS and bcrypt basic auth on /metrics, with real TLS clients.

Certificates are made per module with the `openssl` command: a CA, a server certificate for
127.0.0.1 and localhost, a client certificate of the CA and one of another CA.
"""

from __future__ import annotations

import os
import shutil
import ssl
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.support.metrics import Metrics
from tests.support.net import get
from tests.support.process import assert_one_line_error, run_exporter
from tests.support.tls import Pki, bcrypt_hash
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
HASH = bcrypt_hash(PASSWORD)
PROTECTED = ("/metrics", "/readyz", "/", "/index.html", "/probe?organization=a", "/nope")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start(simulator, start_exporter, tmp_path):
    """An exporter with `config` as its --web.config.file, answering /healthz (over TLS with `tls_context`)."""
    server = simulator(120, seed=9)

    def run(config: str, *, tls_context: ssl.SSLContext | None = None):
        web = tmp_path / "web.yml"
        web.write_text(config)
        process = start_exporter(
            "--api.base-url", server.base_url, "--poll.interval", "1s", "--web.config.file", str(web), wait=None
        )
        process.wait_listening(tls=tls_context)
        return process, web

    return run


def replace_file(path: Path, text: str) -> None:
    """Replace the file in one rename, as a ConfigMap update or an editor's save does."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def tls_section(pki: Pki, **extra: str) -> str:
    lines = [f"  cert_file: {pki.path('server.crt')}", f"  key_file: {pki.path('server.key')}"]
    lines += [f"  {key}: {value}" for key, value in extra.items()]
    return "tls_server_config:\n" + "\n".join(lines) + "\n"


def users_section(**users: str) -> str:
    return "basic_auth_users:\n" + "".join(f"  {user}: {hashed}\n" for user, hashed in users.items())


# -- TLS and basic auth ---------------------------------------------------------------------


def test_tls_with_basic_auth(start, pki, tmp_path):
    # Relative file names resolve against the config file's directory.
    for name in ("server.crt", "server.key"):
        shutil.copy(pki.path(name), tmp_path / name)
    config = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n" + users_section(prometheus=HASH)
    context = pki.client_context()
    process, _ = start(config, tls_context=context)
    port = process.port

    good = ("prometheus", PASSWORD)
    response = wait_for(
        lambda: (
            (r := get(port, "/metrics", tls=context, auth=good)).status_code == 200
            and "openai_projects{" in r.text
            and r
        ),
        10,
        what="a good poll over TLS",
    )
    metrics = Metrics(response.text)
    assert metrics.value("openai_up") == 1
    assert (
        metrics.value("openai_projects", status="active") + metrics.value("openai_projects", status="archived") == 120
    )
    assert get(port, "/metrics", tls=context, auth=good, host="localhost").status_code == 200

    for path in PROTECTED:
        assert get(port, path, tls=context, auth=good).status_code != 401, path
        for auth in (
            None,
            ("prometheus", "wrong"),
            ("prometheus", ""),
            ("someone", PASSWORD),
            ("prometheus", PASSWORD + " "),
        ):
            refused = get(port, path, tls=context, auth=auth)
            assert refused.status_code == 401, (path, auth)
            assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert "openai_" not in refused.text
    # Liveness probes carry no credentials.
    health = get(port, "/healthz", tls=context)
    assert (health.status_code, health.text) == (200, "ok\n")

    # Plain HTTP to the TLS port gets no HTTP answer at all.
    with pytest.raises(httpx.TransportError):
        get(port, "/metrics", auth=good, timeout=5)
    with pytest.raises(httpx.TransportError):
        get(port, "/healthz", timeout=5)
    process.wait_event("tls_handshake_failed")
    # A client that does not trust the CA refuses the server.
    with pytest.raises(httpx.ConnectError):
        get(port, "/healthz", tls=ssl.create_default_context())
    # The exporter still serves after all of that.
    assert get(port, "/metrics", tls=context, auth=good).status_code == 200


def test_mutual_tls_refuses_a_client_without_a_certificate_of_the_ca(start, pki):
    config = tls_section(pki, client_ca_file=str(pki.ca), client_auth_type="RequireAndVerifyClientCert")
    with_cert = pki.client_context("client")
    process, _ = start(config, tls_context=with_cert)

    response = get(process.port, "/metrics", tls=with_cert)
    assert response.status_code == 200 and "openai_up" in response.text
    for context in (pki.client_context(), pki.client_context("rogue-client")):
        with pytest.raises(httpx.TransportError):
            get(process.port, "/metrics", tls=context, timeout=5)
        with pytest.raises(httpx.TransportError):
            get(process.port, "/healthz", tls=context, timeout=5)
    process.wait_event("tls_handshake_failed")
    assert get(process.port, "/readyz", tls=with_cert).status_code in (200, 503)


def test_min_version_refuses_older_clients(start, pki):
    process, _ = start(tls_section(pki, min_version="TLS13"), tls_context=pki.client_context())
    assert get(process.port, "/healthz", tls=pki.client_context()).status_code == 200
    old = pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(httpx.TransportError):
        get(process.port, "/healthz", tls=old, timeout=5)


# -- reload -----------------------------------------------------------------------------------


def test_changed_file_is_read_again_without_a_restart(start, pki):
    process, web = start(users_section(prometheus=HASH))
    port, pid = process.port, process.proc.pid
    assert get(port, "/metrics", auth=("prometheus", PASSWORD)).status_code == 200

    # A new password: the new one works at once, the old one no longer does.
    replace_file(web, users_section(prometheus=bcrypt_hash("second password")))
    assert get(port, "/metrics", auth=("prometheus", "second password")).status_code == 200
    assert get(port, "/metrics", auth=("prometheus", PASSWORD)).status_code == 401
    process.wait_event("web_config_reloaded")

    # A broken file is logged and the last good config stays.
    replace_file(web, "basic_auth_users:\n  prometheus: plain-text-password\n")
    assert get(port, "/metrics", auth=("prometheus", "second password")).status_code == 200
    failed = process.wait_event("web_config_reload_failed")
    assert "not a bcrypt hash" in failed["reason"] and "plain-text-password" not in failed["reason"]
    assert get(port, "/metrics").status_code == 401

    # TLS switched on by the file alone: the next connection is TLS, plain HTTP is refused.
    replace_file(web, tls_section(pki) + users_section(prometheus=HASH))
    assert get(port, "/metrics", tls=pki.client_context(), auth=("prometheus", PASSWORD)).status_code == 200
    with pytest.raises(httpx.TransportError):  # a new connection; one kept alive from before stays plain
        httpx.get(f"http://127.0.0.1:{port}/metrics", auth=("prometheus", PASSWORD), timeout=5, trust_env=False)
    assert process.proc.pid == pid and process.proc.poll() is None


# -- passwords --------------------------------------------------------------------------------


def _timed(port: int, auth, repeats: int = 7) -> float:
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        assert get(port, "/readyz", auth=auth).status_code == 401
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def test_unknown_user_costs_as_much_as_a_wrong_password(start):
    process, _ = start(users_section(prometheus=HASH))
    port = process.port
    wrong_password = _timed(port, ("prometheus", "not it"))
    unknown_user = _timed(port, ("nobody", "not it"))
    no_credentials = _timed(port, None)
    # Both run one bcrypt comparison (cost 10, tens of milliseconds); a missing header runs none.
    assert wrong_password > 0.01 and unknown_user > 0.01
    assert 0.5 <= unknown_user / wrong_password <= 2.0, (unknown_user, wrong_password)
    assert no_credentials < wrong_password


def test_password_longer_than_bcrypt_takes_is_refused_with_401(start):
    process, _ = start(users_section(prometheus=HASH))
    for password in ("x" * 73, PASSWORD + "y" * 100, "é" * 40):
        response = get(process.port, "/metrics", auth=("prometheus", password), timeout=5)
        assert response.status_code == 401
    assert "Traceback" not in process.stderr()


# -- bad files at start -----------------------------------------------------------------------

BAD_FILES = {
    "not-yaml": ("basic_auth_users: [unclosed\n", "is not valid YAML"),
    "not-a-mapping": ("- a\n- b\n", "must be a YAML mapping"),
    "unknown-key": ("basic_auth_user:\n  a: b\n", "unknown keys"),
    "plain-password": ("basic_auth_users:\n  prometheus: hunter2\n", "is not a bcrypt hash"),
    "users-not-a-mapping": ("basic_auth_users: [a, b]\n", "must map user names"),
    "tls-without-key": ("tls_server_config:\n  cert_file: {crt}\n", "needs cert_file and key_file"),
    "tls-missing-file": (
        "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: {key}\n",
        "cannot load the TLS files",
    ),
    "tls-unknown-key": ("tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  cipher: x\n", "takes only"),
    "bad-min-version": (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  min_version: TLS9\n",
        "min_version",
    ),
    "bad-client-auth": (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  client_auth_type: Sometimes\n",
        "client_auth_type",
    ),
    "client-auth-without-ca": (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n",
        "needs client_ca_file",
    ),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_is_a_clear_error_at_start(pki, tmp_path, name):
    text, reason = BAD_FILES[name]
    web = tmp_path / "web.yml"
    web.write_text(text.format(crt=pki.path("server.crt"), key=pki.path("server.key")))
    result = run_exporter(["--web.config.file", str(web), "--web.listen-address", "127.0.0.1:0"])
    assert_one_line_error(result, reason, starts="--web.config.file")


def test_missing_file_is_a_clear_error_at_start(tmp_path):
    result = run_exporter(["--web.config.file", str(tmp_path / "absent.yml")])
    assert_one_line_error(
        result, f"cannot read {tmp_path / 'absent.yml'}: No such file or directory", starts="--web.config.file: "
    )
