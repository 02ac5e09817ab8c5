"""An in-process details engine on a simulated organization, for tests that look inside it."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.budget import DETAILS, RequestBudget
from exporter.collectors import BY_NAME
from exporter.details.engine import DetailsEngine
from exporter.details.health import CollectorHealth
from exporter.details.render import DetailsPart
from exporter.settings import AdminKey
from exporter.snapshot import Snapshot
from exporter.upstream import ApiClient, parse_project
from tests.support.keys import KEY
from tests.support.waiting import wait_for

DEFAULTS = ("users", "service-accounts", "api-keys", "spend-limits")


class Harness:
    """An engine on one simulated organization, what it published, and its registry."""

    def __init__(self, server, collectors=DEFAULTS, per_item=True, emails=False, interval=3600.0, max_retries=0):
        self.server = server
        self.organization = server.organization
        self.registry = CollectorRegistry()
        self.stop = threading.Event()
        self.parts: list[DetailsPart] = []
        self.client = ApiClient(
            base_url=server.base_url,
            admin_key=AdminKey(value=KEY),
            timeout=5.0,
            max_retries=max_retries,
            stop=self.stop,
            concurrency=4,
            budget=RequestBudget(500),
            priority=DETAILS,
        )
        self.engine = DetailsEngine(
            client=self.client,
            collectors=[BY_NAME[name] for name in collectors],
            interval=interval,
            deadline=10.0,
            max_pages=100,
            per_item=per_item,
            emails=emails,
            registry=self.registry,
            health=CollectorHealth(self.registry, [BY_NAME[name] for name in collectors]),
            publish=self.parts.append,
            stop=self.stop,
        )

    def snapshot(self) -> Snapshot:
        projects = [parse_project(p) for p in self.organization.all()]
        return Snapshot.build(projects, completed_at=time.time(), pages=1, duration=0.0)

    def start(self) -> Harness:
        self.engine.sync(self.snapshot())
        self.engine.start(4)
        self.wait_loaded()
        return self

    def active(self) -> list[str]:
        return [p["id"] for p in self.organization.all() if p["status"] == "active"]

    def wait_loaded(self) -> None:
        """Until every active project has details for every collector, all of them composed."""

        def fresh() -> bool:
            self.engine.count_stale()
            return all(self.value("openai_collector_projects_stale", collector=c) == 0 for c in self.names())

        wait_for(fresh, 20, what="every active project's details")
        self.compose()

    def compose(self) -> None:
        """Publish now rather than at the publisher's next turn."""
        with self.engine._lock:
            self.engine._compose()

    def names(self) -> list[str]:
        return [c.name for c in self.engine.collectors]

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def text(self) -> str:
        return b"".join(bytes(buffer) for buffer in self.engine.part.raw).decode()

    def families(self) -> dict:
        return {family.name: family for family in text_string_to_metric_families(self.text())}

    def refresh(self, collector: str, project_id: str) -> None:
        """Ask for one refresh and wait until it was made and published."""
        before = self.value("openai_collector_requests_total", collector=collector) or 0
        self.engine.ask(collector, project_id)
        wait_for(
            lambda: (self.value("openai_collector_requests_total", collector=collector) or 0) > before,
            10,
            what=f"a refresh of {collector} for {project_id}",
        )
        time.sleep(0.05)  # the refresh's completion follows its request count by a moment
        self.compose()

    def close(self) -> None:
        self.stop.set()
        self.client.close()


@pytest.fixture
def harness(simulator):
    made: list[Harness] = []

    def make(projects: int = 12, seed: int = 3, **options) -> Harness:
        made.append(Harness(simulator(projects, seed=seed), **options))
        return made[-1]

    yield make
    for h in made:
        h.close()


def samples(families: dict, name: str) -> dict[tuple, float]:
    family = families.get(name.removesuffix("_total"))
    if family is None:
        return {}
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}
