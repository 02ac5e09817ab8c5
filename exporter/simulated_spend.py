"""The spend side of the simulated organization: the costs endpoint and the ten usage endpoints.

It follows openai-admin-governance-and-spend.openapi.yaml for `GET /organization/costs` and
`GET /organization/usage/{completions,embeddings,...}`: pages of time buckets (parameters and
paging in exporter.simulated_spend_query), each bucket's results grouped as `group_by` asks. Usage
comes from streams (exporter.simulated_usage): each project's use of its models through its keys,
generated on first read from the seed and the project id alone. A cost line is a stream's units
times its model's price, so costs and usage agree in every bucket.

As the live API does, it answers some `amount.value`s as a string with 28 decimals and the others
as a number; it refuses `group_by=api_key_id` on costs; and its recent buckets grow until they are
`settle` seconds old. The clock is the wall's, or a manual one for tests (`Clock(at)`), which only
`advance` moves. Tests read the truth (`cost_totals`, `usage_totals`) and change it (`grow`,
`revise`); `churn` adds a burst of use in the current minute.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Context, Decimal
from fractions import Fraction
from typing import Any, TypeAlias

from exporter.simulated_spend_catalog import ENDPOINTS, Model, catalog
from exporter.simulated_spend_query import COSTS, Query, buckets, cursor, parse, whole
from exporter.simulated_usage import (
    ORGANIZATION,
    Identity,
    Stream,
    generate,
    new_stream,
    organization_streams,
    stored_bytes,
    units,
)

JSON: TypeAlias = dict[str, Any]
ProjectTimes: TypeAlias = tuple[str, int, int | None]  # (id, created_at, archived_at)
_DECIMALS = Decimal(1).scaleb(-28)
_WIDE = Context(prec=80)


class Clock:
    """The wall clock, or (with `at`) a manual clock that stands still until `advance` or `set` moves it."""

    def __init__(self, at: float | None = None):
        self._at = at
        self._lock = threading.Lock()

    @property
    def manual(self) -> bool:
        return self._at is not None

    def __call__(self) -> float:
        return time.time() if self._at is None else self._at

    def set(self, at: float) -> None:
        if self._at is None:
            raise RuntimeError("the wall clock cannot be set")
        with self._lock:
            self._at = at

    def advance(self, seconds: float) -> float:
        if self._at is None:
            raise RuntimeError("the wall clock cannot be advanced")
        with self._lock:
            self._at += seconds
            return self._at


def amount_value(value: Decimal, as_string: bool) -> float | str:
    """The JSON of an amount: a string with 28 decimals ("0.1739150000000000000000000000") or a number."""
    return format(_WIDE.quantize(value, _DECIMALS), "f") if as_string else float(value)


def _as_string(bucket: int, key: tuple[Any, ...]) -> bool:
    """Whether the live API would send this result's amount as a string: about one result in three."""
    return hashlib.blake2b(repr((bucket, key)).encode(), digest_size=1).digest()[0] % 3 == 0


def _order(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if value is None else str(value) for value in key)


class SimulatedSpend:
    """Every project's usage and costs; each method holds the organization's (reentrant) lock.

    `projects()` lists (id, created_at, archived_at) of every project; `identities(project_id)` the
    (user id, key id) pairs a project's requests come from. A project uses nothing before its
    creation nor after its archival.
    """

    def __init__(
        self,
        lock: threading.RLock,
        projects: Callable[[], list[ProjectTimes]],
        identities: Callable[[str], list[Identity]],
        *,
        seed: int,
        clock: Clock,
        models: int | None = None,
        settle: int = 300,
    ):
        self._lock, self._projects, self._identities, self._seed = lock, projects, identities, seed
        self.clock, self.settle = clock, settle
        self.models: tuple[Model, ...] = catalog(models)
        self._streams: dict[str, list[Stream]] = {}
        self._organization = organization_streams(random.Random(f"{seed}/spend/organization"))
        self._secret = hashlib.blake2b(f"{seed}/spend/cursor".encode()).digest()
        self._rng = random.Random(f"{seed}/spend")  # churn and tests' new streams draw from it alone

    def _of(self, project_id: str, created: int) -> list[Stream]:
        streams = self._streams.get(project_id)
        if streams is None:
            rng = random.Random(f"{self._seed}/spend/{project_id}")
            identities = self._identities(project_id)
            streams = self._streams[project_id] = generate(rng, project_id, created, identities, self.models)
        return streams

    def _every(self) -> list[tuple[Stream, int | None]]:
        """Every stream, the organization's first, with when its project was archived (None: active)."""
        every: list[tuple[Stream, int | None]] = [(stream, None) for stream in self._organization]
        for project_id, created, archived in self._projects():
            every += [(stream, archived) for stream in self._of(project_id, created)]
        return every

    def _matching(self, query: Query) -> list[tuple[Stream, int | None]]:
        endpoint = query.endpoint
        matching = []
        for stream, archived in self._every():
            if query.resource == COSTS and not stream.lines or query.resource != COSTS and stream.endpoint != endpoint:
                continue
            if all(stream.dims.get(dimension) in values for dimension, values in query.filters):
                matching.append((stream, archived))
        return matching

    def forget(self, project_id: str) -> None:
        with self._lock:
            self._streams.pop(project_id, None)

    # -- answers ------------------------------------------------------------------------------------------

    def read(self, resource: str, params: Mapping[str, Sequence[str]]) -> JSON:
        """The page a GET of `resource` ("costs" or "usage/NAME") answers; ApiError for a bad query."""
        with self._lock:
            now = int(self.clock())
            query = parse(resource, params, self._secret)
            starts, has_more = buckets(query, now)
            streams = self._matching(query)
            data = [
                {
                    "object": "bucket",
                    "start_time": start,
                    "end_time": start + query.width,
                    "results": self._results(query, streams, start, now),
                }
                for start in starts
            ]
            next_page = cursor(query, starts[-1] + query.width, self._secret) if has_more else None
            return {"object": "page", "data": data, "has_more": has_more, "next_page": next_page}

    def _results(self, query: Query, streams: list[tuple[Stream, int | None]], start: int, now: int) -> list[JSON]:
        if query.resource == COSTS:
            costs = self._costs(query, streams, start, now)
            return [self._cost_result(query, start, key, *costs[key]) for key in sorted(costs, key=_order)]
        endpoint = ENDPOINTS[query.endpoint]
        usage = self._usage(query, streams, start, now)
        results = []
        for key in sorted(usage, key=_order):
            grouped = dict(zip(query.group_by, key, strict=True))
            result: JSON = {"object": endpoint.object} | usage[key]
            results.append(result | {name: grouped.get(name) for name in endpoint.dimensions})
        return results

    def _cost_result(
        self, query: Query, start: int, key: tuple[Any, ...], amount: Decimal, quantity: int, unit: str | None
    ) -> JSON:
        grouped = dict(zip(query.group_by, key, strict=True))
        by_line = "line_item" in grouped
        return {
            "object": "organization.costs.result",
            "amount": {"value": amount_value(amount, _as_string(start, key)), "currency": "usd"},
            "line_item": grouped.get("line_item"),
            "project_id": grouped.get("project_id"),
            "api_key_id": None,
            "quantity": quantity if by_line else None,
            "quantity_unit": unit if by_line else None,
        }

    def _usage(
        self, query: Query, streams: list[tuple[Stream, int | None]], start: int, now: int
    ) -> dict[tuple[Any, ...], dict[str, int]]:
        metrics = ENDPOINTS[query.endpoint].metrics
        end = start + query.width
        groups: dict[tuple[Any, ...], dict[str, int]] = {}
        for stream, archived in streams:
            if stream.endpoint == "vector_stores":
                count = stored_bytes(stream, start, end, now, archived)
            else:
                count = units(stream, start, end, now, self.settle, archived)
            if count:
                totals = groups.setdefault(
                    tuple(stream.dims[name] for name in query.group_by), dict.fromkeys(metrics, 0)
                )
                for metric in metrics:
                    totals[metric] += count * stream.per_unit[metric]
        return groups

    def _costs(
        self, query: Query, streams: list[tuple[Stream, int | None]], start: int, now: int
    ) -> dict[tuple[Any, ...], tuple[Decimal, int, str | None]]:
        end = start + query.width
        groups: dict[tuple[Any, ...], tuple[Decimal, int, str | None]] = {}
        for stream, archived in streams:
            count = units(stream, start, end, now, self.settle, archived)
            if not count:
                continue
            for line in stream.lines:
                values = {"line_item": line.item, "project_id": stream.dims["project_id"]}
                key = tuple(values[name] for name in query.group_by)
                amount, quantity, unit = groups.get(key, (Decimal(0), 0, line.unit))
                quantity += count * line.quantity
                groups[key] = (
                    amount + count * line.quantity * line.price,
                    quantity,
                    unit if unit == line.unit else None,
                )
        return groups

    # -- the truth, for tests --------------------------------------------------------------------------

    def cost_totals(self, start_time: int, end_time: int | None = None) -> dict[tuple[str | None, str], Decimal]:
        """The costs of the 1d buckets from `start_time`'s day up to `end_time` (default: now) as the costs
        endpoint reports them now, per (project id, line item); project id None for the organization's lines.
        Exact: what the endpoint rounds to a number or a 28-decimal string."""
        with self._lock:
            now = int(self.clock())
            query = whole(COSTS, start_time, end_time, 86_400, ("project_id", "line_item"))
            streams = self._matching(query)
            totals: dict[tuple[str | None, str], Decimal] = {}
            for start in buckets(query, now)[0]:
                for (project_id, line_item), (amount, _, _) in self._costs(query, streams, start, now).items():
                    totals[project_id, line_item] = totals.get((project_id, line_item), Decimal(0)) + amount
            return totals

    def cost_total(self, start_time: int, end_time: int | None = None, *, project_id: Any = ...) -> Decimal:
        """The organization's costs over the range as `cost_totals` counts them (of one project, if given;
        None for the lines billed to no project)."""
        totals = self.cost_totals(start_time, end_time)
        return sum((v for (p, _), v in totals.items() if project_id is ... or p == project_id), Decimal(0))

    def usage_totals(
        self,
        endpoint: str,
        start_time: int,
        end_time: int | None = None,
        *,
        bucket_width: int = 86_400,
        group_by: Sequence[str] | None = None,
    ) -> dict[tuple[Any, ...], dict[str, int]]:
        """The usage endpoint's metrics summed over its buckets of `bucket_width` seconds in the range, as it
        reports them now, per `group_by` key (by default project and model, or project alone for endpoints
        without models; for vector stores, the sum of the buckets' levels)."""
        dimensions = ENDPOINTS[endpoint].dimensions
        group_by = [name for name in ("project_id", "model") if name in dimensions] if group_by is None else group_by
        if unknown := set(group_by) - set(dimensions):
            raise ValueError(f"{endpoint} cannot group by {', '.join(sorted(unknown))}")
        with self._lock:
            now = int(self.clock())
            query = whole(f"usage/{endpoint}", start_time, end_time, bucket_width, group_by)
            streams = self._matching(query)
            totals: dict[tuple[Any, ...], dict[str, int]] = {}
            for start in buckets(query, now)[0]:
                for key, metrics in self._usage(query, streams, start, now).items():
                    into = totals.setdefault(key, dict.fromkeys(metrics, 0))
                    for name, value in metrics.items():
                        into[name] += value
            return totals

    def streams(self, project_id: str) -> list[JSON]:
        """What the project uses: each stream's endpoint, dimensions and units on a usual day."""
        with self._lock:
            times = {p: (c, a) for p, c, a in self._projects()}
            if project_id not in times:
                raise KeyError(project_id)
            return [
                {"endpoint": s.endpoint, "daily": s.daily} | s.dims for s in self._of(project_id, times[project_id][0])
            ]

    # -- changes ----------------------------------------------------------------------------------------

    def grow(
        self,
        project_id: str,
        units: int = 100,
        *,
        at: int | None = None,
        endpoint: str = "completions",
        model: str | None = None,
    ) -> JSON:
        """Add `units` requests (sessions, calls) of one of the project's streams of `endpoint` (of `model`,
        if given: made if the project has none) at `at` (default now): every bucket holding `at` grows at
        once, its costs with it. Returns the stream's dimensions."""
        if endpoint not in ENDPOINTS or endpoint == "vector_stores":
            raise ValueError(f"cannot grow {endpoint}: storage is a level, not a flow")
        with self._lock:
            times = {p: c for p, c, _ in self._projects()}
            streams = self._of(project_id, times[project_id])
            found = [s for s in streams if s.endpoint == endpoint and model in (None, s.dims.get("model"))]
            if not found:
                chosen = self._model(endpoint, model)
                identities = self._identities(project_id) or [(None, None)]
                found = [new_stream(self._rng, endpoint, project_id, times[project_id], identities[0], chosen, 0)]
                found[0].daily = 0
                streams.append(found[0])
            found[0].extras.append((int(self.clock()) if at is None else at, units))
            return dict(found[0].dims)

    def _model(self, endpoint: str, name: str | None) -> Model | None:
        """The catalog's model `name` (by default its first) for a new stream of `endpoint`."""
        if endpoint in ("file_search_calls", "code_interpreter_sessions"):
            if name is not None:
                raise ValueError(f"{endpoint} has no model")
            return None
        kind = "completions" if endpoint == "web_search_calls" else endpoint
        for model in self.models:
            if model.endpoint == kind and name in (None, model.name):
                return model
        raise ValueError(f"no model {name or ''} of {kind} in the catalog")

    def revise(
        self,
        start_time: int,
        end_time: int,
        *,
        keep: float = 0.5,
        project_id: str | None = None,
        model: str | None = None,
        endpoint: str | None = None,
    ) -> int:
        """Revise the usage in [start_time, end_time) down to `keep` of it, as the upstream corrects a
        bucket after reporting it: of one project, model or endpoint ("organization": the lines billed
        to no project), or of all. Costs drop with it. Returns how many streams changed."""
        kept = Fraction(keep).limit_denominator(1_000_000)
        if not 0 <= kept < 1:
            raise ValueError("keep must be at least 0 and below 1: a revision goes down")
        with self._lock:
            changed = 0
            for stream, _ in self._every():
                if (
                    project_id in (None, stream.dims["project_id"])
                    and model in (None, stream.dims.get("model"))
                    and endpoint in (None, stream.endpoint)
                ):
                    stream.revisions.append((start_time, end_time, kept))
                    changed += 1
            return changed

    def churn(self, project_ids: Iterable[str]) -> list[str]:
        """A burst of use in the current minute by one or two of the projects: spend rises at once."""
        with self._lock:
            times = {p: c for p, c, _ in self._projects()}
            candidates = [p for p in project_ids if p in times]
            changes = []
            for _ in range(self._rng.choice((1, 2)) if candidates else 0):
                project_id = self._rng.choice(candidates)
                streams = [
                    s
                    for s in self._of(project_id, times[project_id])
                    if s.endpoint not in (ORGANIZATION, "vector_stores")
                ]
                if streams:
                    stream = self._rng.choice(streams)
                    stream.extras.append((int(self.clock()), max(1, stream.daily // 50)))
                    changes.append(f"{stream.endpoint} {project_id}")
            return changes
