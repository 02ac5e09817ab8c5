"""The admin key the tests use, and the check that it appears nowhere."""

from __future__ import annotations

KEY = "sk-admin-test-7c1f3e9a0b5d4a2e8f6c"
KEY_SECRET_PART = KEY.removeprefix("sk-admin-")  # the random part: found even if the prefix is cut


def assert_no_secret(where: str, text: str | bytes, *secrets: str) -> None:
    """None of `secrets` (by default the test key, whole or without its prefix) is in `text`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in secrets or (KEY, KEY_SECRET_PART):
        assert secret not in text, f"{secret!r} appears in {where}"
