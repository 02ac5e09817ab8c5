"""The governance side of the simulated organization: each project's members, keys, limits and permissions.

It follows openai-admin-governance-and-spend.openapi.yaml for the GET operations on a project's
users, service accounts, API keys, rate limits, certificates, spend limit, model and hosted-tool
permissions and data retention, and on the organization's spend limit. A project's state is
generated on its first read, from the seed, the project id and the organization's `now` alone:
a 100,000-project organization starts at once, and a project reads the same whatever was read
before it. Tests change the state through `SimulatedGovernance`'s methods; `churn` lets time pass.
Every change but a key's use writes its event to the organization's audit log
(exporter.simulated_audit): the change's type on the object's id, within its project.
"""

from __future__ import annotations

import functools
import random
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:  # the audit log reads ApiError and the generators from here
    from exporter.simulated_audit import SimulatedAuditLog

JSON: TypeAlias = dict[str, Any]
DAY = 86_400
LIST_DEFAULT_LIMITS = {"users": 20, "service_accounts": 20, "api_keys": 20, "rate_limits": 100, "certificates": 20}
SINGLE_RESOURCES = ("spend_limit", "model_permissions", "hosted_tool_permissions", "data_retention")
PROJECT_RESOURCES = (*LIST_DEFAULT_LIMITS, *SINGLE_RESOURCES)
ORGANIZATION_SPEND_LIMIT = "organization_spend_limit"
RESOURCES = (*PROJECT_RESOURCES, ORGANIZATION_SPEND_LIMIT)  # the names a key can lack the scope for
HOSTED_TOOLS = ("file_search", "web_search", "image_generation", "mcp", "code_interpreter")
DATA_RETENTION_TYPES = (
    "organization_default",
    "none",
    "zero_data_retention",
    "modified_abuse_monitoring",
    "enhanced_zero_data_retention",
    "enhanced_modified_abuse_monitoring",
)
REQUIRED_LIMITS = ("max_requests_per_1_minute", "max_tokens_per_1_minute")
OPTIONAL_LIMITS = (
    "max_images_per_1_minute",
    "max_audio_megabytes_per_1_minute",
    "max_requests_per_1_day",
    "batch_1_day_max_input_tokens",
)


def _limits(requests: int, tokens: int, **optional: int) -> dict[str, int]:
    return {"max_requests_per_1_minute": requests, "max_tokens_per_1_minute": tokens, **optional}


# Each model's limits: the two required ones, then only the optional ones the API sends for such a model.
MODELS: dict[str, dict[str, int]] = {
    "gpt-4o": _limits(10_000, 30_000_000, batch_1_day_max_input_tokens=5_000_000_000),
    "gpt-4o-mini": _limits(30_000, 150_000_000, batch_1_day_max_input_tokens=15_000_000_000),
    "gpt-4.1": _limits(10_000, 30_000_000, batch_1_day_max_input_tokens=5_000_000_000),
    "o3": _limits(10_000, 30_000_000, max_requests_per_1_day=500_000),
    "text-embedding-3-small": _limits(10_000, 10_000_000, batch_1_day_max_input_tokens=4_000_000_000),
    "dall-e-3": _limits(7_500, 150_000, max_images_per_1_minute=15),
    "whisper-1": _limits(10_000, 150_000, max_audio_megabytes_per_1_minute=200),
    "tts-1": _limits(10_000, 2_000_000, max_audio_megabytes_per_1_minute=100),
    "omni-moderation-latest": _limits(10_000, 150_000, max_requests_per_1_day=1_000_000),
}
_FIRST = "Ada Grace Zoë José Åsa Mei Olu Priya Noah Chloé Björn Ines".split()
_LAST = "Lovelace Hopper Müller O'Brien García Nakamura Okafor Kowalski Dubois Singh".split()
_SERVICES = "ci ingest batch evals support-bot etl nightly search-indexer".split()
_KEY_NAMES = "prod,staging,dev,ci,notebook,backfill,local testing,zapier,grafana,clé secrète".split(",")
_THRESHOLDS = (5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000)  # cents
_ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# What time passing does to a project: keys are used more often than anything else changes.
_CHURN = "create_key use_key use_key use_key delete_key add_member change_role".split()
_CHURN += "spend_limit rate_limit certificate".split()
# The audit log's event on removing each list's objects.
_DELETED = {
    "api_keys": "api_key.deleted",
    "users": "user.deleted",
    "service_accounts": "service_account.deleted",
    "certificates": "certificate.deleted",
}
_SCOPES = ["api.all"]  # what a new key may do: every key the simulator makes has all permissions


class ApiError(Exception):
    """An answer in the API's error shape; the server renders it with `error_body`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass(frozen=True)
class Counts:
    """Fixed counts per project for benchmarks and tests; None gives the default variety."""

    users: int | None = None
    service_accounts: int | None = None
    api_keys: int | None = None


@dataclass(slots=True)
class Member:
    """A project user (with an email) or service account (without)."""

    id: str
    name: str
    email: str | None
    role: str
    created_at: int  # the account's creation: what a key's owner shows
    added_at: int  # when it joined the project


@dataclass(slots=True)
class ApiKey:
    id: str
    name: str
    redacted_value: str
    created_at: int
    last_used_at: int | None
    owner_type: str  # "user" or "service_account"
    owner: Member  # kept when the owner leaves: the key outlives their access


@dataclass(slots=True)
class Certificate:
    id: str
    name: str | None
    active: bool
    created_at: int
    valid_at: int
    expires_at: int


@dataclass(slots=True)
class Governance:
    """One project's state, in the order the API lists it (users and keys by when they came)."""

    users: dict[str, Member] = field(default_factory=dict)
    service_accounts: dict[str, Member] = field(default_factory=dict)
    api_keys: dict[str, ApiKey] = field(default_factory=dict)
    rate_limits: dict[str, JSON] = field(default_factory=dict)  # by model
    certificates: dict[str, Certificate] = field(default_factory=dict)
    spend_limit: tuple[int, str] | None = None  # threshold in cents, enforcement status
    model_permissions: tuple[str, list[str]] = field(default_factory=lambda: ("deny_list", []))
    hosted_tools: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(HOSTED_TOOLS, True))
    data_retention: str = "organization_default"


# -- JSON, as the API sends it ----------------------------------------------------------------------


_OWNER_FIELDS = {
    "user": ("id", "email", "name", "created_at", "role"),
    "service_account": ("id", "name", "created_at", "role"),
}


def _fields(source: object, *names: str) -> JSON:
    return {name: getattr(source, name) for name in names}


def render_user(user: Member) -> JSON:
    return {"object": "organization.project.user"} | _fields(user, "id", "name", "email", "role", "added_at")


def render_service_account(account: Member) -> JSON:
    return {"object": "organization.project.service_account"} | _fields(account, "id", "name", "role", "created_at")


def render_api_key(key: ApiKey, state: Governance) -> JSON:
    owner = key.owner
    members = state.users if key.owner_type == "user" else state.service_accounts
    active = members.get(owner.id) is owner and owner.role != "none"
    detail = _fields(owner, *_OWNER_FIELDS[key.owner_type])
    return (
        {"object": "organization.project.api_key"}
        | _fields(key, "redacted_value", "name", "created_at", "last_used_at", "id")
        | {"owner_project_access": "active" if active else "inactive"}
        | {"owner": {"type": key.owner_type, key.owner_type: detail}}
    )


def render_certificate(certificate: Certificate) -> JSON:
    details = _fields(certificate, "valid_at", "expires_at")
    return (
        {"object": "organization.project.certificate"}
        | _fields(certificate, "id", "name", "active", "created_at")
        | {"certificate_details": details}
    )


def render_spend_limit(object_: str, limit: tuple[int, str]) -> JSON:
    threshold, status = limit
    return {
        "object": object_,
        "threshold_amount": threshold,
        "currency": "USD",
        "interval": "month",
        "enforcement": {"status": status},
    }


def page(objects: Sequence[JSON], after: str | None, limit: int) -> JSON:
    """One list page as the projects list pages: up to `limit` objects after the one whose id is `after`."""
    start = 0
    if after is not None:
        ids = [item["id"] for item in objects]
        if after not in ids:
            raise ApiError(400, "No such object for the `after` cursor", param="after")
        start = ids.index(after) + 1
    data = list(objects[start : start + limit])
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(objects),
    }


def _choice(query: dict[str, str], name: str, allowed: Iterable[str], default: str | None) -> str | None:
    value = query.get(name, default)
    if value is not None and value not in allowed:
        raise ApiError(400, f"{name} must be one of {', '.join(allowed)}", param=name)
    return value


def items(state: Governance, resource: str, query: dict[str, str]) -> list[JSON]:
    """A list resource's objects in the order the API lists them, filtered as `query` asks."""
    if resource == "users":
        return [render_user(user) for user in state.users.values()]
    if resource == "service_accounts":
        return [render_service_account(account) for account in state.service_accounts.values()]
    if resource == "api_keys":
        # Without the parameter the API applies membership-based visibility: the active owners' keys.
        access = _choice(query, "owner_project_access", ("active", "inactive", "any"), "active")
        keys = [render_api_key(key, state) for key in state.api_keys.values()]
        return [key for key in keys if access in ("any", key["owner_project_access"])]
    if resource == "rate_limits":
        return [dict(limits) for limits in state.rate_limits.values()]
    order = _choice(query, "order", ("asc", "desc"), "desc")
    certificates = sorted(state.certificates.values(), key=lambda c: c.created_at, reverse=order == "desc")
    return [render_certificate(certificate) for certificate in certificates]


def list_document(state: Governance, resource: str, query: dict[str, str]) -> JSON:
    try:
        limit = int(query.get("limit", LIST_DEFAULT_LIMITS[resource]))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise ApiError(400, "limit must be between 1 and 100", param="limit")
    return page(items(state, resource, query), query.get("after"), limit)


# -- generation ---------------------------------------------------------------------------------------


def _token(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(_ALPHANUMERIC, k=length))


def _ascii(name: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", name.lower()) if c.isascii() and c.isalnum())


def _between(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * max(high - low, 0))


def new_user(rng: random.Random, role: str, added_at: int, name: str | None = None, email: str | None = None) -> Member:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    email = email or f"{_ascii(first)}.{_ascii(last)}{rng.randrange(100)}@example.com"
    user_id = "user-" + _token(rng, 24)
    return Member(user_id, name or f"{first} {last}", email, role, added_at - rng.randrange(2 * 365 * DAY), added_at)


def new_service_account(rng: random.Random, role: str, created_at: int, name: str | None = None) -> Member:
    name = name or f"{rng.choice(_SERVICES)}-{rng.randrange(100)}"
    return Member("svc_acct_" + _token(rng, 24), name, None, role, created_at, created_at)


def new_api_key(
    rng: random.Random, owner_type: str, owner: Member, created_at: int, last_used_at: int | None
) -> ApiKey:
    name = f"{rng.choice(_KEY_NAMES)} {rng.randrange(10)}"
    redacted = f"sk-proj-{_token(rng, 3)}...{_token(rng, 3)}"  # never a whole key, as the API shows them
    return ApiKey("key_" + _token(rng, 16), name, redacted, created_at, last_used_at, owner_type, owner)


def new_certificate(
    rng: random.Random, created_at: int, expires_at: int, active: bool, name: str | None
) -> Certificate:
    valid_at = min(created_at - rng.randrange(30 * DAY), expires_at - DAY)
    return Certificate("cert_" + _token(rng, 24), name, active, created_at, valid_at, expires_at)


def _last_used(rng: random.Random, created_at: int, now: int) -> int | None:
    draw = rng.random()
    if draw < 0.2:
        return None  # a key made and never used
    if draw < 0.4 and now - created_at > 91 * DAY:
        return _between(rng, created_at, now - 91 * DAY)  # a forgotten key
    return now - int(rng.random() ** 3 * min(now - created_at, 30 * DAY))


@functools.cache
def _rate_limit(model: str, scale: float) -> JSON:
    """Shared by every project with the same limits (a large organization's memory); copied on change."""
    limits = {name: max(1, int(value * scale)) for name, value in MODELS[model].items()}
    return {"object": "project.rate_limit", "id": f"rl-{model}", "model": model} | limits


def generate(rng: random.Random, created: int, now: int, counts: Counts) -> Governance:
    """A project's state: `created` is the project's creation, `now` the organization's present."""
    state = Governance()
    no_owner = rng.random() < 1 / 25
    n_users = counts.users if counts.users is not None else rng.randint(1, 4)
    added = sorted([created] + [_between(rng, created, now) for _ in range(n_users - 1)])[:n_users]
    for n, added_at in enumerate(added):
        role = "owner" if not no_owner and (n == 0 or rng.random() < 0.15) else "member"
        user = new_user(rng, role, added_at)
        state.users[user.id] = user
    n_accounts = counts.service_accounts if counts.service_accounts is not None else rng.randint(0, 2)
    for _ in range(n_accounts):
        draw = rng.random()
        role = "owner" if draw < 0.15 else "none" if draw < 0.25 else "member"
        account = new_service_account(rng, role, _between(rng, created, now))
        state.service_accounts[account.id] = account
    owners = [("user", user) for user in state.users.values()]
    owners += [("service_account", account) for account in state.service_accounts.values() if account.role != "none"]
    keys = []
    for _ in range(counts.api_keys if counts.api_keys is not None else rng.randint(1, 6)):
        if not owners or (counts.api_keys is None and rng.random() < 0.08):
            owner_type, owner = "user", new_user(rng, "member", _between(rng, created, now))  # a former member
        else:
            owner_type, owner = rng.choice(owners)
        key_created = _between(rng, max(created, owner.added_at), now)
        keys.append(new_api_key(rng, owner_type, owner, key_created, _last_used(rng, key_created, now)))
    state.api_keys = {key.id: key for key in sorted(keys, key=lambda k: k.created_at)}
    scale = rng.choice((1, 1, 1, 0.5, 0.1))
    for model in [m for m in MODELS if rng.random() < 0.6] or ["gpt-4o-mini"]:
        state.rate_limits[model] = _rate_limit(model, scale)
    for _ in range(rng.randint(0, 2)):
        draw = rng.random()
        if draw < 0.3:
            expires_at = now + rng.randint(3600, 14 * DAY)  # due for rotation
        elif draw < 0.4:
            expires_at = now - rng.randint(DAY, 60 * DAY)
        else:
            expires_at = now + rng.randint(30 * DAY, 700 * DAY)
        name = None if rng.random() < 0.15 else f"{rng.choice(_SERVICES)} mTLS {rng.randrange(10)}"
        certificate = new_certificate(rng, _between(rng, created, now), expires_at, rng.random() < 0.8, name)
        state.certificates[certificate.id] = certificate
    if rng.random() < 0.7:
        state.spend_limit = (rng.choice(_THRESHOLDS), "enforcing" if rng.random() < 0.85 else "inactive")
    if rng.random() < 0.35:
        state.model_permissions = ("allow_list", sorted(rng.sample(list(MODELS), rng.randint(1, 4))))
    else:
        state.model_permissions = ("deny_list", sorted(rng.sample(list(MODELS), rng.choice((0, 0, 1, 2)))))
    state.hosted_tools = {tool: rng.random() < 0.8 for tool in HOSTED_TOOLS}
    state.data_retention = rng.choices(DATA_RETENTION_TYPES, weights=(70, 5, 10, 10, 2, 3))[0]
    return state


def _limit_change(limit: tuple[int, str] | None) -> JSON | None:
    """A spend limit as an audit event names it; None once cleared."""
    return None if limit is None else {"threshold_amount": limit[0], "enforcement": limit[1]}


# -- the organization's governance --------------------------------------------------------------------


def _valid(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


class SimulatedGovernance:
    """Every project's governance state; each method holds the organization's (reentrant) lock.

    A project's state is made on its first read or change. Changes use the wall clock, as
    `SimulatedOrganization.create` does; a missing project raises ApiError(404), a missing
    object KeyError. Each change writes its event to `audit` once it is made.
    """

    def __init__(
        self,
        lock: threading.RLock,
        created_at: Callable[[str], int | None],
        *,
        seed: int,
        now: int,
        counts: Counts,
        audit: SimulatedAuditLog,
    ):
        self._lock, self._created_at, self._seed, self._now, self._counts = lock, created_at, seed, now, counts
        self.audit = audit
        self._states: dict[str, Governance] = {}
        # New objects and churn draw from their own generator, so the projects' stay as they were.
        self._rng = random.Random(f"{seed}/governance")
        limit = random.Random(f"{seed}/organization").choice(_THRESHOLDS) * 20
        self._organization_limit: tuple[int, str] | None = (limit, "enforcing")

    def _state(self, project_id: str) -> Governance:
        state = self._states.get(project_id)
        if state is None:
            created = self._created_at(project_id)
            if created is None:
                raise ApiError(404, "No such project", param="project_id")
            rng = random.Random(f"{self._seed}/{project_id}")
            state = self._states[project_id] = generate(rng, created, max(self._now, created), self._counts)
        return state

    def forget(self, project_id: str) -> None:
        with self._lock:
            self._states.pop(project_id, None)

    def usage_identities(self, project_id: str) -> list[tuple[str | None, str | None]]:
        """(user id, key id) of each of the project's keys, as usage names who made a request: a
        service account's key has no user."""
        with self._lock:
            keys = self._state(project_id).api_keys.values()
            return [(key.owner.id if key.owner_type == "user" else None, key.id) for key in keys]

    # -- reads ------------------------------------------------------------------------------------------

    def read(self, project_id: str | None, resource: str, query: dict[str, str]) -> JSON:
        """What a GET of `resource` answers (project_id None: the organization's spend limit)."""
        with self._lock:
            if project_id is None:
                if self._organization_limit is None:
                    raise ApiError(404, "No spend limit is set for the organization")
                return render_spend_limit("organization.spend_limit", self._organization_limit)
            state = self._state(project_id)
            if resource in LIST_DEFAULT_LIMITS:
                return list_document(state, resource, query)
            if resource == "spend_limit":
                if state.spend_limit is None:  # as the API answers a project nobody set a limit on
                    raise ApiError(404, f"No spend limit is set for project {project_id}", param="project_id")
                return render_spend_limit("project.spend_limit", state.spend_limit)
            if resource == "model_permissions":
                mode, model_ids = state.model_permissions
                return {"object": "project.model_permissions", "mode": mode, "model_ids": list(model_ids)}
            if resource == "hosted_tool_permissions":
                return {tool: {"enabled": enabled} for tool, enabled in state.hosted_tools.items()}
            return {"object": "project.data_retention", "type": state.data_retention}

    def snapshot(self, project_id: str) -> JSON:
        """A project as the API shows it: every list whole (keys of every owner), every object or None."""
        with self._lock:
            state = self._state(project_id)
            every: dict[str, str] = {"owner_project_access": "any", "order": "asc"}
            whole: JSON = {resource: items(state, resource, every) for resource in LIST_DEFAULT_LIMITS}
            for resource in SINGLE_RESOURCES:
                try:
                    whole[resource] = self.read(project_id, resource, {})
                except ApiError:
                    whole[resource] = None
            return whole

    # -- changes ----------------------------------------------------------------------------------------

    def add_api_key(
        self, project_id: str, *, owner_id: str | None = None, name: str | None = None, last_used_at: int | None = None
    ) -> JSON:
        """A new key of `owner_id` (a user or service account of the project; by default one at random)."""
        with self._lock:
            state, now = self._state(project_id), int(time.time())
            owners = {u.id: ("user", u) for u in state.users.values()}
            owners |= {a.id: ("service_account", a) for a in state.service_accounts.values()}
            if owner_id is not None:
                owner_type, owner = owners[owner_id]
            elif owners:
                owner_type, owner = self._rng.choice(list(owners.values()))
            else:
                owner_type, owner = "user", new_user(self._rng, "member", now)  # nobody left: a former member's
            key = new_api_key(self._rng, owner_type, owner, now, last_used_at)
            key.name = name or key.name
            state.api_keys[key.id] = key
            self.audit.record("api_key.created", project_id=project_id, resource_id=key.id, data={"scopes": _SCOPES})
            return render_api_key(key, state)

    def use_api_key(self, project_id: str, key_id: str, at: int | None = None) -> JSON:
        with self._lock:
            state = self._state(project_id)
            key = state.api_keys[key_id]
            key.last_used_at = int(time.time()) if at is None else at
            return render_api_key(key, state)

    def add_user(
        self, project_id: str, *, role: str = "member", name: str | None = None, email: str | None = None
    ) -> JSON:
        with self._lock:
            state = self._state(project_id)
            user = new_user(self._rng, _valid(role, ("owner", "member"), "role"), int(time.time()), name, email)
            state.users[user.id] = user
            self.audit.record("user.added", project_id=project_id, resource_id=user.id, data={"role": user.role})
            return render_user(user)

    def add_service_account(self, project_id: str, *, role: str = "member", name: str | None = None) -> JSON:
        with self._lock:
            state = self._state(project_id)
            role = _valid(role, ("owner", "member", "none"), "role")
            account = new_service_account(self._rng, role, int(time.time()), name)
            state.service_accounts[account.id] = account
            data = {"role": role}
            self.audit.record("service_account.created", project_id=project_id, resource_id=account.id, data=data)
            return render_service_account(account)

    def set_user_role(self, project_id: str, user_id: str, role: str) -> JSON:
        with self._lock:
            user = self._state(project_id).users[user_id]
            user.role = _valid(role, ("owner", "member"), "role")
            self.audit.record("user.updated", project_id=project_id, resource_id=user_id, data={"role": role})
            return render_user(user)

    def set_service_account_role(self, project_id: str, account_id: str, role: str) -> JSON:
        """`none` leaves the account in the project without access: its keys turn inactive."""
        with self._lock:
            account = self._state(project_id).service_accounts[account_id]
            account.role = _valid(role, ("owner", "member", "none"), "role")
            data = {"role": role}
            self.audit.record("service_account.updated", project_id=project_id, resource_id=account_id, data=data)
            return render_service_account(account)

    def _remove(self, project_id: str, resource: str, object_id: str) -> str:
        with self._lock:
            objects: dict[str, Any] = getattr(self._state(project_id), resource)
            removed = objects.pop(object_id)
            # A certificate's event names it; the others carry the id alone.
            data = {"name": removed.name} if resource == "certificates" and removed.name is not None else None
            self.audit.record(_DELETED[resource], project_id=project_id, resource_id=object_id, data=data)
            return object_id

    def remove_api_key(self, project_id: str, key_id: str) -> str:
        return self._remove(project_id, "api_keys", key_id)

    def remove_user(self, project_id: str, user_id: str) -> str:
        """The user's keys stay, with `owner_project_access` inactive."""
        return self._remove(project_id, "users", user_id)

    def remove_service_account(self, project_id: str, account_id: str) -> str:
        return self._remove(project_id, "service_accounts", account_id)

    def remove_certificate(self, project_id: str, certificate_id: str) -> str:
        return self._remove(project_id, "certificates", certificate_id)

    def set_spend_limit(
        self, project_id: str, threshold_amount: int | None, enforcement: str = "enforcing"
    ) -> JSON | None:
        """Set the limit (cents) or, with None, clear it: the endpoint then answers 404."""
        with self._lock:
            state = self._state(project_id)
            enforcement = _valid(enforcement, ("enforcing", "inactive"), "enforcement")
            state.spend_limit = None if threshold_amount is None else (threshold_amount, enforcement)
            self._project_updated(project_id, "spend_limit", _limit_change(state.spend_limit))
            return None if state.spend_limit is None else render_spend_limit("project.spend_limit", state.spend_limit)

    def set_rate_limit(self, project_id: str, model: str, **limits: int | None) -> JSON:
        """Set limits of `model`'s entry (made if missing); None leaves an optional limit out."""
        with self._lock:
            state = self._state(project_id)
            entry = state.rate_limits.get(model)
            if entry is None:  # a model the project had no limits for
                entry = {"object": "project.rate_limit", "id": f"rl-{model}", "model": model}
                entry |= MODELS.get(model, _limits(500, 200_000))
            entry = dict(entry)  # projects share entries until one changes; a refused change leaves it whole
            for name, value in limits.items():
                _valid(name, OPTIONAL_LIMITS if value is None else REQUIRED_LIMITS + OPTIONAL_LIMITS, "a limit")
                if value is None:
                    entry.pop(name, None)
                else:
                    entry[name] = value
            state.rate_limits[model] = entry
            # The contract's changes are numbers: a limit taken out (None) is left out of them.
            changes = {name: value for name, value in limits.items() if value is not None}
            self.audit.record("rate_limit.updated", project_id=project_id, resource_id=entry["id"], data=changes)
            return dict(entry)

    def add_certificate(
        self, project_id: str, *, name: str | None = None, active: bool = True, expires_at: int | None = None
    ) -> JSON:
        with self._lock:
            state, now = self._state(project_id), int(time.time())
            expires_at = now + 365 * DAY if expires_at is None else expires_at
            certificate = new_certificate(self._rng, now, expires_at, active, name)
            state.certificates[certificate.id] = certificate
            self._certificate_event("certificate.created", project_id, certificate)
            return render_certificate(certificate)

    def set_certificate(
        self, project_id: str, certificate_id: str, *, active: bool | None = None, expires_at: int | None = None
    ) -> JSON:
        with self._lock:
            certificate = self._state(project_id).certificates[certificate_id]
            certificate.active = certificate.active if active is None else active
            certificate.expires_at = certificate.expires_at if expires_at is None else expires_at
            self._certificate_event("certificate.updated", project_id, certificate)
            return render_certificate(certificate)

    def set_model_permissions(self, project_id: str, mode: str, model_ids: Iterable[str]) -> JSON:
        with self._lock:
            self._state(project_id).model_permissions = (
                _valid(mode, ("allow_list", "deny_list"), "mode"),
                list(model_ids),
            )
            permissions = self.read(project_id, "model_permissions", {})
            self._project_updated(project_id, "model_permissions", {k: permissions[k] for k in ("mode", "model_ids")})
            return permissions

    def set_hosted_tool(self, project_id: str, tool: str, enabled: bool) -> JSON:
        with self._lock:
            self._state(project_id).hosted_tools[_valid(tool, HOSTED_TOOLS, "tool")] = enabled
            self._project_updated(project_id, "hosted_tool_permissions", {tool: {"enabled": enabled}})
            return self.read(project_id, "hosted_tool_permissions", {})

    def set_data_retention(self, project_id: str, type_: str) -> JSON:
        with self._lock:
            self._state(project_id).data_retention = _valid(type_, DATA_RETENTION_TYPES, "type")
            self._project_updated(project_id, "data_retention", {"type": type_})
            return self.read(project_id, "data_retention", {})

    def set_organization_spend_limit(self, threshold_amount: int | None, enforcement: str = "enforcing") -> JSON | None:
        """Set the limit (cents) or, with None, clear it: the endpoint then answers 404."""
        with self._lock:
            enforcement = _valid(enforcement, ("enforcing", "inactive"), "enforcement")
            self._organization_limit = None if threshold_amount is None else (threshold_amount, enforcement)
            organization_id = self.audit.organization_id
            changes = {"spend_limit": _limit_change(self._organization_limit)}
            self.audit.record("organization.updated", project_id=None, resource_id=organization_id, data=changes)
            return None if threshold_amount is None else self.read(None, ORGANIZATION_SPEND_LIMIT, {})

    # -- the audit log ----------------------------------------------------------------------------------

    def _project_updated(self, project_id: str, name: str, value: Any) -> None:
        """A setting the contract's `project.updated` has no field for: named after its endpoint."""
        self.audit.record("project.updated", project_id=project_id, resource_id=project_id, data={name: value})

    def _certificate_event(self, type_: str, project_id: str, certificate: Certificate) -> None:
        data = None if certificate.name is None else {"name": certificate.name}
        self.audit.record(type_, project_id=project_id, resource_id=certificate.id, data=data)

    # -- time passing -----------------------------------------------------------------------------------

    def churn(self, project_ids: Sequence[str]) -> list[str]:
        """One or two changes an organization's admins and traffic make, among `project_ids`: what changed."""
        changes: list[str] = []
        with self._lock:
            for _ in range(self._rng.choice((1, 2)) if project_ids else 0):
                project_id = self._rng.choice(project_ids)
                try:
                    changes.append(f"{self._change(project_id, self._rng.choice(_CHURN))} {project_id}")
                except ApiError:
                    pass  # removed since the list was taken
        return changes

    def _change(self, project_id: str, change: str) -> str:
        state, rng, now = self._state(project_id), self._rng, int(time.time())
        keys, users = list(state.api_keys), list(state.users.values())
        if change == "use_key" and keys:
            self.use_api_key(project_id, rng.choice(keys))
        elif change == "delete_key" and keys:
            self.remove_api_key(project_id, rng.choice(keys))
        elif change == "add_member":
            self.add_user(project_id)
        elif change == "change_role" and users:
            user = rng.choice(users)
            self.set_user_role(project_id, user.id, "member" if user.role == "owner" else "owner")
        elif change == "spend_limit":
            cleared = state.spend_limit is not None and rng.random() < 0.2
            self.set_spend_limit(project_id, None if cleared else rng.choice(_THRESHOLDS) * rng.randint(1, 4))
        elif change == "rate_limit" and state.rate_limits:
            entry = state.rate_limits[rng.choice(list(state.rate_limits))]
            requests = max(1, int(entry["max_requests_per_1_minute"] * rng.choice((0.5, 2))))
            self.set_rate_limit(project_id, entry["model"], max_requests_per_1_minute=requests)
        elif change == "certificate":  # one comes due for rotation
            due = now + rng.randint(3600, 14 * DAY)
            if state.certificates:
                self.set_certificate(project_id, rng.choice(list(state.certificates)), expires_at=due)
            else:
                self.add_certificate(project_id, expires_at=due)
        else:
            change = "create_key"
            self.add_api_key(project_id)
        return change
