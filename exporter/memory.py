"""Handing the memory a poll freed back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return the heap memory that a poll freed to the system.

    glibc keeps freed heap memory for reuse, so without this the resident size of a large
    organization climbs poll after poll well above the live data, though nothing leaks.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
