"""Who made a change: the audit event that matches it, by what it happened to and its type.

Changes are found by comparing two snapshots, the list's or a collector's; the audit log says
who made them. A change matches the newest event of one of its types (`Audited`) whose
resource id is the change's (for a user, in the change's project: one user is a member of
many). Events are kept for
`retention` seconds: long enough for a collector's next round to find the change an event
announced, and no longer, so that an old event never names the actor of a new change.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from exporter.audit.events import Event
from exporter.collectors.base import Audited

# The project list's changes (exporter/pipeline.py logs them as project_<kind>). An unarchive
# is a `project.updated`: the contract has no event type of its own for it.
PROJECT_CHANGES: Mapping[str, Audited] = {
    "project_created": Audited(("project.created",), "project_id"),
    "project_archived": Audited(("project.archived",), "project_id"),
    "project_unarchived": Audited(("project.updated",), "project_id"),
    "project_renamed": Audited(("project.updated",), "project_id"),
    "project_removed": Audited(("project.deleted",), "project_id"),
}
MAX_EVENTS = 100_000  # beyond this many kept, the oldest go first: a storm of logins must not grow memory


class Attribution:
    """Recent events by (type, resource id); thread-safe (the list poll adds, every worker asks)."""

    def __init__(self, retention: float, emails: bool, clock: Callable[[], float] = time.time):
        self._retention = retention
        self._emails = emails
        self._clock = clock
        self._events: dict[tuple[str, str], list[Event]] = {}
        self._order: deque[tuple[tuple[str, str], Event]] = deque()  # oldest first, to forget them
        self._lock = threading.Lock()

    def add(self, events: Iterable[Event]) -> None:
        with self._lock:
            for event in events:
                target = event.resource_id or event.project_id
                if event.actor is None or target is None:
                    continue  # nothing to name, or nothing to name it for
                key = (event.type, target)
                self._events.setdefault(key, []).append(event)
                self._order.append((key, event))
            self._forget(self._clock() - self._retention)

    def _forget(self, before: float) -> None:
        while self._order and (self._order[0][1].effective_at < before or len(self._order) > MAX_EVENTS):
            key, event = self._order.popleft()
            kept = self._events[key]
            kept.remove(event)
            if not kept:
                del self._events[key]

    def actor(self, audited: Audited | None, fields: Mapping[str, object]) -> dict[str, object] | None:
        """The `actor` of a change whose log fields (project_id included) are `fields`, or None."""
        if audited is None:
            return None
        target, project_id = fields.get(audited.id_field), fields.get("project_id")
        if not isinstance(target, str):
            return None
        best: Event | None = None
        with self._lock:
            for type_ in audited.event_types:
                for event in self._events.get((type_, target), ()):
                    if audited.shared_id and event.project_id not in (None, project_id):
                        continue  # the same user, added to or removed from another project
                    if best is None or event.effective_at >= best.effective_at:
                        best = event
        if best is None or best.actor is None:
            return None
        return best.actor.fields(best.effective_at, self._emails)
