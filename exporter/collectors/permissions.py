"""Which models and hosted tools a project may use: two endpoints, one collector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from exporter.collectors.base import Audited, Change, Collector, Details, Family, Fetcher, Invalid, obj, sample, text

KNOWN_TOOLS = ("file_search", "web_search", "image_generation", "mcp", "code_interpreter")  # the contract's


class Permissions(NamedTuple):
    mode: str | None  # allow_list or deny_list; None when the project has no model permissions
    models: tuple[str, ...]
    tools: tuple[tuple[str, bool], ...]  # (tool, enabled), in the API's order


def parse_models(item: object) -> tuple[str, tuple[str, ...]]:
    entry = obj(item, "model permissions")
    models = entry.get("model_ids")
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise Invalid("model permissions: `model_ids` is not a list of strings")
    return text(entry, "mode", "model permissions"), tuple(sorted(set(models)))  # a model listed twice is one


def parse_tools(item: object) -> tuple[tuple[str, bool], ...]:
    entry = obj(item, "hosted tool permissions")
    tools = []
    for tool, state in entry.items():
        if tool not in KNOWN_TOOLS and (not isinstance(state, dict) or "enabled" not in state):
            continue  # new fields that are not a tool's switch may appear
        if not isinstance(state, dict):
            raise Invalid(f"hosted tool permissions: `{tool}` is not an object")
        enabled = state.get("enabled")
        if not isinstance(enabled, bool):
            raise Invalid(f"hosted tool permissions: `{tool}.enabled` is not a boolean")
        tools.append((tool, enabled))
    return tuple(tools)


def fetch(fetcher: Fetcher, project_id: str) -> Details:
    base = f"/organization/projects/{project_id}"
    models = fetcher.one(f"{base}/model_permissions", parse_models, missing_ok=True)
    tools = fetcher.one(f"{base}/hosted_tool_permissions", parse_tools, missing_ok=True) or ()
    mode, listed = models if models is not None else (None, ())
    return Permissions(mode, listed, tools)


MODELS = Family("openai_project_model_permissions", "Models listed in the project's allow or deny list")
TOOLS = Family("openai_project_hosted_tool_enabled", "1 when the hosted tool is enabled for the project")


def render(project_id: str, permissions: Details, per_item: bool) -> Sequence[bytes]:
    models = (
        sample(MODELS.name, {"project_id": project_id, "mode": permissions.mode}, len(permissions.models))
        if permissions.mode is not None
        else ""
    )
    tools = "".join(
        sample(TOOLS.name, {"project_id": project_id, "tool": tool}, int(on)) for tool, on in permissions.tools
    )
    return models.encode(), tools.encode()


def diff(old: Details, new: Details, emails: bool) -> list[Change]:
    changes = []
    if (old.mode, old.models) != (new.mode, new.models):
        fields: dict[str, object] = {"old_mode": old.mode, "new_mode": new.mode}
        fields["added_models"] = sorted(set(new.models) - set(old.models))
        fields["removed_models"] = sorted(set(old.models) - set(new.models))
        changes.append(Change("model_permissions", "changed", fields))
    before, after = dict(old.tools), dict(new.tools)
    for tool in sorted(before.keys() | after.keys()):
        if before.get(tool) != after.get(tool):
            fields = {"tool": tool, "old_enabled": before.get(tool), "new_enabled": after.get(tool)}
            changes.append(Change("hosted_tool_permission", "changed", fields))
    return changes


PERMISSIONS = Collector(
    name="permissions",
    help="the model and hosted-tool permissions of each active project",
    default=False,
    fetch=fetch,
    families=(MODELS, TOOLS),
    render=render,
    diff=diff,
    changes=(("model_permissions", "changed"), ("hosted_tool_permission", "changed")),
    # Project settings, with no event type of their own in the contract.
    audited_by={
        "model_permissions_changed": Audited(("project.updated",), "project_id"),
        "hosted_tool_permission_changed": Audited(("project.updated",), "project_id"),
    },
    count=lambda permissions: len(permissions.models) + len(permissions.tools),
)
