"""`--state.file`: the last good snapshot on disk, so a restart serves data at once.

Written after each good poll through a temporary file, fsync and rename, so a crash at
any moment leaves either the old file or the new one, never half of one; a write that fails
leaves no temporary file. A state file that is a symbolic link (to a volume, say) stays
one: the file it points to is replaced. Anything that is not a regular file, is larger
than STATE_FILE_LIMIT or is not a state file of ours is ignored with a warning: a restart
never fails on it, nor hangs on a FIFO or a device.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from exporter.inputs import read_regular_file
from exporter.snapshot import Project, Snapshot

FORMAT = "openai-projects-exporter/state"
VERSION = 3  # projects as objects keyed by field name, and the spend's ledgers
READABLE = (2, 3)  # a version-2 file has no ledgers: the spend starts afresh
STATE_FILE_LIMIT = 1 << 30  # many times the state of the largest organization
log = structlog.get_logger("exporter.state")


_writing = threading.Lock()  # the list poll and the spend poll both save


class Loaded(NamedTuple):
    snapshot: Snapshot
    spend: Mapping[str, Any]  # empty from a version-2 file
    audit: Mapping[str, Any]  # the audit log's position and counts; empty if none was saved


def save(
    path: Path, snapshot: Snapshot, spend: Mapping[str, Any] | None = None, audit: Mapping[str, Any] | None = None
) -> None:
    """Write the snapshot, the spend's ledgers (exporter.spend.poller.SpendPoller.dump) and the
    audit log's position (exporter.audit.collector.AuditLog.dump)."""
    with _writing:
        _save(path, snapshot, spend, audit)


def _save(path: Path, snapshot: Snapshot, spend: Mapping[str, Any] | None, audit: Mapping[str, Any] | None) -> None:
    document = {
        "format": FORMAT,
        "version": VERSION,
        "completed_at": snapshot.completed_at,
        "pages": snapshot.pages,
        "duration": snapshot.duration,
        "projects": [project._asdict() for project in snapshot.projects.values()],
        "spend": dict(spend or {}),
        # Optional within version 3: an older exporter ignores it, and reads the rest.
        "audit": dict(audit or {}),
    }
    path = path.resolve() if path.is_symlink() else path
    if path.exists() and not path.is_file():
        # A rename would put the state in place of a device, a FIFO or a directory.
        raise OSError(errno.EINVAL, "not a regular file")
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(document, handle, ensure_ascii=False, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not keep half a copy as well
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def load(path: Path) -> Snapshot | None:
    """The saved snapshot, or None (with a warning unless the file simply does not exist yet)."""
    loaded = load_all(path)
    return loaded[0] if loaded is not None else None


def load_all(path: Path) -> Loaded | None:
    """The saved snapshot, the spend's ledgers and the audit log's position, or None."""
    try:
        raw = read_regular_file(path, STATE_FILE_LIMIT)
    except FileNotFoundError:
        log.info("state_file_absent", path=str(path))
        return None
    except OSError as exc:
        log.warning("state_file_ignored", path=str(path), reason=f"unreadable: {exc.strerror}")
        return None
    try:
        document = json.loads(raw)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not a state file of this exporter")
        if document.get("version") not in READABLE:
            raise ValueError(f"state version {document.get('version')!r}, expected {VERSION}")
        spend = document.get("spend", {})
        if not isinstance(spend, dict):
            raise ValueError("`spend` is not an object")
        audit = document.get("audit", {})
        if not isinstance(audit, dict):
            raise ValueError("`audit` is not an object")
        projects = [_project(row) for row in document["projects"]]
        snapshot = Snapshot.build(
            projects,
            completed_at=float(document["completed_at"]),
            pages=int(document["pages"]),
            duration=float(document["duration"]),
        )
    except Exception as exc:  # noqa: BLE001 - whatever the file holds (deep nesting included), it never stops a start
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        log.warning("state_file_ignored", path=str(path), reason=reason)
        return None
    log.info("state_file_loaded", path=str(path), projects=len(snapshot.projects), spend_feeds=len(spend))
    return Loaded(snapshot, spend, audit)


_TEXT_OR_NONE = ("name", "external_key_id", "residency")


def _project(row: object) -> Project:
    if not isinstance(row, dict) or set(row) != set(Project._fields):
        raise ValueError("a project entry does not have the fields of a project")
    project = Project(**row)
    if (
        not isinstance(project.id, str)
        or not project.id
        or not isinstance(project.status, str)
        or not _is_number(project.created_at)
        or not (project.archived_at is None or _is_number(project.archived_at))
        or not all(row[name] is None or isinstance(row[name], str) for name in _TEXT_OR_NONE)
    ):
        raise ValueError("a project entry has the wrong types")
    return project


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
