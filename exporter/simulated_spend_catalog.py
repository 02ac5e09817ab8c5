"""What the simulated organization's usage endpoints report and what its models cost.

`ENDPOINTS` describes the ten usage endpoints of openai-admin-governance-and-spend.openapi.yaml:
each one's result object, metrics and group_by dimensions (in the order its results list them)
and filters. `catalog(n)` is the models usage spreads over, each with its endpoint and its price
per unit of each cost line (a small price list, in USD); beyond the base catalog come fine-tuned
models. Model names are dated snapshots, as usage reports them; a cost line item is the model's
name and what is counted ("gpt-4o-2024-08-06, input"), as the live costs endpoint names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Endpoint:
    """A usage endpoint: its result object, its metrics and group_by dimensions in the order its results
    list them, and its filters (query parameter -> dimension), with the values an enum filter allows."""

    object: str
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    filters: dict[str, str]
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)


_PEOPLE = {"project_ids": "project_id", "user_ids": "user_id", "api_key_ids": "api_key_id"}
_MODELS = _PEOPLE | {"models": "model"}
_BY_MODEL = ("project_id", "user_id", "api_key_id", "model")
COMPLETION_METRICS = (
    "input_tokens",
    "input_cached_tokens",
    "input_cache_write_tokens",
    "input_uncached_tokens",
    "output_tokens",
    "input_text_tokens",
    "output_text_tokens",
    "input_cached_text_tokens",
    "input_audio_tokens",
    "input_cached_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "input_cached_image_tokens",
    "output_image_tokens",
    "num_model_requests",
)
SIZES = ("256x256", "512x512", "1024x1024", "1792x1792", "1024x1792")
SOURCES = ("image.generation", "image.edit", "image.variation")
CONTEXT_LEVELS = ("low", "medium", "high")
SERVICE_TIERS = ("flex", "priority", "scale")
ENDPOINTS: dict[str, Endpoint] = {
    "completions": Endpoint(
        "organization.usage.completions.result",
        COMPLETION_METRICS,
        (*_BY_MODEL, "batch", "service_tier"),
        _MODELS | {"batch": "batch"},
    ),
    "embeddings": Endpoint(
        "organization.usage.embeddings.result", ("input_tokens", "num_model_requests"), _BY_MODEL, _MODELS
    ),
    "moderations": Endpoint(
        "organization.usage.moderations.result", ("input_tokens", "num_model_requests"), _BY_MODEL, _MODELS
    ),
    "images": Endpoint(
        "organization.usage.images.result",
        ("images", "num_model_requests"),
        ("size", "source", *_BY_MODEL),
        _MODELS | {"sources": "source", "sizes": "size"},
        {"source": SOURCES, "size": SIZES},
    ),
    "audio_speeches": Endpoint(
        "organization.usage.audio_speeches.result", ("characters", "num_model_requests"), _BY_MODEL, _MODELS
    ),
    "audio_transcriptions": Endpoint(
        "organization.usage.audio_transcriptions.result", ("seconds", "num_model_requests"), _BY_MODEL, _MODELS
    ),
    "vector_stores": Endpoint(
        "organization.usage.vector_stores.result", ("usage_bytes",), ("project_id",), {"project_ids": "project_id"}
    ),
    "code_interpreter_sessions": Endpoint(
        "organization.usage.code_interpreter_sessions.result",
        ("num_sessions",),
        ("project_id",),
        {"project_ids": "project_id"},
    ),
    "file_search_calls": Endpoint(
        "organization.usage.file_searches.result",
        ("num_requests",),
        ("project_id", "user_id", "api_key_id", "vector_store_id"),
        _PEOPLE | {"vector_store_ids": "vector_store_id"},
    ),
    "web_search_calls": Endpoint(
        "organization.usage.web_searches.result",
        ("num_model_requests", "num_requests"),
        (*_BY_MODEL, "context_level"),
        _MODELS | {"context_levels": "context_level"},
        {"context_level": CONTEXT_LEVELS},
    ),
}

# -- models and prices ---------------------------------------------------------------------------------

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Model:
    """A model as usage reports it (a dated snapshot), its endpoint, and USD per unit of each cost line."""

    name: str
    endpoint: str
    prices: dict[str, Decimal]  # the line item's suffix ("input", "images", ...) -> USD per unit


def _tokens(input_: str, cached: str, output: str) -> dict[str, Decimal]:
    """Prices per million tokens, as the price list gives them."""
    return {
        "input": Decimal(input_) / _MILLION,
        "cached input": Decimal(cached) / _MILLION,
        "output": Decimal(output) / _MILLION,
    }


# The first six cover every model endpoint, so that any catalog of six or more exercises them all.
BASE_MODELS = (
    Model("gpt-4o-mini-2024-07-18", "completions", _tokens("0.15", "0.075", "0.60")),
    Model("text-embedding-3-small", "embeddings", {"input": Decimal("0.02") / _MILLION}),
    Model("omni-moderation-2024-09-26", "moderations", {}),  # moderation is free: usage without a cost line
    Model("dall-e-3", "images", {"images": Decimal("0.04")}),
    Model("tts-1", "audio_speeches", {"characters": Decimal(15) / _MILLION}),
    Model("whisper-1", "audio_transcriptions", {"seconds": Decimal("0.0001")}),
    Model("gpt-4o-2024-08-06", "completions", _tokens("2.50", "1.25", "10.00")),
    Model("gpt-4.1-2025-04-14", "completions", _tokens("2.00", "0.50", "8.00")),
    Model("o3-2025-04-16", "completions", _tokens("2.00", "0.50", "8.00")),
    Model("gpt-4.1-mini-2025-04-14", "completions", _tokens("0.40", "0.10", "1.60")),
    Model("o4-mini-2025-04-16", "completions", _tokens("1.10", "0.275", "4.40")),
    Model("text-embedding-3-large", "embeddings", {"input": Decimal("0.13") / _MILLION}),
    Model("gpt-image-1", "images", {"images": Decimal("0.042")}),
    Model("gpt-4o-mini-tts", "audio_speeches", {"characters": Decimal(12) / _MILLION}),
    Model("gpt-4o-transcribe", "audio_transcriptions", {"seconds": Decimal("0.0001")}),
    Model("gpt-4o-realtime-preview-2024-12-17", "completions", _tokens("5.00", "2.50", "20.00")),
)
_FINE_TUNED = _tokens("0.30", "0.15", "1.20")
UNITS = {"input": "tokens", "cached input": "tokens", "output": "tokens", "images": "images"}
UNITS |= {"characters": "characters", "seconds": "duration_seconds"}
# The hosted tools' cost lines: (line item, USD per call or session).
WEB_SEARCH_LINE = ("web search tool calls", Decimal("0.01"))
FILE_SEARCH_LINE = ("file search tool calls", Decimal("0.0025"))
CODE_INTERPRETER_LINE = ("code interpreter sessions", Decimal("0.03"))
ORGANIZATION_LINE = ("file storage", Decimal("0.004"))  # per GiB-hour; billed to no project


def catalog(models: int | None = None) -> tuple[Model, ...]:
    """The first `models` models (None: the base catalog); beyond it, fine-tuned models."""
    if models is None:
        return BASE_MODELS
    if models < 1:
        raise ValueError("models must be at least 1")
    tuned = [
        Model(f"ft:gpt-4o-mini-2024-07-18:acme::sim{n:05d}", "completions", _FINE_TUNED)
        for n in range(max(0, models - len(BASE_MODELS)))
    ]
    return (*BASE_MODELS, *tuned)[:models]
