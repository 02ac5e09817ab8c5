"""exporter/exposition.py: rendering a snapshot, the render cache, gzip and OpenMetrics framing,
the live tail, escaping, and promtool's verdict on the result."""

from __future__ import annotations

import gzip
import time
import tracemalloc

import pytest

from exporter.exposition import AGE_BUCKETS, Exposition, SnapshotRenderer, escape_label_value
from exporter.snapshot import Change, Snapshot
from tests.support.metrics import PER_PROJECT_FAMILIES, Metrics, promtool_check
from tests.support.rendering import Rendered, snapshot_of
from tests.support.rendering import make_project as project
from tests.support.upstream import fetch

DAY = 86400.0
NASTY_NAMES = [
    'Team "Alpha"',
    "Back\\slash",
    "two\nlines",
    "trailing backslash\\",
    '\\"both\\"',
    "検索チーム",
    "Données clients",
    "emoji 😀🚀",
    "tab\there and cr\rthere",
    "line\u2028separator",
    "null\x00byte",
    "{braces}=,commas",
    "",
]


def test_snapshot_block_matches_the_organization(simulator, make_client):
    projects = fetch(make_client(simulator().base_url)).projects
    rendered = Rendered()
    rendered.publish(snapshot_of(projects))
    metrics = rendered.scrape()

    by_status = {"active": 0, "archived": 0}
    for p in projects:
        by_status[p.status] += 1
    assert by_status["archived"] > 0
    assert metrics.values_by_label("openai_projects", "status") == by_status

    info = metrics.by_label("openai_project_info", "project_id")
    assert set(info) == {p.id for p in projects}
    assert all(s.value == 1 for s in metrics.samples("openai_project_info"))
    for p in projects:
        assert info[p.id] == {
            "project_id": p.id,
            "name": p.name or "",
            "status": p.status,
            "external_key_id": p.external_key_id or "",
            "residency": p.residency or "",
        }
    assert metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id") == {
        p.id: p.created_at for p in projects
    }
    assert metrics.values_by_label("openai_project_archived_timestamp_seconds", "project_id") == {
        p.id: p.archived_at for p in projects if p.archived_at is not None
    }


def test_counts_show_zero_archived_when_none_are():
    rendered = Rendered()
    rendered.publish(snapshot_of([project("proj_a"), project("proj_b")]))
    metrics = rendered.scrape()
    assert metrics.values_by_label("openai_projects", "status") == {"active": 2, "archived": 0}
    assert metrics.samples("openai_project_archived_timestamp_seconds") == []


def test_missing_fields_render_as_empty_labels():
    rendered = Rendered()
    rendered.publish(snapshot_of([project("proj_bare", name=None)]))
    assert rendered.scrape().by_label("openai_project_info", "project_id")["proj_bare"] == {
        "project_id": "proj_bare",
        "name": "",
        "status": "active",
        "external_key_id": "",
        "residency": "",
    }


def test_fractional_timestamps_round_trip():
    rendered = Rendered()
    rendered.publish(
        snapshot_of([project("proj_f", created_at=1711471533.25, status="archived", archived_at=1711471599.5)])
    )
    metrics = rendered.scrape()
    assert metrics.value("openai_project_created_timestamp_seconds", project_id="proj_f") == 1711471533.25
    assert metrics.value("openai_project_archived_timestamp_seconds", project_id="proj_f") == 1711471599.5


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0; charset=utf-8"])
def test_label_escaping_round_trips_through_the_parser(accept):
    projects = [
        project(f"proj_{n}", name=name, external_key_id=name, residency="GLOBAL") for n, name in enumerate(NASTY_NAMES)
    ]
    projects.append(project('proj_"odd\\id\n', name="odd id"))
    rendered = Rendered()
    rendered.publish(snapshot_of(projects))

    metrics = rendered.scrape(accept)

    info = metrics.by_label("openai_project_info", "project_id")
    for p in projects:
        assert info[p.id]["name"] == p.name
        assert info[p.id]["external_key_id"] == (p.external_key_id or "")
    assert set(metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id")) == {
        p.id for p in projects
    }


def test_escape_label_value():
    assert escape_label_value(None) == ""
    assert escape_label_value("") == ""
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label_value("plain ü") == "plain ü"


@pytest.mark.slow
def test_promtool_accepts_the_exposition():
    now = time.time()
    projects = [
        project(
            f"proj_{n}",
            name=name,
            created_at=now - n * DAY,
            status="archived" if n % 3 == 0 else "active",
            archived_at=now if n % 3 == 0 else None,
            external_key_id="ekm_1" if n % 2 else None,
            residency="EU_STORAGE_PROCESSING" if n % 2 else None,
        )
        for n, name in enumerate(NASTY_NAMES)
    ]
    rendered = Rendered()
    rendered.publish(snapshot_of(projects))
    rendered.record_success([Change("created", projects[0])])
    rendered.record_failure("rate_limited", 1.5)
    rendered.metrics.record_response(200)
    rendered.metrics.record_response(429)
    body, _ = rendered.scrape_bytes()

    result = promtool_check(body.decode())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", "promtool lint findings"


def test_age_histogram_buckets_by_status():
    now = time.time()
    ages = {"active": [0.5, 3, 10, 45, 100, 200, 400, 1000], "archived": [2, 800]}  # in days, off the bounds
    projects = [
        project(
            f"proj_{status}_{n}",
            status=status,
            created_at=now - age * DAY,
            archived_at=now if status == "archived" else None,
        )
        for status, days in ages.items()
        for n, age in enumerate(days)
    ]
    rendered = Rendered()
    rendered.publish(snapshot_of(projects))

    metrics = rendered.scrape()

    bounds = sorted(AGE_BUCKETS)
    assert bounds == [d * DAY for d in (1, 7, 30, 90, 180, 365, 730)]
    for status, days in ages.items():
        buckets = {
            float(s.labels["le"]): s.value
            for s in metrics.samples("openai_project_age_seconds_bucket")
            if s.labels["status"] == status
        }
        assert set(buckets) == {*bounds, float("inf")}
        for bound in bounds:
            assert buckets[bound] == sum(1 for age in days if age * DAY <= bound), (status, bound)
        assert buckets[float("inf")] == len(days)
        assert metrics.value("openai_project_age_seconds_count", status=status) == len(days)
        total = metrics.value("openai_project_age_seconds_sum", status=status)
        assert total == pytest.approx(sum(days) * DAY, abs=60)


def test_age_histogram_has_both_statuses_even_when_empty():
    rendered = Rendered()
    rendered.publish(snapshot_of([project("proj_a", created_at=time.time() - 10)]))
    metrics = rendered.scrape()
    assert metrics.value("openai_project_age_seconds_count", status="archived") == 0
    assert metrics.value("openai_project_age_seconds_count", status="active") == 1


def test_per_project_false_keeps_counts_and_ages_only(simulator, make_client):
    projects = fetch(make_client(simulator().base_url)).projects
    rendered = Rendered(per_project=False)
    rendered.publish(snapshot_of(projects))
    metrics = rendered.scrape()

    for family in PER_PROJECT_FAMILIES:
        assert family not in metrics.families
        assert family not in metrics.text
    assert sum(metrics.values_by_label("openai_projects", "status").values()) == len(projects)
    assert sum(metrics.value("openai_project_age_seconds_count", status=s) for s in ("active", "archived")) == len(
        projects
    )


def test_gzip_body_decompresses_to_the_identity_body():
    rendered = Rendered()
    exposition = rendered.publish(snapshot_of([project(f"proj_{n}", name=f"n{n}") for n in range(500)]))
    for tail in (b"", b"# a live tail\nmetric 1\n", b"another tail\n" * 100):
        zipped = b"".join(exposition.gzip_body(tail))
        assert gzip.decompress(zipped) == b"".join(exposition.body(tail))


def test_gzip_scrape_has_the_same_series_as_identity():
    rendered = Rendered()
    rendered.publish(snapshot_of([project("proj_a"), project("proj_b", status="archived", archived_at=5)]))
    identity, content_type = rendered.scrape_bytes()
    zipped, zipped_type = rendered.scrape_bytes(gzipped=True)
    assert zipped_type == content_type
    unzipped = Metrics(gzip.decompress(zipped).decode())
    plain = Metrics(identity.decode())
    # Same series; values of the live process metrics may move between the two scrapes.
    assert {(s.name, frozenset(s.labels.items())) for f in unzipped.families.values() for s in f.samples} == {
        (s.name, frozenset(s.labels.items())) for f in plain.families.values() for s in f.samples
    }
    assert unzipped.series("openai_project_info") == plain.series("openai_project_info")


def test_openmetrics_when_asked():
    rendered = Rendered()
    rendered.publish(snapshot_of([project("proj_a"), project("proj_b", status="archived", archived_at=5)]))
    text_body, text_type = rendered.scrape_bytes()
    om_body, om_type = rendered.scrape_bytes("application/openmetrics-text; version=1.0.0; charset=utf-8")

    assert text_type.startswith("text/plain; version=0.0.4")
    assert om_type.startswith("application/openmetrics-text")
    assert om_body.endswith(b"# EOF\n")
    openmetrics = Metrics(om_body.decode(), openmetrics=True)
    plain = Metrics(text_body.decode())
    for name in ("openai_projects", *PER_PROJECT_FAMILIES):
        assert openmetrics.series(name) == plain.series(name)
    assert openmetrics.value("openai_project_changes_total", change="created") == 0


def _render_from_scratch(snapshot: Snapshot) -> Exposition:
    return SnapshotRenderer(True).render(snapshot)


def test_rendering_after_changes_equals_rendering_from_scratch():
    """The cache of runs of projects gives, poll after poll, the bytes a fresh render gives."""
    projects = [project(f"proj_{n:05}", name=f"n{n}", created_at=1_700_000_000 + n) for n in range(2500)]
    renderer = SnapshotRenderer(True)
    previous = None
    polls = [
        projects,
        projects[:10] + [project("proj_00010", name="renamed")] + projects[11:],
        projects[:1500] + [project("proj_01500", status="archived", archived_at=1_750_000_000)] + projects[1501:],
        projects[:700] + projects[701:] + [project("proj_new", created_at=1_760_000_000)],
        projects[1000:],
        projects[1000:],
    ]
    for listed in polls:
        snapshot = Snapshot.build(listed, completed_at=time.time(), pages=25, duration=1.0, previous=previous)
        exposition = renderer.render(snapshot)
        fresh = _render_from_scratch(snapshot)
        assert exposition.body(b"") == fresh.body(b"")
        assert gzip.decompress(b"".join(exposition.gzip_body(b"tail 1\n"))) == b"".join(exposition.body(b"tail 1\n"))
        series = Metrics(b"".join(exposition.body(b"")).decode()).series("openai_project_info")
        assert len(series) == len(listed)
        previous = snapshot


def test_a_poll_with_no_change_reuses_the_rendered_bytes():
    renderer = SnapshotRenderer(True)
    first = Snapshot.build([project(f"proj_{n}") for n in range(1200)], completed_at=1.0, pages=12, duration=1.0)
    before = renderer.render(first)
    again = Snapshot.build(list(first.projects.values()), completed_at=2.0, pages=12, duration=1.0, previous=first)
    after = renderer.render(again)
    assert after.snapshot is again
    assert after.raw is before.raw and after.deflated is before.deflated and after.age_index is before.age_index
    assert b"".join(after.gzip_body(b"")) == b"".join(before.gzip_body(b""))


def _rendered_size(exposition: Exposition) -> int:
    return sum(map(len, exposition.body(b""))) + sum(map(len, exposition.gzip_body(b"")))


def test_a_render_holds_the_rendered_bytes_once_and_at_most_last_and_next():
    projects = [
        project(f"proj_{n:024x}", name=f"Project number {n}", created_at=1_600_000_000 + n) for n in range(20_000)
    ]
    first = snapshot_of(projects)
    renderer = SnapshotRenderer(True)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        exposition = renderer.render(first)
        kept, peak = tracemalloc.get_traced_memory()
        size = _rendered_size(exposition)
        # The cache is views into the exposition's buffers: no second copy, kept or passing.
        assert kept - before < 1.25 * size
        assert peak - kept < 0.25 * size

        changed = projects[:10_000] + [project("proj_renamed", name="new")] + projects[10_001:]
        second = Snapshot.build(changed, completed_at=time.time(), pages=200, duration=1.0, previous=first)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        renderer.render(second)
        peak = tracemalloc.get_traced_memory()[1]
        assert peak - before < 1.5 * size  # the next buffers beside the last ones, nothing more
    finally:
        tracemalloc.stop()


def test_a_poll_ending_renews_the_live_tail_at_once():
    """A tail rendered by a scrape just before a poll ends is never served after it, the
    first poll of the process included; within its second it serves the same bytes."""
    now = [1000.0]
    rendered = Rendered(clock=lambda: now[0])
    snapshot = snapshot_of([project("proj_a")])
    rendered.publish(snapshot)
    before = rendered.tail.scrape(rendered.current, None, False)[0][-1]
    assert Metrics(rendered.scrape_bytes()[0].decode()).value("openai_up") == 0
    assert rendered.tail.scrape(rendered.current, None, False)[0][-1] is before  # within TAIL_TTL: cached

    rendered.record_success([Change("created", snapshot.projects["proj_a"])])  # the clock stands still
    after = Metrics(rendered.scrape_bytes()[0].decode())
    assert after.value("openai_up") == 1
    assert after.value("openai_project_changes_total", change="created") == 1

    rendered.metrics.record_response(200)  # request counts may lag by up to TAIL_TTL, no more
    assert Metrics(rendered.scrape_bytes()[0].decode()).get("openai_api_requests_total", code="200") is None
    now[0] += 1.0
    assert Metrics(rendered.scrape_bytes()[0].decode()).value("openai_api_requests_total", code="200") == 1


def test_a_parts_openmetrics_variants_are_served_whole_and_gzipped_to_openmetrics_scrapes_only():
    from exporter.exposition import Part, Piece
    from exporter.snapshot import Snapshot

    text, bare = Piece.of(b"# TYPE x_total counter\n"), Piece.of(b"# TYPE x counter\n")
    samples = Piece.of(b'x_total{a="1"} 2\n')
    part = Part([text.raw, samples.raw], [text.deflated, samples.deflated], openmetrics={0: bare})
    exposition = Exposition(Snapshot({}, 0, 0, 0), [b"# first\n"], [Piece.of(b"# first\n").deflated])
    exposition = exposition.extended([part]).extended([part])  # twice: the positions follow
    tail = b"# EOF\n"
    for openmetrics, header in ((False, b"# TYPE x_total counter\n"), (True, b"# TYPE x counter\n")):
        plain = b"".join(bytes(b) for b in exposition.body(tail, openmetrics))
        assert plain == b"# first\n" + (header + b'x_total{a="1"} 2\n') * 2 + tail
        assert gzip.decompress(b"".join(bytes(b) for b in exposition.gzip_body(tail, None, openmetrics))) == plain
