"""Content negotiation of /metrics that needs no running exporter."""

from __future__ import annotations

import pytest

from exporter.server import accepts_gzip


@pytest.mark.parametrize("header, gzip", [
    (None, False),
    ("", False),
    ("gzip", True),
    ("GZIP", True),
    ("gzip, deflate, br", True),
    ("deflate, gzip;q=0.1", True),
    ("gzip; q=0.5", True),
    ("gzip;q=0", False),
    ("gzip;q=0.000", False),
    ("identity", False),
    ("deflate, br", False),
    ("*", True),
    ("gzip;q=0, *", False),  # an explicit refusal beats the wildcard
    ("*;q=0, gzip", True),  # an explicit gzip beats the wildcard (RFC 9110 12.5.3)
])
def test_accepts_gzip(header, gzip):
    assert accepts_gzip(header) is gzip
