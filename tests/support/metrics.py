"""Scrapes parsed with prometheus_client's own parsers, and promtool's verdict on them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

PER_PROJECT_FAMILIES = (
    "openai_project_info",
    "openai_project_created_timestamp_seconds",
    "openai_project_archived_timestamp_seconds",
)


class Metrics:
    """A scrape parsed with prometheus_client's own parser (text or OpenMetrics)."""

    def __init__(self, text: str, openmetrics: bool = False):
        self.text = text
        parse = openmetrics_families if openmetrics else text_string_to_metric_families
        self.families = {family.name: family for family in parse(text)}

    def samples(self, name: str) -> list:
        """Samples named `name` (e.g. openai_polls_total), from whichever family holds them."""
        return [s for family in self.families.values() for s in family.samples if s.name == name]

    def series(self, name: str) -> dict[frozenset, float]:
        return {frozenset(s.labels.items()): s.value for s in self.samples(name)}

    def names(self) -> set[tuple[str, frozenset]]:
        """Every series (name and labels) of the scrape, without values."""
        return {(s.name, frozenset(s.labels.items())) for f in self.families.values() for s in f.samples}

    def get(self, name: str, **labels) -> float | None:
        matches = [s.value for s in self.samples(name) if s.labels == labels]
        assert len(matches) <= 1, f"{name}{labels} appears {len(matches)} times"
        return matches[0] if matches else None

    def value(self, name: str, **labels) -> float:
        found = self.get(name, **labels)
        assert found is not None, f"no sample {name}{labels} in the scrape"
        return found

    def by_label(self, name: str, label: str) -> dict[str, dict[str, str]]:
        """Labels of each sample of `name`, keyed by one label's value (e.g. project_id)."""
        out = {}
        for sample in self.samples(name):
            key = sample.labels[label]
            assert key not in out, f"{name} has two series with {label}={key!r}"
            out[key] = sample.labels
        return out

    def values_by_label(self, name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in self.samples(name)}

    def project_total(self) -> float | None:
        """Active plus archived projects; None when no snapshot is served."""
        active = self.get("openai_projects", status="active")
        return None if active is None else active + self.value("openai_projects", status="archived")


def snapshot_series(metrics: Metrics) -> dict:
    """The series that come from the last snapshot, with their values: identical between scrapes."""
    out = {}
    for name in ("openai_projects", *PER_PROJECT_FAMILIES):
        for sample in metrics.samples(name):
            out[(name, frozenset(sample.labels.items()))] = sample.value
    return out


def promtool() -> str:
    """promtool's path; in CI a missing promtool is a failure, not a skip."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed, and CI must check the exposition with it")
        pytest.skip("promtool is not installed")
    return path


def promtool_check(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
