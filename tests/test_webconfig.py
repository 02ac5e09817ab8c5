"""`--web.config.file`: TLS, mutual TLS and bcrypt basic auth on /metrics, with real TLS clients.

Certificates are made per module with the `openssl` command: a CA, a server certificate for
127.0.0.1 and localhost, a client certificate of the CA and one of another CA.
"""

from __future__ import annotations

import os
import shutil
import ssl
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from exporter.simulator import OrganizationServer, SimulatedOrganization
from faultkit import (
    Pki, bcrypt_hash, events_between, exporter, http_get, https_get, kill_quietly, run_exporter, wait_event,
)
from helpers import KEY, Metrics, wait_for

PASSWORD = "correct horse battery staple"
HASH = bcrypt_hash(PASSWORD)
PROTECTED = ("/metrics", "/readyz", "/", "/index.html", "/probe?organization=a", "/nope")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstream():
    server = OrganizationServer(SimulatedOrganization(120, seed=9), KEY)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server
    server.stop()


@pytest.fixture
def start(upstream, tmp_path):
    started = []

    def run(config: str, *, tls_context: ssl.SSLContext | None = None, auth=None, directory: Path | None = None):
        directory = directory or tmp_path
        web = directory / "web.yml"
        web.write_text(config)
        process = exporter(["--api.base-url", upstream.base_url, "--poll.interval", "1s",
                            "--web.config.file", str(web)], tmp_path)
        started.append(process)

        def healthy():
            process._check_alive()
            try:
                if tls_context is not None:
                    return https_get(process.port, "/healthz", tls_context, timeout=2).status_code == 200
                return http_get(process.port, "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        wait_for(healthy, 10, what="the exporter to answer /healthz")
        return process, web
    yield run
    for process in started:
        kill_quietly(process)


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
    config = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n" + users_section(
        prometheus=HASH)
    context = pki.client_context()
    process, _ = start(config, tls_context=context)
    port = process.port

    good = ("prometheus", PASSWORD)
    response = wait_for(lambda: (r := https_get(port, "/metrics", context, good)).status_code == 200
                        and "openai_projects{" in r.text and r, 10, what="a good poll over TLS")
    metrics = Metrics(response.text)
    assert metrics.value("openai_up") == 1
    assert metrics.value("openai_projects", status="active") + metrics.value(
        "openai_projects", status="archived") == 120
    assert https_get(port, "/metrics", context, good, host="localhost").status_code == 200

    for path in PROTECTED:
        assert https_get(port, path, context, good).status_code != 401, path
        for auth in (None, ("prometheus", "wrong"), ("prometheus", ""), ("someone", PASSWORD),
                     ("prometheus", PASSWORD + " ")):
            refused = https_get(port, path, context, auth)
            assert refused.status_code == 401, (path, auth)
            assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert "openai_" not in refused.text
    # Liveness probes carry no credentials.
    health = https_get(port, "/healthz", context)
    assert (health.status_code, health.text) == (200, "ok\n")

    # Plain HTTP to the TLS port gets no HTTP answer at all.
    with pytest.raises(httpx.TransportError):
        http_get(port, "/metrics", auth=good, timeout=5)
    with pytest.raises(httpx.TransportError):
        http_get(port, "/healthz", timeout=5)
    wait_event(process, "tls_handshake_failed", 0, timeout=5)
    # A client that does not trust the CA refuses the server.
    with pytest.raises(httpx.ConnectError):
        https_get(port, "/healthz", ssl.create_default_context())
    # The exporter still serves after all of that.
    assert https_get(port, "/metrics", context, good).status_code == 200


def test_mutual_tls_refuses_a_client_without_a_certificate_of_the_ca(start, pki):
    config = tls_section(pki, client_ca_file=str(pki.ca), client_auth_type="RequireAndVerifyClientCert")
    with_cert = pki.client_context("client")
    process, _ = start(config, tls_context=with_cert)

    response = https_get(process.port, "/metrics", with_cert)
    assert response.status_code == 200 and "openai_up" in response.text
    for context in (pki.client_context(), pki.client_context("rogue-client")):
        with pytest.raises(httpx.TransportError):
            https_get(process.port, "/metrics", context, timeout=5)
        with pytest.raises(httpx.TransportError):
            https_get(process.port, "/healthz", context, timeout=5)
    assert len(events_between(process, "tls_handshake_failed", 0)) >= 1
    assert https_get(process.port, "/readyz", with_cert).status_code in (200, 503)


def test_min_version_refuses_older_clients(start, pki):
    process, _ = start(tls_section(pki, min_version="TLS13"), tls_context=pki.client_context())
    assert https_get(process.port, "/healthz", pki.client_context()).status_code == 200
    old = pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(httpx.TransportError):
        https_get(process.port, "/healthz", old, timeout=5)


# -- reload -----------------------------------------------------------------------------------


def test_changed_file_is_read_again_without_a_restart(start, pki):
    process, web = start(users_section(prometheus=HASH))
    port, pid = process.port, process.proc.pid
    assert http_get(port, "/metrics", auth=("prometheus", PASSWORD)).status_code == 200

    # A new password: the new one works at once, the old one no longer does.
    replace_file(web, users_section(prometheus=bcrypt_hash("second password")))
    assert http_get(port, "/metrics", auth=("prometheus", "second password")).status_code == 200
    assert http_get(port, "/metrics", auth=("prometheus", PASSWORD)).status_code == 401
    wait_event(process, "web_config_reloaded", 0, timeout=5)

    # A broken file is logged and the last good config stays.
    replace_file(web, "basic_auth_users:\n  prometheus: plain-text-password\n")
    assert http_get(port, "/metrics", auth=("prometheus", "second password")).status_code == 200
    failed = wait_event(process, "web_config_reload_failed", 0, timeout=5)
    assert "not a bcrypt hash" in failed["reason"] and "plain-text-password" not in failed["reason"]
    assert http_get(port, "/metrics").status_code == 401

    # TLS switched on by the file alone: the next connection is TLS, plain HTTP is refused.
    replace_file(web, tls_section(pki) + users_section(prometheus=HASH))
    assert https_get(port, "/metrics", pki.client_context(), ("prometheus", PASSWORD)).status_code == 200
    with pytest.raises(httpx.TransportError):  # a new connection; one kept alive from before stays plain
        httpx.get(f"http://127.0.0.1:{port}/metrics", auth=("prometheus", PASSWORD), timeout=5, trust_env=False)
    assert process.proc.pid == pid and process.proc.poll() is None


# -- passwords --------------------------------------------------------------------------------


def _timed(port: int, auth, repeats: int = 7) -> float:
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        assert http_get(port, "/readyz", auth=auth).status_code == 401
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
        response = http_get(process.port, "/metrics", auth=("prometheus", password), timeout=5)
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
    "tls-missing-file": ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: {key}\n",
                         "cannot load the TLS files"),
    "tls-unknown-key": ("tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  cipher: x\n", "takes only"),
    "bad-min-version": ("tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  min_version: TLS9\n",
                        "min_version"),
    "bad-client-auth": ("tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
                        "  client_auth_type: Sometimes\n", "client_auth_type"),
    "client-auth-without-ca": ("tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
                               "  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_is_a_clear_error_at_start(pki, tmp_path, name):
    text, reason = BAD_FILES[name]
    web = tmp_path / "web.yml"
    web.write_text(text.format(crt=pki.path("server.crt"), key=pki.path("server.key")))
    result = run_exporter(["--web.config.file", str(web), "--web.listen-address", "127.0.0.1:0"])
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("openai-projects-exporter: error: --web.config.file"), lines
    assert reason in lines[0]


def test_missing_file_is_a_clear_error_at_start(tmp_path):
    result = run_exporter(["--web.config.file", str(tmp_path / "absent.yml")])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"openai-projects-exporter: error: --web.config.file: cannot read {tmp_path / 'absent.yml'}: "
        "No such file or directory"]
