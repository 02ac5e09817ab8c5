"""The collectors: one row per resource of a project. Adding a resource is one module and one row.

Each is switched by `--collector.NAME` / `--no-collector.NAME`, its environment variable,
or an organization's `collectors:` mapping in --config.file (exporter/settings.py reads
this table to declare them).
"""

from __future__ import annotations

from exporter.collectors.api_keys import API_KEYS
from exporter.collectors.base import Collector
from exporter.collectors.certificates import CERTIFICATES
from exporter.collectors.data_retention import DATA_RETENTION
from exporter.collectors.members import SERVICE_ACCOUNTS, USERS
from exporter.collectors.permissions import PERMISSIONS
from exporter.collectors.rate_limits import RATE_LIMITS
from exporter.collectors.spend_limits import SPEND_LIMITS

COLLECTORS: tuple[Collector, ...] = (
    USERS,
    SERVICE_ACCOUNTS,
    API_KEYS,
    SPEND_LIMITS,
    RATE_LIMITS,
    CERTIFICATES,
    PERMISSIONS,
    DATA_RETENTION,
)
BY_NAME = {collector.name: collector for collector in COLLECTORS}
