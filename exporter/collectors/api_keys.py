"""A project's API keys: how many, whose, and how long since each was last used.

`owner_project_access=any` asks for every enabled key: without it the endpoint applies
membership-based visibility and may leave out keys whose owner left the project, which
are exactly the keys a review looks for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from prometheus_client.core import HistogramMetricFamily, Metric

from exporter.collectors.base import (
    Aggregate,
    Audited,
    Change,
    Collector,
    Details,
    Family,
    Fetcher,
    number,
    obj,
    optional_text,
    sample,
    text,
    unique,
    without_emails,
)
from exporter.exposition import SOURCE, elapsed_histogram

OWNER_TYPES = ("user", "service_account")
IDLE_BUCKETS = tuple(days * 86400.0 for days in (1, 7, 30, 90, 180, 365))


class ApiKey(NamedTuple):
    id: str
    name: str
    owner_type: str
    owner_id: str
    created_at: float
    last_used_at: float | None
    owner_email: str | None  # logged only with --log.emails; never in a metric


def parse_key(item: object) -> ApiKey:
    entry = obj(item, "an API key")
    key_id = text(entry, "id", "an API key")
    where = f"API key {key_id}"
    owner = obj(entry.get("owner"), f"{where}: `owner`")
    owner_type = text(owner, "type", f"{where}: owner")
    who = owner.get(owner_type)
    who = obj(who, f"{where}: owner.{owner_type}") if who is not None else {}
    created = number(entry, "created_at", where)
    assert created is not None
    return ApiKey(
        key_id,
        optional_text(entry, "name", where) or "",
        owner_type,
        optional_text(who, "id", where) or "",
        created,
        number(entry, "last_used_at", where, required=False),
        optional_text(who, "email", where),
    )


def fetch(fetcher: Fetcher, project_id: str) -> Details:
    keys = fetcher.list(f"/organization/projects/{project_id}/api_keys", parse_key, {"owner_project_access": "any"})
    return unique(keys, "API key", project_id)


COUNT = Family("openai_project_api_keys", "API keys of the project by owner type")
INFO = Family("openai_project_api_key_info", "API key metadata; always 1", per_item=True)
CREATED = Family("openai_project_api_key_created_timestamp_seconds", "Unix time the API key was created", per_item=True)
LAST_USED = Family(
    "openai_project_api_key_last_used_timestamp_seconds",
    "Unix time the API key was last used; absent while never used",
    per_item=True,
)


def render(project_id: str, keys: Details, per_item: bool) -> Sequence[bytes]:
    counts = dict.fromkeys(OWNER_TYPES, 0) | Counter(k.owner_type for k in keys)
    count = "".join(sample(COUNT.name, {"project_id": project_id, "owner_type": t}, n) for t, n in counts.items())
    if not per_item:
        return (count.encode(), b"", b"", b"")
    info, created, used = [], [], []
    for key in keys:
        labels = {"project_id": project_id, "api_key_id": key.id}
        info.append(
            sample(
                INFO.name,
                labels | {"name": without_emails(key.name), "owner_type": key.owner_type, "owner_id": key.owner_id},
                1,
            )
        )
        created.append(sample(CREATED.name, labels, key.created_at))
        if key.last_used_at is not None:
            used.append(sample(LAST_USED.name, labels, key.last_used_at))
    return (count.encode(), "".join(info).encode(), "".join(created).encode(), "".join(used).encode())


def diff(old: Details, new: Details, emails: bool) -> list[Change]:
    before, after = {k.id: k for k in old}, {k.id: k for k in new}
    changes = [Change("api_key", "created", _fields(k, emails)) for i, k in after.items() if i not in before]
    changes += [Change("api_key", "removed", _fields(k, emails)) for i, k in before.items() if i not in after]
    return changes


def _fields(key: ApiKey, emails: bool) -> dict[str, object]:
    fields: dict[str, object] = {"api_key_id": key.id, "name": key.name, "owner_type": key.owner_type}
    fields["owner_id"] = key.owner_id
    if emails and key.owner_email:
        fields["owner_email"] = key.owner_email
    return fields


class IdleIndex:
    """Per owner type, the sorted times each key was last used (or created), for the histogram at scrape time."""

    def __init__(self, keys: Iterable[ApiKey]):
        by_type: dict[str, list[float]] = {t: [] for t in OWNER_TYPES}
        for key in keys:
            used = key.last_used_at
            by_type.setdefault(key.owner_type, []).append(used if used is not None else key.created_at)
        for values in by_type.values():
            values.sort()
        self.since = by_type
        self.sums = {t: float(sum(v)) for t, v in by_type.items()}

    def histogram(self, now: float) -> Metric:
        family = HistogramMetricFamily(
            "openai_api_key_idle_seconds",
            f"Time since each API key was last used, or created when never used, at scrape time, {SOURCE}.",
            labels=["owner_type"],
        )
        return elapsed_histogram(family, self.since, self.sums, now, IDLE_BUCKETS)


def aggregate(all_keys: Iterable[Details], per_item: bool) -> Aggregate:
    keys = [key for keys in all_keys for key in keys]
    never = dict.fromkeys(OWNER_TYPES, 0) | Counter(k.owner_type for k in keys if k.last_used_at is None)
    static = (
        "# HELP openai_api_keys_never_used API keys of active projects that were never used, "
        f"by owner type, {SOURCE}.\n# TYPE openai_api_keys_never_used gauge\n"
        + "".join(sample("openai_api_keys_never_used", {"owner_type": t}, n) for t, n in never.items())
    )
    index = IdleIndex(keys)
    return Aggregate(static.encode(), lambda now: [index.histogram(now)])


API_KEYS = Collector(
    name="api-keys",
    help="API keys of each active project, their owners and last use",
    default=True,
    fetch=fetch,
    families=(COUNT, INFO, CREATED, LAST_USED),
    render=render,
    diff=diff,
    changes=(("api_key", "created"), ("api_key", "removed")),
    audited_by={
        "api_key_created": Audited(("api_key.created",), "api_key_id"),
        "api_key_removed": Audited(("api_key.deleted",), "api_key_id"),
    },
    aggregate=aggregate,
)
