"""The transport of a sync's API clients: httpx's own, with a connection pool that checks idle connections cheaply.

Before and after every request, httpcore's pool asks each idle connection whether the server has closed it
(`has_expired` -> `get_extra_info("is_readable")`). Through anyio each such question builds the socket's whole
attribute table, with a `getpeername` system call, to find the raw socket, and then makes a zero-timeout poll of
its own. With a pool of `max_concurrency + 4` connections that is some twenty system calls per pool pass, two
passes per request, each releasing the GIL: in `fivetran debug` every release hands the interpreter to the SDK's
writer and makes the event loop wait for it back (up to the switch interval, 5 ms), and every such round trip costs
the writer a forced switch. So here the backend keeps the raw socket of each stream it opened, and the first
question in an event-loop step polls every one of them in one call; the rest of that step's questions (the same
pool pass, which asks them back to back without awaiting) read that answer. The snapshot is dropped at the next
step, and whenever a stream opens or closes, so no answer is older than the synchronous code that asks for it.
Everything else (reads, writes, TLS, timeouts, errors) is httpcore's and httpx's, unchanged.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import weakref
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
    return bool(_readable_fds([sock.fileno()]))


def _readable_fds(fds: Iterable[int]) -> set[int]:
    """Of `fds` (open descriptors), those a read would not block on: one zero-timeout poll for all of them."""
    wanted = list(fds)
    if not wanted:
        return set()
    if not hasattr(select, "poll"):  # Windows
        readable, _, _ = select.select(wanted, [], [], 0)
        return set(readable)
    poller = select.poll()
    for fd in wanted:
        poller.register(fd, select.POLLIN)
    # POLLNVAL/POLLERR/POLLHUP count as readable too, as in httpcore: such a connection must not be reused.
    return {fd for fd, _ in poller.poll(0)}


class _Readability:
    """Answers "is this idle connection's socket readable?" for every stream of one pool, one poll per loop step.

    `_answers` maps descriptor -> readable for the streams open when it was taken; it is forgotten at the next
    event-loop step (`call_soon`) and whenever a stream opens or closes (so a descriptor reused by a new connection
    is never answered from an old socket's poll).
    """

    def __init__(self) -> None:
        self._sockets: weakref.WeakKeyDictionary[_Stream, socket.socket] = weakref.WeakKeyDictionary()
        self._answers: dict[int, bool] | None = None

    def __repr__(self) -> str:
        held = "none" if self._answers is None else f"{sum(self._answers.values())}/{len(self._answers)} readable"
        return f"<_Readability streams={len(self._sockets)} snapshot={held}>"

    def track(self, stream: _Stream, sock: socket.socket | None) -> None:
        if sock is not None:
            self._sockets[stream] = sock
        self._answers = None

    def forget(self, stream: _Stream) -> None:
        self._sockets.pop(stream, None)
        self._answers = None

    def readable(self, sock: socket.socket | None) -> bool:
        if sock is None or sock.fileno() < 0:
            return True
        fd = sock.fileno()
        answers = self._answers
        if answers is None or fd not in answers:
            answers = self._snapshot()
        return answers[fd] if fd in answers else _readable(sock)  # a socket opened elsewhere: asked alone

    def _snapshot(self) -> dict[int, bool]:
        fds = {s.fileno() for s in list(self._sockets.values())} - {-1}
        readable = _readable_fds(fds)
        answers = {fd: fd in readable for fd in fds}
        try:
            asyncio.get_running_loop().call_soon(self._expire, answers)
        except RuntimeError:  # no running loop (not how httpcore calls it): answer this once, keep nothing
            return answers
        self._answers = answers
        return answers

    def _expire(self, answers: dict[int, bool]) -> None:
        if self._answers is answers:
            self._answers = None


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, readability: _Readability) -> None:
        self._inner = inner
        self._readability = readability
        self._socket: socket.socket | None = inner.get_extra_info("socket")
        readability.track(self, self._socket)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        self._readability.forget(self)
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        tls = _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout), self._readability)
        self._readability.forget(self)  # the same socket, now answered for by the TLS stream
        return tls

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._readability.readable(self._socket)
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()  # the backend httpx picks under asyncio, where syncflow's loop runs
        self._readability = _Readability()

    def __repr__(self) -> str:
        return f"<_Backend {self._readability!r}>"

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(inner, self._readability)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options), self._readability)

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
