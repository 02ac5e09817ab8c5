"""The upstream client: every project of the organization, page by page, or a PollError.

One poll is all or nothing: any failure raises PollError with a reason from
POLL_FAILURE_REASONS and a one-line message, and the caller publishes nothing.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import random
import re
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple

import certifi
import httpx
import orjson
import structlog

from exporter import __version__, redaction
from exporter.budget import LIST, BudgetCancelled, RequestBudget
from exporter.priority import PauseBudget
from exporter.settings import AdminKey, SettingsError
from exporter.snapshot import ACTIVE, ARCHIVED, Project

POLL_FAILURE_REASONS = (
    "auth",
    "rate_limited",
    "http_error",
    "timeout",
    "connection",
    "invalid_response",
    "pagination",
)
PAGE_SIZE = 100  # the upstream maximum: the fewest round trips
BACKOFF_BASE = 1.0
BACKOFF_CAP = 16.0
RETRY_AFTER_CAP = 120.0
MAX_RESPONSE_SIZE = 16 * 1024 * 1024  # --api.max-response-size's default: hundreds of times a full page
# httpx's own default: an idle connection older than this is not reused. A client whose polls
# are further apart closes its connections after each poll rather than hold their descriptors.
KEEPALIVE_EXPIRY = 5.0

log = structlog.get_logger("exporter.upstream")
# Upstream error messages may quote a masked key ("sk-admin-****abcd"); drop any such token.
_KEY_LIKE = re.compile(r"sk-[\w*.-]{3,}")


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """The one TLS context of every client: certifi's CA bundle, as httpx verifies by default.

    Building a context loads the whole bundle, which costs more time and memory than
    everything else an organization needs at start; contexts are safe to share between
    threads and connections.
    """
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context(cafile=certifi.where())
        return _ssl_context


# A query: a mapping, or pairs where a parameter repeats (group_by=project_id&group_by=model).
Params = Mapping[str, str | int] | list[tuple[str, str | int | float | bool | None]]


class PollError(Exception):
    """A failed poll: `reason` is a metric label, `message` one line for a human."""

    def __init__(self, reason: str, message: str, request_id: str | None = None, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.request_id = request_id
        self.status = status


class PollCancelled(Exception):
    """The daemon is stopping; the poll gives up without a verdict."""


class _ChainGaveUp(Exception):
    """A chain stops without a walk of its own (ProjectsClient.walk_chain)."""


@dataclass(frozen=True)
class Page:
    projects: list[Project]
    has_more: bool
    next_after: str | None
    ids: tuple[str, ...]  # the projects' ids, in order


@dataclass(frozen=True)
class FetchResult:
    projects: list[Project]
    pages: int
    paused_for_scrapes: float = 0.0  # seconds the poll stepped aside for scrapes (exporter.priority)


@dataclass(frozen=True)
class Walk:
    """Consecutive projects from one cursor; `stopped_at` is the anchor mark that ended it, if any."""

    projects: list[Project]
    stopped_at: int | None


class Answer(NamedTuple):
    """One upstream response, its body read whole and decoded."""

    status_code: int
    headers: httpx.Headers
    content: bytes


class PageMemo(NamedTuple):
    """What a page at one cursor held: its body's digest, its project ids and where it led."""

    digest: bytes
    ids: tuple[str, ...]
    has_more: bool
    next_after: str | None


class RequestLimiter:
    """Caps the requests in flight during a poll; every 429 halves the cap, down to one."""

    def __init__(self, limit: int):
        self.limit = limit
        self._busy = 0
        self._condition = threading.Condition()

    def __enter__(self) -> None:
        with self._condition:
            while self._busy >= self.limit:
                self._condition.wait()
            self._busy += 1

    def __exit__(self, *exc: object) -> None:
        with self._condition:
            self._busy -= 1
            self._condition.notify_all()

    def rate_limited(self) -> None:
        with self._condition:
            if self.limit > 1:
                self.limit = max(1, self.limit // 2)
                log.warning("poll_concurrency_reduced", concurrency=self.limit, reason="rate_limited")


class PollContext:
    """What every request of one poll shares: key, deadline, page budget and limiter."""

    def __init__(
        self,
        key: str,
        deadline: float,
        max_pages: int,
        concurrency: int = 1,
        known: Mapping[str, Project] | None = None,
    ):
        self.key = key
        self.deadline = deadline
        self.max_pages = max_pages
        self.limiter = RequestLimiter(concurrency)
        self.failed = threading.Event()  # one chain failed: the others stop at their next page
        self.known = known or {}  # the previous snapshot's projects, for pages that did not change
        self.pages_read: dict[str | None, PageMemo] = {}
        self.scrapes_first = PauseBudget()
        self._pages = 0
        self._lock = threading.Lock()

    @property
    def pages(self) -> int:
        return self._pages

    def count_page(self) -> None:
        with self._lock:
            self._pages += 1
            if self._pages > self.max_pages:
                raise PollError("pagination", f"more than {self.max_pages} pages (--poll.max-pages)")


class ApiClient:
    """What every upstream request shares: the connections, the key, the retries and the budget.

    The project list and each organization's details each have one, so that detail
    requests never hold a connection the list poll is waiting for.
    """

    def __init__(
        self,
        *,
        base_url: str,
        admin_key: AdminKey,
        timeout: float,
        max_retries: int,
        stop: threading.Event,
        on_response: Callable[[int], None] = lambda code: None,
        concurrency: int = 1,
        max_response_size: int = MAX_RESPONSE_SIZE,
        budget: RequestBudget | None = None,
        priority: int = LIST,
    ):
        self.base_url = base_url
        self._admin_key = admin_key
        self._timeout = timeout
        self._max_retries = max_retries
        self._stop = stop
        self._on_response = on_response
        self.concurrency = concurrency
        self._max_response_size = max_response_size
        self.budget = budget
        self._priority = priority
        self._random = random.Random()
        self._http = self._new_http()

    @property
    def max_response_size(self) -> int:
        """The most bytes a response may hold (--api.max-response-size): paged readers size pages by it."""
        return self._max_response_size

    def _new_http(self) -> httpx.Client:
        # No connection is opened before the first request, and never more than the poll's chains.
        return httpx.Client(
            # Only the encodings _Decoded bounds; httpx would also offer br and zstd when installed.
            headers={"User-Agent": f"openai-projects-exporter/{__version__}", "Accept-Encoding": "gzip, deflate"},
            limits=httpx.Limits(
                max_connections=self.concurrency,
                max_keepalive_connections=self.concurrency,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            timeout=self._timeout,
            verify=shared_ssl_context(),
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def release_connections(self) -> None:
        """Close the idle connections: between polls too far apart to reuse them, they only hold descriptors."""
        http, self._http = self._http, self._new_http()
        http.close()

    def read_key(self) -> str:
        try:
            key = self._admin_key.read()
        except SettingsError as exc:
            raise PollError("auth", str(exc)) from None
        return key  # registered with the redactor by AdminKey.read

    def authorize(self) -> str:
        """Read the key and send it from now on; it may have rotated since the last use."""
        key = self.read_key()
        # On the client, not per request: merging per-request headers costs more than the
        # JSON of a page. Set only when it changed: other threads may be sending with it.
        header = f"Bearer {key}"
        if self._http.headers.get("Authorization") != header:
            self._http.headers["Authorization"] = header
        return key

    def get(
        self,
        url: str,
        params: Params,
        deadline: float,
        *,
        limiter: RequestLimiter | None = None,
        accept: tuple[int, ...] = (200,),
        where: Mapping[str, object] | None = None,
    ) -> Answer:
        """One GET whose status is in `accept`, retried on 429, 5xx, timeouts and connection errors.

        Any other outcome raises PollError; `where` is added to the retry log lines.
        """
        attempt = 0
        not_before = 0.0  # a retry's backoff, waited out in the budget
        failure: PollError | None = None  # the last attempt's
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PollError("timeout", "the poll deadline passed (--poll.timeout)")
            waited = self._take_budget(deadline, not_before)
            if waited is None:  # the deadline came first
                if failure is None:
                    raise PollError("timeout", "the poll deadline passed while waiting for the request budget")
                failure.message += "; a retry would pass the poll deadline (the request budget is spent)"
                raise failure
            if self._priority != LIST:
                # Details wait behind the list and each other: only their time on the wire counts.
                deadline += waited
            remaining = deadline - time.monotonic()
            if limiter is not None:
                with limiter:
                    response = self._request(url, params, remaining, deadline)
            else:
                response = self._request(url, params, remaining, deadline)
            if isinstance(response, Answer):
                if response.status_code in accept:
                    if self.budget is not None:
                        self.budget.succeeded()
                    return response
                failure, retry_after = _http_failure(response), _retry_after(response.headers)
            else:
                failure, retry_after = response, None
            if failure.reason == "rate_limited":
                if limiter is not None:
                    limiter.rate_limited()
                if self.budget is not None:
                    self.budget.rate_limited(retry_after)
            retryable = failure.reason in ("rate_limited", "timeout", "connection") or (
                failure.reason == "http_error" and (failure.status or 0) >= 500
            )
            if not retryable or attempt >= self._max_retries:
                if retryable:
                    failure.message += f" (gave up after {attempt + 1} attempts)"
                raise failure
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if time.monotonic() + delay >= deadline:
                failure.message += f"; a retry in {delay:.1f}s would pass the poll deadline"
                raise failure
            attempt += 1
            log.warning(
                "request_retried",
                reason=failure.reason,
                detail=failure.message,
                attempt=attempt,
                delay=round(delay, 3),
                request_id=failure.request_id,
                **(where or {}),
            )
            if self.budget is not None:
                not_before = time.monotonic() + delay
            elif self._stop.wait(delay):
                raise PollCancelled()

    def _take_budget(self, deadline: float, not_before: float) -> float | None:
        """Wait for a slot of the budget, and for a retry's backoff; the seconds waited beyond the
        backoff, or None when the deadline passed first."""
        if self.budget is None:
            return 0.0
        started = max(time.monotonic(), not_before)
        try:
            limit = deadline if self._priority == LIST else None
            granted = self.budget.acquire(self._priority, self._stop, limit, not_before)
        except BudgetCancelled:
            raise PollCancelled() from None
        if not granted:
            return None
        return max(time.monotonic() - started, 0.0)

    def _request(self, url: str, params: Params, remaining: float, deadline: float) -> Answer | PollError:
        """One GET: the response, whatever its status, or the transport failure.

        A body over --api.max-response-size once decoded, or one still arriving at the poll
        deadline, fails the poll at once (PollError raised, not returned: never retried).
        """
        if self._stop.is_set():
            raise PollCancelled()
        # The client's own timeout unless the poll deadline is nearer: building a Timeout per
        # request adds up over the many pages of a large organization.
        timeout = remaining if remaining < self._timeout else httpx.USE_CLIENT_DEFAULT
        try:
            with self._http.stream("GET", url, params=params, timeout=timeout) as response:
                body = self._read_body(response, deadline)
        except httpx.TimeoutException:
            return PollError("timeout", f"no answer within {min(remaining, self._timeout):.1f}s")
        except httpx.TransportError as exc:
            detail = redaction.scrub(_KEY_LIKE.sub("sk-***", _one_line(str(exc))))  # HTTP libraries may quote headers
            return PollError("connection", f"{type(exc).__name__}: {detail}")
        self._on_response(response.status_code)
        return Answer(response.status_code, response.headers, body)

    def _read_body(self, response: httpx.Response, deadline: float) -> bytes:
        """The body, decoded, read chunk by chunk against the size bound and the poll deadline.

        The read timeout only bounds each wait for more bytes, so a body that trickles in
        would otherwise outlast any deadline; and a body is bounded once decoded, so that a
        small compressed one cannot inflate without limit.
        """
        limit, request_id = self._max_response_size, response.headers.get("x-request-id")
        decoded = _Decoded.of(response.headers.get("content-encoding"), request_id)
        if decoded is None and _declared_length(response.headers) > limit:
            raise _too_large(limit, request_id)  # said up front: not worth reading
        parts: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            if decoded is not None:
                chunk = decoded.decompress(chunk, limit - size)
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, request_id)
            parts.append(chunk)
            if time.monotonic() > deadline:
                raise PollError(
                    "timeout", "the poll deadline passed while the response was read (--poll.timeout)", request_id
                )
        if decoded is not None:
            rest = decoded.flush()
            if size + len(rest) > limit:
                raise _too_large(limit, request_id)
            parts.append(rest)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter, so many exporters do not retry in step."""
        # The exponent is bounded: 2.0**attempt overflows a float past 1023 (--api.max-retries has no maximum).
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 64))
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)


class ProjectsClient(ApiClient):
    """Lists /organization/projects with include_archived=true, following the cursor."""

    def __init__(self, *, max_pages: int, **common: Any):
        super().__init__(**common)
        self._url = f"{self.base_url}/organization/projects"
        self._max_pages = max_pages
        self._pages_before: dict[str | None, PageMemo] = {}

    def start_poll(self, deadline: float, known: Mapping[str, Project] | None = None) -> PollContext:
        return PollContext(self.authorize(), deadline, self._max_pages, self.concurrency, known)

    def finish_poll(self, poll: PollContext) -> None:
        """A poll succeeded: its pages are what the next poll compares its bodies with."""
        self._pages_before = poll.pages_read

    def walk(self, after: str | None, poll: PollContext, stop_at: Mapping[str, int] | None = None) -> Walk:
        """Follow the cursor from `after` to the end, or up to the first id in `stop_at`.

        The whole poll, or a stretch the chains left to walk (exporter/chains.py): it never
        gives up half way, and any failure fails the poll.
        """
        return self._follow(after, poll, stop_at or {}, chained=False, tolerate_unknown_cursor=False)

    def walk_chain(
        self, after: str | None, poll: PollContext, stop_at: Mapping[str, int], *, tolerate_unknown_cursor: bool
    ) -> Walk | None:
        """One chain of a chained poll: as `walk`, or None when the chain gives up.

        A chain gives up once another chain has failed the poll and, with
        `tolerate_unknown_cursor`, when its first page is refused with 400 or 404 (the anchor
        no longer exists).
        """
        try:
            return self._follow(after, poll, stop_at, chained=True, tolerate_unknown_cursor=tolerate_unknown_cursor)
        except _ChainGaveUp:
            return None

    def _follow(
        self,
        after: str | None,
        poll: PollContext,
        stop_at: Mapping[str, int],
        *,
        chained: bool,
        tolerate_unknown_cursor: bool,
    ) -> Walk:
        """The walk itself; _ChainGaveUp where a chain gives up (see walk_chain)."""
        projects: list[Project] = []
        seen: set[str] = set()
        first = True
        while True:
            if chained and poll.failed.is_set():
                raise _ChainGaveUp()
            poll.scrapes_first.pause_for_scrapes()
            poll.count_page()
            try:
                page = self.fetch_page(after, poll)
            except PollError as exc:
                if first and tolerate_unknown_cursor and exc.status in (400, 404):
                    raise _ChainGaveUp() from None
                raise
            first = False
            ids = page.ids
            if not seen.isdisjoint(ids) or len(set(ids)) != len(ids):  # set operations: one pass in C
                twice = next(i for n, i in enumerate(ids) if i in seen or i in ids[:n])
                raise PollError("pagination", f"project {twice} was listed twice")
            seen.update(ids)
            if stop_at and not stop_at.keys().isdisjoint(ids):
                end = next(n for n, i in enumerate(ids) if i in stop_at)
                projects.extend(page.projects[: end + 1])
                return Walk(projects, stop_at[ids[end]])
            projects.extend(page.projects)
            if not page.has_more:
                return Walk(projects, None)
            if page.next_after is None or page.next_after == after:
                raise PollError("pagination", f"the cursor did not advance after {after!r}")
            after = page.next_after

    def fetch_page(self, after: str | None, poll: PollContext) -> Page:
        """One page, retried on 429, 5xx, timeouts and connection errors at its own cursor."""
        params: dict[str, str | int] = {"limit": PAGE_SIZE, "include_archived": "true"}
        if after is not None:
            params["after"] = after
        response = self.get(self._url, params, poll.deadline, limiter=poll.limiter, where={"after": after})
        return self._page(after, response, poll)

    def _page(self, after: str | None, response: Answer, poll: PollContext) -> Page:
        """The page of a 200 answer; a body equal to the last poll's at this cursor is not parsed.

        Between two polls most pages come back byte for byte the same. Their projects are
        then the previous snapshot's, found by id, which saves the JSON parsing and the
        building of projects: most of a poll's CPU beyond the HTTP client's own.
        """
        poll.scrapes_first.pause_for_scrapes()  # the response is in: a second point to step aside
        body = response.content
        digest = hashlib.blake2b(body, digest_size=16).digest()
        memo = self._pages_before.get(after)
        if memo is not None and memo.digest == digest and poll.known:
            try:
                page = Page(list(map(poll.known.__getitem__, memo.ids)), memo.has_more, memo.next_after, memo.ids)
            except KeyError:  # the previous snapshot is not the one this memo was made with
                pass
            else:
                poll.pages_read[after] = memo
                return page
        page = parse_page(body, response.headers.get("x-request-id"))
        poll.pages_read[after] = PageMemo(digest, page.ids, page.has_more, page.next_after)
        return page


def _too_large(limit: int, request_id: str | None) -> PollError:
    return PollError(
        "invalid_response", f"the response is larger than {limit} bytes (--api.max-response-size)", request_id
    )


class _Decoded:
    """A gzip or deflate body decoded with a bound: never more output than the room left."""

    def __init__(self, wbits: int, encoding: str, request_id: str | None):
        self._zlib = zlib.decompressobj(wbits)
        self._encoding = encoding
        self._request_id = request_id
        self._started = False

    @classmethod
    def of(cls, encoding: str | None, request_id: str | None) -> _Decoded | None:
        """The decoder of a Content-Encoding, None for none; any other encoding fails the poll."""
        name = (encoding or "identity").strip().lower()
        if name == "identity":
            return None
        if name in ("gzip", "x-gzip"):
            return cls(zlib.MAX_WBITS | 16, name, request_id)
        if name == "deflate":
            return cls(zlib.MAX_WBITS, name, request_id)
        raise PollError("invalid_response", f"unsupported Content-Encoding {_one_line(name, 40)!r}", request_id)

    def decompress(self, data: bytes, room: int) -> bytes:
        """`data` decoded, stopping one byte past `room`: more than `room` bytes means too large."""
        try:
            out = self._zlib.decompress(data, room + 1)  # a max_length of 0 would mean no bound
        except zlib.error:
            if self._started or self._encoding != "deflate":
                raise PollError("invalid_response", f"the {self._encoding} body is corrupt", self._request_id) from None
            # "deflate" is meant to be zlib-wrapped, but some servers send it raw, as httpx allows.
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            self._started = True
            return self.decompress(data, room)
        self._started = True
        return out

    def flush(self) -> bytes:
        # Each decompress() above that stayed within its bound consumed all of its input, so
        # zlib holds next to nothing here.
        return self._zlib.flush()


def _declared_length(headers: httpx.Headers) -> int:
    try:
        return int(headers.get("content-length") or 0)
    except ValueError:  # h11 checks it; whatever gets past is left to the counted read
        return 0


def _http_failure(response: Answer) -> PollError:
    status, request_id = response.status_code, response.headers.get("x-request-id")
    detail = _upstream_message(response.content)
    if status in (401, 403):
        reason = "auth"
        message = f"HTTP {status}: an Admin API key of the organization is needed ({detail})"
    elif status == 429:
        reason, message = "rate_limited", f"HTTP 429: rate limited ({detail})"
    else:
        reason, message = "http_error", f"HTTP {status} ({detail})"
    return PollError(reason, message, request_id, status)


def _upstream_message(body: bytes) -> str:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError, RecursionError):
        message = None
    if not isinstance(message, str) or not message:
        return "no error message"
    return redaction.scrub(_KEY_LIKE.sub("sk-***", _one_line(message)))


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return _bounded(float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return _bounded(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return _bounded(when.timestamp() - time.time())


def _bounded(seconds: float) -> float | None:
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


class _Invalid(Exception):
    pass


def parse_page(body: bytes, request_id: str | None = None, limit: int = PAGE_SIZE) -> Page:
    """A ProjectListResponse of at most `limit` projects, tolerant of unknown and missing optional fields."""
    try:
        document = orjson.loads(body)  # faster than json; a large organization's poll parses many pages
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # json would refuse it too, after a deep recursion of its own
            raise PollError("invalid_response", "the response is nested too deeply", request_id) from None
        try:
            document = json.loads(body)  # also takes lone surrogate escapes, which orjson refuses
        except RecursionError:
            raise PollError("invalid_response", "the response is nested too deeply", request_id) from None
        except ValueError:
            raise PollError("invalid_response", "the response is not JSON", request_id) from None
    try:
        if not isinstance(document, dict):
            raise _Invalid("the response is not a JSON object")
        data = document.get("data")
        if not isinstance(data, list):
            raise _Invalid("`data` is not a list")
        if len(data) > limit:  # before building any project: an endless list must not fill the heap
            raise _Invalid(f"the page holds {len(data)} projects, more than the {limit} asked for")
        has_more = document.get("has_more")
        if not isinstance(has_more, bool):
            raise _Invalid("`has_more` is not a boolean")
        # Lone surrogates can only come from \uD800-\uDFFF escapes; without any, no string
        # needs cleaning and every item can take the fast path.
        escaped = b"\\u" in body and _SURROGATE_ESCAPE.search(body)  # `in` is a memchr-speed scan
        parse = parse_project if escaped else _parse_plain_project
        projects = [parse(item) for item in data]
        last_id = document.get("last_id")
        if last_id is not None and (not isinstance(last_id, str) or not last_id):
            raise _Invalid("`last_id` is not a string")
    except _Invalid as exc:
        raise PollError("invalid_response", str(exc), request_id) from None
    next_after = last_id or (projects[-1].id if projects else None)
    if has_more and not projects:
        raise PollError("pagination", "`has_more` is true but the page is empty", request_id)
    return Page(projects, has_more, next_after, tuple(map(_project_id, projects)))


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_STR_OR_NONE = (str, type(None))
_project_id = attrgetter("id")  # at C speed, for map()


def _parse_plain_project(item: object) -> Project:
    """parse_project for the common case: a type check per field, no helpers; anything unusual goes the long way."""
    if type(item) is dict:
        get = item.get
        project_id, created_at, archived_at = get("id"), get("created_at"), get("archived_at")
        name, status, key_id, residency = get("name"), get("status"), get("external_key_id"), get("residency")
        if (
            type(project_id) is str
            and project_id
            and type(created_at) is int
            and (archived_at is None or type(archived_at) is int)
            and type(name) in _STR_OR_NONE
            and type(status) in _STR_OR_NONE
            and type(key_id) in _STR_OR_NONE
            and type(residency) in _STR_OR_NONE
        ):
            if not status:
                status = ARCHIVED if archived_at is not None else ACTIVE
            return _new_project(Project, (project_id, name, status, created_at, archived_at, key_id, residency))
    return parse_project(item)


# The fast path builds the tuple itself: NamedTuple's keyword __new__ is Python code, and on a
# cold poll it costs more than the rest of the parsing. The order it builds in is checked here
# against the record's fields, so a field added to Project fails at import instead of shifting
# values silently (and tests hold this parser to parse_project).
_PLAIN_ORDER = ("id", "name", "status", "created_at", "archived_at", "external_key_id", "residency")
if _PLAIN_ORDER != Project._fields:
    raise ImportError(f"_parse_plain_project builds {_PLAIN_ORDER}, but Project's fields are {Project._fields}")
_new_project = tuple.__new__


def parse_project(item: object) -> Project:
    if not isinstance(item, dict):
        raise _Invalid("a project is not a JSON object")
    project_id = item.get("id")
    if not isinstance(project_id, str) or not project_id:
        raise _Invalid("a project has no `id`")
    project_id = _clean(project_id)
    created_at = _number(item.get("created_at"))
    if created_at is None:
        raise _Invalid(f"project {project_id}: `created_at` is not a number")
    archived_at = item.get("archived_at")
    if archived_at is not None:
        archived_at = _number(archived_at)
        if archived_at is None:
            raise _Invalid(f"project {project_id}: `archived_at` is not a number")
    status = _optional_text(item, "status", project_id) or (ARCHIVED if archived_at is not None else ACTIVE)
    return Project(
        id=project_id,
        name=_optional_text(item, "name", project_id),
        status=status,
        created_at=created_at,
        archived_at=archived_at,
        external_key_id=_optional_text(item, "external_key_id", project_id),
        residency=_optional_text(item, "residency", project_id),
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _optional_text(item: dict[str, Any], field: str, project_id: str) -> str | None:
    value = item.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"project {project_id}: `{field}` is not a string")
    return _clean(value)


def _clean(text: str) -> str:
    """Lone surrogates (valid in JSON escapes, invalid in UTF-8) become U+FFFD."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)
