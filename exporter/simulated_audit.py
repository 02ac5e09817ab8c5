"""The simulated organization's audit log: `GET /organization/audit_logs`.

It follows openai-admin-governance-and-spend.openapi.yaml, path `/organization/audit_logs` and the
`AuditLog` schema: each event has an `id`, a `type` among the contract's `AuditLogEventType`, an
`effective_at` in Unix seconds from the organization's clock, a `project` ({id, name}) when the
change was made in one, an `actor` (a dashboard `session` of a user, or an `api_key` of a user or
a service account), and its details under a key named as its type: the details go under `data`
or `changes_requested` where the contract's schema of that type has one, else beside the `id`.

The list comes newest first (`effective_at`, then the order of recording, descending), filtered by
`effective_at[gt|gte|lt|lte]`, `event_types[]`, `project_ids[]`, `resource_ids[]`, `actor_ids[]`
and `actor_emails[]` (arrays repeated or with brackets, as the SDK sends them), and pages with
`limit` (1..100, 20 by default), `after` and `before`: the id of an event, which need not match the
filters; an id the log does not hold answers 400, as the projects list does. `tenant_only` is
ignored: the simulator writes no tenant-scoped event.

The simulator's mutators write the events (exporter.simulator, exporter.simulated_governance);
tests choose who acts (`with audit.actor(session_user="user-abc"):`) or make changes that write
nothing (`with audit.silenced():`). Where the contract names no field for a change the simulator
makes (a project's status, spend limit, permissions or data retention; the organization's spend
limit), its `project.updated` or `organization.updated` names the field in `changes_requested`
all the same.

An organization without audit logging (`enabled` False) records nothing, and the endpoint answers
403 in the API's error shape: "Audit logging is not enabled for this organization." The contract
does not give the live API's answer for that case; 403 is the simulator's choice, as a request the
organization refuses rather than a malformed one.
"""

from __future__ import annotations

import bisect
import copy
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

from exporter.simulated_governance import ApiError, new_service_account, new_user

# The spend endpoints' reading of a query: arrays repeated or with brackets, integers or a 400.
from exporter.simulated_spend_query import _integer, _one, _values

JSON: TypeAlias = dict[str, Any]
AUDIT_LOGS = "audit_logs"  # the name a key can lack the scope for, as in `forbidden`
DISABLED = "Audit logging is not enabled for this organization."
EVENT_TYPES = tuple(  # the contract's AuditLogEventType, in its order
    "api_key.created api_key.updated api_key.deleted certificate.created certificate.updated "
    "certificate.deleted certificates.activated certificates.deactivated checkpoint.permission.created "
    "checkpoint.permission.deleted external_key.registered external_key.removed group.created group.updated "
    "group.deleted invite.sent invite.accepted invite.deleted ip_allowlist.created ip_allowlist.updated "
    "ip_allowlist.deleted ip_allowlist.config.activated ip_allowlist.config.deactivated login.succeeded "
    "login.failed logout.succeeded logout.failed organization.updated project.created project.updated "
    "project.archived project.deleted rate_limit.updated rate_limit.deleted resource.deleted tunnel.created "
    "tunnel.updated tunnel.deleted workload_identity_provider.created workload_identity_provider.updated "
    "workload_identity_provider.deleted workload_identity_provider_mapping.created "
    "workload_identity_provider_mapping.updated workload_identity_provider_mapping.deleted role.created "
    "role.updated role.deleted role.assignment.created role.assignment.deleted role.bound_to_resource "
    "role.unbound_from_resource scim.enabled scim.disabled service_account.created service_account.updated "
    "service_account.deleted user.added user.updated user.deleted tenant.metadata.updated "
    "tenant.microsoft_entra_mapping.upserted tenant.microsoft_entra_mapping.deleted "
    "tenant.workload_identity.provider.created tenant.workload_identity.provider.updated "
    "tenant.workload_identity.provider.archived tenant.workload_identity.mapping.created "
    "tenant.workload_identity.mapping.updated tenant.workload_identity.mapping.archived "
    "tenant.workload_identity.binding.created tenant.workload_identity.principal.provisioned "
    "tenant.workload_identity.access_token.issued tenant.admin_api_key.created tenant.admin_api_key.updated "
    "tenant.admin_api_key.deleted tenant.project_api_key.created tenant.chatgpt_access_token.revoked "
    "tenant.migration.completed tenant.sso.migrated tenant.domains.migrated tenant.sso_connection.created "
    "tenant.sso_connection.updated tenant.sso_connection.deleted tenant.sso_connection.setup.started "
    "tenant.policy.created tenant.policy.updated tenant.policy.deleted tenant.policy.attached "
    "tenant.policy.detached tenant.principal_authentication_policy.resolved tenant.scim.setup.started "
    "tenant.scim.deletion.requested tenant.scim.directory.created tenant.product_access_policy.updated "
    "tenant.resource_share_grant.created tenant.resource_share_grant.updated "
    "tenant.resource_share_grant.accepted tenant.resource_share_grant.declined "
    "tenant.resource_share_grant.revoked tenant.resource_share_grant.deleted tenant.service_account.updated "
    "tenant.service_account.deleted tenant.service_account.token.revoked tenant.billing.overage_limit.updated "
    "tenant.billing.alerts.updated tenant.billing.info.updated tenant.usage_limit.workspace.updated "
    "tenant.usage_limit.group.updated tenant.usage_limit.user.updated "
    "tenant.usage_limit.increase_request.updated tenant.usage_limit.increase_request.resolved "
    "tenant.group.created tenant.group.updated tenant.group.deleted tenant.group.member.added "
    "tenant.group.member.removed tenant.migration_rollout.status.updated tenant.migration_rollout.tier.updated "
    "tenant.role.metadata.updated tenant.custom_role.created tenant.custom_role.updated "
    "tenant.custom_role.deleted tenant.role_assignment.created tenant.role_assignment.deleted "
    "tenant.resource_role_assignment.created tenant.resource_role_assignment.deleted "
    "tenant.resource_access.updated tenant.resource_access.deleted tenant.ads_account.onboarding.redemption "
    "tenant.session_policy.created tenant.session_policy.updated tenant.session_policy.deleted "
    "tenant.session_revocation.started tenant.third_party_app_policy.updated tenant.user.added "
    "tenant.user.updated tenant.user.removed tenant.user.looked_up tenant.user.invited "
    "tenant.membership.revoked tenant.api_organization_invite.upserted tenant.api_organization_invite.deleted "
    "tenant.chatgpt_workspace_invite.upserted tenant.membership.accepted tenant.membership.declined "
    "tenant.workspace_invite_email_settings.updated".split()
)
# The types whose details the contract puts under `data`, and under `changes_requested`.
DATA_TYPES = frozenset(
    "api_key.created checkpoint.permission.created external_key.registered group.created invite.sent "
    "project.created service_account.created user.added workload_identity_provider.created "
    "workload_identity_provider_mapping.created".split()
)
CHANGE_TYPES = frozenset(
    "api_key.updated group.updated organization.updated project.updated rate_limit.updated role.updated "
    "service_account.updated user.updated workload_identity_provider.updated "
    "workload_identity_provider_mapping.updated".split()
)
# The fields the simulator's `changes_requested` names beyond the contract's, for the changes it makes that
# the contract has no field for: a project's status (unarchived) and settings, the organization's spend limit.
EXTRA_CHANGES = {
    "project.updated": ("status", "spend_limit", "model_permissions", "hosted_tool_permissions", "data_retention"),
    "organization.updated": ("spend_limit",),
}
_FILTERS = ("event_types", "project_ids", "resource_ids", "actor_ids", "actor_emails")
_BOUNDS = ("gt", "gte", "lt", "lte")
_ADDRESSES = ("203.0.113.7", "203.0.113.42", "198.51.100.23", "2001:db8::5")  # documentation ranges
_Key: TypeAlias = tuple[int, int, str]  # (effective_at, order of recording, id): the list's order


def session_actor(user_id: str, email: str, ip_address: str) -> JSON:
    return {"type": "session", "session": {"user": {"id": user_id, "email": email}, "ip_address": ip_address}}


def api_key_actor(key_id: str, *, user: JSON | None = None, service_account: str | None = None) -> JSON:
    """A key of a user ({"id", "email"}) or of a service account (its id)."""
    if (user is None) == (service_account is None):
        raise ValueError("an API key belongs to a user or to a service account")
    owner: JSON = {"type": "user", "user": user} if user else {"type": "service_account"}
    if service_account:
        owner["service_account"] = {"id": service_account}
    return {"type": "api_key", "api_key": {"id": key_id} | owner}


def facets(event: JSON, name: str) -> set[str]:
    """What the filter `name` (`project_ids`, `actor_ids`, ...) finds `event` by. An actor is found by
    its key's id, its user's or its service account's id; by its user's email."""
    actor = event.get("actor") or {}
    detail = actor.get(actor.get("type"), {})
    owners = [detail.get(kind, {}) for kind in ("user", "service_account")]
    values = {
        "event_types": [event["type"]],
        "project_ids": [event.get("project", {}).get("id")],
        "resource_ids": [event[event["type"]].get("id")],
        "actor_ids": [detail.get("id"), *(owner.get("id") for owner in owners)],
        "actor_emails": [owners[0].get("email")],
    }[name]
    return {value for value in values if value}


class SimulatedAuditLog:
    """The organization's audit events; each method holds the organization's (reentrant) lock.

    `clock()` is the organization's present (Unix seconds); `project(project_id)` the project an
    event names (its JSON, None once it is gone). Events beyond `retain` drop, oldest
    first, so that a long demo stays in bounded memory; a cursor of a dropped event answers 400.
    """

    def __init__(
        self,
        lock: threading.RLock,
        clock: Callable[[], float],
        project: Callable[[str], JSON | None],
        *,
        seed: int,
        enabled: bool = True,
        retain: int = 100_000,
    ):
        self._lock, self._project = lock, project
        self.clock, self.enabled, self.retain = clock, enabled, retain
        self._rng = random.Random(f"{seed}/audit")  # its own, so the projects and governance stay as they were
        self._events: dict[str, tuple[_Key, JSON]] = {}
        self._order: list[_Key] = []  # ascending; read from the end
        self._recorded = 0
        self._chosen: list[JSON] = []  # actors tests chose, innermost last
        self._silenced = 0
        self.organization_id = "org-" + self._token(24)
        # Who makes the changes when no test says: a few admins at the dashboard or through their keys,
        # and service accounts' keys (automation).
        admins = [new_user(self._rng, "owner", 0) for _ in range(4)]
        self.actors = [session_actor(a.id, str(a.email), self._rng.choice(_ADDRESSES)) for a in admins]
        self.actors += [
            api_key_actor("key_" + self._token(16), user={"id": a.id, "email": a.email}) for a in admins[:2]
        ]
        self.actors += [
            api_key_actor("key_" + self._token(16), service_account=new_service_account(self._rng, "owner", 0).id)
            for _ in range(2)
        ]

    def _token(self, length: int) -> str:
        return "".join(self._rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=length))

    # -- writing ------------------------------------------------------------------------------------

    def record(
        self,
        type_: str,
        *,
        project_id: str | None,
        resource_id: str | None,
        data: JSON | None = None,
        actor: JSON | None = None,
    ) -> JSON | None:
        """Append an event of `type_` on `resource_id` (None: a type without one, as a login), in
        `project_id` (None: the organization's); `data` is its details. The actor is `actor`, else
        the one a test chose (`actor()`), else one of `actors` at random. The event, or None when
        silenced or disabled."""
        if type_ not in EVENT_TYPES:
            raise ValueError(f"not an audit log event type: {type_!r}")
        with self._lock:
            if self._silenced or not self.enabled:
                return None
            event_id = "audit_log-" + self._token(24)
            while event_id in self._events:
                event_id = "audit_log-" + self._token(24)
            event: JSON = {"id": event_id, "type": type_, "effective_at": int(self.clock())}
            if project_id is not None:
                project = self._project(project_id)
                event["project"] = {"id": project_id} | ({"name": project["name"]} if project else {})
            actor = actor or (self._chosen[-1] if self._chosen else self._rng.choice(self.actors))
            event["actor"] = copy.deepcopy(actor)
            details: JSON = {} if resource_id is None else {"id": resource_id}
            if data is not None:
                under = "data" if type_ in DATA_TYPES else "changes_requested" if type_ in CHANGE_TYPES else None
                details |= {under: copy.deepcopy(data)} if under else copy.deepcopy(data)
            event[type_] = details
            self._recorded += 1
            key = (event["effective_at"], self._recorded, event_id)
            self._events[event_id] = (key, event)
            bisect.insort(self._order, key)  # an append, unless a test set the clock back
            while len(self._order) > self.retain:
                del self._events[self._order.pop(0)[2]]
            return copy.deepcopy(event)

    def project_changed(self, before: JSON | None, after: JSON | None) -> None:
        """The events of a project's change, from its JSON before and after: created (None before),
        deleted (None after; called while it still is, for its name), archived, unarchived (a
        `project.updated` with the status, which the contract's `changes_requested` does not name),
        renamed (its `title`)."""
        project_id = (after or before or {})["id"]
        if before is None or after is None:
            type_, data = ("project.created", {"title": after["name"]}) if after else ("project.deleted", None)
            self.record(type_, project_id=project_id, resource_id=project_id, data=data)
            return
        if before["status"] != after["status"]:
            archived = after["status"] == "archived"
            type_, data = ("project.archived", None) if archived else ("project.updated", {"status": after["status"]})
            self.record(type_, project_id=project_id, resource_id=project_id, data=data)
        if before["name"] != after["name"]:
            self.record("project.updated", project_id=project_id, resource_id=project_id, data={"title": after["name"]})

    @contextmanager
    def actor(
        self,
        *,
        session_user: str | None = None,
        api_key: str | None = None,
        user: str | None = None,
        service_account: str | None = None,
        email: str | None = None,
        ip_address: str = "203.0.113.7",
    ) -> Iterator[JSON]:
        """Changes made inside, from any thread, name this actor: a `session_user` at the dashboard, or
        an `api_key` (a tracking id, "key_...") of a `user` or a `service_account`. A user's email is
        `email`, by default one made from the id. Yields the actor as events show it."""
        if (session_user is None) == (api_key is None):
            raise ValueError("give session_user or api_key")
        person = session_user or user
        address = email or (f"{person}@example.com" if person else None)
        if session_user is not None:
            chosen = session_actor(session_user, str(address), ip_address)
        else:
            owner = None if user is None else {"id": user, "email": address}
            chosen = api_key_actor(str(api_key), user=owner, service_account=service_account)
        with self._lock:
            self._chosen.append(chosen)
        try:
            yield copy.deepcopy(chosen)
        finally:
            with self._lock:
                self._chosen.remove(chosen)

    @contextmanager
    def silenced(self) -> Iterator[None]:
        """Changes made inside, from any thread, write no event: a test's setup, say."""
        with self._lock:
            self._silenced += 1
        try:
            yield
        finally:
            with self._lock:
                self._silenced -= 1

    def churn(self) -> list[str]:
        """What an organization's people do besides changes: sign-ins at the dashboard, now and then a
        failed one or an invitation to the organization. The types it wrote."""
        rng, sessions = self._rng, [actor for actor in self.actors if actor["type"] == "session"]
        written = []
        if rng.random() < 0.5:
            written.append(
                self.record("login.succeeded", project_id=None, resource_id=None, actor=rng.choice(sessions))
            )
        if rng.random() < 0.1:
            error = {"error_code": "invalid_credentials", "error_message": "Wrong email or password."}
            written.append(
                self.record("login.failed", project_id=None, resource_id=None, data=error, actor=rng.choice(sessions))
            )
        if rng.random() < 0.1:
            invite = {"email": f"new.hire{rng.randrange(1000)}@example.com", "role": rng.choice(("owner", "member"))}
            invite_id = "invite-" + self._token(24)
            written.append(self.record("invite.sent", project_id=None, resource_id=invite_id, data=invite))
        return [event["type"] for event in written if event]

    # -- reading ------------------------------------------------------------------------------------

    def events(self) -> list[JSON]:
        """Every event the log holds, newest first, as the list gives them."""
        with self._lock:
            return [copy.deepcopy(self._events[key[2]][1]) for key in reversed(self._order)]

    def read(self, params: Mapping[str, Sequence[str]]) -> JSON:
        """The answer to a GET with the query `params` (parse_qs's: every value of each key), or ApiError."""
        with self._lock:
            if not self.enabled:
                raise ApiError(403, DISABLED)
            limit = _integer(params, "limit")
            limit = 20 if limit is None else limit
            if not 1 <= limit <= 100:
                raise ApiError(400, "limit must be between 1 and 100", param="limit")
            wanted = {name: set(_values(params, name)) for name in _FILTERS if _values(params, name)}
            if unknown := wanted.get("event_types", set()) - set(EVENT_TYPES):
                raise ApiError(400, f"Invalid value for 'event_types': {sorted(unknown)[0]!r}.", param="event_types")
            low, high = self._range(params)
            after, before = _one(params, "after"), _one(params, "before")
            if before is not None:  # the `limit` nearest newer than the cursor, still listed newest first
                start = max(self._position(before, "before") + 1, low)
                positions: range = range(start, high)
            else:
                end = high if after is None else min(self._position(after, "after"), high)
                positions = range(end - 1, low - 1, -1)
            data: list[JSON] = []
            has_more = False
            for position in positions:
                event = self._events[self._order[position][2]][1]
                if _matches(event, wanted):
                    if len(data) == limit:
                        has_more = True
                        break
                    data.append(copy.deepcopy(event))
            if before is not None:
                data.reverse()
            return {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": has_more,
            }

    def _range(self, params: Mapping[str, Sequence[str]]) -> tuple[int, int]:
        """The positions in `_order` (from, up to) that `effective_at[...]` leaves."""
        low, high = 0, len(self._order)
        for bound in _BOUNDS:
            value = _integer(params, f"effective_at[{bound}]")
            if value is None:
                continue
            # (t,) sorts before every key of second t: bisecting on it finds where that second begins.
            at = bisect.bisect_left(self._order, (value + 1 if bound in ("gt", "lte") else value,))
            if bound in ("gt", "gte"):
                low = max(low, at)
            else:
                high = min(high, at)
        return low, max(low, high)

    def _position(self, event_id: str, param: str) -> int:
        entry = self._events.get(event_id)
        if entry is None:
            raise ApiError(400, f"No such object for the `{param}` cursor", param=param)
        return bisect.bisect_left(self._order, entry[0])


def _matches(event: JSON, wanted: Mapping[str, set[str]]) -> bool:
    return all(values & facets(event, name) for name, values in wanted.items())
