"""One API's client: httpx.AsyncClient + auth + admission (`RateGate`) + bounded retries.

This module is the boundary where foreign errors (httpx, json) become syncflow's own (`_exceptions`), each naming
the API, the endpoint and what the API said; URLs are redacted before they reach a message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
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
from ._auth import Authenticator, _meta_message, describe_transport_error, server_time
from ._body import DEFAULT_MAX_RESPONSE_MB, read_bounded
from ._limits import RateGate, parse_retry_after
from ._origin import redirect_error, untrusted_certificate

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
        self._retry = retry

    async def retrying(self, attempt: Callable[[], Awaitable[T]], *, path: str) -> T:
        """Run `attempt` under this API's retry policy (transient failures retried until the time bound).

        Every request goes through here, and so may other calls that must survive an outage (the token request that
        reads the server's clock at sync start). A fresh `backoff` wrapper per call keeps each call's window apart.
        """
        window = RetryWindow(self._retry, self._clock)

        def on_backoff(details: Any) -> None:
            self._on_backoff(path, window, details)

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

    def _on_backoff(self, path: str, window: RetryWindow, details: Any) -> None:
        self._retries += 1
        self._count(path, retries=1)
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
        )

    def _count(self, path: str, *, requests: int = 0, retries: int = 0, rate_limited: int = 0) -> None:
        seen = self._by_path.get(path, PathStatistics())
        self._by_path[path] = PathStatistics(
            seen.requests + requests, seen.retries + retries, seen.rate_limited + rate_limited
        )

    async def get_json(
        self, path: str, params: Mapping[str, str | int], *, validate: Callable[[Any], str | None] | None = None
    ) -> Reply:
        """GET `path` and return its JSON body; transient failures are retried, others raise at once.

        `validate` checks the body's shape and returns what is wrong with it (or None); a wrong shape counts as a
        malformed body, which is retried like a truncated one.
        """
        return await self.retrying(lambda: self._get_once(path, params, validate), path=path)

    async def call(self, endpoint: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` (e.g. a token request) under the same retries and time bound as a GET."""
        return await self.retrying(attempt, path=endpoint)

    async def _get_once(
        self, path: str, params: Mapping[str, str | int], validate: Callable[[Any], str | None] | None
    ) -> Reply:
        endpoint = f"GET {path}"
        refreshed = False
        while True:
            headers = await self.auth.headers()
            async with self.gate.admit(endpoint):
                self._requests += 1
                try:
                    async with self.http.stream("GET", path, params=params, headers=headers) as streamed:
                        response = await read_bounded(
                            streamed, limit=self.max_response_bytes, api=self.api, endpoint=endpoint
                        )
                    content = response.content
                except httpx.TransportError as exc:
                    untrusted = untrusted_certificate(exc, api=self.api, endpoint=endpoint)
                    if untrusted is not None:
                        raise untrusted from exc
                    cause = describe_transport_error(exc, self.http.base_url.host)
                    raise TransportError(cause, api=self.api, endpoint=endpoint) from exc
                self.gate.observe(response.status_code, response.headers)
            status = response.status_code
            self._by_status[status] = self._by_status.get(status, 0) + 1
            self._count(path, requests=1, rate_limited=int(status == 429))
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
                body = json.loads(content)
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
        said = _meta_message(response) or _short_text(response)
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
