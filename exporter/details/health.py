"""The health of each collector, beside the list poll's: up, failures by reason, staleness.

These sit in the organization's registry, so they are part of the live tail of a scrape,
and labelled `collector` so that one failing collector shows as itself alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter.collectors.base import Collector
from exporter.upstream import POLL_FAILURE_REASONS


class CollectorHealth:
    """The health of an organization's collectors: the details' (`collectors`) and the spend's (`feeds`)."""

    def __init__(self, registry: CollectorRegistry, collectors: Sequence[Collector], feeds: Sequence[str] = ()):
        self.up = Gauge(
            "openai_collector_up",
            "1 when the collector's last round of background refreshes (or poll, for costs and usage) had no "
            "failed fetch, else 0.",
            ["collector"],
            registry=registry,
        )
        self.failures = Counter(
            "openai_collector_failures",
            "Failed background fetches of a collector, by reason.",
            ["collector", "reason"],
            registry=registry,
        )
        self.stale = Gauge(
            "openai_collector_projects_stale",
            "Active projects whose details for the collector are missing or older than two details intervals.",
            ["collector"],
            registry=registry,
        )
        self.requests = Counter(
            "openai_collector_requests",
            "Upstream requests of a collector's background refreshes, retries included.",
            ["collector"],
            registry=registry,
        )
        self.changes = Counter(
            "openai_governance_changes",
            "Changes seen between two background refreshes of a project's details, by resource and kind.",
            ["resource", "change"],
            registry=registry,
        )
        self.round_duration = Gauge(
            "openai_details_round_duration_seconds",
            "Duration of the last complete round of background detail refreshes over every active project.",
            registry=registry,
        )
        self.budget_rate = Gauge(
            "openai_api_budget_requests_per_second",
            "Requests per second the shared request budget allows now; below the configured rate after 429s.",
            registry=registry,
        )
        for collector in collectors:
            self.up.labels(collector.name)
            self.stale.labels(collector.name)
            self.requests.labels(collector.name)
            for reason in POLL_FAILURE_REASONS:
                self.failures.labels(collector.name, reason)
            for resource, change in collector.changes:
                self.changes.labels(resource, change)
        for name in feeds:  # no projects of their own to be stale
            self.up.labels(name)
            self.requests.labels(name)
            for reason in POLL_FAILURE_REASONS:
                self.failures.labels(name, reason)
