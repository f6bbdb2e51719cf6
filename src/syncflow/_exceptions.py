"""syncflow's exceptions: one tree, so callers can catch as broadly or narrowly as they need.

    SyncflowError
    ├── ConfigurationError        a configuration value is missing or malformed (raised before any request)
    ├── StateError                a saved state document cannot be read
    └── SourceError               something went wrong talking to an API (names the API and endpoint)
        ├── HTTPStatusError       the API answered a status we do not retry (or retries ran out): 4xx, 5xx
        │   └── AuthenticationError   401/403 that a token refresh did not cure; bad credentials
        │       └── PermissionDenied  403 on one resource: the credentials work but may not read it (skipped)
        ├── TransportError        timeouts and connection failures that outlived their retries
        ├── MalformedResponseError    a body that is not the JSON shape the API promises
        └── BudgetExhausted       the rate budget is spent and its reset is further than the allowed wait
    └── StreamsFailed             one or more streams failed for good; every other stream completed (a summary)

Foreign errors are converted into this tree in the HTTP layer, with ``raise ... from exc`` so the original stays on
``__cause__``: httpx's transport failures in one place, `syncflow._http._errors.send`, statuses and bodies in
`syncflow._http._client` (and the token request's in `_auth`). No message ever contains a secret: an endpoint is
named by method and path, and the one URL a message may carry (a redirect's Location, a refused origin) is redacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AuthenticationError",
    "BudgetExhausted",
    "ConfigurationError",
    "HTTPStatusError",
    "MalformedResponseError",
    "PermissionDenied",
    "SourceError",
    "StateError",
    "StreamsFailed",
    "SyncflowError",
    "TransportError",
]


class SyncflowError(Exception):
    """The base of every error syncflow raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as class, args and attributes, not by calling __init__ again: the subclasses take keyword-only
        # arguments that `args` does not hold. (The connector's fetch process reports its errors this way.)
        return (_restore, (type(self), self.args, dict(self.__dict__)))


def _restore(kind: type[SyncflowError], args: tuple[Any, ...], attributes: dict[str, Any]) -> SyncflowError:
    error = kind.__new__(kind, *args)
    error.__dict__.update(attributes)
    return error


class ConfigurationError(SyncflowError, ValueError):
    """A configuration value is missing or malformed. The message names the key and the fix."""


class StateError(SyncflowError, ValueError):
    """A saved state document is corrupt or of an unknown version."""


class SourceError(SyncflowError):
    """A failure while talking to one API."""

    def __init__(self, message: str, *, api: str, endpoint: str) -> None:
        super().__init__(f"{api} {endpoint}: {message}")
        self.api = api
        self.endpoint = endpoint


class HTTPStatusError(SourceError):
    """The API answered with a status we do not (or no longer) retry."""

    def __init__(
        self, message: str, *, api: str, endpoint: str, status_code: int, retry_after: float | None = None
    ) -> None:
        super().__init__(message, api=api, endpoint=endpoint)
        self.status_code = status_code
        self.retry_after = retry_after  # seconds the server asked us to wait (a 429's Retry-After), if it said


class AuthenticationError(HTTPStatusError):
    """Credentials were refused (a token refresh did not help)."""


class PermissionDenied(AuthenticationError):
    """A 403 on one resource's endpoint: the credentials are valid but may not read it. That stream is skipped."""


class TransportError(SourceError):
    """The request could not be completed (timeout, connection reset) and retries ran out."""


class MalformedResponseError(SourceError):
    """The body is not the JSON shape the API documents, and retries ran out."""


class BudgetExhausted(SourceError):
    """The rate budget is spent and resets later than the configured maximum wait."""

    def __init__(self, message: str, *, api: str, endpoint: str, reset_in: float) -> None:
        super().__init__(message, api=api, endpoint=endpoint)
        self.reset_in = reset_in


class StreamsFailed(SyncflowError):
    """Some streams failed for good; the others ran to completion and everything delivered is checkpointed.

    `failures` maps each failed stream ("accelo.invoices") to its error; `result` is the sync's `SyncResult` (per
    stream: completed, skipped or failed, and why).
    """

    def __init__(self, message: str, *, failures: Mapping[str, SyncflowError], result: Any) -> None:
        super().__init__(message)
        self.failures = dict(failures)
        self.result = result
