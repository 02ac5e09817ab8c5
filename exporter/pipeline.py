"""One poll of an organization: fetch, snapshot, render, diff, log, then one atomic swap.

Scrapes read `Published.current` and never wait: a poll builds its Exposition on the side
and replaces the reference in one assignment, which is atomic in CPython.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from exporter import redaction, state
from exporter.audit.attribution import PROJECT_CHANGES
from exporter.audit.collector import AuditLog
from exporter.chains import fetch_projects
from exporter.details.engine import DetailsEngine
from exporter.details.render import EMPTY_PART
from exporter.exposition import EMPTY, Exposition, Part, SnapshotRenderer
from exporter.memory import release_free_memory
from exporter.priority import lower_thread_priority
from exporter.selfmetrics import OrganizationMetrics
from exporter.snapshot import Change, Snapshot, diff
from exporter.upstream import PollCancelled, PollError, ProjectsClient

log = structlog.get_logger("exporter.poll")  # the name every poll log line has carried


@dataclass(frozen=True)
class PollOutcome:
    """The last poll's verdict, for the / page."""

    ok: bool
    finished_at: float
    duration: float
    reason: str = ""
    message: str = ""


class Published:
    """The exposition that scrapes serve, and the last poll's outcome.

    `current` is the projects' exposition followed by the collectors' details; the list
    poll and the details publisher each replace their own share, and either swap makes a
    new `current` in one assignment.

    `generation` counts the polls that ended, with or without success: a scrape's live tail
    rendered at one generation is stale at the next (exporter.exposition.LiveTail).
    """

    def __init__(self) -> None:
        self.current: Exposition = EMPTY
        self.last_outcome: PollOutcome | None = None
        self.generation = 0
        self._projects: Exposition = EMPTY
        self._details: Part = EMPTY_PART
        self._spend: Part = EMPTY_PART
        self._lock = threading.Lock()

    def publish(
        self, projects: Exposition | None = None, details: Part | None = None, spend: Part | None = None
    ) -> None:
        """Replace the projects' share, the details', the spend's, or several in one swap."""
        with self._lock:
            if projects is not None:
                self._projects = projects
            # A worker may publish a part composed before the one the list poll just published.
            if details is not None and details.generation >= self._details.generation:
                self._details = details
            if spend is not None:
                self._spend = spend
            if self._projects.snapshot is None:
                self.current = self._projects  # no details before the first project list
            else:
                self.current = self._projects.extended((self._details, self._spend))

    def finish(self, outcome: PollOutcome) -> None:
        """A poll ended: its metrics are recorded, and this is its verdict."""
        self.last_outcome = outcome
        self.generation += 1  # only the organization's one poll thread writes it

    @property
    def ready(self) -> bool:
        return self.current.snapshot is not None


class Poller:
    def __init__(
        self,
        client: ProjectsClient,
        renderer: SnapshotRenderer,
        metrics: OrganizationMetrics,
        published: Published,
        poll_timeout: float,
        state_file: Path | None = None,
        details: DetailsEngine | None = None,
    ):
        self._details = details
        self.audit: AuditLog | None = None  # the audit-log collector, read at each poll
        self.restored_audit: Mapping[str, Any] = {}
        self.spend: Callable[[], Mapping[str, Any]] | None = None  # the spend's ledgers, saved with the snapshot
        self.restored_spend: Mapping[str, Any] = {}
        self._client = client
        self._renderer = renderer
        self._metrics = metrics
        self._published = published
        self._poll_timeout = poll_timeout
        self._state_file = state_file

    def restore(self) -> None:
        """Serve the snapshot of the state file, if any, until the first poll replaces it.

        openai_up stays 0 and the last-success timestamp is the saved one, so the data is
        visibly stale; the first poll then logs and counts what changed while we were down.
        """
        if self._state_file is None:
            return
        loaded = state.load_all(self._state_file)
        if loaded is None:
            return
        snapshot, self.restored_spend, self.restored_audit = loaded
        try:
            self._published.publish(self._renderer.render(snapshot))
        except Exception as exc:  # whatever a state file holds, it never stops a start
            log.warning("state_file_ignored", path=str(self._state_file), reason=f"{type(exc).__name__}: {exc}"[:200])
            return
        self._metrics.restored(snapshot)

    def poll(self) -> None:
        lower_thread_priority()
        started = time.monotonic()
        try:
            self._poll(started)
        except PollCancelled:
            log.info("poll_cancelled", reason="shutting down")
        except PollError as exc:
            self._failed(exc.reason, exc.message, started, exc.request_id)
        except Exception as exc:  # a bug must not kill the schedule nor print a traceback
            self._failed("internal", f"{type(exc).__name__}: {exc}", started)

    def _poll(self, started: float) -> None:
        previous = self._published.current.snapshot
        result = fetch_projects(
            self._client, started + self._poll_timeout, previous.projects if previous is not None else {}
        )
        snapshot = Snapshot.build(
            result.projects,
            completed_at=time.time(),
            pages=result.pages,
            duration=time.monotonic() - started,
            previous=previous,
        )
        paused = result.paused_for_scrapes
        del result  # bound memory: only the previous and the new snapshot from here on
        exposition = self._renderer.render(snapshot)
        changes = diff(previous, snapshot) if previous is not None else []
        # Archived and removed projects leave the details in the same swap as the list.
        details = self._details.sync(snapshot) if self._details is not None else None
        duration = time.monotonic() - started  # the whole poll: fetch, render and diff
        self._published.publish(exposition, details)
        self._metrics.record_success(snapshot, changes, duration)
        self._published.finish(PollOutcome(True, snapshot.completed_at, duration))
        if self.audit is not None:
            # After the swap: the projects are served while the events are read. Before the
            # change lines: they name who made each change. A failure stays in the collector.
            self.audit.poll(started + self._poll_timeout)
        self._log_changes(previous, snapshot, changes)
        saved = self._save(snapshot)
        if self.audit is not None:
            self.audit.saved(saved)
        release_free_memory()
        log.info(
            "poll_succeeded",
            projects=len(snapshot.projects),
            active=snapshot.counts["active"],
            archived=snapshot.counts["archived"],
            pages=snapshot.pages,
            duration=round(duration, 3),
            paused_for_scrapes=round(paused, 3),
        )

    def save_current(self) -> bool:
        """Save the snapshot being served, with the spend's ledgers as they are now; False if that failed."""
        snapshot = self._published.current.snapshot
        return self._save(snapshot) if snapshot is not None else self._state_file is None

    def _save(self, snapshot: Snapshot) -> bool:
        if self._state_file is None:
            return True
        try:
            state.save(
                self._state_file,
                snapshot,
                self.spend() if self.spend is not None else None,
                self.audit.dump() if self.audit is not None else None,
            )
        except OSError as exc:
            log.warning("state_file_write_failed", path=str(self._state_file), reason=exc.strerror or str(exc))
            return False
        return True

    def _failed(self, reason: str, message: str, started: float, request_id: str | None = None) -> None:
        duration = time.monotonic() - started
        self._metrics.record_failure(reason, duration)
        message = redaction.scrub(message)  # the / page shows it; upstream data may quote anything
        self._published.finish(PollOutcome(False, time.time(), duration, reason, message))
        log.warning("poll_failed", reason=reason, message=message, request_id=request_id, duration=round(duration, 3))

    def _log_changes(self, previous: Snapshot | None, snapshot: Snapshot, changes: Sequence[Change]) -> None:
        if previous is None:
            log.info(
                "initial_snapshot",
                projects=len(snapshot.projects),
                active=snapshot.counts["active"],
                archived=snapshot.counts["archived"],
            )
            return
        for change in changes:
            event = f"project_{change.kind}"
            fields: dict[str, object] = {"project_id": change.project.id, "name": change.project.name}
            if change.kind == "renamed":
                fields.update(old_name=change.old_name, new_name=change.project.name)
            if self.audit is not None and (actor := self.audit.attribution.actor(PROJECT_CHANGES[event], fields)):
                fields["actor"] = actor
            log.info(event, **fields)
