"""The query parameters and pages of the costs and usage endpoints, as the contract gives them.

Every one takes `start_time` (required; Unix seconds, inclusive), `end_time` (exclusive),
`bucket_width` (costs: 1d alone; usage: 1m, 1h or 1d, by default 1d), `limit` buckets a page
(costs: 1..180, 7 by default; usage by width: 1d 7 up to 31, 1h 24 up to 168, 1m 60 up to 1440),
`group_by` and filters among those its operation lists, and `page`, the `next_page` of the page
before. Arrays come repeated (`group_by=a&group_by=b`) or with brackets (`group_by[]=a`), as the
SDK sends them.

Buckets are aligned to their width in UTC: the first one holds `start_time`, the last begins before
`end_time` (by default, before now), and none lies wholly in the future. `next_page` is opaque: the
next bucket's start, signed with the query it belongs to, so a cursor made up or taken from another
query answers 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from exporter.simulated_governance import ApiError
from exporter.simulated_spend_catalog import ENDPOINTS

COSTS = "costs"
USAGE = tuple(f"usage/{name}" for name in ENDPOINTS)
SPEND_RESOURCES = (COSTS, *USAGE)  # the names a key can lack the scope for, as in `forbidden`
WIDTHS = {"1m": 60, "1h": 3_600, "1d": 86_400}
USAGE_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # (default, maximum) by width
COSTS_LIMITS = (7, 180)
COSTS_GROUP_BY = ("project_id", "line_item")
COSTS_FILTERS = {"project_ids": "project_id", "api_key_ids": "api_key_id"}


@dataclass(frozen=True)
class Query:
    resource: str  # "costs" or "usage/NAME"
    start: int  # start_time as asked
    end: int | None  # end_time as asked
    width: int  # seconds
    limit: int
    group_by: tuple[str, ...]
    filters: tuple[tuple[str, frozenset[Any]], ...]  # (dimension, the values it may take)
    first: int  # the start of this page's first bucket

    @property
    def endpoint(self) -> str:
        return self.resource.removeprefix("usage/")

    def signature(self) -> bytes:
        """What a cursor is bound to: everything but the limit and the page."""
        filters = sorted((name, sorted(map(str, values))) for name, values in self.filters)
        return repr((self.resource, self.start, self.end, self.width, self.group_by, filters)).encode()


def whole(resource: str, start: int, end: int | None, width: int, group_by: Sequence[str]) -> Query:
    """A query of every bucket at once, for the totals tests compare with."""
    return Query(resource, start, end, width, 1 << 62, tuple(group_by), (), start // width * width)


def _values(params: Mapping[str, Sequence[str]], name: str) -> list[str]:
    return [*params.get(name, ()), *params.get(f"{name}[]", ())]


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = _values(params, name)
    return values[-1] if values else None


def _integer(params: Mapping[str, Sequence[str]], name: str) -> int | None:
    value = _one(params, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"Invalid value for '{name}': expected an integer.", param=name) from None


def parse(resource: str, params: Mapping[str, Sequence[str]], secret: bytes) -> Query:
    """The query a request asks, or ApiError(400) naming the parameter at fault."""
    costs = resource == COSTS
    start = _integer(params, "start_time")
    if start is None:
        raise ApiError(400, "Missing required parameter: 'start_time'.", param="start_time")
    end = _integer(params, "end_time")
    if end is not None and end <= start:
        raise ApiError(400, "end_time must be greater than start_time.", param="end_time")
    width_name = _one(params, "bucket_width") or "1d"
    if width_name not in (("1d",) if costs else WIDTHS):
        allowed = "1d" if costs else "1m, 1h, 1d"
        raise ApiError(400, f"Invalid value for 'bucket_width': must be one of {allowed}.", param="bucket_width")
    width = WIDTHS[width_name]
    default, most = COSTS_LIMITS if costs else USAGE_LIMITS[width_name]
    limit = _integer(params, "limit")
    limit = default if limit is None else limit
    if not 1 <= limit <= most:
        raise ApiError(400, f"limit must be between 1 and {most} for bucket_width={width_name}.", param="limit")
    endpoint = None if costs else ENDPOINTS[resource.removeprefix("usage/")]
    group_by = tuple(dict.fromkeys(_values(params, "group_by")))
    allowed_groups = COSTS_GROUP_BY if endpoint is None else endpoint.dimensions
    for name in group_by:
        if costs and name == "api_key_id":  # in the contract's enum, refused by the live API
            raise ApiError(400, "Grouping costs by api_key_id is not supported.", param="group_by")
        if name not in allowed_groups:
            raise ApiError(400, f"Invalid value for 'group_by': {name!r}.", param="group_by")
    filters: list[tuple[str, frozenset[Any]]] = []
    for parameter, dimension in (COSTS_FILTERS if endpoint is None else endpoint.filters).items():
        values = _values(params, parameter)
        if not values:
            continue
        if parameter == "batch":
            if values[-1] not in ("true", "false"):
                raise ApiError(400, "Invalid value for 'batch': expected a boolean.", param="batch")
            filters.append((dimension, frozenset({values[-1] == "true"})))
            continue
        choices = endpoint.choices.get(dimension) if endpoint else None
        if choices and (wrong := [value for value in values if value not in choices]):
            raise ApiError(400, f"Invalid value for '{parameter}': {wrong[0]!r}.", param=parameter)
        filters.append((dimension, frozenset(values)))
    query = Query(resource, start, end, width, limit, group_by, tuple(filters), start // width * width)
    page = _one(params, "page")
    if page is not None:
        query = replace(query, first=_position(query, page, secret))
    return query


def buckets(query: Query, now: int) -> tuple[list[int], bool]:
    """The starts of the page's buckets, and whether more follow."""
    stop = now + 1 if query.end is None else min(query.end, now + 1)
    starts = list(range(query.first, stop, query.width))
    return starts[: query.limit], len(starts) > query.limit


def _mac(query: Query, start: int, secret: bytes) -> bytes:
    message = query.signature() + b"|" + str(start).encode()
    return hmac.new(secret, message, hashlib.blake2b).digest()[:12]


def cursor(query: Query, start: int, secret: bytes) -> str:
    """The `next_page` that continues at the bucket starting at `start`."""
    return "page_" + base64.b64encode(start.to_bytes(8, "big") + _mac(query, start, secret)).decode()


def _position(query: Query, page: str, secret: bytes) -> int:
    try:
        raw = base64.b64decode(page.removeprefix("page_"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    start = int.from_bytes(raw[:8], "big")
    aligned = start % query.width == 0 and start >= query.first
    if not (
        page.startswith("page_")
        and len(raw) == 20
        and aligned
        and hmac.compare_digest(raw[8:], _mac(query, start, secret))
    ):
        raise ApiError(400, "Invalid page cursor: pass the next_page of the previous response.", param="page")
    return start
