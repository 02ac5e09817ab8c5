"""The exposition and the health metrics of one organization, wired in this process as the
daemon wires them, for the tests of exposition.py and selfmetrics.py."""

from __future__ import annotations

import time

from exporter.exposition import Exposition, LiveTail, SnapshotRenderer
from exporter.pipeline import PollOutcome, Published
from exporter.selfmetrics import HealthMetrics, OrganizationMetrics, exporter_registry
from exporter.snapshot import Change, Project, Snapshot
from tests.support.metrics import Metrics


def make_project(
    pid: str,
    name: str | None = "Name",
    status: str = "active",
    created_at: float = 1_700_000_000,
    archived_at: float | None = None,
    external_key_id: str | None = None,
    residency: str | None = None,
) -> Project:
    """A snapshot's Project record, with defaults for what a test does not care about."""
    return Project(
        id=pid,
        name=name,
        status=status,
        created_at=created_at,
        archived_at=archived_at,
        external_key_id=external_key_id,
        residency=residency,
    )


def snapshot_of(projects, completed_at: float | None = None) -> Snapshot:
    return Snapshot.build(projects, completed_at=completed_at or time.time(), pages=1, duration=0.25)


class Rendered:
    """Renderer, registry, metrics and live tail of one organization, wired as the daemon wires them."""

    def __init__(self, per_project: bool = True, clock=None):
        self.renderer = SnapshotRenderer(per_project)
        self.published = Published()
        self.registry = exporter_registry()
        self.metrics = OrganizationMetrics(
            HealthMetrics(self.registry), None, self.registry, lambda: self.published.current
        )
        self.tail = LiveTail(self.registry, lambda: (self.published.generation,), clock=clock or time.monotonic)

    @property
    def current(self) -> Exposition:
        return self.published.current

    def publish(self, snapshot: Snapshot) -> Exposition:
        self.published.current = self.renderer.render(snapshot)
        return self.current

    def record_success(self, changes: list[Change], duration: float = 0.25) -> None:
        """What a poll's end records, as exporter.pipeline.Poller does."""
        snapshot = self.current.snapshot
        assert snapshot is not None
        self.metrics.record_success(snapshot, changes, duration)
        self.published.finish(PollOutcome(True, snapshot.completed_at, duration))

    def record_failure(self, reason: str, duration: float) -> None:
        self.metrics.record_failure(reason, duration)
        self.published.finish(PollOutcome(False, time.time(), duration, reason, "failed"))

    def scrape_bytes(self, accept: str | None = None, gzipped: bool = False) -> tuple[bytes, str]:
        chunks, content_type = self.tail.scrape(self.current, accept, gzipped)
        return b"".join(chunks), content_type

    def scrape(self, accept: str | None = None) -> Metrics:
        body, content_type = self.scrape_bytes(accept)
        return Metrics(body.decode(), openmetrics=content_type.startswith("application/openmetrics-text"))
