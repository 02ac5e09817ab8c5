"""Who belongs to a project: its users and its service accounts, counted by role.

Both are lists of members with an id and a role, so one module serves both collectors:
the same parse, render and diff, with the resource's own names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

from exporter.collectors.base import (
    Audited,
    Change,
    Collector,
    Details,
    Family,
    Fetcher,
    number,
    obj,
    optional_text,
    sample,
    text,
    unique,
)


class Member(NamedTuple):
    id: str
    role: str
    email: str | None  # users only; logged only with --log.emails


def _member(what: str) -> Callable[[object], Member]:
    def parse(item: object) -> Member:
        entry = obj(item, what)
        member_id = text(entry, "id", what)
        where = f"{what} {member_id}"
        number(entry, "added_at" if what == "project user" else "created_at", where, required=False)
        return Member(member_id, text(entry, "role", where), optional_text(entry, "email", where))

    return parse


def _collector(
    name: str, path: str, what: str, resource: str, metric: str, roles: Sequence[str], default: bool
) -> Collector:
    family = Family(metric, f"{what.capitalize()}s of the project by role")
    parse = _member(what)
    added = "added" if resource == "project_user" else "created"
    # A user's id is the organization's, shared by each project the user is in; a service account's is the project's.
    user = resource == "project_user"
    event, id_field, shared = ("user", "user_id", True) if user else ("service_account", "service_account_id", False)
    kinds = ((added, "added" if event == "user" else "created"), ("role_changed", "updated"), ("removed", "deleted"))

    def fetch(fetcher: Fetcher, project_id: str) -> Details:
        return unique(fetcher.list(f"/organization/projects/{project_id}/{path}", parse), what, project_id)

    def render(project_id: str, members: Details, per_item: bool) -> Sequence[bytes]:
        counts = dict.fromkeys(roles, 0) | Counter(m.role for m in members)
        return ("".join(sample(metric, {"project_id": project_id, "role": r}, n) for r, n in counts.items()).encode(),)

    def diff(old: Details, new: Details, emails: bool) -> list[Change]:
        before, after = {m.id: m for m in old}, {m.id: m for m in new}
        changes = []
        for member_id, member in after.items():
            if member_id not in before:
                changes.append(Change(resource, added, _fields(resource, member, emails, role=member.role)))
            elif before[member_id].role != member.role:
                fields = _fields(resource, member, emails, old_role=before[member_id].role, new_role=member.role)
                changes.append(Change(resource, "role_changed", fields))
        for member_id, member in before.items():
            if member_id not in after:
                changes.append(Change(resource, "removed", _fields(resource, member, emails, role=member.role)))
        return changes

    return Collector(
        name=name,
        help=f"{what}s of each active project, by role",
        default=default,
        fetch=fetch,
        families=(family,),
        render=render,
        diff=diff,
        changes=tuple((resource, c) for c in (added, "removed", "role_changed")),
        audited_by={f"{resource}_{change}": Audited((f"{event}.{kind}",), id_field, shared) for change, kind in kinds},
    )


def _fields(resource: str, member: Member, emails: bool, **more: object) -> dict[str, object]:
    fields: dict[str, object] = {("user_id" if resource == "project_user" else "service_account_id"): member.id}
    if emails and member.email:
        fields["email"] = member.email
    return fields | more


USERS = _collector(
    "users", "users", "project user", "project_user", "openai_project_users", ("owner", "member"), default=True
)
SERVICE_ACCOUNTS = _collector(
    "service-accounts",
    "service_accounts",
    "service account",
    "service_account",
    "openai_project_service_accounts",
    ("owner", "member", "none"),
    default=True,
)
