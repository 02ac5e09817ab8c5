"""Each project's rate limits, one series per model and limit; off by default for its cardinality."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from exporter.collectors.base import (
    Audited,
    Change,
    Collector,
    Details,
    Family,
    Fetcher,
    Invalid,
    number,
    obj,
    sample,
    text,
)

# The API's field, and the `limit` label it becomes.
LIMITS = (
    ("max_requests_per_1_minute", "requests_per_minute"),
    ("max_tokens_per_1_minute", "tokens_per_minute"),
    ("max_images_per_1_minute", "images_per_minute"),
    ("max_audio_megabytes_per_1_minute", "audio_megabytes_per_minute"),
    ("max_requests_per_1_day", "requests_per_day"),
    ("batch_1_day_max_input_tokens", "batch_input_tokens_per_day"),
)


class RateLimit(NamedTuple):
    model: str
    id: str
    values: tuple[tuple[str, float], ...]  # (limit label, value) for the limits the API gave


def parse_limit(item: object) -> RateLimit:
    entry = obj(item, "a rate limit")
    limit_id = text(entry, "id", "a rate limit")
    where = f"rate limit {limit_id}"
    values = []
    for field, label in LIMITS:
        value = number(entry, field, where, required=False)
        if value is not None:
            values.append((label, value))
    return RateLimit(text(entry, "model", where), limit_id, tuple(values))


def fetch(fetcher: Fetcher, project_id: str) -> Details:
    limits = fetcher.list(f"/organization/projects/{project_id}/rate_limits", parse_limit)
    if len({limit.model for limit in limits}) != len(limits):
        raise Invalid(f"project {project_id}: a model's rate limit is listed twice")
    return tuple(sorted(limits))


FAMILY = Family("openai_project_rate_limit", "Rate limit of the project per model and limit")


def render(project_id: str, limits: Details, per_item: bool) -> Sequence[bytes]:
    lines = [
        sample(FAMILY.name, {"project_id": project_id, "model": limit.model, "limit": label}, value)
        for limit in limits
        for label, value in limit.values
    ]
    return ("".join(lines).encode(),)


def diff(old: Details, new: Details, emails: bool) -> list[Change]:
    before, after = {r.model: dict(r.values) for r in old}, {r.model: dict(r.values) for r in new}
    ids = {r.model: r.id for r in (*old, *new)}  # the newer id wins: the one an audit event names
    changes = []
    for model in sorted(before.keys() | after.keys()):
        was, now = before.get(model, {}), after.get(model, {})
        fields: dict[str, object] = {"model": model, "rate_limit_id": ids[model]}
        for label in sorted(was.keys() | now.keys()):
            if was.get(label) != now.get(label):
                fields[f"old_{label}"], fields[f"new_{label}"] = was.get(label), now.get(label)
        if len(fields) > 2:
            changes.append(Change("rate_limit", "changed", fields))
    return changes


RATE_LIMITS = Collector(
    name="rate-limits",
    help="the rate limits of each active project, per model",
    default=False,
    fetch=fetch,
    families=(FAMILY,),
    render=render,
    diff=diff,
    changes=(("rate_limit", "changed"),),
    audited_by={"rate_limit_changed": Audited(("rate_limit.updated", "rate_limit.deleted"), "rate_limit_id")},
)
