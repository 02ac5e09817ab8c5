"""The Fetcher of one refresh: list walks and single objects, through the organization's budget.

Pages that come back byte for byte as at the last refresh are not parsed again: their
records are the last refresh's own objects, so an unchanged project compares equal by
identity and costs no re-render (exporter/details/engine.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar, cast

import orjson

from exporter.collectors.base import Invalid
from exporter.upstream import PAGE_SIZE, Answer, ApiClient, PollError

R = TypeVar("R")


class ProjectGone(Exception):
    """A project's endpoint answered 404: the project was removed since the last list poll."""


class PageMemo(NamedTuple):
    digest: bytes
    items: tuple[Any, ...] | Any
    has_more: bool
    last_id: str | None


Memo = dict[tuple[str, str | None], PageMemo]  # (path, cursor) -> what the page held


class RefreshFetcher:
    """Implements exporter.collectors.base.Fetcher for one unit of work."""

    def __init__(self, client: ApiClient, deadline: float, max_pages: int, memo_before: Memo):
        self._client = client
        self._deadline = deadline
        self._max_pages = max_pages
        self._before = memo_before
        self.memo: Memo = {}  # this refresh's pages, for the next one
        self.requests = 0

    def list(self, path: str, parse: Callable[[object], R], params: Mapping[str, str] | None = None) -> tuple[R, ...]:
        items: list[R] = []
        after: str | None = None
        seen_cursors: set[str | None] = set()
        while True:
            if len(seen_cursors) >= self._max_pages:
                raise PollError("pagination", f"{path}: more than {self._max_pages} pages (--poll.max-pages)")
            seen_cursors.add(after)
            query: dict[str, str | int] = {"limit": PAGE_SIZE, **(params or {})}
            if after is not None:
                query["after"] = after
            answer = self._get(path, query, (200,), after)
            page = self._remembered(path, after, answer, lambda document: _list_page(document, parse))
            items.extend(page.items)
            if not page.has_more:
                return tuple(items)
            if page.last_id is None or page.last_id in seen_cursors:
                raise PollError("pagination", f"{path}: the cursor did not advance after {after!r}")
            after = page.last_id

    def one(self, path: str, parse: Callable[[object], R], *, missing_ok: bool = False) -> R | None:
        answer = self._get(path, {}, (200, 404) if missing_ok else (200,), None)
        if answer.status_code == 404:
            return None
        page = self._remembered(path, None, answer, lambda document: PageMemo(b"", parse(document), False, None))
        return cast(R, page.items)

    def _get(self, path: str, params: Mapping[str, str | int], accept: tuple[int, ...], after: str | None) -> Answer:
        self.requests += 1
        try:
            return self._client.get(
                self._client.base_url + path,
                params,
                self._deadline,
                accept=accept,
                where={"path": path, "after": after},
            )
        except PollError as exc:
            if exc.status == 404:
                raise ProjectGone() from None
            raise

    def _remembered(self, path: str, after: str | None, answer: Answer, parse: Callable[[Any], PageMemo]) -> PageMemo:
        digest = hashlib.blake2b(answer.content, digest_size=16).digest()
        memo = self._before.get((path, after))
        if memo is None or memo.digest != digest:
            try:
                memo = parse(_document(answer))._replace(digest=digest)
            except Invalid as exc:
                raise PollError("invalid_response", f"{path}: {exc}", answer.headers.get("x-request-id")) from None
        self.memo[(path, after)] = memo
        return memo


def _document(answer: Answer) -> Any:
    try:
        return orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        raise Invalid("the response is not JSON") from None


def _list_page(document: Any, parse: Callable[[object], R]) -> PageMemo:
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise Invalid("`data` is not a list")
    data = document["data"]
    if len(data) > PAGE_SIZE:
        raise Invalid(f"the page holds {len(data)} items, more than the {PAGE_SIZE} asked for")
    has_more = document.get("has_more")
    if not isinstance(has_more, bool):
        raise Invalid("`has_more` is not a boolean")
    items = tuple(parse(item) for item in data)
    last_id = document.get("last_id")
    if last_id is not None and not isinstance(last_id, str):
        raise Invalid("`last_id` is not a string")
    if last_id is None and data and isinstance(data[-1], dict) and isinstance(data[-1].get("id"), str):
        last_id = data[-1]["id"]
    if has_more and not items:
        raise Invalid("`has_more` is true but the page is empty")
    return PageMemo(b"", items, has_more, last_id)
