"""A project's mutual-TLS certificates: how many are active, and when each expires."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from exporter.collectors.base import (
    Audited,
    Change,
    Collector,
    Details,
    Family,
    Fetcher,
    Invalid,
    number,
    obj,
    optional_text,
    sample,
    text,
    unique,
    without_emails,
)


class Certificate(NamedTuple):
    id: str
    name: str | None
    active: bool
    expires_at: float | None


def parse_certificate(item: object) -> Certificate:
    entry = obj(item, "a certificate")
    certificate_id = text(entry, "id", "a certificate")
    where = f"certificate {certificate_id}"
    details = entry.get("certificate_details")
    expires = (
        number(obj(details, f"{where}: `certificate_details`"), "expires_at", where, required=False)
        if details is not None
        else None
    )
    active = entry.get("active")
    if not isinstance(active, bool):
        raise Invalid(f"{where}: `active` is not a boolean")
    return Certificate(certificate_id, optional_text(entry, "name", where), active, expires)


def fetch(fetcher: Fetcher, project_id: str) -> Details:
    certificates = fetcher.list(f"/organization/projects/{project_id}/certificates", parse_certificate)
    return unique(certificates, "certificate", project_id)


COUNT = Family("openai_project_certificates", "Certificates of the project, active or not")
EXPIRY = Family(
    "openai_project_certificate_expiry_timestamp_seconds", "Unix time the certificate expires", per_item=True
)


def render(project_id: str, certificates: Details, per_item: bool) -> Sequence[bytes]:
    counts = {"true": 0, "false": 0} | Counter("true" if c.active else "false" for c in certificates)
    count = "".join(sample(COUNT.name, {"project_id": project_id, "active": a}, n) for a, n in counts.items())
    expiry = [
        sample(
            EXPIRY.name,
            {"project_id": project_id, "certificate_id": c.id, "name": without_emails(c.name)},
            c.expires_at,
        )
        for c in certificates
        if per_item and c.expires_at is not None
    ]
    return count.encode(), "".join(expiry).encode()


def diff(old: Details, new: Details, emails: bool) -> list[Change]:
    before, after = {c.id: c for c in old}, {c.id: c for c in new}
    changes = [Change("certificate", "added", _fields(c)) for i, c in after.items() if i not in before]
    changes += [Change("certificate", "removed", _fields(c)) for i, c in before.items() if i not in after]
    return changes


def _fields(certificate: Certificate) -> dict[str, object]:
    return {"certificate_id": certificate.id, "name": certificate.name, "expires_at": certificate.expires_at}


CERTIFICATES = Collector(
    name="certificates",
    help="the certificates of each active project and their expiry",
    default=False,
    fetch=fetch,
    families=(COUNT, EXPIRY),
    render=render,
    diff=diff,
    changes=(("certificate", "added"), ("certificate", "removed")),
    audited_by={
        "certificate_added": Audited(("certificate.created",), "certificate_id"),
        "certificate_removed": Audited(("certificate.deleted",), "certificate_id"),
    },
)
