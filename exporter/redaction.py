"""Secrets that must never be printed, and their removal from every output.

The admin key is registered each time it is read. Log lines (exporter.logs), error
messages on the / page and the rendered exposition (label values upstream chose, such as
a project name) all pass through here. Matching ignores case: an upstream that echoes the
key upper-cased still echoes the key.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
# Shorter values are no API key (those run to dozens of characters), and scrubbing them, case
# ignored, would cut letters out of every log line: `admin_key: k` in a refused config file.
MIN_SECRET_LENGTH = 8

# Swapped whole, so a reader on another thread always sees a complete set.
_secrets: tuple[str, ...] = ()
_text: re.Pattern[str] | None = None
_bytes: re.Pattern[bytes] | None = None


def add_secret(secret: str) -> None:
    """Register a value that must never be printed (the admin key, each time it is read)."""
    global _secrets, _text, _bytes
    if len(secret) < MIN_SECRET_LENGTH or secret in _secrets:
        return
    secrets = (*_secrets, secret)
    # Longest first, so a key that contains an older one is replaced whole.
    alternatives = "|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True))
    _bytes = re.compile(alternatives.encode(), re.IGNORECASE)
    _text = re.compile(alternatives, re.IGNORECASE)
    _secrets = secrets


def active() -> bool:
    return _text is not None


def generation() -> int:
    """Moves each time a secret is added: what was scrubbed before may need scrubbing again."""
    return len(_secrets)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced, whatever its case."""
    pattern = _text
    return text if pattern is None else pattern.sub(REDACTED, text)


def scrub_bytes(data: bytes) -> bytes:
    """`data` (UTF-8) with every registered secret replaced; the same object when none occurs."""
    pattern = _bytes
    if pattern is None or pattern.search(data) is None:
        return data
    return pattern.sub(REDACTED.encode(), data)
