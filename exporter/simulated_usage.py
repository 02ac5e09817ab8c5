"""The usage streams behind the simulated organization's spend: what each project uses, and how much when.

A stream is one source of usage as the usage endpoints tell sources apart: one project's use of
one model through one API key, with its batch flag and service tier (completions), image size and
source (images), vector store (file search) or search context level (web search). Each unit of a
stream (a request, a session, a call) carries fixed amounts of its endpoint's metrics and of its
cost lines, so usage and costs agree however they are grouped. How many units a stream has in any
interval follows from the seed alone: a day's units vary from day to day and drop at weekends, and
spread over the day by the hour (UTC), so a bucket's units are the difference of one cumulative
count and every bucket width adds up to the same day.

The upstream reports usage late: of the last `settle` seconds only a part is in its answers, so a
recent bucket keeps growing until it is `settle` seconds old. Tests add units (`extras`) and revise
ranges down (`revisions`); both apply to every width at once. What the endpoints report and what
the models cost is in exporter.simulated_spend_catalog.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeAlias

from exporter.simulated_spend_catalog import (
    CODE_INTERPRETER_LINE,
    CONTEXT_LEVELS,
    ENDPOINTS,
    FILE_SEARCH_LINE,
    ORGANIZATION_LINE,
    SERVICE_TIERS,
    SIZES,
    SOURCES,
    UNITS,
    WEB_SEARCH_LINE,
    Model,
)

DAY, HOUR = 86_400, 3_600
Identity: TypeAlias = tuple[str | None, str | None]  # (user id, API key id) of a stream's requests
ORGANIZATION = "organization"  # the endpoint of a stream that is an organization-level cost line alone


# -- streams ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """A cost line a stream's units make: `quantity` of `unit` per unit, at `price` USD per quantity."""

    item: str
    quantity: int
    price: Decimal
    unit: str | None


@dataclass(slots=True)
class Stream:
    endpoint: str  # a key of ENDPOINTS, or ORGANIZATION
    dims: dict[str, Any]  # every dimension of its endpoint (project_id None: the organization's)
    per_unit: dict[str, int]  # each metric of its endpoint, per unit
    lines: tuple[Line, ...]
    daily: int  # units on an ordinary weekday; for vector stores the bytes stored
    key: int  # the seed of its day-to-day variation
    start: int  # no usage before: the project's creation
    flat: bool = False  # spread evenly over the day (storage), not by the hour of day
    extras: list[tuple[int, int]] = field(default_factory=list)  # (at, units) added on top
    revisions: list[tuple[int, int, Fraction]] = field(default_factory=list)  # (start, end, kept)
    memo: tuple[int, int, int] = (-1, -1, 0)  # (day, daily, units): the day asked last, asked again and again


def _lines(model: Model, per_unit: dict[str, int], quantities: dict[str, int]) -> tuple[Line, ...]:
    return tuple(
        Line(f"{model.name}, {suffix}", quantities[suffix], price, UNITS[suffix])
        for suffix, price in model.prices.items()
        if quantities.get(suffix)
    )


def _completion(rng: random.Random, model: Model) -> tuple[dict[str, int], tuple[Line, ...]]:
    """A request's tokens: text for every model, audio for a realtime one, images for some prompts."""
    audio = "realtime" in model.name
    text, output = rng.randint(80, 4000), rng.randint(20, 900)
    cached_text = text * rng.choice((0, 0, 20, 50, 80)) // 100
    cache_write = rng.choice((0, 0, 0, text // 10))
    audio_in, cached_audio, audio_out = (
        (rng.randint(50, 900), rng.randint(0, 200), rng.randint(50, 900)) if audio else (0, 0, 0)
    )
    image_in, cached_image = (rng.randint(85, 1500), rng.choice((0, 85))) if rng.random() < 0.2 else (0, 0)
    uncached = text - cached_text + audio_in + image_in
    cached = cached_text + cached_audio + cached_image
    per_unit = {
        "input_tokens": uncached + cached + cache_write,
        "input_cached_tokens": cached,
        "input_cache_write_tokens": cache_write,
        "input_uncached_tokens": uncached,
        "output_tokens": output + audio_out,
        "input_text_tokens": text - cached_text,
        "output_text_tokens": output,
        "input_cached_text_tokens": cached_text,
        "input_audio_tokens": audio_in,
        "input_cached_audio_tokens": cached_audio,
        "output_audio_tokens": audio_out,
        "input_image_tokens": image_in,
        "input_cached_image_tokens": cached_image,
        "output_image_tokens": 0,
        "num_model_requests": 1,
    }
    quantities = {"input": uncached + cache_write, "cached input": cached, "output": output + audio_out}
    return per_unit, _lines(model, per_unit, quantities)


def new_stream(
    rng: random.Random,
    endpoint: str,
    project_id: str,
    created: int,
    identity: Identity,
    model: Model | None,
    daily: float,
) -> Stream:
    """One stream of `endpoint` (a model's, when the endpoint has models) with about `daily` units a day."""
    user_id, api_key_id = identity
    dims: dict[str, Any] = {"project_id": project_id, "user_id": user_id, "api_key_id": api_key_id}
    dims["model"] = model.name if model else None
    lines: tuple[Line, ...] = ()
    flat = False
    if endpoint == "completions" and model:
        per_unit, lines = _completion(rng, model)
        dims |= {"batch": False, "service_tier": "default"}
    elif endpoint in ("embeddings", "moderations") and model:
        per_unit = {"input_tokens": rng.randint(8, 6000), "num_model_requests": 1}
        lines = _lines(model, per_unit, {"input": per_unit["input_tokens"]})
    elif endpoint == "images" and model:
        per_unit = {"images": rng.choice((1, 1, 2, 4)), "num_model_requests": 1}
        dims |= {"size": rng.choice(SIZES[1:4]), "source": rng.choices(SOURCES, weights=(8, 3, 1))[0]}
        lines = _lines(model, per_unit, {"images": per_unit["images"]})
    elif endpoint == "audio_speeches" and model:
        per_unit = {"characters": rng.randint(40, 3000), "num_model_requests": 1}
        lines = _lines(model, per_unit, {"characters": per_unit["characters"]})
    elif endpoint == "audio_transcriptions" and model:
        per_unit = {"seconds": rng.randint(5, 900), "num_model_requests": 1}
        lines = _lines(model, per_unit, {"seconds": per_unit["seconds"]})
    elif endpoint == "web_search_calls" and model:
        per_unit = {"num_model_requests": 1, "num_requests": rng.randint(1, 3)}
        dims["context_level"] = rng.choices(CONTEXT_LEVELS, weights=(2, 5, 1))[0]
        item, price = WEB_SEARCH_LINE
        lines = (Line(item, per_unit["num_requests"], price, None),)
    elif endpoint == "file_search_calls":
        per_unit = {"num_requests": 1}
        dims = {"project_id": project_id, "user_id": user_id, "api_key_id": api_key_id}
        dims["vector_store_id"] = "vs_" + "".join(rng.choices("abcdef0123456789", k=24))
        lines = (Line(FILE_SEARCH_LINE[0], 1, FILE_SEARCH_LINE[1], None),)
    elif endpoint == "code_interpreter_sessions":
        per_unit, dims = {"num_sessions": 1}, {"project_id": project_id}
        lines = (Line(CODE_INTERPRETER_LINE[0], 1, CODE_INTERPRETER_LINE[1], None),)
    elif endpoint == "vector_stores":
        per_unit, dims, flat = {"usage_bytes": 1}, {"project_id": project_id}, True
    else:
        raise ValueError(f"no stream of {endpoint} without a model")
    return Stream(endpoint, dims, per_unit, lines, max(1, int(daily)), rng.getrandbits(64), created, flat)


def generate(
    rng: random.Random, project_id: str, created: int, identities: Sequence[Identity], models: Sequence[Model]
) -> list[Stream]:
    """A project's streams: one in seven uses nothing; the others chat, and some embed, draw, speak, search."""
    if rng.random() < 1 / 7:
        return []
    people = list(identities) or [(None, None)]
    scale = rng.choice((0.05, 0.3, 1, 1, 2, 8))  # a few projects spend most of the money
    by_endpoint = {name: [m for m in models if m.endpoint == name] for name in ENDPOINTS}
    chat = by_endpoint["completions"]
    streams: list[Stream] = []

    def add(endpoint: str, model: Model | None, median: float, identity: Identity | None = None) -> Stream:
        daily = rng.lognormvariate(math.log(median), 1.0) * scale
        stream = new_stream(rng, endpoint, project_id, created, identity or rng.choice(people), model, daily)
        streams.append(stream)
        return stream

    for model in rng.sample(chat, min(len(chat), rng.randint(1, 3))):
        for identity in rng.sample(people, min(len(people), rng.randint(1, 2))):
            add("completions", model, 600, identity)
            if rng.random() < 0.2:  # the same prompts, through the Batch API
                add("completions", model, 300, identity).dims["batch"] = True
            if rng.random() < 0.15:
                add("completions", model, 100, identity).dims["service_tier"] = rng.choice(SERVICE_TIERS)
    for endpoint, chance, median in (
        ("embeddings", 0.4, 2000),
        ("moderations", 0.3, 400),
        ("images", 0.2, 30),
        ("audio_speeches", 0.15, 50),
        ("audio_transcriptions", 0.15, 40),
    ):
        if by_endpoint[endpoint] and rng.random() < chance:
            add(endpoint, rng.choice(by_endpoint[endpoint]), median)
    if rng.random() < 0.25:
        add("web_search_calls", rng.choice(chat), 80)
    if rng.random() < 0.25:
        add("file_search_calls", None, 120)
        add("vector_stores", None, 5e8)
    if rng.random() < 0.15:
        add("code_interpreter_sessions", None, 20)
    return streams


def organization_streams(rng: random.Random) -> list[Stream]:
    """The organization's own cost line, billed to no project: file storage by the GiB-hour, all day long."""
    item, price = ORGANIZATION_LINE
    line = Line(item, 1, price, "gibibyte_hours")
    return [
        Stream(ORGANIZATION, {"project_id": None}, {}, (line,), rng.randint(20, 400) * 24, rng.getrandbits(64), 0, True)
    ]


# -- how many units, when ----------------------------------------------------------------------------

_MASK = (1 << 64) - 1
_HOURLY = (2, 1, 1, 1, 1, 2, 4, 7, 10, 12, 13, 13, 12, 13, 13, 12, 11, 9, 7, 6, 5, 4, 3, 2)  # by UTC hour
_BEFORE = tuple(sum(_HOURLY[:hour]) for hour in range(25))
_LATE, _PARTS = 3, 5  # of the last `settle` seconds' usage, three parts in five are in the answers


def _mix(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit number from any other."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def day_units(stream: Stream, day: int) -> int:
    """The units of day number `day` (days since the epoch): from 70% to 130% of the usual, 40% at weekends."""
    if stream.memo[:2] == (day, stream.daily):
        return stream.memo[2]
    if stream.flat:
        units = stream.daily * (950 + _mix(stream.key ^ day) % 101) // 1000
    else:
        weekend = (day + 3) % 7 >= 5  # the epoch was a Thursday
        units = stream.daily * (400 if weekend else 1000) * (700 + _mix(stream.key ^ day) % 601) // 1_000_000
    stream.memo = (day, stream.daily, units)
    return units


def _within(stream: Stream, day: int, second: int) -> int:
    """The units of `day` in its first `second` seconds."""
    units = day_units(stream, day)
    if second >= DAY:
        return units
    if stream.flat:
        return units * second // DAY
    hour, rest = divmod(second, HOUR)
    return units * (HOUR * _BEFORE[hour] + _HOURLY[hour] * rest) // (HOUR * _BEFORE[24])


def raw_units(stream: Stream, start: int, end: int) -> int:
    """The units the stream has in [start, end), all of them reported."""
    start, total = max(start, stream.start), 0
    while start < end:
        day = start // DAY
        upto = min(end, (day + 1) * DAY)
        total += _within(stream, day, upto - day * DAY) - _within(stream, day, start - day * DAY)
        start = upto
    return total


def _fifths(stream: Stream, start: int, end: int, now: int, settle: int, closed: int | None) -> int:
    """The units in [start, end) the upstream reports at `now`, counted in fifths."""
    upto = min(end, now, closed if closed is not None else end)
    fifths = 0
    if start < upto:
        cut = min(max(start, now - settle), upto)
        fifths = _PARTS * raw_units(stream, start, cut) + _LATE * raw_units(stream, cut, upto)
    if stream.extras:
        fifths += _PARTS * sum(n for at, n in stream.extras if start <= at < end and at <= now)
    return fifths


def units(stream: Stream, start: int, end: int, now: int, settle: int, closed: int | None = None) -> int:
    """The units in [start, end) as the upstream reports them at `now`: all of them once `settle` seconds
    old, part of the newer ones; tests' extras at once; revisions applied. None after `closed` (archival)."""
    if not stream.revisions:
        if end - start == DAY and start % DAY == 0 and not stream.extras and stream.start <= start:
            if end <= now - settle and (closed is None or closed >= end):  # a whole day, all reported
                return day_units(stream, start // DAY)
        return _fifths(stream, start, end, now, settle, closed) // _PARTS
    cuts = sorted({start, end} | {t for s, e, _ in stream.revisions for t in (s, e) if start < t < end})
    total = Fraction(0)
    for low, high in zip(cuts, cuts[1:], strict=False):
        kept = math.prod((k for s, e, k in stream.revisions if s <= low and high <= e), start=Fraction(1))
        total += Fraction(_fifths(stream, low, high, now, settle, closed), _PARTS) * kept
    return math.floor(total)


def stored_bytes(stream: Stream, start: int, end: int, now: int, closed: int | None = None) -> int:
    """A vector-store stream's bytes in the bucket [start, end): the level of its day, once the bucket has
    begun, while the project exists. Storage is a level, not a flow: every width reports the same."""
    if start > now or end <= stream.start or (closed is not None and start >= closed):
        return 0
    kept = math.prod((k for s, e, k in stream.revisions if s <= start < e), start=Fraction(1))
    return math.floor(day_units(stream, start // DAY) * kept)
