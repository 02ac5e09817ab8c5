"""The bucket feeds: the costs endpoint and the ten usage endpoints, and what each result counts.

A feed is a row: its collector (`costs` or `usage`), its endpoint, its path, what it groups
by, and a function from one result object to its amounts, each an (family, label values,
amount). Groups are chosen for bounded cardinality: project, model and what the endpoint
offers that is small and fixed (an image's size and source, a web search's context level);
never a user, a key or a vector store, which grow without end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from exporter.collectors.base import Invalid

Amount = tuple[str, tuple[str, ...], Decimal]  # (family, label values, amount)


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]
    kind: str = "counter"  # or "gauge": the newest bucket's value (vector store bytes)


@dataclass(frozen=True)
class Feed:
    collector: str
    endpoint: str
    path: str
    group_by: tuple[str, ...]
    limit: int  # the most daily buckets a page may hold
    amounts: Callable[[Mapping[str, Any]], Iterator[Amount]]


# -- families -----------------------------------------------------------------------------------

COST = Family(
    "openai_project_cost_total",
    "Money spent, in currency units, counted as the daily cost buckets grow",
    ("project_id", "line_item", "currency"),
)
TOKENS = Family("openai_project_tokens_total", "Tokens used, by type", ("project_id", "model", "endpoint", "type"))
REQUESTS = Family("openai_project_requests_total", "Model requests", ("project_id", "model", "endpoint"))
IMAGES = Family("openai_project_images_total", "Images generated", ("project_id", "model", "size", "source"))
AUDIO_CHARACTERS = Family(
    "openai_project_audio_characters_total", "Characters turned into speech", ("project_id", "model")
)
AUDIO_SECONDS = Family("openai_project_audio_seconds_total", "Seconds of audio transcribed", ("project_id", "model"))
SESSIONS = Family("openai_project_code_interpreter_sessions_total", "Code interpreter sessions", ("project_id",))
FILE_SEARCHES = Family("openai_project_file_search_calls_total", "File search tool calls", ("project_id",))
WEB_SEARCHES = Family(
    "openai_project_web_search_calls_total", "Web search tool calls", ("project_id", "model", "context_level")
)
VECTOR_BYTES = Family(
    "openai_project_vector_store_bytes", "Bytes held in vector stores, in the newest bucket", ("project_id",), "gauge"
)
FAMILIES = (
    COST,
    TOKENS,
    REQUESTS,
    IMAGES,
    AUDIO_CHARACTERS,
    AUDIO_SECONDS,
    SESSIONS,
    FILE_SEARCHES,
    WEB_SEARCHES,
    VECTOR_BYTES,
)

# -- reading results ----------------------------------------------------------------------------


def label(result: Mapping[str, Any], field: str) -> str:
    """A grouping field as a label value; null (an organization-level cost, say) is ""."""
    value = result.get(field)
    if type(value) is str:  # the usual: one test for it alone
        return value
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(f"`{field}` is not a string")
    return str(value)


def count(result: Mapping[str, Any], field: str, *, required: bool = True) -> Decimal | None:
    value = result.get(field)
    if type(value) is int and value >= 0:  # the usual: one test for it alone
        return Decimal(value)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"`{field}` is not a whole number")
    return Decimal(value)


def money(result: Mapping[str, Any]) -> tuple[Decimal, str]:
    """`amount.value` as a Decimal, whether it came as a number or as a string, and its currency."""
    amount = result.get("amount")
    if not isinstance(amount, dict):
        raise Invalid("`amount` is not an object")
    value, currency = amount.get("value"), amount.get("currency")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid("`amount.value` is not a number")
    try:
        # A float goes through its shortest repr, so 0.1 is 0.1 and not 0.1000000000000000055...
        decimal = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise Invalid(f"`amount.value` is not a number: {str(value)[:40]!r}") from None
    if not decimal.is_finite():
        raise Invalid("`amount.value` is not finite")
    if not isinstance(currency, str) or not currency:
        raise Invalid("`amount.currency` is not a string")
    return decimal, currency


def _costs(result: Mapping[str, Any]) -> Iterator[Amount]:
    value, currency = money(result)
    yield COST.name, (label(result, "project_id"), label(result, "line_item"), currency), value


# Completions report these token counts; the `type` label is the field without `_tokens`.
_COMPLETION_TOKENS = (
    "input_tokens",
    "output_tokens",
    "input_cached_tokens",
    "input_cache_write_tokens",
    "input_uncached_tokens",
    "input_text_tokens",
    "output_text_tokens",
    "input_cached_text_tokens",
    "input_audio_tokens",
    "input_cached_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "input_cached_image_tokens",
    "output_image_tokens",
)


def _tokens(endpoint: str, fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Iterator[Amount]]:
    # (field, its `type` label, whether required): worked out once, not for each result
    types = tuple(
        (field, field.removesuffix("_tokens"), field in ("input_tokens", "output_tokens")) for field in fields
    )

    def amounts(result: Mapping[str, Any]) -> Iterator[Amount]:
        project, model = label(result, "project_id"), label(result, "model")
        for field, kind, required in types:
            tokens = count(result, field, required=required)
            if tokens is not None:
                yield TOKENS.name, (project, model, endpoint, kind), tokens
        yield REQUESTS.name, (project, model, endpoint), _required(result, "num_model_requests")

    return amounts


def _required(result: Mapping[str, Any], field: str) -> Decimal:
    value = count(result, field)
    assert value is not None
    return value


def _images(result: Mapping[str, Any]) -> Iterator[Amount]:
    project, model = label(result, "project_id"), label(result, "model")
    yield IMAGES.name, (project, model, label(result, "size"), label(result, "source")), _required(result, "images")
    yield REQUESTS.name, (project, model, "images"), _required(result, "num_model_requests")


def _per_model(family: Family, field: str, endpoint: str) -> Callable[[Mapping[str, Any]], Iterator[Amount]]:
    def amounts(result: Mapping[str, Any]) -> Iterator[Amount]:
        project, model = label(result, "project_id"), label(result, "model")
        yield family.name, (project, model), _required(result, field)
        yield REQUESTS.name, (project, model, endpoint), _required(result, "num_model_requests")

    return amounts


def _per_project(family: Family, field: str) -> Callable[[Mapping[str, Any]], Iterator[Amount]]:
    def amounts(result: Mapping[str, Any]) -> Iterator[Amount]:
        yield family.name, (label(result, "project_id"),), _required(result, field)

    return amounts


def _web_searches(result: Mapping[str, Any]) -> Iterator[Amount]:
    project, model = label(result, "project_id"), label(result, "model")
    yield WEB_SEARCHES.name, (project, model, label(result, "context_level")), _required(result, "num_requests")
    yield REQUESTS.name, (project, model, "web_search_calls"), _required(result, "num_model_requests")


USAGE = "/organization/usage/"
FEEDS = (
    Feed("costs", "costs", "/organization/costs", ("project_id", "line_item"), 180, _costs),
    Feed(
        "usage",
        "completions",
        USAGE + "completions",
        ("project_id", "model"),
        31,
        _tokens("completions", _COMPLETION_TOKENS),
    ),
    Feed(
        "usage",
        "embeddings",
        USAGE + "embeddings",
        ("project_id", "model"),
        31,
        _tokens("embeddings", ("input_tokens",)),
    ),
    Feed(
        "usage",
        "moderations",
        USAGE + "moderations",
        ("project_id", "model"),
        31,
        _tokens("moderations", ("input_tokens",)),
    ),
    Feed("usage", "images", USAGE + "images", ("project_id", "model", "size", "source"), 31, _images),
    Feed(
        "usage",
        "audio_speeches",
        USAGE + "audio_speeches",
        ("project_id", "model"),
        31,
        _per_model(AUDIO_CHARACTERS, "characters", "audio_speeches"),
    ),
    Feed(
        "usage",
        "audio_transcriptions",
        USAGE + "audio_transcriptions",
        ("project_id", "model"),
        31,
        _per_model(AUDIO_SECONDS, "seconds", "audio_transcriptions"),
    ),
    Feed(
        "usage",
        "vector_stores",
        USAGE + "vector_stores",
        ("project_id",),
        31,
        _per_project(VECTOR_BYTES, "usage_bytes"),
    ),
    Feed(
        "usage",
        "code_interpreter_sessions",
        USAGE + "code_interpreter_sessions",
        ("project_id",),
        31,
        _per_project(SESSIONS, "num_sessions"),
    ),
    Feed(
        "usage",
        "file_search_calls",
        USAGE + "file_search_calls",
        ("project_id",),
        31,
        _per_project(FILE_SEARCHES, "num_requests"),
    ),
    Feed(
        "usage",
        "web_search_calls",
        USAGE + "web_search_calls",
        ("project_id", "model", "context_level"),
        31,
        _web_searches,
    ),
)
USAGE_ENDPOINTS = tuple(feed.endpoint for feed in FEEDS if feed.collector == "usage")
