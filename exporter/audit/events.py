"""Audit log events as the exporter reads them: the types it asks for, and one event parsed.

The contract is `GET /organization/audit_logs` and the `AuditLog` schema of
openai-admin-governance-and-spend.openapi.yaml. Parsing is tolerant of absent optionals and
new fields, strict on the three required ones (`id`, `type`, `effective_at`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from exporter.collectors.base import Invalid, obj, optional_text, text

# The spec's AuditLogEventType enum, in two parts. A plain read returns the first; the
# tenant-scoped types (`tenant.*`, and the two role bindings) are listed only with
# `tenant_only=true`, and then alone: asking for them beside the others would be refused.
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
TENANT_EVENT_TYPES = (
    "role.bound_to_resource",
    "role.unbound_from_resource",
    "tenant.metadata.updated",
    "tenant.microsoft_entra_mapping.upserted",
    "tenant.microsoft_entra_mapping.deleted",
    "tenant.workload_identity.provider.created",
    "tenant.workload_identity.provider.updated",
    "tenant.workload_identity.provider.archived",
    "tenant.workload_identity.mapping.created",
    "tenant.workload_identity.mapping.updated",
    "tenant.workload_identity.mapping.archived",
    "tenant.workload_identity.binding.created",
    "tenant.workload_identity.principal.provisioned",
    "tenant.workload_identity.access_token.issued",
    "tenant.admin_api_key.created",
    "tenant.admin_api_key.updated",
    "tenant.admin_api_key.deleted",
    "tenant.project_api_key.created",
    "tenant.chatgpt_access_token.revoked",
    "tenant.migration.completed",
    "tenant.sso.migrated",
    "tenant.domains.migrated",
    "tenant.sso_connection.created",
    "tenant.sso_connection.updated",
    "tenant.sso_connection.deleted",
    "tenant.sso_connection.setup.started",
    "tenant.policy.created",
    "tenant.policy.updated",
    "tenant.policy.deleted",
    "tenant.policy.attached",
    "tenant.policy.detached",
    "tenant.principal_authentication_policy.resolved",
    "tenant.scim.setup.started",
    "tenant.scim.deletion.requested",
    "tenant.scim.directory.created",
    "tenant.product_access_policy.updated",
    "tenant.resource_share_grant.created",
    "tenant.resource_share_grant.updated",
    "tenant.resource_share_grant.accepted",
    "tenant.resource_share_grant.declined",
    "tenant.resource_share_grant.revoked",
    "tenant.resource_share_grant.deleted",
    "tenant.service_account.updated",
    "tenant.service_account.deleted",
    "tenant.service_account.token.revoked",
    "tenant.billing.overage_limit.updated",
    "tenant.billing.alerts.updated",
    "tenant.billing.info.updated",
    "tenant.usage_limit.workspace.updated",
    "tenant.usage_limit.group.updated",
    "tenant.usage_limit.user.updated",
    "tenant.usage_limit.increase_request.updated",
    "tenant.usage_limit.increase_request.resolved",
    "tenant.group.created",
    "tenant.group.updated",
    "tenant.group.deleted",
    "tenant.group.member.added",
    "tenant.group.member.removed",
    "tenant.migration_rollout.status.updated",
    "tenant.migration_rollout.tier.updated",
    "tenant.role.metadata.updated",
    "tenant.custom_role.created",
    "tenant.custom_role.updated",
    "tenant.custom_role.deleted",
    "tenant.role_assignment.created",
    "tenant.role_assignment.deleted",
    "tenant.resource_role_assignment.created",
    "tenant.resource_role_assignment.deleted",
    "tenant.resource_access.updated",
    "tenant.resource_access.deleted",
    "tenant.ads_account.onboarding.redemption",
    "tenant.session_policy.created",
    "tenant.session_policy.updated",
    "tenant.session_policy.deleted",
    "tenant.session_revocation.started",
    "tenant.third_party_app_policy.updated",
    "tenant.user.added",
    "tenant.user.updated",
    "tenant.user.removed",
    "tenant.user.looked_up",
    "tenant.user.invited",
    "tenant.membership.revoked",
    "tenant.api_organization_invite.upserted",
    "tenant.api_organization_invite.deleted",
    "tenant.chatgpt_workspace_invite.upserted",
    "tenant.membership.accepted",
    "tenant.membership.declined",
    "tenant.workspace_invite_email_settings.updated",
)
ALL_EVENT_TYPES = EVENT_TYPES + TENANT_EVENT_TYPES
KNOWN = frozenset(ALL_EVENT_TYPES)


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
