"""Files the operator names: read whole only when they are regular files of a sane size.

A FIFO would hang the start, a device such as /dev/zero or /dev/full would be read without
end, and a YAML document whose anchors refer to anchors ("billion laughs") expands to
gigabytes when its values are turned into text. Each is refused here, at once, with an
OSError whose `strerror` says why in one line, or a YAMLError.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml

KEY_FILE_LIMIT = 64 * 1024  # an API key is a few hundred bytes at most
CONFIG_FILE_LIMIT = 16 * 1024 * 1024  # a config file of thousands of organizations fits well within it


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at `path` (links followed), refused beyond `limit` bytes."""
    # O_NONBLOCK: opening a FIFO without a writer must not wait for one; a regular file ignores it.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if status.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        chunks, size = [], 0
        while chunk := os.read(descriptor, min(1 << 20, limit + 1 - size)):
            size += len(chunk)
            if size > limit:  # it grew while we read it
                raise OSError(errno.EFBIG, f"larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


class _NoAliases(yaml.SafeLoader):
    """safe_load without anchors and aliases: no config of ours needs them, and they are
    what a YAML bomb is made of."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", event.start_mark)
        return super().compose_node(parent, index)


class UnusableFile(Exception):
    """A config file that cannot be read or parsed; the message is one line naming the file."""


def load_yaml(path: Path, limit: int = CONFIG_FILE_LIMIT) -> Any:
    """The YAML document of a regular file; UnusableFile with a one-line reason otherwise."""
    try:
        text = read_regular_file(path, limit).decode("utf-8")
    except OSError as exc:
        raise UnusableFile(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UnusableFile(f"{path} is not valid YAML: it is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise UnusableFile(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
