"""Snapshots and the changes between two of them."""

from __future__ import annotations

from exporter.snapshot import ARCHIVED, CHANGE_KINDS, Change, Project, Snapshot, diff


def proj(
    pid: str, name: str | None = None, status: str = "active", archived_at: float | None = None, **fields
) -> Project:
    base = dict(
        id=pid,
        name=name if name is not None else f"name {pid}",
        status=status,
        created_at=1_700_000_000.0,
        archived_at=archived_at,
        external_key_id=None,
        residency=None,
    )
    base.update(fields)
    return Project(**base)


def snap(*projects: Project) -> Snapshot:
    return Snapshot.build(projects, completed_at=1.0, pages=1, duration=0.1)


def kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.kind, c.project.id) for c in changes]


def test_counts_always_have_active_and_archived():
    assert dict(snap().counts) == {"active": 0, "archived": 0}
    counted = snap(proj("a"), proj("b"), proj("c", status=ARCHIVED, archived_at=5))
    assert dict(counted.counts) == {"active": 2, "archived": 1}


def test_snapshot_keeps_upstream_order():
    order = ["p3", "p1", "p2"]
    assert list(snap(*(proj(p) for p in order)).projects) == order


def test_no_change_no_event():
    projects = [proj("a"), proj("b", status=ARCHIVED, archived_at=9)]
    assert diff(snap(*projects), snap(*projects)) == []


def test_each_kind_of_change():
    old = snap(
        proj("keep"),
        proj("to_archive"),
        proj("to_unarchive", status=ARCHIVED, archived_at=5),
        proj("to_rename", name="Old"),
        proj("to_remove"),
    )
    new = snap(
        proj("keep"),
        proj("to_archive", status=ARCHIVED, archived_at=6),
        proj("to_unarchive"),
        proj("to_rename", name="New"),
        proj("created"),
    )

    changes = diff(old, new)

    assert sorted(kinds(changes)) == sorted(
        [
            ("archived", "to_archive"),
            ("unarchived", "to_unarchive"),
            ("renamed", "to_rename"),
            ("created", "created"),
            ("removed", "to_remove"),
        ]
    )
    assert {c.kind for c in changes} == set(CHANGE_KINDS)
    renamed = next(c for c in changes if c.kind == "renamed")
    assert (renamed.old_name, renamed.project.name) == ("Old", "New")
    removed = next(c for c in changes if c.kind == "removed")
    assert removed.project == old.projects["to_remove"]  # the last known state, for the log line


def test_archived_and_renamed_in_one_poll_are_two_events():
    changes = diff(snap(proj("a", name="Before")), snap(proj("a", name="After", status=ARCHIVED, archived_at=7)))
    assert kinds(changes) == [("archived", "a"), ("renamed", "a")]
    assert changes[1].old_name == "Before"


def test_name_appearing_or_disappearing_is_a_rename():
    to_null = diff(snap(proj("a", name="Named")), snap(proj("a")._replace(name=None)))
    from_null = diff(snap(proj("a")._replace(name=None)), snap(proj("a", name="Named")))
    assert [(c.kind, c.old_name, c.project.name) for c in to_null] == [("renamed", "Named", None)]
    assert [(c.kind, c.old_name, c.project.name) for c in from_null] == [("renamed", None, "Named")]


def test_other_field_changes_are_not_events():
    old = snap(proj("a"))
    new = snap(proj("a", external_key_id="ekm_1", residency="GLOBAL"))
    assert diff(old, new) == []


def test_changes_follow_the_new_snapshot_order_then_removals():
    old = snap(proj("gone"), proj("b", name="x"))
    new = snap(proj("c"), proj("b", name="y"), proj("a"))
    assert kinds(diff(old, new)) == [("created", "c"), ("renamed", "b"), ("created", "a"), ("removed", "gone")]


def test_from_empty_every_project_is_created():
    new = snap(proj("a"), proj("b", status=ARCHIVED, archived_at=3))
    assert kinds(diff(snap(), new)) == [("created", "a"), ("created", "b")]
    assert kinds(diff(new, snap())) == [("removed", "a"), ("removed", "b")]


def test_a_poll_of_the_same_objects_shares_the_previous_mapping():
    before = snap(proj("a"), proj("b"), proj("c"))
    same = Snapshot.build(list(before.projects.values()), completed_at=2.0, pages=1, duration=0.1, previous=before)
    assert same.projects is before.projects
    assert diff(before, same) == []


def test_equal_but_changed_polls_do_not_share_the_mapping():
    before = snap(proj("a"), proj("b"), proj("c"))
    a, b, c = before.projects.values()
    for projects, expected in (
        ([a, c, b], []),  # reordered: same projects, new order
        ([a, b], [("removed", "c")]),
        ([a, b, c, proj("d")], [("created", "d")]),
        ([a, proj("b", name="renamed"), c], [("renamed", "b")]),
        ([proj("a"), proj("b"), proj("c")], []),  # equal copies, as a page parsed again gives
    ):
        after = Snapshot.build(projects, completed_at=2.0, pages=1, duration=0.1, previous=before)
        assert after.projects is not before.projects
        assert list(after.projects) == [p.id for p in projects]
        assert kinds(diff(before, after)) == expected
        # Equal projects are the previous snapshot's objects, so the next poll can share again.
        assert all(
            after.projects[i] is before.projects[i]
            for i in after.projects
            if i in before.projects and after.projects[i] == before.projects[i]
        )
