"""Spend and usage: the costs and usage endpoints' time buckets, as counters and month-to-date gauges."""

from __future__ import annotations

from exporter.collectors.base import Switch

SPEND_COLLECTORS = (
    Switch("costs", "daily costs per project and line item, as counters and month-to-date gauges", True),
    Switch("usage", "tokens, requests and the other usage figures per project and model, as counters", True),
)
