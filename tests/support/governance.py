"""JSON items of the governance endpoints, shaped as the upstream contract gives them, and a fake Fetcher.

The builders fill every field the contract requires (so a test can delete one to see it refused)
and take keyword overrides; `extra` adds fields the contract does not name, as a newer upstream
might. `contract_example(schema)` is the example the contract itself carries for a schema.
`FakeFetcher` answers a collector's requests from canned documents and records what was asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CONTRACT = Path(__file__).resolve().parent.parent / "contracts" / "openai-admin-governance-and-spend.openapi.yaml"
CREATED = 1_711_471_533  # the contract's own example timestamp


@cache
def contract() -> dict[str, Any]:
    return yaml.load(CONTRACT.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def closed(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists its properties:
    whatever is checked against it may add no field the contract does not name."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {name: closed(value) for name, value in schema.items()}
    if "properties" in schema:
        result.setdefault("additionalProperties", False)
    return result


@cache
def closed_components() -> dict[str, Any]:
    return closed(contract()["components"])


def contract_example(schema: str) -> dict[str, Any]:
    """The example object the contract documents for `schema` (a fresh copy)."""
    return json.loads(contract()["components"]["schemas"][schema]["x-oaiMeta"]["example"])


def _with(item: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return item | dict(extra or {})


def user(
    user_id: str = "user_abc",
    role: str = "member",
    *,
    email: str | None = "user@example.com",
    name: str | None = "First Last",
    added_at: int = CREATED,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    item = {"object": "organization.project.user", "id": user_id, "name": name, "email": email, "role": role}
    return _with(item | {"added_at": added_at}, extra)


def service_account(
    account_id: str = "svc_acct_abc",
    role: str = "member",
    *,
    name: str = "Service Account",
    created_at: int = CREATED,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    item = {"object": "organization.project.service_account", "id": account_id, "name": name, "role": role}
    return _with(item | {"created_at": created_at}, extra)


def api_key(
    key_id: str = "key_abc",
    *,
    owner_type: str = "user",
    owner_id: str | None = None,
    email: str = "user@example.com",
    name: str = "My API Key",
    created_at: int | float = CREATED,
    last_used_at: int | float | None = None,
    redacted_value: str = "sk-abc...def",
    owner_project_access: str = "active",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A key owned by a user (with an email) or by a service account (without one)."""
    owner: dict[str, Any] = {
        "id": owner_id or ("user_abc" if owner_type == "user" else "svc_acct_abc"),
        "name": "First Last" if owner_type == "user" else "Service Account",
        "created_at": CREATED,
        "role": "owner",
    }
    if owner_type == "user":
        owner["email"] = email
    item = {
        "object": "organization.project.api_key",
        "redacted_value": redacted_value,
        "name": name,
        "created_at": created_at,
        "last_used_at": last_used_at,
        "id": key_id,
        "owner_project_access": owner_project_access,
        "owner": {"type": owner_type, owner_type: owner},
    }
    return _with(item, extra)


def rate_limit(
    model: str = "gpt-4o",
    *,
    limit_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **limits: int | float | None,
) -> dict[str, Any]:
    """The two required limits default to the contract's example; pass others (or None) by their API name."""
    values: dict[str, Any] = {"max_requests_per_1_minute": 600, "max_tokens_per_1_minute": 150000} | limits
    item = {"object": "project.rate_limit", "id": limit_id or f"rl_{model}", "model": model} | values
    return _with(item, extra)


def certificate(
    certificate_id: str = "cert_abc",
    *,
    name: str | None = "My Example Certificate",
    active: bool = True,
    expires_at: int | None = CREATED + 365 * 86400,
    created_at: int = CREATED,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    details: dict[str, Any] = {"valid_at": created_at}
    if expires_at is not None:
        details["expires_at"] = expires_at
    item = {
        "object": "organization.project.certificate",
        "id": certificate_id,
        "name": name,
        "created_at": created_at,
        "certificate_details": details,
        "active": active,
    }
    return _with(item, extra)


def spend_limit(
    threshold_amount: Any = 12345,
    *,
    currency: str = "USD",
    interval: str = "month",
    status: str = "enforcing",
    organization: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    item = {
        "object": "organization.spend_limit" if organization else "project.spend_limit",
        "threshold_amount": threshold_amount,
        "currency": currency,
        "interval": interval,
        "enforcement": {"status": status},
    }
    return _with(item, extra)


def model_permissions(
    mode: str = "allow_list", model_ids: list[Any] | None = None, *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    ids = ["gpt-4.1", "o3"] if model_ids is None else model_ids
    return _with({"object": "project.model_permissions", "mode": mode, "model_ids": ids}, extra)


TOOLS = ("file_search", "web_search", "image_generation", "mcp", "code_interpreter")


def hosted_tool_permissions(*, extra: Mapping[str, Any] | None = None, **enabled: bool) -> dict[str, Any]:
    """Every tool the contract names, enabled unless told otherwise."""
    return _with({tool: {"enabled": enabled.get(tool, True)} for tool in TOOLS}, extra)


def data_retention(
    retention: str = "organization_default", *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return _with({"object": "project.data_retention", "type": retention}, extra)


def without(item: dict[str, Any], dotted: str) -> dict[str, Any]:
    """A deep copy of `item` without the field at `dotted` (e.g. "owner.type")."""
    copy = json.loads(json.dumps(item))
    *parents, last = dotted.split(".")
    target = copy
    for key in parents:
        target = target[key]
    del target[last]
    return copy


def replaced(item: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of `item` with the field at `dotted` set to `value`."""
    copy = json.loads(json.dumps(item))
    *parents, last = dotted.split(".")
    target = copy
    for key in parents:
        target = target[key]
    target[last] = value
    return copy


class FakeFetcher:
    """A Fetcher answering from canned documents by path; records every request.

    `list` paths map to a list of items (all pages at once), `one` paths to one document; a `one`
    path absent from `documents` is a 404, which only `missing_ok` accepts.
    """

    def __init__(self, documents: Mapping[str, Any]):
        self.documents = dict(documents)
        self.requests: list[tuple[str, str, Any]] = []  # (list | one, path, params | missing_ok)

    def list(self, path: str, parse: Callable[[object], Any], params: Mapping[str, str] | None = None) -> tuple:
        self.requests.append(("list", path, dict(params) if params is not None else None))
        return tuple(parse(item) for item in self.documents.get(path, []))

    def one(self, path: str, parse: Callable[[object], Any], *, missing_ok: bool = False) -> Any:
        self.requests.append(("one", path, missing_ok))
        if path not in self.documents:
            assert missing_ok, f"{path}: a 404 the collector does not accept"
            return None
        return parse(self.documents[path])
