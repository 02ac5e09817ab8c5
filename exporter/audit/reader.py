"""The audit log's events after a position, read whole: every page, or a failure.

The log lists the newest first and pages with `after` = the previous `last_id`, as every
list does. The position is the newest event's `effective_at` and the ids read at that
second: the next read asks from one second before it (`effective_at[gt]`), since events of
that same second may still be arriving, and drops the ids it has already counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from exporter.audit.events import EVENT_TYPES, TENANT_EVENT_TYPES, Event, parse_event
from exporter.collectors.base import Invalid, page_of
from exporter.upstream import PAGE_SIZE, ApiClient, Params, PollError

PATH = "/organization/audit_logs"


class Position(NamedTuple):
    at: int  # effective_at of the newest event read
    ids: frozenset[str] = frozenset()  # the events read at that second


class Read(NamedTuple):
    events: list[Event]  # new ones, oldest first
    position: Position
    requests: int


def read_since(
    client: ApiClient,
    position: Position,
    deadline: float,
    max_pages: int,
    on_request: Callable[[int], None] = lambda page: None,
    *,
    tenant: bool = False,
) -> Read:
    """Every event after `position`, oldest first; a PollError if any page fails. With `tenant`,
    the tenant-scoped events, which the log lists only when asked for alone (`tenant_only`)."""
    base: list[tuple[str, str | int | float | bool | None]] = [("effective_at[gt]", position.at - 1)]
    # As the official SDK writes an array: event_types[]=a&event_types[]=b.
    base += [("event_types[]", t) for t in (TENANT_EVENT_TYPES if tenant else EVENT_TYPES)]
    base += [("tenant_only", "true")] if tenant else []
    base.append(("limit", PAGE_SIZE))
    events: list[Event] = []
    seen: set[str] = set(position.ids)
    after: str | None = None
    cursors: set[str] = set()
    requests = 0
    while True:
        if requests >= max_pages:
            raise PollError("pagination", f"{PATH}: more than {max_pages} pages (--poll.max-pages)")
        params: Params = base if after is None else [*base, ("after", after)]
        requests += 1
        on_request(requests)  # counted even when the page then fails
        answer = client.get(client.base_url + PATH, params, deadline, where={"path": PATH, "after": after})
        try:
            page, more, last_id = _page(answer.content)
        except Invalid as exc:
            raise PollError("invalid_response", f"{PATH}: {exc}", answer.headers.get("x-request-id")) from None
        for event in page:
            if event.id not in seen:  # a repeated id is counted once, whichever page holds it
                seen.add(event.id)
                events.append(event)
        if not more:
            break
        if last_id is None or last_id in cursors:
            raise PollError(
                "pagination", f"{PATH}: `has_more` is true but `last_id` is {last_id!r}, seen before or null"
            )
        cursors.add(last_id)
        after = last_id
    events.reverse()  # the upstream lists the newest first
    events.sort(key=lambda e: e.effective_at)  # stable: within a second, the upstream's order stands
    return Read(events, _advanced(position, events), requests)


def _advanced(position: Position, events: list[Event]) -> Position:
    if not events:
        return position
    newest = max(e.effective_at for e in events)
    if newest < position.at:
        return position
    ids = {e.id for e in events if e.effective_at == newest}
    return Position(newest, frozenset(ids | position.ids) if newest == position.at else frozenset(ids))


def _page(body: bytes) -> tuple[list[Event], bool, str | None]:
    data, more, last_id = page_of(body, "last_id")
    return [parse_event(item) for item in data], more, last_id
