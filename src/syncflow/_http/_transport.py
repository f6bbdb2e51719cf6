"""The transport of a sync's API clients: httpx's own, with a connection pool that checks idle connections cheaply.

Before and after every request, httpcore's pool asks each idle connection whether the server has closed it
(`has_expired` -> `get_extra_info("is_readable")`). Through anyio each such question builds the socket's whole
attribute table, with a `getpeername` system call, to find the raw socket; with a pool of `max_concurrency + 4`
connections that was about a sixth of the event-loop thread's CPU in `fivetran debug` (benchmarks/PROFILE.md),
CPU the GIL takes from the SDK's writer. Here each stream keeps its raw socket and answers that one question with
the same zero-timeout poll httpcore makes; everything else (reads, writes, TLS, timeouts, errors) is httpcore's and
httpx's, unchanged.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["api_transport"]


def _readable(sock: socket.socket | None) -> bool:
    # As httpcore's own check (httpcore._utils.is_socket_readable): a socket that is gone reads as readable, so the
    # connection is dropped; otherwise, whether a read would return at once (data, or b"" for a closed connection).
    if sock is None or sock.fileno() < 0:
        return True
    if not hasattr(select, "poll"):  # Windows
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()  # the backend httpx picks under asyncio, where syncflow's loop runs

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def api_transport(verify: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport for `verify` and `limits`, its pool built with the backend above."""
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    # httpx offers no parameter for the network backend; its pool is the one it would build, with that backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=verify,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_Backend(),
    )
    return transport
