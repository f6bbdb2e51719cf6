"""Authentication: a static API key header, and OAuth2 client credentials with a single-flight token refresh."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import httpx

from .._exceptions import AuthenticationError, HTTPStatusError, MalformedResponseError
from .._redaction import Secret
from ._body import DEFAULT_MAX_RESPONSE_MB
from ._errors import meta_message, send
from ._origin import redirect_error

__all__ = ["AccessToken", "ApiKeyAuth", "Authenticator", "OAuth2ClientCredentials", "server_time"]

logger = logging.getLogger("syncflow")

# Renew this long before the token's stated expiry, so a request never leaves with a token about to lapse.
_EXPIRY_MARGIN_SECONDS = 60.0


def server_time(response: httpx.Response) -> float | None:
    """The server's clock from the `Date` header, as a unix timestamp (None when absent or unreadable)."""
    value = response.headers.get("date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


class Authenticator(Protocol):
    """What the client needs from an auth scheme."""

    refreshable: bool

    async def headers(self) -> dict[str, str]: ...

    async def invalidate(self, headers: dict[str, str]) -> None:
        """The server refused these credentials; forget them if they are still current."""


class ApiKeyAuth:
    """A fixed API key sent in a header (by default `apiKey`)."""

    refreshable = False

    def __init__(self, key: Secret, header: str = "apiKey") -> None:
        self._key = key
        self._header = header

    def __repr__(self) -> str:
        return f"ApiKeyAuth(header={self._header!r}, key=****)"

    async def headers(self) -> dict[str, str]:
        return {self._header: self._key.reveal()}

    async def invalidate(self, headers: dict[str, str]) -> None:
        return None


@dataclass(frozen=True)
class AccessToken:
    """An OAuth2 access token (its value a `Secret`), when it is to be renewed, and the server's clock at issue."""

    value: Secret
    expires_at: float
    server_time: float | None


class OAuth2ClientCredentials:
    """OAuth2 client-credentials (a service application's client ID and secret).

    The token is cached until shortly before `expires_in`. Refresh is single-flight: however many requests find the
    token missing or refused at once, one token request is made and all of them use its answer.
    """

    refreshable = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        token_path: str,
        *,
        api: str,
        client_id: str,
        client_secret: Secret,
        scope: str = "read(all)",
        clock: Callable[[], float] = time.time,
        max_response_bytes: int = int(DEFAULT_MAX_RESPONSE_MB * 1024 * 1024),
        refused_hint: str = "check the client ID and client secret",
    ) -> None:
        # `refused_hint` is the source's own wording for refused credentials (which of its keys to check).
        self._refused_hint = refused_hint
        self._client = client
        self._max_response_bytes = max_response_bytes
        self._token_path = token_path
        self._api = api
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._clock = clock
        self._token: AccessToken | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        state = "none" if self._token is None else f"expires_in={self._token.expires_at - self._clock():.0f}s"
        return f"OAuth2ClientCredentials(client_id={self._client_id!r}, token={state})"

    async def headers(self) -> dict[str, str]:
        token = await self.token()
        return {"Authorization": f"Bearer {token.value.reveal()}"}

    async def token(self) -> AccessToken:
        current = self._token
        if current is not None and self._clock() < current.expires_at:
            return current
        async with self._lock:
            # Whoever waited on the lock finds the token the first holder fetched.
            current = self._token
            if current is not None and self._clock() < current.expires_at:
                return current
            self._token = await self._fetch()
            return self._token

    async def server_time(self) -> float | None:
        """The server's clock when the current token was issued (fetching one if needed)."""
        return (await self.token()).server_time

    async def invalidate(self, headers: dict[str, str]) -> None:
        current = self._token
        if current is not None and headers.get("Authorization") == f"Bearer {current.value.reveal()}":
            self._token = None

    async def _fetch(self) -> AccessToken:
        endpoint = f"POST {self._token_path}"
        response = await send(
            self._client, "POST", self._token_path, api=self._api, endpoint=endpoint,
            limit=self._max_response_bytes, failed="token request failed: ",
            data={"grant_type": "client_credentials", "scope": self._scope},
            auth=(self._client_id, self._client_secret.reveal()),
        )  # fmt: skip
        if response.status_code in (400, 401, 403):
            raise AuthenticationError(
                f"credentials refused ({response.status_code} {meta_message(response)}); {self._refused_hint}",
                api=self._api,
                endpoint=endpoint,
                status_code=response.status_code,
            )
        if 300 <= response.status_code < 400:
            raise redirect_error(
                response, api=self._api, endpoint=endpoint, key=f"{self._api}_base_url",
                base_url=str(self._client.base_url),
            )  # fmt: skip
        if response.status_code != 200:
            said = meta_message(response)
            raise HTTPStatusError(
                f"token request answered {response.status_code}" + (f" ({said})" if said else ""),
                api=self._api,
                endpoint=endpoint,
                status_code=response.status_code,
            )
        try:
            body = response.json()
            value = str(body["access_token"])
            expires_in = float(body.get("expires_in", 3600))  # some APIs send it as a string
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedResponseError(
                "token response is not the documented JSON", api=self._api, endpoint=endpoint
            ) from exc
        now = self._clock()
        lifetime = (
            max(0.0, expires_in - _EXPIRY_MARGIN_SECONDS)
            if expires_in > 2 * _EXPIRY_MARGIN_SECONDS
            else (expires_in / 2)
        )
        logger.debug("%s: access token obtained, valid for %.0f s", self._api, expires_in)
        return AccessToken(Secret(value), now + lifetime, server_time(response))
