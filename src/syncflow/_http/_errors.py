"""Where httpx's failures become syncflow's: every request (a page GET, a token POST) is sent through `send`, so a
timeout, a refused connection, a DNS failure or an untrusted certificate reads the same whichever call met it.

Each message names the host and why, never the URL (its query may hold a token) nor a credential.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import httpx

from .._exceptions import SourceError, TransportError
from ._body import read_bounded
from ._origin import untrusted_certificate

__all__ = ["describe_transport_error", "meta_message", "send", "transport_error"]


async def send(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    api: str,
    endpoint: str,
    limit: int,
    failed: str = "",
    **options: Any,
) -> httpx.Response:
    """Send one request and read its body under `limit` bytes; an httpx transport failure raises syncflow's.

    `options` go to `httpx.AsyncClient.stream` (params, headers, data, auth); `failed` prefixes the failure's cause
    ("token request failed: "). Any status is returned: what a status means is the caller's to say.
    """
    try:
        async with http.stream(method, path, **options) as streamed:
            return await read_bounded(streamed, limit=limit, api=api, endpoint=endpoint)
    except httpx.TransportError as exc:
        raise transport_error(exc, api=api, endpoint=endpoint, host=http.base_url.host, failed=failed) from exc


def transport_error(
    exc: httpx.TransportError, *, api: str, endpoint: str, host: str, failed: str = ""
) -> SourceError:
    """syncflow's error for an httpx transport failure: an untrusted certificate is not retried (it does not cure
    itself), anything else is a retryable `TransportError` naming the host and the cause."""
    untrusted = untrusted_certificate(exc, api=api, endpoint=endpoint)
    if untrusted is not None:
        return untrusted
    return TransportError(f"{failed}{describe_transport_error(exc, host)}", api=api, endpoint=endpoint)


def describe_transport_error(exc: httpx.TransportError, fallback_host: str) -> str:
    """One short phrase naming the host and why the connection failed (refused, DNS, TLS, reset), never the URL.

    httpx wraps the socket's own error; the cause is read from that chain so the user sees what to fix.
    """
    try:
        host = exc.request.url.host or fallback_host
    except RuntimeError:  # an error raised before a request was attached
        host = fallback_host
    if isinstance(exc, httpx.TimeoutException):
        return f"{host}: timed out ({type(exc).__name__})"
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 10:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = getattr(cause, "verify_message", None) or "untrusted certificate"
            return f"{host}: TLS certificate verification failed ({detail})"
        if isinstance(cause, ssl.SSLError):
            return f"{host}: TLS handshake failed ({getattr(cause, 'reason', None) or type(cause).__name__})"
        if isinstance(cause, socket.gaierror):
            return f"{host}: DNS lookup failed (the host name does not resolve)"
        if isinstance(cause, ConnectionRefusedError):
            return f"{host}: connection refused (nothing listens on that port)"
        if isinstance(cause, ConnectionResetError):
            return f"{host}: connection reset by the peer"
        cause = cause.__cause__ or cause.__context__
        seen += 1
    text = str(exc).lower()
    # anyio and httpcore sometimes keep only the message; recognise the usual ones.
    for needle, phrase in (
        ("name or service not known", "DNS lookup failed (the host name does not resolve)"),
        ("nodename nor servname", "DNS lookup failed (the host name does not resolve)"),
        ("temporary failure in name resolution", "DNS lookup failed (temporary failure in name resolution)"),
        ("connection refused", "connection refused (nothing listens on that port)"),
        ("certificate verify failed", "TLS certificate verification failed"),
        ("ssl", "TLS handshake failed"),
    ):
        if needle in text:
            return f"{host}: {phrase}"
    return f"{host}: connection failed ({type(exc).__name__})"


def meta_message(response: httpx.Response) -> str:
    """The API's own short explanation, if the body has one (never echoes request data)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        meta = body.get("meta")
        if isinstance(meta, dict):
            parts = [str(meta.get(k)) for k in ("status", "message") if meta.get(k)]
            return ": ".join(parts)[:200]
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:200]
    return ""
