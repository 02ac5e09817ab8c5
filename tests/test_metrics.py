"""Rendering: snapshot block, live tail, escaping, gzip, OpenMetrics, and promtool's verdict."""

from __future__ import annotations

import gzip
import time
import tracemalloc

import pytest

from exporter import __version__
from exporter.exposition import AGE_BUCKETS, Exposition, LiveTail, SnapshotRenderer, escape_label_value
from exporter.pipeline import PollOutcome, Published
from exporter.selfmetrics import HealthMetrics, OrganizationMetrics, exporter_registry
from exporter.snapshot import CHANGE_KINDS, Change, Project, Snapshot
from exporter.upstream import POLL_FAILURE_REASONS
from helpers import PER_PROJECT_FAMILIES, Metrics, fetch, promtool_check

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


def project(pid: str, name: str | None = "Name", status: str = "active", created_at: float = 1_700_000_000,
            archived_at: float | None = None, external_key_id: str | None = None,
            residency: str | None = None) -> Project:
    return Project(pid, name, status, created_at, archived_at, external_key_id, residency)


def snapshot_of(projects, completed_at: float | None = None) -> Snapshot:
    return Snapshot.build(projects, completed_at=completed_at or time.time(), pages=1, duration=0.25)


class Rendered:
    """Renderer, registry, metrics and live tail of one organization, wired as the daemon wires them."""

    def __init__(self, per_project: bool = True):
        self.renderer = SnapshotRenderer(per_project)
        self.published = Published()
        self.registry = exporter_registry()
        self.metrics = OrganizationMetrics(HealthMetrics(self.registry), None, self.registry,
                                           lambda: self.published.current)
        self.tail = LiveTail(self.registry, lambda: (self.published.generation,))

    @property
    def current(self) -> Exposition:
        return self.published.current

    def publish(self, snapshot: Snapshot) -> Exposition:
        self.published.current = self.renderer.render(snapshot)
        return self.current

    def record_success(self, changes: list[Change], duration: float = 0.25) -> None:
        """What a poll's end records, as exporter.pipeline.Poller does."""
        snapshot = self.current.snapshot
        assert snapshot is not None
        self.metrics.record_success(snapshot, changes, duration)
        self.published.finish(PollOutcome(True, snapshot.completed_at, duration))

    def record_failure(self, reason: str, duration: float) -> None:
        self.metrics.record_failure(reason, duration)
        self.published.finish(PollOutcome(False, time.time(), duration, reason, "failed"))

    def scrape_bytes(self, accept: str | None = None, gzipped: bool = False) -> tuple[bytes, str]:
        chunks, content_type = self.tail.scrape(self.current, accept, gzipped)
        return b"".join(chunks), content_type

    def scrape(self, accept: str | None = None) -> Metrics:
        body, content_type = self.scrape_bytes(accept)
        return Metrics(body.decode(), openmetrics=content_type.startswith("application/openmetrics-text"))


def test_before_the_first_poll():
    rendered = Rendered()
    metrics = rendered.scrape()

    assert metrics.value("openai_up") == 0
    assert metrics.value("openai_last_successful_poll_timestamp_seconds") == 0
    assert metrics.value("openai_polls_total") == 0
    assert {k: metrics.value("openai_project_changes_total", change=k) for k in CHANGE_KINDS} == \
        dict.fromkeys(CHANGE_KINDS, 0)
    assert {r: metrics.value("openai_poll_failures_total", reason=r) for r in POLL_FAILURE_REASONS} == \
        dict.fromkeys(POLL_FAILURE_REASONS, 0)
    assert set(POLL_FAILURE_REASONS) == {"auth", "rate_limited", "http_error", "timeout", "connection",
                                         "invalid_response", "pagination"}
    assert set(CHANGE_KINDS) == {"created", "archived", "unarchived", "renamed", "removed"}
    assert metrics.value("openai_exporter_build_info", version=__version__) == 1
    # Nothing is known about the organization yet: no made-up zeros.
    assert "openai_projects" not in metrics.families
    assert "openai_project_age_seconds" not in metrics.families


def test_process_metrics_stay():
    metrics = Rendered().scrape()
    assert metrics.samples("process_cpu_seconds_total")
    assert metrics.samples("process_resident_memory_bytes")
    assert metrics.samples("python_info")
    assert metrics.samples("python_gc_objects_collected_total")


def test_snapshot_block_matches_the_organization(server, make_client):
    projects = fetch(make_client(server.base_url)).projects
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
        assert info[p.id] == {"project_id": p.id, "name": p.name or "", "status": p.status,
                              "external_key_id": p.external_key_id or "", "residency": p.residency or ""}
    assert metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id") == {
        p.id: p.created_at for p in projects}
    assert metrics.values_by_label("openai_project_archived_timestamp_seconds", "project_id") == {
        p.id: p.archived_at for p in projects if p.archived_at is not None}


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
        "project_id": "proj_bare", "name": "", "status": "active", "external_key_id": "", "residency": ""}


def test_fractional_timestamps_round_trip():
    rendered = Rendered()
    rendered.publish(snapshot_of([project("proj_f", created_at=1711471533.25, status="archived",
                                          archived_at=1711471599.5)]))
    metrics = rendered.scrape()
    assert metrics.value("openai_project_created_timestamp_seconds", project_id="proj_f") == 1711471533.25
    assert metrics.value("openai_project_archived_timestamp_seconds", project_id="proj_f") == 1711471599.5


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0; charset=utf-8"])
def test_label_escaping_round_trips_through_the_parser(accept):
    projects = [project(f"proj_{n}", name=name, external_key_id=name, residency="GLOBAL")
                for n, name in enumerate(NASTY_NAMES)]
    projects.append(project('proj_"odd\\id\n', name="odd id"))
    rendered = Rendered()
    rendered.publish(snapshot_of(projects))

    metrics = rendered.scrape(accept)

    info = metrics.by_label("openai_project_info", "project_id")
    for p in projects:
        assert info[p.id]["name"] == p.name
        assert info[p.id]["external_key_id"] == (p.external_key_id or "")
    assert set(metrics.values_by_label("openai_project_created_timestamp_seconds", "project_id")) == \
        {p.id for p in projects}


def test_escape_label_value():
    assert escape_label_value(None) == ""
    assert escape_label_value("") == ""
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label_value("plain ü") == "plain ü"


def test_promtool_accepts_the_exposition():
    now = time.time()
    projects = [project(f"proj_{n}", name=name, created_at=now - n * DAY,
                        status="archived" if n % 3 == 0 else "active",
                        archived_at=now if n % 3 == 0 else None, external_key_id="ekm_1" if n % 2 else None,
                        residency="EU_STORAGE_PROCESSING" if n % 2 else None)
               for n, name in enumerate(NASTY_NAMES)]
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


def test_promtool_accepts_the_exposition_before_the_first_poll():
    body, _ = Rendered().scrape_bytes()
    result = promtool_check(body.decode())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_age_histogram_buckets_by_status():
    now = time.time()
    ages = {"active": [0.5, 3, 10, 45, 100, 200, 400, 1000], "archived": [2, 800]}  # in days, off the bounds
    projects = [project(f"proj_{status}_{n}", status=status, created_at=now - age * DAY,
                        archived_at=now if status == "archived" else None)
                for status, days in ages.items() for n, age in enumerate(days)]
    rendered = Rendered()
    rendered.publish(snapshot_of(projects))

    metrics = rendered.scrape()

    bounds = sorted(AGE_BUCKETS)
    assert bounds == [d * DAY for d in (1, 7, 30, 90, 180, 365, 730)]
    for status, days in ages.items():
        buckets = {float(s.labels["le"]): s.value for s in metrics.samples("openai_project_age_seconds_bucket")
                   if s.labels["status"] == status}
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


def test_per_project_false_keeps_counts_and_ages_only(server, make_client):
    projects = fetch(make_client(server.base_url)).projects
    rendered = Rendered(per_project=False)
    rendered.publish(snapshot_of(projects))
    metrics = rendered.scrape()

    for family in PER_PROJECT_FAMILIES:
        assert family not in metrics.families
        assert family not in metrics.text
    assert sum(metrics.values_by_label("openai_projects", "status").values()) == len(projects)
    assert sum(metrics.value("openai_project_age_seconds_count", status=s) for s in ("active", "archived")) \
        == len(projects)


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
    assert {(s.name, frozenset(s.labels.items())) for f in unzipped.families.values() for s in f.samples} == \
        {(s.name, frozenset(s.labels.items())) for f in plain.families.values() for s in f.samples}
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


def test_record_success_and_failure():
    rendered = Rendered()
    snapshot = snapshot_of([project("proj_a")], completed_at=1_750_000_000.5)
    rendered.publish(snapshot)
    rendered.record_success([Change("created", snapshot.projects["proj_a"]),
                             Change("renamed", snapshot.projects["proj_a"], "old"),
                             Change("created", snapshot.projects["proj_a"])])
    after_success = rendered.scrape()
    rendered.metrics.record_response(200)
    rendered.metrics.record_response(200)
    rendered.metrics.record_response(503)
    rendered.record_failure("timeout", 2.5)
    after_failure = rendered.scrape()

    assert after_success.value("openai_up") == 1
    assert after_success.value("openai_polls_total") == 1
    assert after_success.value("openai_last_successful_poll_timestamp_seconds") == 1_750_000_000.5
    assert after_success.value("openai_poll_duration_seconds") == 0.25
    assert after_success.value("openai_project_changes_total", change="created") == 2
    assert after_success.value("openai_project_changes_total", change="renamed") == 1
    assert after_success.value("openai_project_changes_total", change="removed") == 0

    assert after_failure.value("openai_up") == 0
    assert after_failure.value("openai_polls_total") == 2
    assert after_failure.value("openai_poll_failures_total", reason="timeout") == 1
    assert after_failure.value("openai_poll_duration_seconds") == 2.5
    assert after_failure.value("openai_last_successful_poll_timestamp_seconds") == 1_750_000_000.5
    assert after_failure.values_by_label("openai_api_requests_total", "code") == {"200": 2, "503": 1}


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
    projects = [project(f"proj_{n:024x}", name=f"Project number {n}", created_at=1_600_000_000 + n)
                for n in range(20_000)]
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
    rendered = Rendered()
    rendered.tail = LiveTail(rendered.registry, lambda: (rendered.published.generation,), clock=lambda: now[0])
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
