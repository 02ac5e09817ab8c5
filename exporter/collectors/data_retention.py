"""Each project's data retention setting, as an _info series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from exporter.collectors.base import Audited, Change, Collector, Details, Family, Fetcher, obj, sample, text


class DataRetention(NamedTuple):
    type: str


def parse_retention(item: object) -> DataRetention:
    return DataRetention(text(obj(item, "data retention"), "type", "data retention"))


def fetch(fetcher: Fetcher, project_id: str) -> Details:
    return fetcher.one(f"/organization/projects/{project_id}/data_retention", parse_retention, missing_ok=True)


FAMILY = Family("openai_project_data_retention_info", "Data retention of the project; always 1")


def render(project_id: str, retention: Details, per_item: bool) -> Sequence[bytes]:
    if retention is None:
        return (b"",)
    return (sample(FAMILY.name, {"project_id": project_id, "type": retention.type}, 1).encode(),)


def diff(old: Details, new: Details, emails: bool) -> list[Change]:
    if old == new:
        return []
    fields = {"old_type": old.type if old else None, "new_type": new.type if new else None}
    return [Change("data_retention", "changed", fields)]


DATA_RETENTION = Collector(
    name="data-retention",
    help="the data retention setting of each active project",
    default=False,
    fetch=fetch,
    families=(FAMILY,),
    render=render,
    diff=diff,
    changes=(("data_retention", "changed"),),
    # A project setting: the contract has no event type of its own for it, a change is a project.updated.
    audited_by={"data_retention_changed": Audited(("project.updated",), "project_id")},
    count=lambda retention: int(retention is not None),
)
