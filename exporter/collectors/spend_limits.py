"""Each project's hard spend limit, and the organization's, in currency units.

`threshold_amount` is in cents. A 404 means no limit is set: no series, and no failure.
"""

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
    cents,
    obj,
    sample,
    text,
)
from exporter.exposition import SOURCE


class SpendLimit(NamedTuple):
    threshold_cents: int
    currency: str
    interval: str
    enforcement: str


def parse_limit(item: object) -> SpendLimit:
    entry = obj(item, "a spend limit")
    amount = entry.get("threshold_amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise Invalid("a spend limit: `threshold_amount` is not a whole number of cents")
    enforcement = entry.get("enforcement")
    status = text(obj(enforcement, "a spend limit: `enforcement`"), "status", "a spend limit: enforcement")
    return SpendLimit(
        amount, text(entry, "currency", "a spend limit"), text(entry, "interval", "a spend limit"), status
    )


def fetch(fetcher: Fetcher, project_id: str) -> Details:
    return fetcher.one(f"/organization/projects/{project_id}/spend_limit", parse_limit, missing_ok=True)


def fetch_organization(fetcher: Fetcher) -> Details:
    return fetcher.one("/organization/spend_limit", parse_limit, missing_ok=True)


LIMIT = Family("openai_project_spend_limit", "Hard spend limit of the project in currency units")
ENFORCING = Family("openai_project_spend_limit_enforcing", "1 while the project's spend limit is enforced")


def render(project_id: str, limit: Details, per_item: bool) -> Sequence[bytes]:
    if limit is None:
        return (b"", b"")
    labels = {"project_id": project_id, "currency": limit.currency, "interval": limit.interval}
    return (
        sample(LIMIT.name, labels, cents(limit.threshold_cents)).encode(),
        sample(ENFORCING.name, {"project_id": project_id}, int(limit.enforcement == "enforcing")).encode(),
    )


def render_organization(limit: Details) -> bytes:
    head = (
        "# HELP openai_organization_spend_limit Hard spend limit of the organization in currency units, "
        f"{SOURCE}.\n# TYPE openai_organization_spend_limit gauge\n"
    )
    if limit is None:
        return head.encode()
    labels = {"currency": limit.currency, "interval": limit.interval}
    return (head + sample("openai_organization_spend_limit", labels, cents(limit.threshold_cents))).encode()


def diff(old: Details, new: Details, emails: bool) -> list[Change]:
    if old == new:
        return []
    fields: dict[str, object] = {}
    for name in SpendLimit._fields:
        before, after = getattr(old, name, None), getattr(new, name, None)
        if before != after:
            fields[f"old_{name}"], fields[f"new_{name}"] = before, after
    return [Change("spend_limit", "changed", fields)]


SPEND_LIMITS = Collector(
    name="spend-limits",
    help="the hard spend limit of each active project and of the organization",
    default=True,
    fetch=fetch,
    families=(LIMIT, ENFORCING),
    render=render,
    diff=diff,
    changes=(("spend_limit", "changed"),),
    # A project setting: the contract has no event type of its own for it, a change is a project.updated.
    audited_by={"spend_limit_changed": Audited(("project.updated",), "project_id")},
    count=lambda limit: int(limit is not None),
    fetch_organization=fetch_organization,
    render_organization=render_organization,
)
