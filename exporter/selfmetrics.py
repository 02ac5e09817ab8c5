"""The exporter's own metrics: process, build, and the health of each organization's polls.

These are the live part of a scrape (exporter.exposition.LiveTail renders them); the
projects' own series come from the poll's cached exposition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter import __version__
from exporter.exposition import AgeHistogram, Exposition
from exporter.snapshot import CHANGE_KINDS, Change, Snapshot
from exporter.upstream import POLL_FAILURE_REASONS


def exporter_registry() -> CollectorRegistry:
    """The registry behind /metrics: process, platform, GC and build info, then poll health."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Gauge("openai_exporter_build_info", "Build of this exporter; always 1.", ["version"], registry=registry).labels(
        __version__
    ).set(1)
    return registry


class HealthMetrics:
    """The health of the background polls; labelled `organization` when there are several."""

    def __init__(self, registry: CollectorRegistry, by_organization: bool = False):
        org = ["organization"] if by_organization else []
        self.up = Gauge(
            "openai_up", "1 when the last background poll of the Admin API succeeded, else 0.", org, registry=registry
        )
        self.last_success = Gauge(
            "openai_last_successful_poll_timestamp_seconds",
            "Unix time the last successful background poll ended; 0 before the first.",
            org,
            registry=registry,
        )
        self.poll_duration = Gauge(
            "openai_poll_duration_seconds",
            "Duration of the last background poll, successful or not.",
            org,
            registry=registry,
        )
        self.polls = Counter(
            "openai_polls_total", "Background polls of the Admin API, finished or failed.", org, registry=registry
        )
        self.failures = Counter(
            "openai_poll_failures_total",
            "Background polls that failed, by reason.",
            org + ["reason"],
            registry=registry,
        )
        self.requests = Counter(
            "openai_api_requests_total",
            "Upstream HTTP responses to background polls, by status code.",
            org + ["code"],
            registry=registry,
        )


class _Discard:
    """Takes the calls of a metric child and does nothing with them."""

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass


_DISCARD = _Discard()
# A Gauge or a Counter; its labels() is of the same type, so a child keeps inc() or set().
Metric = TypeVar("Metric", bound=MetricWrapperBase)


def _remove(metric: Gauge | Counter, labels: Sequence[str]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


class OrganizationMetrics:
    """What one organization's polls record: its health children, its change counter, its ages.

    `project_registry` holds the per-organization project metrics (the change counter and
    the age histogram): /metrics' own registry for a single organization, a registry of the
    organization's own, served by /probe, when there are several.
    """

    def __init__(
        self,
        health: HealthMetrics,
        alias: str | None,
        project_registry: CollectorRegistry,
        current_exposition: Callable[[], Exposition],
    ):
        self._health = health
        self._alias = alias
        self._org: tuple[str, ...] = (alias,) if alias is not None else ()
        self._codes: set[str] = set()
        self._forgotten = False
        for metric in (health.up, health.last_success, health.poll_duration, health.polls):
            self._labelled(metric)  # present from the start, before the first poll ends
        for reason in POLL_FAILURE_REASONS:
            self._labelled(health.failures, reason)
        self.registry = project_registry
        self.changes = Counter(
            "openai_project_changes_total",
            "Project changes seen between successive background polls, by kind.",
            ["change"],
            registry=project_registry,
        )
        for kind in CHANGE_KINDS:
            self.changes.labels(kind)
        project_registry.register(AgeHistogram(current_exposition))

    def _labelled(self, metric: Metric, *labels: str) -> Metric:
        return metric.labels(*self._org, *labels) if self._org or labels else metric

    def _child(self, metric: Metric, *labels: str) -> Metric | _Discard:
        """What a poll records into: the metric's child, or nothing once the organization is gone."""
        # After forget(), a poll still finishing must not bring the series back.
        return _DISCARD if self._forgotten else self._labelled(metric, *labels)

    def record_response(self, code: int) -> None:
        self._codes.add(str(code))
        self._child(self._health.requests, str(code)).inc()

    def restored(self, snapshot: Snapshot) -> None:
        """A snapshot from the state file is served: its time is the last success, not now."""
        self._child(self._health.last_success).set(snapshot.completed_at)

    def record_success(self, snapshot: Snapshot, changes: Sequence[Change], duration: float) -> None:
        self._child(self._health.polls).inc()
        for change in changes:
            self.changes.labels(change.kind).inc()
        self._child(self._health.poll_duration).set(duration)
        self._child(self._health.last_success).set(snapshot.completed_at)
        self._child(self._health.up).set(1)

    def record_failure(self, reason: str, duration: float) -> None:
        self._child(self._health.polls).inc()
        self._child(self._health.failures, reason).inc()
        self._child(self._health.poll_duration).set(duration)
        self._child(self._health.up).set(0)

    def forget(self) -> None:
        """Drop a removed organization's health series, so they do not linger as stale values."""
        self._forgotten = True
        if self._alias is None:
            return
        health, alias = self._health, self._alias
        for metric in (health.up, health.last_success, health.poll_duration, health.polls):
            _remove(metric, (alias,))
        for reason in POLL_FAILURE_REASONS:
            _remove(health.failures, (alias, reason))
        for code in self._codes:
            _remove(health.requests, (alias, code))
