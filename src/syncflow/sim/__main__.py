"""``python -m syncflow.sim --port N``: serve the simulator on loopback for benchmarks and manual testing.

The first line of stdout is the base URL (``http://127.0.0.1:<port>``), printed once the server accepts
connections, so a parent process can start it with ``--port 0`` and read where it landed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

from ._app import ConnectionDropped, Simulator
from ._model import DEFAULT_ACCELO_COUNTS, Faults, SimConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m syncflow.sim", description="Serve the simulated Accelo and AwardCo APIs."
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every data request")
    p.add_argument("--jitter", type=float, default=0.0, help="+- uniform jitter around --latency, in seconds")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the default record counts")
    p.add_argument("--accelo-rate-limit", type=int, default=5000)
    p.add_argument("--awardco-rate-limit", type=int, default=1000)
    p.add_argument("--rate-window", type=float, default=3600.0, help="fixed rate-limit window in seconds")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--malformed-rate", type=float, default=0.0)
    p.add_argument("--slow-rate", type=float, default=0.0)
    p.add_argument("--slow-seconds", type=float, default=2.0)
    p.add_argument("--token-ttl", type=int, default=2592000, help="seconds an Accelo access token stays valid")
    p.add_argument("--no-total", action="store_true", help="omit 'total' from AwardCo bodies")
    p.add_argument("--updated-since-param", default="updated_since", help="name of AwardCo's updated-since parameter")
    p.add_argument("--clock-offset", type=float, default=0.0, help="seconds the server's clock runs ahead (- behind)")
    p.add_argument("--no-date", action="store_true", help="send no Date header")
    p.add_argument("--accelo-page-size-max", type=int, default=100, help="rows an Accelo list serves at most")
    p.add_argument("--accelo-id-base", type=int, default=0, help="offset of every Accelo id (2147483638: past 32 bits)")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        seed=args.seed,
        accelo_counts={name: round(n * args.scale) for name, n in DEFAULT_ACCELO_COUNTS.items()},
        awardco_users=round(250 * args.scale),
        latency=args.latency,
        jitter=args.jitter,
        accelo_rate_limit=args.accelo_rate_limit,
        awardco_rate_limit=args.awardco_rate_limit,
        rate_window=args.rate_window,
        faults=Faults(
            error_rate=args.error_rate,
            drop_rate=args.drop_rate,
            malformed_rate=args.malformed_rate,
            slow_rate=args.slow_rate,
            slow_seconds=args.slow_seconds,
        ),
        token_ttl=args.token_ttl,
        awardco_include_total=not args.no_total,
        awardco_updated_since_param=args.updated_since_param,
        clock_offset=args.clock_offset,
        send_date=not args.no_date,
        accelo_page_size_max=args.accelo_page_size_max,
        accelo_id_base=args.accelo_id_base,
    )


class _HideSimulatedDrops(logging.Filter):
    # A simulated drop is an exception raised on purpose; uvicorn would log each one as an application error.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def _bind(host: str, port: int) -> socket.socket:
    # Binding ourselves (rather than letting uvicorn do it) is what makes --port 0 report the port it got.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this. asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP,
        # and this one's is 0: without it, Nagle holds each response's body (uvicorn writes the head, then the
        # body) until the client's delayed ACK of the head, ~40 ms on top of every configured latency.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


async def _serve(app: Simulator, sock: socket.socket, host: str) -> None:
    import uvicorn  # lazily: in-process users of the simulator never need the server

    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        access_log=False,
        # The simulator sends its own Date header from its (injectable) clock; no Server header, like an API.
        date_header=False,
        server_header=False,
        backlog=1024,
        timeout_keep_alive=30,
    )
    logging.getLogger("uvicorn.error").addFilter(_HideSimulatedDrops())
    ready = asyncio.Event()

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # False when startup failed (uvicorn then exits on its own)
                ready.set()

    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    announced = asyncio.create_task(ready.wait())
    await asyncio.wait({serving, announced}, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        shown = f"[{host}]" if ":" in host else host
        print(f"http://{shown}:{bound_port}", flush=True)
    else:
        announced.cancel()
    await serving


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if importlib.util.find_spec("uvicorn") is None:
        # The server is an extra: the connector and the in-process simulator do without it.
        print("syncflow.sim: serving on a port needs uvicorn; pip install 'syncflow[sim]'", file=sys.stderr)
        return 2
    try:
        app = Simulator(config_from_args(args))
    except ValueError as exc:
        print(f"syncflow.sim: {exc}", file=sys.stderr)
        return 2
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(f"syncflow.sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal against the handler that was
    # installed before it started: make SIGTERM, like SIGINT, end in a clean exit status 0 rather than -15.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        asyncio.run(_serve(app, sock, args.host))
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
