"""The audit log: who made each change, activity by event type, and prompt refreshes of what changed."""

from __future__ import annotations

from exporter.collectors.base import Switch

AUDIT_COLLECTOR = Switch(
    "audit-log",
    "the audit log's events at each list poll: who made each change, events by type, and a prompt refresh "
    "of the project an event names",
    True,
)
NAME = AUDIT_COLLECTOR.name
