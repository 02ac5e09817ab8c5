"""docs/fault-matrix.md is the fault matrix table (tests/support/faults.py) rendered, never edited by hand."""

from __future__ import annotations

from tests.support.audit_faults import AUDIT_ROWS
from tests.support.detail_faults import DETAIL_ROWS
from tests.support.faultmatrix import COMMAND, render
from tests.support.faults import ROWS
from tests.support.process import REPO
from tests.support.spend_faults import SPEND_ROWS

DOCUMENT = REPO / "docs" / "fault-matrix.md"


def test_the_document_is_the_table_rendered():
    assert DOCUMENT.exists(), f"docs/fault-matrix.md is missing; generate it: {COMMAND}"
    assert DOCUMENT.read_text(encoding="utf-8") == render(), (
        f"docs/fault-matrix.md differs from the fault matrix table; regenerate it: {COMMAND}"
    )


def test_every_row_is_a_row_of_the_document():
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    every = [*ROWS, *DETAIL_ROWS, *SPEND_ROWS, *AUDIT_ROWS]
    assert [line.split("|")[1].strip().strip("`") for line in rows] == [row.id for row in every]
    assert len({row.id for row in every}) == len(every), "two rows share an id"
    assert all(row.description for row in every), "every row says what its fault is"
