"""`--web.config.file` (exporter/webconfig.py): every key checked for its type, malformed bcrypt
hashes, basic auth that answers 401 whatever the header, an unknown user that costs what a
wrong password costs at any bcrypt cost, and exporter-toolkit's cipher_suites,
curve_preferences, prefer_server_cipher_suites, http_server_config and rate_limit.
"""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import time
from pathlib import Path

import httpx
import pytest

from exporter.settings import SettingsError
from exporter.webconfig import load
from tests.support.net import get
from tests.support.process import assert_one_line_error, run_exporter, upstream_args
from tests.support.tls import Pki, bcrypt_hash

PASSWORD = "correct horse battery staple"
HASH = bcrypt_hash(PASSWORD)
TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def replace_file(path: Path, text: str) -> None:
    """Replace the file in one rename, as a ConfigMap update or an editor's save does."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def tls_config(pki: Pki, *lines: str) -> str:
    extra = "".join(f"  {line}\n" for line in lines)
    return f"tls_server_config:\n  cert_file: {pki.path('server.crt')}\n  key_file: {pki.path('server.key')}\n{extra}"


@pytest.fixture
def start(simulator, start_exporter, tmp_path):
    """An exporter with `config` as its --web.config.file, answering /healthz (over TLS with `tls`)."""
    server = simulator(60, seed=3)

    def run(config: str, *, tls: ssl.SSLContext | None = None):
        web = tmp_path / "web.yml"
        web.write_text(config)
        process = start_exporter(*upstream_args(server, "--web.config.file", str(web), interval="1h"), wait=None)
        process.wait_listening(tls=tls)
        return process, web

    return run


# -- every wrong type is one line ----------------------------------------------------------------

WRONG_TYPES = {
    "min_version-list": (
        TLS + "  min_version: [TLS12]\n",
        "tls_server_config.min_version must be a string, not a list",
    ),
    "max_version-number": (TLS + "  max_version: 13\n", "tls_server_config.max_version must be a string, not a number"),
    "client_auth_type-list": (TLS + "  client_auth_type: [NoClientCert]\n", "client_auth_type must be a string"),
    "cert_file-list": ("tls_server_config:\n  cert_file: [a.crt]\n  key_file: a.key\n", "cert_file must be a string"),
    "key_file-mapping": ("tls_server_config:\n  cert_file: a.crt\n  key_file: {a: b}\n", "not a mapping"),
    "client_ca_file-number": (TLS + "  client_ca_file: 5\n", "client_ca_file must be a string, not a number"),
    "cipher_suites-string": (TLS + "  cipher_suites: TLS_AES_128_GCM_SHA256\n", "cipher_suites must be a list"),
    "cipher_suites-numbers": (TLS + "  cipher_suites: [1, 2]\n", "cipher_suites must be a list of names"),
    "curve_preferences-string": (TLS + "  curve_preferences: X25519\n", "curve_preferences must be a list"),
    "prefer-string": (TLS + '  prefer_server_cipher_suites: "yes"\n', "must be true or false, not a string"),
    "tls-list": ("tls_server_config: [a]\n", "tls_server_config must be a mapping, not a list"),
    "tls-string": ("tls_server_config: server.crt\n", "tls_server_config must be a mapping, not a string"),
    "user-name-boolean": (f"basic_auth_users:\n  true: {HASH}\n", "the user name True is not a string"),
    "http-list": ("http_server_config: [http2]\n", "http_server_config must be a mapping, not a list"),
    "http2-string": ('http_server_config:\n  http2: "no"\n', "http2 must be true or false, not a string"),
    "http-unknown-key": ("http_server_config:\n  http3: true\n", "http_server_config takes only"),
    "headers-list": ("http_server_config:\n  headers: [nosniff]\n", "headers must be a mapping, not a list"),
    "header-unknown": ("http_server_config:\n  headers:\n    X-Powered-By: me\n", "'X-Powered-By' cannot be set"),
    "header-value-list": (
        "http_server_config:\n  headers:\n    X-Frame-Options: [deny]\n",
        "must be a string, not a list",
    ),
    "header-value-other": ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "must be one of"),
    "header-line-break": ('http_server_config:\n  headers:\n    X-XSS-Protection: "0\\r\\nX: y"\n', "must be one line"),
    "rate_limit-list": ("rate_limit: [1s]\n", "rate_limit must be a mapping, not a list"),
    "rate_limit-burst-string": ("rate_limit:\n  burst: ten\n  interval: 1s\n", "rate_limit.burst must be a whole"),
    "rate_limit-interval-number": ("rate_limit:\n  burst: 1\n  interval: 5\n", "rate_limit.interval must be a"),
    "rate_limit-interval-text": ("rate_limit:\n  burst: 1\n  interval: soon\n", "rate_limit.interval: not a dur"),
    "max-below-min": (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "max_version is below min_version"),
    "unknown-cipher": (TLS + "  cipher_suites: [TLS_FOO]\n", "unknown cipher suite 'TLS_FOO'"),
    "rc4-cipher": (TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "unknown cipher suite"),
    "unknown-curve": (TLS + "  curve_preferences: [CurveP999]\n", "unknown curve 'CurveP999'"),
}


@pytest.mark.parametrize("name", list(WRONG_TYPES))
def test_a_wrong_type_anywhere_is_a_one_line_error(tmp_path, name):
    text, reason = WRONG_TYPES[name]
    web = tmp_path / "web.yml"
    web.write_text(text)
    with pytest.raises(SettingsError) as error:
        load(web)
    message = str(error.value)
    assert message.startswith("--web.config.file: ") and "\n" not in message
    assert reason in message, message


MALFORMED_HASHES = {
    "short": "$2y$10$tooShort",
    "bad-characters": "$2y$10$" + "!" * 53,
    "cost-too-high": "$2y$32$" + HASH[7:],
    "cost-too-low": "$2b$03$" + HASH[7:],
    "one-too-many": HASH + "x",
    "one-too-few": HASH[:-1],
}


@pytest.mark.parametrize("name", list(MALFORMED_HASHES))
def test_a_malformed_bcrypt_hash_is_a_config_error(tmp_path, name):
    hashed = MALFORMED_HASHES[name]
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    with pytest.raises(SettingsError) as error:
        load(web)
    assert "the password of 'prometheus' is a malformed bcrypt hash" in str(error.value)
    assert hashed not in str(error.value)


def test_every_bcrypt_variant_and_cost_of_htpasswd_is_taken(tmp_path):
    web = tmp_path / "web.yml"
    hashes = {f"u{cost}": bcrypt_hash("x", rounds=cost) for cost in (4, 5)}
    hashes["y"] = "$2y$" + hashes["u4"][4:]
    hashes["a"] = "$2a$" + hashes["u4"][4:]
    web.write_text("basic_auth_users:\n" + "".join(f"  {user}: '{hashed}'\n" for user, hashed in hashes.items()))
    config = load(web)
    assert set(config.users) == set(hashes)
    assert config.dummy == hashes["u5"].encode()  # an unknown user costs what the costliest user does


@pytest.mark.slow
@pytest.mark.parametrize("name", ["min_version-list", "cipher_suites-string", "http2-string", "rate_limit-list"])
def test_a_wrong_type_stops_the_start_with_one_line(tmp_path, name):
    text, reason = WRONG_TYPES[name]
    web = tmp_path / "web.yml"
    web.write_text(text)
    result = run_exporter(["--web.config.file", str(web), "--web.listen-address", "127.0.0.1:0"], timeout=20)
    assert_one_line_error(result, reason, starts="--web.config.file: ")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_mistyped_reload_keeps_the_last_good_config_and_the_server_serving(start, pki):
    context = pki.client_context()
    process, web = start(tls_config(pki), tls=context)
    port, pid = process.port, process.proc.pid

    began = time.time()
    replace_file(web, tls_config(pki, "min_version: [TLS12]"))
    for _ in range(10):  # the first of these reads the file again; every one is served
        assert get(port, "/healthz", tls=context, timeout=5).status_code == 200
    failed = process.wait_event("web_config_reload_failed", since=began)
    assert "tls_server_config.min_version must be a string, not a list" in failed["reason"]
    assert len(process.events("web_config_reload_failed", since=began)) == 1  # once per change

    # Fixed: the new config takes effect at the next connection.
    began = time.time()
    replace_file(web, tls_config(pki, "min_version: TLS13"))
    assert get(port, "/healthz", tls=context, timeout=5).status_code == 200
    process.wait_event("web_config_reloaded", since=began)
    with pytest.raises(httpx.TransportError):
        get(port, "/healthz", tls=pki.client_context(maximum=ssl.TLSVersion.TLSv1_2), timeout=5)
    assert process.proc.pid == pid and process.proc.poll() is None
    assert "Traceback" not in process.stderr()


# -- basic auth ----------------------------------------------------------------------------------


def _timed(port: int, auth, repeats: int = 7) -> float:
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        assert get(port, "/readyz", auth=auth).status_code == 401
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


@pytest.mark.slow
def test_an_unknown_user_costs_as_much_as_a_wrong_password_at_any_cost(start):
    process, _ = start(f"basic_auth_users:\n  prometheus: '{bcrypt_hash(PASSWORD, rounds=12)}'\n")
    wrong_password = _timed(process.port, ("prometheus", "not it"))
    unknown_user = _timed(process.port, ("nobody", "not it"))
    # Both run one bcrypt comparison of cost 12, four times the cost-10 comparison of before.
    assert 0.6 <= unknown_user / wrong_password <= 1.67, (unknown_user, wrong_password)


def raw_answer(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.slow
def test_a_basic_header_that_is_not_ascii_is_a_401(start):
    process, _ = start(f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    for token in (b"\xc3\xa9t\xc3\xa9", b"\xff\xfe", b"cHJvbWV0aGV1czp4\xe2\x80\x8b", "prométheus:x".encode()):
        head = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nAuthorization: Basic " + token + b"\r\n\r\n"
        answer = raw_answer(process.port, head)
        assert answer.startswith(b"HTTP/1.1 401 "), (token, answer[:100])
        assert b"WWW-Authenticate: Basic realm=" in answer
    assert get(process.port, "/metrics", auth=("prometheus", PASSWORD)).status_code == 200


@pytest.mark.slow
def test_a_malformed_bcrypt_hash_stops_the_start_and_fails_a_reload(start, tmp_path):
    web = tmp_path / "bad.yml"
    web.write_text("basic_auth_users:\n  prometheus: '$2y$10$tooShort'\n")
    result = run_exporter(["--web.config.file", str(web), "--web.listen-address", "127.0.0.1:0"], timeout=20)
    assert_one_line_error(result, "the password of 'prometheus' is a malformed bcrypt hash", starts="--web.config.file")
    assert "tooShort" not in result.stderr

    process, web = start(f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    began = time.time()
    replace_file(web, "basic_auth_users:\n  prometheus: '$2y$10$" + "!" * 53 + "'\n")
    assert get(process.port, "/metrics", auth=("prometheus", PASSWORD)).status_code == 200  # the last good config
    failed = process.wait_event("web_config_reload_failed", since=began)
    assert "malformed bcrypt hash" in failed["reason"] and "!!!" not in failed["reason"]
    assert get(process.port, "/metrics", auth=("prometheus", "wrong")).status_code == 401


# -- exporter-toolkit's other keys -----------------------------------------------------------------


def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str]:
    """The (cipher, version) a client with `context` agrees on with the exporter."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            cipher, version, _ = conn.cipher()
            return cipher, version


@pytest.mark.slow
def test_cipher_suites_and_curve_preferences_apply_as_in_exporter_toolkit(start, pki):
    config = tls_config(
        pki,
        "cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]",
        "prefer_server_cipher_suites: true",
        "curve_preferences: [CurveP256]",
    )
    process, _ = start(config, tls=pki.client_context())
    port = process.port

    tls12 = pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    assert handshake(port, tls12) == ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2")
    other_suite = pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    other_suite.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        handshake(port, other_suite)
    assert handshake(port, pki.client_context())[1] == "TLSv1.3"  # TLS 1.3 suites are not configurable
    other_curve = pki.client_context()
    other_curve.set_ecdh_curve("secp384r1")
    with pytest.raises(ssl.SSLError):
        handshake(port, other_curve)
    assert get(port, "/metrics", tls=pki.client_context()).status_code == 200

    ignored = process.wait_event("web_config_setting_ignored")
    assert ignored["key"] == "cipher_suites" and "TLS_AES_128_GCM_SHA256" in ignored["reason"]
    assert "TLS 1.3" in ignored["reason"]
    assert len(process.events("web_config_setting_ignored")) == 1


@pytest.mark.slow
def test_http_server_config_headers_apply_and_what_cannot_is_logged_as_ignored(start):
    config = (
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n"
        "    X-Content-Type-Options: nosniff\n"
        "rate_limit:\n  burst: 10\n  interval: 1s\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n"
    )
    process, _ = start(config)
    for response in (
        get(process.port, "/metrics", auth=("prometheus", PASSWORD)),
        get(process.port, "/metrics"),
        get(process.port, "/healthz"),
    ):
        assert response.headers["X-Frame-Options"] == "deny", response.status_code
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    ignored = {record["key"]: record["reason"] for record in process.events("web_config_setting_ignored")}
    assert set(ignored) == {"http_server_config.http2", "rate_limit"}, ignored
    assert "HTTP/1.1" in ignored["http_server_config.http2"]


@pytest.mark.slow
def test_curve_preferences_of_several_curves_are_accepted_and_logged_as_ignored(start, pki):
    config = tls_config(pki, "curve_preferences: [X25519, CurveP256]", "prefer_server_cipher_suites: false")
    process, _ = start(config, tls=pki.client_context())
    assert get(process.port, "/metrics", tls=pki.client_context()).status_code == 200
    [ignored] = process.events("web_config_setting_ignored")
    assert ignored["key"] == "curve_preferences" and "one curve" in ignored["reason"]


@pytest.mark.slow
def test_an_unknown_cipher_suite_stops_the_start_with_one_line(pki, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(tls_config(pki, "cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_FOO_WITH_BAR]"))
    result = run_exporter(["--web.config.file", str(web), "--web.listen-address", "127.0.0.1:0"], timeout=20)
    assert_one_line_error(result, "unknown cipher suite 'TLS_FOO_WITH_BAR'", starts="--web.config.file: ")
