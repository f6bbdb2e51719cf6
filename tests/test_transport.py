"""The API clients' transport (`_http._transport`): its pool still notices a connection the server has closed."""

from __future__ import annotations

import socket
import ssl

import anyio
import anyio.lowlevel
import httpx

from syncflow._http._transport import _readable, api_transport


def test_readable_means_a_read_would_return_at_once() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert not _readable(ours)  # idle: nothing to read, not closed
        theirs.sendall(b"x")
        assert _readable(ours)
        ours.recv(1)
        theirs.close()
        assert _readable(ours)  # closed by the peer: a read returns b"" at once
    assert _readable(None)


async def test_a_connection_the_server_closed_while_idle_is_replaced_not_reused() -> None:
    connections = 0

    async def serve(stream: anyio.abc.SocketStream) -> None:
        nonlocal connections
        connections += 1
        async with stream:
            await stream.receive(65536)
            body = b'{"ok": true}'
            # Keep-alive as far as the client knows, but the server closes right after answering.
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                              + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        transport = api_transport(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), limits)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):
                response = await client.get("/")
                assert response.json() == {"ok": True}
                await anyio.sleep(0.05)  # the server's close reaches the client's socket
        tg.cancel_scope.cancel()
    assert connections == 3  # each request found the previous connection closed and opened a new one


class _FakeInner:
    """Just enough of an httpcore network stream for `_Stream`: its raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, info: str) -> object:
        return self.sock if info == "socket" else None

    async def aclose(self) -> None:
        self.sock.close()


async def test_idle_connections_are_answered_by_one_poll_per_loop_step(monkeypatch) -> None:
    from syncflow._http import _transport

    polls: list[int] = []
    real = _transport._readable_fds

    def counting(fds):
        fds = list(fds)
        polls.append(len(fds))
        return real(fds)

    monkeypatch.setattr(_transport, "_readable_fds", counting)
    readability = _transport._Readability()
    pairs = [socket.socketpair() for _ in range(5)]
    streams = [_transport._Stream(_FakeInner(ours), readability) for ours, _ in pairs]  # type: ignore[arg-type]
    try:
        assert [s.get_extra_info("is_readable") for s in streams] == [False] * 5
        assert polls == [5]  # five questions in one step, one system call
        pairs[2][1].close()  # the server closes connection 2
        await anyio.lowlevel.checkpoint()  # the next step: the snapshot is gone
        assert [s.get_extra_info("is_readable") for s in streams] == [False, False, True, False, False]
        assert polls == [5, 5]
        await streams[0].aclose()  # a stream closing drops the snapshot at once, inside the same step
        assert streams[0].get_extra_info("is_readable") is True  # a closed socket reads as readable (gone)
        pairs[3][1].sendall(b"x")
        assert streams[3].get_extra_info("is_readable") is True
        assert polls == [5, 5, 4]
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
