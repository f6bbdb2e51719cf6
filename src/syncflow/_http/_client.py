"""One API's client: httpx.AsyncClient + auth + admission (`RateGate`) + bounded retries.

This module is the boundary where foreign errors (httpx, json) become syncflow's own (`_exceptions`), each naming
the API, the endpoint and what the API said; URLs are redacted before they reach a message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import backoff
import httpx

from .._exceptions import (
    AuthenticationError,
    HTTPStatusError,
    MalformedResponseError,
    SourceError,
    TransportError,
)
from ._auth import Authenticator, _meta_message, describe_transport_error, server_time
from ._body import DEFAULT_MAX_RESPONSE_MB, read_bounded
from ._limits import RateGate
from ._origin import redirect_error, untrusted_certificate

__all__ = ["RETRYABLE_STATUSES", "ApiClient", "Reply", "RequestStatistics", "RetryPolicy"]

logger = logging.getLogger("syncflow")

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries are always bounded by attempts *and* time (`backoff` alone would retry forever)."""

    max_tries: int = 9
    max_time: float = 300.0
    base: float = 0.5
    max_delay: float = 30.0


@dataclass(frozen=True)
class Reply:
    body: Any
    status_code: int
    server_time: float | None


@dataclass(frozen=True)
class RequestStatistics:
    api: str
    requests: int
    retries: int
    rate_limited: int
    token_refreshes: int
    by_status: Mapping[int, int]
    by_path: Mapping[str, PathStatistics]


@dataclass(frozen=True)
class PathStatistics:
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

        def _on_backoff(details: Any) -> None:
            self._retries += 1
            path = details["args"][0] if details.get("args") else "?"
            self._count(path, retries=1)
            exc = details.get("exception")
            # Says what happens next; only the error raised when retries run out says they are exhausted.
            logger.warning(
                "%s; retry %d in %.1f s",
                exc if exc is not None else f"{api} {path}: an error",
                details["tries"],
                details.get("wait", 0.0),
            )

        def _on_giveup(details: Any) -> None:
            # backoff re-raises this very exception: only now may its one line say that retries ran out.
            exc = details.get("exception")
            if isinstance(exc, SourceError) and _is_retryable(exc):
                exc.args = (f"{exc}; retries exhausted", *exc.args[1:])

        retrying = backoff.on_exception(
            backoff.expo,
            SourceError,
            giveup=lambda exc: not _is_retryable(exc),
            max_tries=retry.max_tries,
            max_time=retry.max_time,
            jitter=backoff.full_jitter,
            factor=retry.base,
            max_value=retry.max_delay,
            on_backoff=_on_backoff,
            on_giveup=_on_giveup,
            raise_on_giveup=True,
            logger=None,  # retries are logged by _on_backoff, without backoff's traceback-laden lines
        )
        self._get_with_retries = retrying(self._get_once)
        self._call_with_retries = retrying(self._call_once)

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
        reply: Reply = await self._get_with_retries(path, params, validate)
        return reply

    async def call(self, endpoint: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` (e.g. a token request) under the same retries and time bound as a GET."""
        result: T = await self._call_with_retries(endpoint, attempt)
        return result

    async def _call_once(self, endpoint: str, attempt: Callable[[], Awaitable[T]]) -> T:
        return await attempt()

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
        if status in (401, 403):
            return AuthenticationError(
                f"{detail}; check the {self.api} credentials and their permissions",
                api=self.api,
                endpoint=endpoint,
                status_code=status,
            )
        return HTTPStatusError(detail, api=self.api, endpoint=endpoint, status_code=status)


def _short_text(response: httpx.Response) -> str:
    content_type = response.headers.get("content-type", "")
    if "html" in content_type or response.content.lstrip()[:1] == b"<":
        return "an HTML error page"
    return ""
