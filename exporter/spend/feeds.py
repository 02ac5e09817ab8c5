"""The bucket feeds: the costs endpoint and the ten usage endpoints, and what each result counts.

A feed is a row of the table below: its collector (`costs` or `usage`), its endpoint, its
path, what it groups by, and its columns. A result of a bucket is read as one row: its
grouping values (the row's key) and one cell per column, None where the result omits an
optional count. A column names the family it counts toward and which of the row's values
label it, so several rows may count toward one series: an image's requests are counted
per model, whatever its size. Groups are chosen for bounded cardinality: project, model and
what the endpoint offers that is small and fixed (an image's size and source, a web search's
context level); never a user, a key or a vector store, which grow without end.

Reading a result is the hot path of a poll: its values are taken in one pass and checked
for their usual types at once; only a result that fails that is read field by field, for
the reason to give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from exporter.collectors.base import Invalid
from exporter.spend.ledger import Cells, Group, Key


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]
    kind: str = "counter"  # or "gauge": the newest bucket's value (vector store bytes)


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

# -- columns and rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    family: Family
    field: str  # the result's field, or "amount" for money
    required: bool = True
    take: int | None = None  # the series' labels: the row's first `take` values (all: None), then...
    suffix: tuple[str, ...] = ()  # ...these

    def series(self, key: Key) -> Group:
        return (self.family.name, *key[: self.take], *self.suffix)


_STRINGS = {str}
_COUNTS = {int, type(None)}


def label(result: Mapping[str, Any], name: str) -> str:
    """A grouping field as a label value; null (an organization-level cost, say) is ""."""
    value = result.get(name)
    if type(value) is str:  # the usual: one test for it alone
        return value
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(f"`{name}` is not a string")
    return str(value)


def count(result: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    value = result.get(name)
    if type(value) is int and value >= 0:  # the usual: one test for it alone
        return value
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"`{name}` is not a whole number")
    return int(value)


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


def _counts(keys: tuple[str, ...], columns: tuple[Column, ...]) -> Callable[[Mapping[str, Any]], tuple[Key, Cells]]:
    """A reader of results whose cells are whole numbers: the usage endpoints'."""
    fields = tuple(column.field for column in columns)
    required = tuple(place for place, column in enumerate(columns) if column.required)
    get_keys = (lambda result: tuple(map(result.get, keys))) if len(keys) > 1 else None

    def read(result: Mapping[str, Any]) -> tuple[Key, Cells]:
        key = get_keys(result) if get_keys is not None else (result.get(keys[0]),)
        cells = tuple(map(result.get, fields))
        # The usual result, checked in three C passes: strings for the key, whole numbers (or
        # null) for the cells, none below zero and no required one missing.
        if (
            set(map(type, key)) <= _STRINGS
            and set(map(type, cells)) <= _COUNTS
            and (None not in cells or all(cells[place] is not None for place in required))
            and min(filter(None, cells), default=0) >= 0  # zeros and nulls left out
        ):
            return key, cells
        return (
            tuple(label(result, name) for name in keys),
            tuple(count(result, column.field, required=column.required) for column in columns),
        )

    return read


def _costs(result: Mapping[str, Any]) -> tuple[Key, Cells]:
    amount, project, line_item = result.get("amount"), result.get("project_id"), result.get("line_item")
    if type(amount) is dict:  # the usual result, read without a call per field
        value, currency = amount.get("value"), amount.get("currency")
        if type(currency) is str and currency and type(line_item) is str and (type(project) is str or project is None):
            decimal = None
            if type(value) is float:  # through its shortest repr, as money() reads it
                decimal = Decimal(repr(value))
            elif type(value) is str:
                try:
                    decimal = Decimal(value)
                except InvalidOperation:
                    pass
            if decimal is not None and decimal.is_finite():
                return (project or "", line_item, currency), (decimal,)
    decimal, currency = money(result)
    return (label(result, "project_id"), label(result, "line_item"), currency), (decimal,)


@dataclass(frozen=True)
class Feed:
    collector: str
    endpoint: str
    path: str
    group_by: tuple[str, ...]
    limit: int  # the most daily buckets a page may hold
    columns: tuple[Column, ...]
    read: Callable[[Mapping[str, Any]], tuple[Key, Cells]] = field(compare=False)

    def series(self, key: Key) -> tuple[Group, ...]:
        """The series each column of a row counts toward."""
        return tuple(column.series(key) for column in self.columns)

    @property
    def whole(self) -> bool:
        """Whether every amount is a count, an int: all but money."""
        return all(column.field != "amount" for column in self.columns)

    @property
    def level(self) -> bool:
        """A feed of a level (vector store bytes), not of flows: its newest bucket is a gauge."""
        return self.columns[0].family.kind == "gauge"


def _usage(
    endpoint: str, group_by: tuple[str, ...], columns: tuple[Column, ...], keys: tuple[str, ...] | None = None
) -> Feed:
    return Feed("usage", endpoint, USAGE + endpoint, group_by, 31, columns, _counts(keys or group_by, columns))


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
_PER_MODEL = ("project_id", "model")


def _tokens(endpoint: str, fields: tuple[str, ...]) -> Feed:
    """A row per project and model: each token count, then the model requests."""
    columns = tuple(
        Column(TOKENS, name, name in ("input_tokens", "output_tokens"), suffix=(endpoint, name.removesuffix("_tokens")))
        for name in fields
    )
    return _usage(endpoint, _PER_MODEL, (*columns, _requests(endpoint)))


def _requests(endpoint: str, take: int | None = None) -> Column:
    return Column(REQUESTS, "num_model_requests", take=take, suffix=(endpoint,))


USAGE = "/organization/usage/"
FEEDS = (
    Feed("costs", "costs", "/organization/costs", ("project_id", "line_item"), 180, (Column(COST, "amount"),), _costs),
    _tokens("completions", _COMPLETION_TOKENS),
    _tokens("embeddings", ("input_tokens",)),
    _tokens("moderations", ("input_tokens",)),
    _usage(
        "images",
        ("project_id", "model", "size", "source"),
        (Column(IMAGES, "images"), _requests("images", take=2)),
    ),
    _usage("audio_speeches", _PER_MODEL, (Column(AUDIO_CHARACTERS, "characters"), _requests("audio_speeches"))),
    _usage("audio_transcriptions", _PER_MODEL, (Column(AUDIO_SECONDS, "seconds"), _requests("audio_transcriptions"))),
    _usage("vector_stores", ("project_id",), (Column(VECTOR_BYTES, "usage_bytes"),)),
    _usage("code_interpreter_sessions", ("project_id",), (Column(SESSIONS, "num_sessions"),)),
    _usage("file_search_calls", ("project_id",), (Column(FILE_SEARCHES, "num_requests"),)),
    _usage(
        "web_search_calls",
        ("project_id", "model", "context_level"),
        (Column(WEB_SEARCHES, "num_requests"), _requests("web_search_calls", take=2)),
    ),
)
USAGE_ENDPOINTS = tuple(feed.endpoint for feed in FEEDS if feed.collector == "usage")
