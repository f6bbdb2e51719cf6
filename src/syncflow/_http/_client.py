"""One API's client: httpx.AsyncClient + auth + admission (`RateGate`) + bounded retries.

Statuses and bodies become syncflow's errors here (`_exceptions`), each naming the API, the endpoint and what the
API said; httpx's transport failures become them in `_errors.send`, which every request goes through. Messages
name an endpoint by method and path, never by URL; the URLs a redirect or a refused origin names are redacted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import backoff
import httpx

from .._exceptions import (
    AuthenticationError,
    HTTPStatusError,
    MalformedResponseError,
    PermissionDenied,
    SourceError,
    TransportError,
)
from ._auth import Authenticator, server_time
from ._body import DEFAULT_MAX_RESPONSE_MB
from ._errors import meta_message, send
from ._limits import RateGate, parse_retry_after
from ._origin import redirect_error

__all__ = ["RETRYABLE_STATUSES", "ApiClient", "Reply", "RequestStatistics", "RetryPolicy", "RetryWindow"]

logger = logging.getLogger("syncflow")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries are bounded by time alone: a request is retried until `max_time` seconds after its first failure.

    No attempt count ends an outage early (9 tries of full-jitter backoff give up after ~40 s, while the promise is
    `max_retry_seconds`). The wait between tries is capped at `max_delay`, so a recovery is noticed within that; the
    last wait is cut to the time left, so giving up overshoots the bound by at most one request (its timeout).
    """

    max_time: float = 300.0
    base: float = 0.5
    max_delay: float = 30.0


class RetryWindow:
    """One request's retries: when its first failure happened, how many tries, and the next wait.

    `waits` is a `backoff` wait generator (backoff sends it each exception): full-jitter exponential backoff capped at
    `max_delay`, at least a 429's Retry-After (the server's word beats our guess; the gate also holds every request
    of the API until then), never past the deadline. It stops (and backoff gives up) once the deadline has passed.
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self.first_failure: float | None = None
        self.tries = 0

    @property
    def deadline(self) -> float:
        return (self.first_failure if self.first_failure is not None else self._clock()) + self.policy.max_time

    def waits(self) -> Generator[float, BaseException | None, None]:
        policy = self.policy
        steps = backoff.expo(factor=policy.base, max_value=policy.max_delay)
        next(steps)  # backoff.expo's first value is a priming None
        failure = yield 0.0  # backoff primes its generators with send(None); every later send is a failure
        while True:
            now = self._clock()
            if self.first_failure is None:
                self.first_failure = now
            self.tries += 1
            remaining = self.deadline - now
            if remaining <= 0:
                return  # backoff then re-raises the last failure
            wait = backoff.full_jitter(next(steps))
            retry_after = getattr(failure, "retry_after", None)
            if isinstance(retry_after, (int, float)):
                wait = max(wait, min(float(retry_after), policy.max_delay))
            failure = yield min(wait, remaining)


@dataclass(frozen=True)
class Reply:
    """One successful answer: its decoded JSON body, status and the server's clock (`Date`) when it said."""

    body: Any
    status_code: int
    server_time: float | None


@dataclass(frozen=True)
class RequestStatistics:
    """One API's requests in a sync (`SyncResult.requests[api]`): totals, by HTTP status and by path."""

    api: str
    requests: int
    retries: int
    rate_limited: int
    token_refreshes: int
    by_status: Mapping[int, int]
    by_path: Mapping[str, PathStatistics]
    # The same figures by the stream each request was made for (the label the source passes); a request made for no
    # stream (say, a token) is counted under its path.
    by_stream: Mapping[str, PathStatistics] = field(default_factory=dict)


@dataclass(frozen=True)
class PathStatistics:
    """The requests made to one path (`RequestStatistics.by_path[path]`)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, HTTPStatusError):
        return exc.status_code in RETRYABLE_STATUSES
    return isinstance(exc, (TransportError, MalformedResponseError))


class ApiClient:
    """GETs JSON from one API under its gate, with retries. Built inside the run, closed by its owner."""

    def __init__(
        self,
        api: str,
        http: httpx.AsyncClient,
        *,
        auth: Authenticator,
        gate: RateGate,
        retry: RetryPolicy,
        clock: Callable[[], float] = time.time,
        max_response_bytes: int = int(DEFAULT_MAX_RESPONSE_MB * 1024 * 1024),
    ) -> None:
        self.api = api
        self.http = http
        self.max_response_bytes = max_response_bytes
        self.auth = auth
        self.gate = gate
        self._clock = clock
        self._requests = 0
        self._retries = 0
        self._refreshes = 0
        self._by_status: dict[int, int] = {}
        self._by_path: dict[str, PathStatistics] = {}
        self._by_stream: dict[str, PathStatistics] = {}
        self._retry = retry

    async def retrying(self, attempt: Callable[[], Awaitable[T]], *, path: str, stream: str | None = None) -> T:
        """Run `attempt` under this API's retry policy (transient failures retried until the time bound).

        Every request goes through here, and so may other calls that must survive an outage (the token request that
        reads the server's clock at sync start). A fresh `backoff` wrapper per call keeps each call's window apart.
        """
        window = RetryWindow(self._retry, self._clock)

        def on_backoff(details: Any) -> None:
            self._on_backoff(path, window, details, stream)

        def on_giveup(details: Any) -> None:
            exc = details["exception"]
            if isinstance(exc, SourceError) and _is_retryable(exc):
                # backoff re-raises this very exception: only now may its one line say that retries ran out.
                exc.args = (f"{exc}; retries exhausted", *exc.args[1:])
            if window.first_failure is not None and _is_retryable(exc):
                logger.warning(
                    "%s: giving up on %s after %d tries over %.0f s (max_retry_seconds=%g)",
                    self.api,
                    path,
                    details["tries"],
                    self._clock() - window.first_failure,
                    window.policy.max_time,
                )

        async def once() -> T:
            # A coroutine function, so backoff picks its async retry loop (it inspects the target to decide).
            return await attempt()

        retried: Callable[[], Awaitable[T]] = backoff.on_exception(
            window.waits,
            SourceError,
            giveup=lambda exc: not _is_retryable(exc),
            max_tries=None,  # bounded by time alone (the window's deadline), see RetryPolicy
            max_time=None,
            jitter=None,  # the window jitters (and honours Retry-After) itself
            on_backoff=on_backoff,
            on_giveup=on_giveup,
            raise_on_giveup=True,
            logger=None,  # retries are logged by _on_backoff, without backoff's traceback-laden lines
        )(once)
        return await retried()

    def _on_backoff(self, path: str, window: RetryWindow, details: Any, stream: str | None = None) -> None:
        self._retries += 1
        self._count(path, stream, retries=1)
        exc = details.get("exception")
        deadline = window.deadline
        # Says what happens next; only the error raised when retries run out says they are exhausted.
        logger.warning(
            "%s; retry %d in %.1f s (gives up at %s UTC, %.0f s from now: max_retry_seconds=%g)",
            exc if exc is not None else f"{self.api} {path}: an error",
            window.tries,
            details.get("wait", 0.0),
            datetime.fromtimestamp(deadline, tz=timezone.utc).strftime("%H:%M:%S"),
            max(0.0, deadline - self._clock()),
            window.policy.max_time,
        )

    def __repr__(self) -> str:
        return f"<ApiClient {self.api} requests={self._requests} retries={self._retries} gate={self.gate!r}>"

    def statistics(self) -> RequestStatistics:
        return RequestStatistics(
            api=self.api,
            requests=self._requests,
            retries=self._retries,
            rate_limited=self._by_status.get(429, 0),
            token_refreshes=self._refreshes,
            by_status=dict(self._by_status),
            by_path=dict(self._by_path),
            by_stream=dict(self._by_stream),
        )

    def _count(
        self, path: str, stream: str | None = None, *, requests: int = 0, retries: int = 0, rate_limited: int = 0
    ) -> None:
        for table, label in ((self._by_path, path), (self._by_stream, stream or path)):
            seen = table.get(label, PathStatistics())
            table[label] = PathStatistics(
                seen.requests + requests, seen.retries + retries, seen.rate_limited + rate_limited
            )

    async def get_json(
        self,
        path: str,
        params: Mapping[str, str | int],
        *,
        validate: Callable[[Any], str | None] | None = None,
        stream: str | None = None,
        decode: Callable[[bytes], Any] = json.loads,
    ) -> Reply:
        """GET `path` and return its JSON body; transient failures are retried, others raise at once.

        `validate` checks the body's shape and returns what is wrong with it (or None); a wrong shape counts as a
        malformed body, which is retried like a truncated one. `stream` labels the request in the statistics
        (`RequestStatistics.by_stream`): the engine reports each stream's requests from that label alone. `decode`
        turns the body's bytes into its value (a `_decode.PageDecoder`'s `loads` types a page's records as it
        parses them); like `json.loads` it raises ValueError on a body that is not JSON.
        """
        return await self.retrying(
            lambda: self._get_once(path, params, validate, stream, decode), path=path, stream=stream
        )

    async def call(self, endpoint: str, attempt: Callable[[], Awaitable[T]], *, stream: str | None = None) -> T:
        """Run `attempt` (e.g. a token request) under the same retries and time bound as a GET."""
        return await self.retrying(attempt, path=endpoint, stream=stream)

    async def _get_once(
        self,
        path: str,
        params: Mapping[str, str | int],
        validate: Callable[[Any], str | None] | None,
        stream: str | None = None,
        decode: Callable[[bytes], Any] = json.loads,
    ) -> Reply:
        endpoint = f"GET {path}"
        refreshed = False
        while True:
            headers = await self.auth.headers()
            async with self.gate.admit(endpoint):
                self._requests += 1
                response = await send(
                    self.http, "GET", path, api=self.api, endpoint=endpoint, limit=self.max_response_bytes,
                    params=params, headers=headers,
                )  # fmt: skip
                content = response.content
                self.gate.observe(response.status_code, response.headers)
            status = response.status_code
            self._by_status[status] = self._by_status.get(status, 0) + 1
            self._count(path, stream, requests=1, rate_limited=int(status == 429))
            if status == 401 and self.auth.refreshable and not refreshed:
                # An expired or revoked token: refresh once (single-flight) and try again.
                await self.auth.invalidate(headers)
                self._refreshes += 1
                refreshed = True
                continue
            if 300 <= status < 400:
                key = f"{self.api}_base_url"
                raise redirect_error(
                    response, api=self.api, endpoint=endpoint, key=key, base_url=str(self.http.base_url)
                )
            if status != 200:
                raise self._status_error(response, endpoint)
            try:
                body = decode(content)
            except (ValueError, UnicodeDecodeError) as exc:
                raise MalformedResponseError(
                    f"body is not JSON ({len(content)} bytes, content-type "
                    f"{response.headers.get('content-type', 'unknown')!r})",
                    api=self.api,
                    endpoint=endpoint,
                ) from exc
            problem = validate(body) if validate is not None else None
            if problem is not None:
                raise MalformedResponseError(problem, api=self.api, endpoint=endpoint)
            return Reply(body=body, status_code=status, server_time=server_time(response))

    def _status_error(self, response: httpx.Response, endpoint: str) -> HTTPStatusError:
        status = response.status_code
        said = meta_message(response) or _short_text(response)
        detail = f"answered {status}" + (f" ({said})" if said else "")
        if status == 403:
            # The credentials work (a token was issued) but may not read this resource: that stream is skipped.
            return PermissionDenied(
                f"{detail}; the {self.api} credentials may not read this resource",
                api=self.api,
                endpoint=endpoint,
                status_code=status,
            )
        if status == 401:
            return AuthenticationError(
                f"{detail}; check the {self.api} credentials and their permissions",
                api=self.api,
                endpoint=endpoint,
                status_code=status,
            )
        if status in RETRYABLE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock()) if status == 429 \
                else None  # fmt: skip
            return HTTPStatusError(
                detail, api=self.api, endpoint=endpoint, status_code=status,
                retry_after=retry_after,
            )  # fmt: skip
        return HTTPStatusError(detail, api=self.api, endpoint=endpoint, status_code=status)


def _short_text(response: httpx.Response) -> str:
    content_type = response.headers.get("content-type", "")
    if "html" in content_type or response.content.lstrip()[:1] == b"<":
        return "an HTML error page"
    return ""
