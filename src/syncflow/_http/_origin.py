"""Where a credential may be sent: over https, or over plain http only to this machine; and only to the origin
(scheme, host, port) the configuration names. A redirect is never followed: it is reported with its `Location`.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from .._exceptions import HTTPStatusError, SourceError
from .._redaction import redact_url

__all__ = ["cleartext_problem", "is_loopback", "origin_guard", "redirect_error", "untrusted_certificate"]

LOOPBACK_HINT = "127.0.0.0/8, ::1, localhost"


def is_loopback(host: str) -> bool:
    """True for hosts that never leave this machine: 127.0.0.0/8, ::1 and the name localhost."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cleartext_problem(url: str, key: str) -> str | None:
    """The one-line refusal for a URL that would carry credentials unencrypted over a network, else None."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "http" and not is_loopback(parts.hostname or ""):
        return (
            f"{key}: http:// would send the credentials unencrypted; use https:// "
            f"(plain http is accepted only for loopback hosts: {LOOPBACK_HINT})"
        )
    return None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def origin_guard(base_url: str, *, api: str, key: str) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook refusing any request (credentials attached) whose origin is not `base_url`'s.

    Every path syncflow sends is relative to the base URL, so this never fires in normal use; it keeps a future
    absolute URL (a server-sent link, say) from carrying the API's credentials to a host nobody configured.
    """
    expected = _origin(httpx.URL(base_url))

    async def check(request: httpx.Request) -> None:
        if _origin(request.url) != expected:
            shown = redact_url(str(request.url.copy_with(query=None)))
            raise SourceError(
                f"refusing to send credentials to {shown}: it is not the origin of {key}",
                api=api,
                endpoint=f"{request.method} {request.url.path}",
            )

    return check


def _suggested_base(location: httpx.URL, request: httpx.URL, base_url: httpx.URL) -> str | None:
    """The base URL a moved API would have: Location minus the path syncflow added to the base URL, when Location
    does end with that path (a login page or a maintenance notice does not: then there is nothing to suggest)."""
    prefix = base_url.path.rstrip("/")
    if not request.path.startswith(prefix):
        return None
    added = request.path[len(prefix) :]
    if not added.strip("/") or not location.path.endswith(added):
        return None
    path = location.path[: -len(added)].rstrip("/") or "/"
    return str(location.copy_with(path=path, query=None, fragment=None)).rstrip("/")


def redirect_error(response: httpx.Response, *, api: str, endpoint: str, key: str, base_url: str) -> HTTPStatusError:
    """A 3xx answer as a non-retried error naming where it points, so a moved deployment says what to set."""
    status = response.status_code
    location = response.headers.get("location", "")
    if not location:
        return HTTPStatusError(
            f"answered {status} (a redirect without a Location); syncflow does not follow redirects",
            api=api,
            endpoint=endpoint,
            status_code=status,
        )
    target = response.request.url.join(location)
    suggestion = _suggested_base(target, response.request.url, httpx.URL(base_url))
    advice = f"if the API has moved, set {key} to {redact_url(suggestion)}" if suggestion else f"check {key}"
    return HTTPStatusError(
        f"answered {status} redirecting to {redact_url(str(target))}; syncflow does not follow redirects (they "
        f"could carry credentials to another origin): {advice}",
        api=api,
        endpoint=endpoint,
        status_code=status,
    )


def untrusted_certificate(exc: BaseException, *, api: str, endpoint: str) -> SourceError | None:
    """A TLS certificate the trust store refuses, as a non-retried error saying how to trust a proxy's CA.

    A refused certificate does not cure itself, so retrying it would only delay the answer."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "certificate verify failed"
            return SourceError(
                f"TLS certificate not trusted ({reason}); verification stays on: if a proxy re-signs TLS "
                "traffic, set ca_bundle to the path of its CA certificate (PEM)",
                api=api,
                endpoint=endpoint,
            )
        cause = cause.__cause__ or cause.__context__
    return None
