"""exporter/redaction.py: the secrets that never reach a log line, a page or a label."""

from __future__ import annotations

import pytest

from exporter import redaction
from exporter.config import load_config
from exporter.exposition import SnapshotRenderer
from exporter.settings import SettingsError, load
from tests.support.keys import KEY, assert_no_secret
from tests.support.process import upstream_args
from tests.support.rendering import make_project, snapshot_of
from tests.support.upstream import Switchboard, error, every_request, list_page, project, scripted


@pytest.fixture
def no_secrets(monkeypatch):
    """An empty registry for the test; the process's own comes back at teardown."""
    for name, empty in (("_secrets", ()), ("_text", None), ("_bytes", None)):
        monkeypatch.setattr(redaction, name, empty)


def test_a_registered_key_is_scrubbed_whatever_its_case(no_secrets):
    key = "sk-admin-Scrub-0a1b2c3d4e5f"
    redaction.add_secret(key)
    assert redaction.scrub(f"echo {key} and {key.upper()}") == "echo <redacted> and <redacted>"
    assert redaction.scrub_bytes(key.lower().encode()) == b"<redacted>"
    assert redaction.scrub("kept the running config") == "kept the running config"
    redaction.add_secret("sk-admin")  # the shortest a secret may be; shorter ones are no API key
    assert redaction.scrub("SK-ADMIN-x") == "<redacted>-x"


def test_a_refused_config_file_leaves_later_log_lines_whole(no_secrets, tmp_path):
    config = tmp_path / "organizations.yml"
    config.write_text("organizations:\n  - alias: a\n    admin_key: k\n  - alias: a\n    admin_key: k\n")
    with pytest.raises(SettingsError, match="more than once"):
        load_config(config, load(["--config.file", str(config)], {}))
    assert redaction.scrub("kept the running config") == "kept the running config"


def test_the_renderer_scrubs_labels_and_renders_again_when_a_key_is_added(no_secrets):
    later = "sk-admin-later-" + "9z8y7x" * 3
    renderer = SnapshotRenderer(True)
    snapshot = snapshot_of([make_project("proj_a", name=f"echo {later.upper()}", external_key_id=later)])
    before = b"".join(renderer.render(snapshot).body(b""))
    assert later.upper().encode() in before  # not a secret yet
    redaction.add_secret(later)
    after = b"".join(renderer.render(snapshot).body(b""))  # the very same snapshot, rendered again
    assert later.encode() not in after.lower() and b'name="echo <redacted>"' in after


@pytest.mark.slow
def test_an_upstream_that_echoes_the_key_publishes_it_nowhere(simulator, start_exporter):
    echoed = [
        project("proj_name", name=f"leak {KEY}"),
        project("proj_upper", name=KEY.upper(), external_key_id=f"ekm_{KEY.swapcase()}"),
        project(f"proj_{KEY}", name="id"),
    ]
    board = Switchboard(simulator(0)).arm(scripted({None: list_page(echoed, has_more=False)}))
    process = start_exporter(*upstream_args(board), "--log.level", "debug", wait="ready")
    metrics = process.get("/metrics").text
    assert "proj_name" in metrics and "<redacted>" in metrics
    assert_no_secret("/metrics", metrics.lower(), KEY.lower())

    # A 401 is never retried, so the poll fails with this message, not with a later timeout.
    board.arm(every_request(lambda server, request, n: error(401, f"upstream says: {KEY.upper()}")))
    process.wait_event("poll_failed", board.wait_active(), where=lambda r: r["reason"] == "auth")
    page = process.get("/").text
    assert "HTTP 401" in page and "upstream says: &lt;redacted&gt;" in page
    for where, text in (("/", page), ("the log", process.stdout()), ("stderr", process.stderr())):
        assert_no_secret(where, text.lower(), KEY.lower())
