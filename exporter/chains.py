"""Parallel cursor chains: a full poll in a fraction of the sequential round trips.

Upstream paging is sequential by nature, but the previous snapshot says roughly where
each stretch of the list begins. Chain k starts at `after = previous_ids[k * step]` (its
anchor, rounded to the end of a page) and walks until it meets a later chain's anchor;
chain 0 starts at the top.
Stitching chain k up to and including anchor m, then chain m, gives exactly the list a
sequential walk gives: each chain is a contiguous run of the current list, and it ends
on the very item the next chain starts after.

When the previous order no longer holds, the result stays right and only gets slower:
- an anchor that vanished: its chain's first page is refused, and the chain before it
  walks on, past the missing anchor, to the next anchor it meets (or the end);
- an anchor that moved: the chain before it never meets it and walks on likewise; the
  stranded chain's pages are wasted, not used;
- anything else inconsistent (the list changed under the poll, an id twice): the
  stitched list is thrown away and one sequential walk decides.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import structlog

from exporter.priority import lower_thread_priority
from exporter.snapshot import Project
from exporter.upstream import PAGE_SIZE, FetchResult, PollContext, ProjectsClient, Walk

log = structlog.get_logger("exporter.chains")
MIN_PAGES_PER_CHAIN = 4  # below this, the chains' extra first pages cost more than they save


class _Chains(NamedTuple):
    """The chains of one poll, by number k: chain 0 starts at the top, chain k > 0 after its anchor."""

    starts: list[str | None]  # the cursor each chain starts after
    anchors: dict[str, int]  # anchor id -> the number of the chain that starts after it
    results: list[Walk | None]  # None: the chain gave up, its anchor refused (ProjectsClient.walk_chain)


def worth_chaining(previous_count: int, concurrency: int) -> bool:
    return concurrency > 1 and previous_count >= concurrency * PAGE_SIZE * MIN_PAGES_PER_CHAIN


def fetch_projects(
    client: ProjectsClient, deadline: float, previous: Mapping[str, Project] | None = None
) -> FetchResult:
    """The poll's entry point: chains when they pay off, else one sequential walk.

    `previous` is the last snapshot's projects, in upstream order: the chains start at
    their ids, and pages that did not change are taken from it unparsed.
    """
    previous = previous or {}
    poll = client.start_poll(deadline, previous)
    if worth_chaining(len(previous), client.concurrency):
        projects = _stitch(client, poll, _run_chains(client, poll, list(previous)))
        if projects is None:
            log.warning("chains_inconsistent", action="sequential walk")
            projects = client.walk(None, poll).projects
    else:
        projects = client.walk(None, poll).projects
    client.finish_poll(poll)
    return FetchResult(projects, poll.pages, poll.scrapes_first.paused)


def _run_chains(client: ProjectsClient, poll: PollContext, previous_ids: Sequence[str]) -> _Chains:
    """Walk every chain in its own daemon thread; the first failure fails the poll."""
    count = client.concurrency
    # Each anchor ends a page of a walk from the top, so the chains ask for the very pages a
    # sequential poll asks for, and unchanged ones are recognised and reused (ProjectsClient._page).
    anchor_ids = [previous_ids[(k * len(previous_ids) // count) // PAGE_SIZE * PAGE_SIZE - 1] for k in range(1, count)]
    starts: list[str | None] = [None, *anchor_ids]
    anchors = {anchor: k for k, anchor in enumerate(anchor_ids, start=1)}
    results: list[Walk | None] = [None] * count
    errors: list[BaseException] = []

    def chain(k: int) -> None:
        lower_thread_priority()
        later = {anchor: mark for anchor, mark in anchors.items() if mark > k}
        try:
            results[k] = client.walk_chain(starts[k], poll, later, tolerate_unknown_cursor=k > 0)
        except BaseException as exc:  # noqa: BLE001 - handed to the poll thread below
            errors.append(exc)
            poll.failed.set()

    # Each chain runs in a copy of the poll's context, so its log lines keep the poll's bound fields.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(chain, k), name="poll", daemon=True)
        for k in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    # No chain failed: a chain that gave up (a None result) had its anchor refused.
    return _Chains(starts, anchors, results)


def _stitch(client: ProjectsClient, poll: PollContext, chains: _Chains) -> list[Project] | None:
    starts, anchors, results = chains
    projects: list[Project] = []
    mark = 0
    while True:
        walk = results[mark]
        if walk is None:
            # The anchor was listed a moment ago but its chain was refused: walk it now.
            later = {a: m for a, m in anchors.items() if m > mark and results[m] is not None}
            walk = client.walk(starts[mark], poll, later)
        projects.extend(walk.projects)
        if walk.stopped_at is None:
            break
        mark = walk.stopped_at
    if len({p.id for p in projects}) != len(projects):
        return None
    return projects
