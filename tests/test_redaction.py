"""The admin key never leaves the process, whatever the upstream echoes back and in whatever case:
not in a metric label, not in a log line, not on the / page."""

from __future__ import annotations

import time

import pytest

from exporter import redaction
from exporter.exposition import SnapshotRenderer
from tests.support.keys import KEY, assert_no_secret
from tests.support.process import upstream_args
from tests.support.rendering import make_project, snapshot_of
from tests.support.upstream import Switchboard, error, every_request, list_page, project, scripted


def test_scrubbing_ignores_case_and_leaves_other_text_alone():
    secret = "sk-admin-redaction-" + "a1B2c3" * 3
    redaction.add_secret(secret)
    assert redaction.scrub(f"x {secret.upper()} y {secret} z") == "x <redacted> y <redacted> z"
    assert redaction.scrub_bytes(f"name=\"{secret.swapcase()}\"".encode()) == b'name="<redacted>"'
    unchanged = b"nothing to see"
    assert redaction.scrub_bytes(unchanged) is unchanged


def test_the_renderer_scrubs_labels_and_renders_again_when_a_key_is_added():
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

    board.arm(every_request(lambda server, request, n: error(500, f"upstream says: {KEY.upper()}")))
    board.wait_active()
    process.wait_event("poll_failed", time.time())
    page = process.get("/").text
    assert "HTTP 500" in page
    for where, text in (("/", page), ("the log", process.stdout()), ("stderr", process.stderr())):
        assert_no_secret(where, text.lower(), KEY.lower())
