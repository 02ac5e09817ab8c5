"""Audit log events as the exporter reads them: the types it asks for, and one event parsed.

The contract is `GET /organization/audit_logs` and the `AuditLog` schema of
openai-admin-governance-and-spend.openapi.yaml. Parsing is tolerant of absent optionals and
new fields, strict on the three required ones (`id`, `type`, `effective_at`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from exporter.collectors.base import Invalid, obj, optional_text, text

# Every type of the spec's AuditLogEventType enum that a plain read returns. Tenant-scoped
# types (`tenant.*`, and the two role bindings) are only listed with `tenant_only=true`, and
# then alone: asking for them beside these would be refused.
EVENT_TYPES = (
    "api_key.created",
    "api_key.updated",
    "api_key.deleted",
    "certificate.created",
    "certificate.updated",
    "certificate.deleted",
    "certificates.activated",
    "certificates.deactivated",
    "checkpoint.permission.created",
    "checkpoint.permission.deleted",
    "external_key.registered",
    "external_key.removed",
    "group.created",
    "group.updated",
    "group.deleted",
    "invite.sent",
    "invite.accepted",
    "invite.deleted",
    "ip_allowlist.created",
    "ip_allowlist.updated",
    "ip_allowlist.deleted",
    "ip_allowlist.config.activated",
    "ip_allowlist.config.deactivated",
    "login.succeeded",
    "login.failed",
    "logout.succeeded",
    "logout.failed",
    "organization.updated",
    "project.created",
    "project.updated",
    "project.archived",
    "project.deleted",
    "rate_limit.updated",
    "rate_limit.deleted",
    "resource.deleted",
    "tunnel.created",
    "tunnel.updated",
    "tunnel.deleted",
    "workload_identity_provider.created",
    "workload_identity_provider.updated",
    "workload_identity_provider.deleted",
    "workload_identity_provider_mapping.created",
    "workload_identity_provider_mapping.updated",
    "workload_identity_provider_mapping.deleted",
    "role.created",
    "role.updated",
    "role.deleted",
    "role.assignment.created",
    "role.assignment.deleted",
    "scim.enabled",
    "scim.disabled",
    "service_account.created",
    "service_account.updated",
    "service_account.deleted",
    "user.added",
    "user.updated",
    "user.deleted",
)
KNOWN = frozenset(EVENT_TYPES)


class Actor(NamedTuple):
    """Who made a change: a person's session, or an API key (a user's or a service account's)."""

    type: str  # session or api_key
    user_id: str | None
    service_account_id: str | None
    api_key_id: str | None  # the key's tracking id
    email: str | None
    ip_address: str | None

    def fields(self, effective_at: int, emails: bool) -> dict[str, object]:
        """The `actor` object of a change's log line; the email and the address only when the operator opts in."""
        fields: dict[str, object] = {"type": self.type}
        for name in ("user_id", "service_account_id", "api_key_id"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        if emails:
            fields.update({k: v for k, v in (("email", self.email), ("ip_address", self.ip_address)) if v})
        fields["effective_at"] = effective_at
        return fields


class Event(NamedTuple):
    id: str
    type: str
    effective_at: int
    project_id: str | None  # the project it happened in, when it names one
    resource_id: str | None  # what it happened to: `<type>.id`, e.g. the key of `api_key.created`
    actor: Actor | None


def parse_event(item: object) -> Event:
    event = obj(item, "an audit event")
    event_id = text(event, "id", "an audit event")
    where = f"audit event {event_id}"
    type_ = text(event, "type", where)
    effective_at = event.get("effective_at")
    if isinstance(effective_at, bool) or not isinstance(effective_at, int) or effective_at < 0:
        raise Invalid(f"{where}: `effective_at` is not a time")
    project = event.get("project")
    project_id = optional_text(project, "id", where) if isinstance(project, dict) else None
    body = event.get(type_)
    resource_id = optional_text(body, "id", where) if isinstance(body, dict) else None
    return Event(event_id, type_, effective_at, project_id, resource_id, _actor(event.get("actor"), where))


def _object(item: object, key: str | None = None) -> dict[str, Any]:
    """`item[key]` (or `item`) when it is an object, else an empty one: an actor's parts are all optional."""
    if key is not None:
        item = item.get(key) if isinstance(item, dict) else None
    return item if isinstance(item, dict) else {}


def _actor(item: object, where: str) -> Actor | None:
    if not isinstance(item, dict) or item.get("type") not in ("session", "api_key"):
        return None  # absent, null, or a kind of actor this contract does not know
    type_ = item["type"]
    inner, user, account = (
        _object(item.get(type_)),
        _object(item.get(type_), "user"),
        _object(item.get(type_), "service_account"),
    )
    return Actor(
        type=type_,
        user_id=optional_text(user, "id", where),
        service_account_id=optional_text(account, "id", where),
        api_key_id=optional_text(inner, "id", where) if type_ == "api_key" else None,
        email=optional_text(user, "email", where),
        ip_address=optional_text(inner, "ip_address", where) if type_ == "session" else None,
    )
