"""exporter/redaction.py: the secrets that never reach a log line, a page or a label."""

from __future__ import annotations

import pytest

from exporter import redaction
from exporter.config import load_config
from exporter.settings import SettingsError, load


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


@pytest.mark.xfail(
    strict=True,
    reason=(
        "production bug: the keys of a config file that is refused are registered all the same, and a "
        "short one scrubs its letters, whatever their case, from every later log line, page and label"
    ),
)
def test_a_refused_config_file_leaves_later_log_lines_whole(no_secrets, tmp_path):
    config = tmp_path / "organizations.yml"
    config.write_text("organizations:\n  - alias: a\n    admin_key: k\n  - alias: a\n    admin_key: k\n")
    with pytest.raises(SettingsError, match="more than once"):
        load_config(config, load(["--config.file", str(config)], {}))
    assert redaction.scrub("kept the running config") == "kept the running config"
