"""Immutable snapshots of the organization's projects, and the changes between two of them.

A poll builds one Snapshot; the scheduler swaps it in whole, so readers only ever see a
complete poll. Nothing here mutates a snapshot after it is built.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter, is_
from typing import NamedTuple

ACTIVE = "active"
ARCHIVED = "archived"
CHANGE_KINDS = ("created", "archived", "unarchived", "renamed", "removed")


class Project(NamedTuple):
    """One project as the exporter needs it. A tuple: small, hashable, cheap to compare."""

    id: str
    name: str | None
    status: str
    created_at: float
    archived_at: float | None
    external_key_id: str | None
    residency: str | None


_status = attrgetter("status")  # at C speed, for map()


@dataclass(frozen=True)
class Snapshot:
    """All projects of one successful poll, in upstream order, keyed by id."""

    projects: Mapping[str, Project]
    completed_at: float
    pages: int
    duration: float
    counts: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts = {ACTIVE: 0, ARCHIVED: 0} | Counter(map(_status, self.projects.values()))
        object.__setattr__(self, "counts", counts)

    @classmethod
    def build(
        cls,
        projects: Iterable[Project],
        *,
        completed_at: float,
        pages: int,
        duration: float,
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """The snapshot of one poll; projects equal to ones of `previous` are taken from it.

        Keeping the old, equal objects lets the new, just-parsed copies die young, so the
        long-lived data stays where it was allocated instead of spreading over memory that
        the page parsing fragmented, which for a large organization shows in the resident
        size. The renderer's cache then also compares by identity.
        """
        if previous is None:
            return cls({p.id: p for p in projects}, completed_at, pages, duration)
        before = previous.projects
        projects = projects if isinstance(projects, list) else list(projects)
        # Pages that came back unchanged yield the previous snapshot's own objects (see
        # ProjectsClient._page). When every project is one of them, in the same order,
        # nothing changed: share the mapping, and the diff and the render can tell at once.
        if len(projects) == len(before) and all(map(is_, projects, before.values())):
            return cls(before, completed_at, pages, duration)
        kept: dict[str, Project] = {}
        for project in projects:
            old = before.get(project.id, project)  # a new project stands for itself
            kept[project.id] = old if old == project else project
        return cls(kept, completed_at, pages, duration)


class Change(NamedTuple):
    kind: str
    project: Project
    old_name: str | None = None


def diff(old: Snapshot, new: Snapshot) -> list[Change]:
    """What happened between two polls, one Change per event, in the new snapshot's order."""
    if new.projects is old.projects:  # Snapshot.build found nothing changed
        return []
    changes: list[Change] = []
    before = old.projects
    for project_id, project in new.projects.items():
        previous = before.get(project_id)
        if previous is None:
            changes.append(Change("created", project))
            continue
        if previous == project:
            continue
        if previous.status != ARCHIVED and project.status == ARCHIVED:
            changes.append(Change("archived", project))
        elif previous.status == ARCHIVED and project.status != ARCHIVED:
            changes.append(Change("unarchived", project))
        if previous.name != project.name:
            changes.append(Change("renamed", project, old_name=previous.name))
    after = new.projects
    changes.extend(Change("removed", p) for pid, p in before.items() if pid not in after)
    return changes
