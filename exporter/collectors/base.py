"""What every collector is made of: its row in the table, its families, its change events.

A collector knows one resource of a project: how to fetch it (through a Fetcher, which
knows paging, retries and the budget), how to parse it into immutable records, how to
render them, and how two versions of them differ. It knows nothing of scheduling or of
publication (exporter/details.py does both).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson
from prometheus_client.core import Metric

from exporter.exposition import SOURCE, escape_label_value, format_value

R = TypeVar("R")
Details = Any  # one project's records for one collector: a tuple of records, one record, or None


class Invalid(Exception):
    """A response that does not follow the contract; the message says where, in one line."""


class Fetcher(Protocol):
    """Requests for one project's refresh: each is budgeted, retried, and fails with PollError."""

    def list(self, path: str, parse: Callable[[object], R], params: Mapping[str, str] | None = None) -> tuple[R, ...]:
        """Every item of a paged list, in upstream order; all pages or a PollError."""
        ...

    def one(self, path: str, parse: Callable[[object], R], *, missing_ok: bool = False) -> R | None:
        """One object; None for a 404 when `missing_ok` (the thing is not set)."""
        ...


@dataclass(frozen=True)
class Family:
    """One metric family of a collector's per-project block."""

    name: str
    help: str
    per_item: bool = False  # one series per key or certificate: dropped with --metrics.per-project=false

    @property
    def header(self) -> bytes:
        return f"# HELP {self.name} {self.help}, {SOURCE}.\n# TYPE {self.name} gauge\n".encode()


class Change(NamedTuple):
    """One change between two refreshes of a project's records, as logged and counted."""

    resource: str  # api_key, project_user, ...: with `change`, the log event and the counter's labels
    change: str  # created, removed, role_changed, changed, ...
    fields: Mapping[str, object]  # the item's id and what changed; project_id is added by the caller

    @property
    def event(self) -> str:
        return f"{self.resource}_{self.change}"


class Switch(NamedTuple):
    """A collector of the organization's own feeds (costs, usage, the audit log), beside the per-project ones."""

    name: str
    help: str
    default: bool


class Audited(NamedTuple):
    """The audit events that explain one kind of change, and the change's field naming what they happened to."""

    event_types: tuple[str, ...]  # of the contract's AuditLogEventType
    id_field: str  # the change's log field that holds the event's resource id: api_key_id, project_id, ...
    shared_id: bool = False  # the id names the same thing in many projects (a user): the event's project must match


class Aggregate(NamedTuple):
    """What a collector says about all projects at once: rendered families, and families that move with time."""

    static: bytes = b""
    live: Callable[[float], Iterable[Metric]] | None = None


@dataclass(frozen=True)
class Collector:
    """One row of the table (exporter/collectors/__init__.py)."""

    name: str  # the flag's NAME: --collector.NAME
    help: str
    default: bool
    fetch: Callable[[Fetcher, str], Details]  # a project's records, all or nothing
    families: tuple[Family, ...]
    render: Callable[[str, Details, bool], Sequence[bytes]]  # project id, records, per-item series -> one per family
    diff: Callable[[Details, Details, bool], list[Change]]  # old, new, emails shown -> changes
    changes: tuple[tuple[str, str], ...]  # every (resource, change) it may log, for counters present from the start
    count: Callable[[Details], int] = len  # items, for the summary of a first refresh
    aggregate: Callable[[Iterable[Details], bool], Aggregate] | None = None
    fetch_organization: Callable[[Fetcher], Details] | None = None  # once per round, beside the projects
    render_organization: Callable[[Details], bytes] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Change event (api_key_created, ...) -> the audit events that name its actor. An event of
    # one of these types in a project also puts that project's refresh first (exporter/audit).
    audited_by: Mapping[str, Audited] = field(default_factory=dict)


# -- parsing helpers: tolerant of absent optionals and new fields, strict on required ones -------


def obj(item: object, what: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise Invalid(f"{what} is not a JSON object")
    return item


def text(item: Mapping[str, Any], key: str, what: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise Invalid(f"{what}: `{key}` is not a string")
    return value


def optional_text(item: Mapping[str, Any], key: str, what: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{what}: `{key}` is not a string")
    return value


def number(item: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> float | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(f"{what}: `{key}` is not a number")
    return value


def page_of(body: bytes, cursor: str) -> tuple[list[Any], bool, str | None]:
    """A page's envelope: its `data`, `has_more`, and the next page's cursor, named `cursor`
    (`last_id` for a list, `next_page` for buckets); Invalid for anything else."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Invalid("the response is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise Invalid("`data` is not a list")
    more, following = document.get("has_more"), document.get(cursor)
    if not isinstance(more, bool):
        raise Invalid("`has_more` is not a boolean")
    if following is not None and not isinstance(following, str):
        raise Invalid(f"`{cursor}` is not a string")
    return document["data"], more, following


def unique(records: Iterable[R], what: str, project_id: str) -> tuple[R, ...]:
    """The records sorted by id; Invalid when one is listed twice, which would count it twice."""
    ordered = sorted(records, key=attrgetter("id"))
    for first, second in zip(ordered, ordered[1:], strict=False):
        if first.id == second.id:  # type: ignore[attr-defined]
            raise Invalid(f"project {project_id}: {what} {first.id} is listed twice")  # type: ignore[attr-defined]
    return tuple(ordered)


# -- rendering helpers ---------------------------------------------------------------------------


def sample(name: str, labels: Mapping[str, str | None], value: float | str) -> str:
    """One line of exposition; a str value is written as it is (see `cents`)."""
    inner = ",".join(f'{key}="{escape_label_value(label)}"' for key, label in labels.items())
    return f"{name}{{{inner}}} {value if isinstance(value, str) else format_value(value)}\n"


_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+\.[^\s@\"'<>(),;:]+")


def without_emails(text: str | None) -> str | None:
    """A free-text label (a key's or a certificate's name) with any email address masked.

    Names are free text, and people name keys after themselves; no email may reach a metric.
    """
    if not text or "@" not in text:
        return text
    return _EMAIL.sub("[email]", text)


def cents(amount: int) -> str:
    """Whole cents as currency units, exactly: 12345 -> 123.45, 10000 -> 100."""
    sign, amount = ("-", -amount) if amount < 0 else ("", amount)
    units, rest = divmod(amount, 100)
    return f"{sign}{units}" if rest == 0 else f"{sign}{units}.{rest:02d}".rstrip("0")
