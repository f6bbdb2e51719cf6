"""The simulator: one plain ASGI app serving both APIs, plus its in-process httpx transport.

No web framework: routing is four prefixes, and staying on bare ASGI keeps the per-request overhead small enough
for a benchmark that drives tens of thousands of rows through it. All shared state (tables, tokens, windows,
statistics) is guarded by one ``threading.Lock`` because uvicorn may run the app in another thread than the test
that reads ``stats()``/``ground_truth()``; nothing awaits while holding it.
"""

from __future__ import annotations

import math
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx

from ..sources._accelo_catalog import RESOURCES
from . import _accelo, _awardco
from ._data import Record, Table, Users, build_table, build_users
from ._faults import FaultDecision, FixedWindow, decide
from ._model import ACCELO_ENTITIES, Mutation, Outage, SimConfig, SimStats
from ._reply import Reply, json_reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ACCELO_PREFIX = "/api/v0/"
_TOKEN_PATH = "/oauth2/v0/token"
_USERS_PATH = "/api/users"

_SERVER_ERRORS = {
    "500": ("internal_error", "An internal error occurred."),
    "502": ("bad_gateway", "Bad gateway."),
    "503": ("service_unavailable", "The service is temporarily unavailable."),
    "504": ("gateway_timeout", "The upstream server timed out."),
}
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>"
    b"\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class ConnectionDropped(Exception):
    """Raised after a partial body so the server (or the in-process transport) drops the connection."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _params(scope: Scope) -> dict[str, str]:
    # Last value wins for repeated parameters (AwardCo; the Accelo docs refuse them, which `_serve` checks first).
    return dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1"), keep_blank_values=True))


class Simulator:
    """The simulated Accelo + AwardCo APIs as an ASGI app. See ``syncflow.sim`` for the contract.

    A data request (Accelo list/count, AwardCo users) is numbered on arrival; mutations due at that number are
    applied, then it waits ``latency`` (± ``jitter``, plus ``slow_seconds`` for a slow fault) and is answered
    against the state and clock at that moment: 401 for bad credentials, 429 when the window is spent, the
    injected fault if any, else the real answer. Every data response carries the X-RateLimit-* headers and every
    response a ``Date`` header from ``config.clock``.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = cfg = config if config is not None else SimConfig()
        self._lock = threading.Lock()
        self._tables: dict[str, Table] = {
            e: build_table(cfg.seed, e, cfg.accelo_counts[e], cfg.accelo_id_base) for e in ACCELO_ENTITIES
        }
        self._paths = {RESOURCES[e].path.strip("/"): e for e in ACCELO_ENTITIES}
        self._users: Users = build_users(cfg.seed, cfg.awardco_users)
        if cfg.blank_cursor_dates:
            blank = random.Random(f"{cfg.seed}:blank")
            for table in self._tables.values():
                table.blank_cursor(blank, cfg.blank_cursor_dates)
            self._users.blank_cursor(blank, cfg.blank_cursor_dates)
        self._windows = {
            "accelo": FixedWindow(cfg.accelo_rate_limit, cfg.rate_window),
            "awardco": FixedWindow(cfg.awardco_rate_limit, cfg.rate_window),
        }
        self._credentials = _accelo.Credentials(cfg.accelo_client_id, cfg.accelo_client_secret)
        self._tokens: dict[str, float] = {}  # access token -> issue time (server clock)
        self._failed_logins: list[float] = []  # server times of recent failed Accelo authentications
        self._locked_until = 0.0
        self._pending: dict[int, list[Mutation]] = {}
        for mutation in cfg.mutations:
            self._pending.setdefault(mutation.after_requests, []).append(mutation)
        self._mutations_applied = 0
        self._jitter_rng = random.Random(f"{cfg.seed}:jitter")
        # The data-request number drives schedules and mutations; unlike the statistics it is never reset.
        self._data_number = 0
        self._token_number = 0  # numbers token requests for token_faults; never reset either
        self._data_by_api: Counter[str] = Counter()  # data requests per API, for outages
        self._outage_started: dict[int, float] = {}  # index in config.outages -> when it began (monotonic)
        self._in_flight = 0
        self._in_flight_by_api: Counter[str] = Counter()
        self._zero_stats()

    # ----------------------------------------------------------------------------------------------------------
    # Public helpers for tests and benchmarks.

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process httpx transport; a dropped connection surfaces as ``httpx.RemoteProtocolError``."""
        return SimTransport(self)

    def ground_truth(
        self, tables: Collection[str] | None = None, fields: Collection[str] | None = None
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """The current records (after any mutation), all fields as the API returns them, sorted by key.

        ``tables`` (``accelo.companies``, ``awardco.user``, ...) and ``fields`` narrow the answer: a benchmark of a
        million rows checks keys and cursors only, and the whole records would be a JSON document of gigabytes."""

        def rows(records: list[Record]) -> list[dict[str, Any]]:
            if fields is None:
                return [dict(r) for r in records]
            return [{f: r[f] for f in fields if f in r} for r in records]

        def wanted(source: str, table: str) -> bool:
            return tables is None or f"{source}.{table}" in tables

        with self._lock:
            truth: dict[str, dict[str, list[dict[str, Any]]]] = {
                "accelo": {
                    name: rows(table.records) for name, table in self._tables.items() if wanted("accelo", name)
                },
                "awardco": {"user": rows(self._users.records)} if wanted("awardco", "user") else {},
            }
            return {source: found for source, found in truth.items() if found or tables is None}

    def stats(self) -> SimStats:
        with self._lock:
            return SimStats(
                requests=self._requests,
                data_requests=self._data_requests,
                token_requests=self._token_requests,
                by_endpoint=dict(self._by_endpoint),
                by_status=dict(self._by_status),
                rate_limited=self._rate_limited,
                peak_in_flight=self._peak,
                peak_in_flight_by_api={"accelo": self._peak_by_api["accelo"], "awardco": self._peak_by_api["awardco"]},
                faults_injected=self._faults,
                faults_by_kind=dict(self._faults_by_kind),
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._zero_stats()

    def apply_mutation(self, mutation: Mutation) -> None:
        with self._lock:
            self._apply_mutation_locked(mutation)

    # ----------------------------------------------------------------------------------------------------------
    # State changes (all called with the lock held).

    def _now(self) -> float:
        """The server's clock (see SimConfig: offset from ours, and a step back after some request)."""
        cfg = self.config
        now = cfg.clock() + cfg.clock_offset
        step = cfg.clock_step_back
        if step is not None and self._data_number >= step[0]:
            now -= step[1]
        return now

    def _zero_stats(self) -> None:
        self._requests = 0
        self._data_requests = 0
        self._token_requests = 0
        self._by_endpoint: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._rate_limited = 0
        # Requests still being served count towards the new peak.
        self._peak = self._in_flight
        self._peak_by_api: Counter[str] = Counter(self._in_flight_by_api)
        self._faults = 0
        self._faults_by_kind: Counter[str] = Counter()

    def _apply_mutation_locked(self, mutation: Mutation) -> None:
        rng = random.Random(f"{self.config.seed}:mutation:{self._mutations_applied}")
        self._mutations_applied += 1
        now = int(self._now() - mutation.late_by)
        target: Table | Users = self._users if mutation.source == "awardco" else self._tables[mutation.entity]
        if mutation.modify:
            target.modify(rng, mutation.modify, now)
        if mutation.create:
            target.create(rng, mutation.create, now)
        if mutation.delete:
            target.delete(rng, mutation.delete)

    def _outage_locked(self, api: str, *, token: bool) -> Outage | None:
        """The outage refusing this request to `api`, if one is (or now becomes) active; counts data requests."""
        now = time.monotonic()
        active: Outage | None = None
        for index, outage in enumerate(self.config.outages):
            if outage.api != api or (token and not outage.include_token):
                continue
            started = self._outage_started.get(index)
            if started is None and self._data_by_api[api] >= outage.start_after_requests:
                started = self._outage_started[index] = now
            if started is not None and now < started + outage.seconds and active is None:
                active = outage
        if not token:
            self._data_by_api[api] += 1
        return active

    def _outage_reply(self, api: str, outage: Outage) -> Reply:
        self._count_fault("outage")
        if api == "awardco":
            return _awardco.error(outage.status, "unavailable")
        status, message = _SERVER_ERRORS.get(str(outage.status), ("service_unavailable", "Simulated outage."))
        return _accelo.error(outage.status, status, message)

    def _count_fault(self, kind: str) -> None:
        self._faults += 1
        self._faults_by_kind[kind] += 1

    # ----------------------------------------------------------------------------------------------------------
    # ASGI.

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not part of either API
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/_sim/"):
            await self._send(send, self._control(method, path, _params(scope)), self._now())
        elif path == _TOKEN_PATH:
            await self._token(scope, receive, send)
        elif path.startswith(_ACCELO_PREFIX) or path == _USERS_PATH:
            api = "awardco" if path == _USERS_PATH else "accelo"
            if method != "GET":
                await self._plain(send, f"{method} {path}", 405, api)
            else:
                await self._data(api, scope, send)
        else:
            await self._plain(send, f"{method} {path}", 404, "accelo")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _send(self, send: Send, reply: Reply, now: float, drop: bool = False) -> None:
        body = reply.body
        length = len(body) + 4096 if drop else len(body)
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(length).encode()),
        ]
        if self.config.send_date:
            headers.append((b"date", formatdate(now, usegmt=True).encode()))
        headers.extend((k.encode(), v.encode()) for k, v in reply.headers)
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if drop:
            # Promise more bytes than we send, send some, then fail: the server closes the connection mid-body.
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise ConnectionDropped("simulated connection drop")
        await send({"type": "http.response.body", "body": body})

    async def _plain(self, send: Send, endpoint: str, status: int, api: str) -> None:
        if api == "awardco":
            reply = _awardco.error(status, "not_found" if status == 404 else "method_not_allowed")
        else:
            reply = _accelo.error(status, "not_found" if status == 404 else "method_not_allowed", endpoint)
        with self._lock:
            self._requests += 1
            self._by_endpoint[endpoint] += 1
            self._by_status[status] += 1
            now = self._now()
        await self._send(send, reply, now)

    def _control(self, method: str, path: str, params: Mapping[str, str]) -> Reply:
        # Out-of-band endpoints for an out-of-process benchmark; deliberately not counted in the statistics.
        if method == "GET" and path == "/_sim/stats":
            return json_reply(200, self.stats().as_json())
        if method == "GET" and path == "/_sim/ground_truth":
            # ?tables=accelo.companies,awardco.user&fields=id,date_modified narrow it (comma lists; default: all).
            tables, fields = (params[k].split(",") if params.get(k) else None for k in ("tables", "fields"))
            return json_reply(200, self.ground_truth(tables, fields))
        if method == "POST" and path == "/_sim/reset_stats":
            self.reset_stats()
            return json_reply(200, {"ok": True})
        return json_reply(404, {"error": "not_found"})

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        cfg = self.config
        with self._lock:
            now = self._now()
            self._requests += 1
            self._token_requests += 1
            self._by_endpoint[f"{scope['method']} {_TOKEN_PATH}"] += 1
            self._token_number += 1
            fault = decide(cfg.token_faults, cfg.seed, self._token_number)
            drop = False
            if fault.slow:
                self._count_fault("slow")
            if fault.kind is not None:
                reply, drop = self._token_fault(fault.kind)
            elif scope["method"] != "POST":
                reply = _accelo.error(405, "method_not_allowed", "Use POST for the token endpoint.")
            elif self._locked_out_locked(now):
                reply = self._lockout_locked(now)
            else:
                problem = _accelo.token_request_error(_header(scope, b"authorization"), body, self._credentials)
                outage = self._outage_locked("accelo", token=True)
                if outage is not None:
                    reply = self._outage_reply("accelo", outage)
                elif problem is not None:
                    if problem.status == 401:
                        self._failed_login_locked(now)
                    reply = problem
                else:
                    token = secrets.token_urlsafe(24)
                    self._tokens[token] = now
                    reply = json_reply(
                        200,
                        {
                            "access_token": token,
                            "token_type": "bearer",
                            "expires_in": str(cfg.token_ttl),
                            "deployment": "syncflow-sim",
                            "scope": _accelo.token_scope(body),
                        },
                    )
            if not drop:
                self._by_status[reply.status] += 1
        if fault.slow:
            await anyio.sleep(cfg.token_faults.slow_seconds)
        await self._send(send, reply, now, drop=drop)

    def _token_fault(self, kind: str) -> tuple[Reply, bool]:
        """An injected token-endpoint failure, shaped as OAuth2 endpoints answer (``error``/``error_description``)."""
        self._count_fault(kind)
        if kind in _SERVER_ERRORS:
            status, message = _SERVER_ERRORS[kind]
            return json_reply(int(kind), {"error": status, "error_description": message}), False
        if kind == "html":
            return Reply(502, _HTML_502, content_type="text/html"), False
        if kind == "429":
            return json_reply(429, {"error": "too_many_requests", "error_description": "Slow down."}), False
        if kind == "401":
            return json_reply(
                401, {"error": "invalid_client", "error_description": "Client authentication failed."}
            ), False
        ok = json_reply(200, {"access_token": "x" * 32, "token_type": "bearer", "expires_in": "3600"})
        if kind == "malformed":
            return Reply(200, ok.body[: len(ok.body) // 2]), False
        return ok, True  # "drop": the connection breaks mid-body

    async def _data(self, api: str, scope: Scope, send: Send) -> None:
        cfg = self.config
        with self._lock:
            self._data_number += 1
            number = self._data_number
            for mutation in self._pending.pop(number, ()):
                self._apply_mutation_locked(mutation)
            self._requests += 1
            self._data_requests += 1
            self._by_endpoint[f"GET {scope['path']}"] += 1
            self._in_flight += 1
            self._in_flight_by_api[api] += 1
            self._peak = max(self._peak, self._in_flight)
            self._peak_by_api[api] = max(self._peak_by_api[api], self._in_flight_by_api[api])
            fault = decide(cfg.faults, cfg.seed, number)
            outage = self._outage_locked(api, token=False)
            delay = cfg.latency + (self._jitter_rng.uniform(-cfg.jitter, cfg.jitter) if cfg.jitter else 0.0)
            if fault.slow:
                self._count_fault("slow")
                delay += cfg.faults.slow_seconds
        try:
            if delay > 0:
                await anyio.sleep(delay)
            # The answer is computed after the latency, so it reflects the state (mutations, clock) at reply time.
            with self._lock:
                now = self._now()
                reply, drop = self._answer_locked(api, scope, fault, now, outage)
            await self._send(send, reply, now, drop=drop)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._in_flight_by_api[api] -= 1

    def _authorized(self, api: str, scope: Scope, now: float) -> bool:
        if api == "awardco":
            return _header(scope, b"apikey") == self.config.awardco_api_key
        auth = _header(scope, b"authorization")
        if not auth or auth[:7].lower() != "bearer ":
            return False
        issued = self._tokens.get(auth[7:].strip())
        return issued is not None and now < issued + self.config.token_ttl

    def _unauthorized(self, api: str) -> Reply:
        if api == "awardco":
            return _awardco.error(401, "unauthorized")
        return _accelo.error(401, "invalid_client", "The access token is missing, invalid or expired.")

    def _answer_locked(
        self, api: str, scope: Scope, fault: FaultDecision, now: float, outage: Outage | None = None
    ) -> tuple[Reply, bool]:
        window = self._windows[api]
        drop = False
        if outage is not None:
            # A gateway in front of the API answers: before authentication, and without spending the budget.
            reply = self._outage_reply(api, outage)
        elif api == "accelo" and self._locked_out_locked(now):
            reply = self._lockout_locked(now)
        elif not self._authorized(api, scope, now):
            # Unauthenticated calls do not consume the deployment's budget.
            reply = self._unauthorized(api)
            if api == "accelo":
                self._failed_login_locked(now)
        elif not window.acquire(now):
            reply = self._too_many(api, window.retry_after(now))
        elif self._forbidden(api, scope):
            if api == "awardco":
                reply = _awardco.error(403, "forbidden", "This API key may not read users.")
            else:
                reply = _accelo.error(
                    403, "invalid_permission", "The user is authenticated but does not have permission to perform "
                    "the action.",
                )  # fmt: skip
        elif fault.kind is None:
            reply = self._serve(api, scope)
        else:
            kind = fault.kind
            self._count_fault(kind)
            if kind in _SERVER_ERRORS:
                status, message = _SERVER_ERRORS[kind]
                reply = (
                    _awardco.error(int(kind), status) if api == "awardco" else _accelo.error(int(kind), status, message)
                )
            elif kind == "429":
                reply = self._too_many(api, 1)
                if api == "accelo":
                    # A 429 means the deployment's window is spent: its headers say so, with a reset one second
                    # away (Accelo sends no Retry-After on a 429; a client waits for X-RateLimit-Reset).
                    reply.headers.extend(
                        [("x-ratelimit-limit", str(window.limit)), ("x-ratelimit-remaining", "0"),
                         ("x-ratelimit-reset", str(math.ceil(now) + 1))]
                    )  # fmt: skip
                    self._by_status[reply.status] += 1
                    return reply, drop
            elif kind == "401":
                reply = self._unauthorized(api)
            elif kind == "html":
                reply = Reply(502, _HTML_502, content_type="text/html")
            else:  # "malformed" / "drop": the real answer, then broken in transit
                reply = self._serve(api, scope)
                if kind == "malformed":
                    reply = Reply(200, reply.body[: max(1, len(reply.body) // 2)], headers=reply.headers)
                else:
                    drop = True
        reply.headers.extend(window.headers(now))
        if not drop:
            self._by_status[reply.status] += 1
        return reply, drop

    def _forbidden(self, api: str, scope: Scope) -> bool:
        forbidden = self.config.forbidden
        if not forbidden:
            return False
        if api == "awardco":
            return "awardco.user" in forbidden
        # By table: forbidding accelo.prospects leaves accelo.prospects_types (GET /prospects/types) readable.
        path = scope["path"][len(_ACCELO_PREFIX) :].strip("/")
        table = self._paths.get(path.removesuffix("/count")) or self._paths.get(path, "")
        return f"accelo.{table}" in forbidden
    # The docs' lockout: more than `accelo_lockout_after` failed authentications within `accelo_lockout_seconds`
    # lock the client out for that long; any attempt while locked out restarts the timer. Only this answer carries
    # a Retry-After (the seconds left).
    def _failed_login_locked(self, now: float) -> None:
        cfg = self.config
        self._failed_logins = [t for t in self._failed_logins if t > now - cfg.accelo_lockout_seconds] + [now]
        if len(self._failed_logins) > cfg.accelo_lockout_after:
            self._locked_until = now + cfg.accelo_lockout_seconds

    def _locked_out_locked(self, now: float) -> bool:
        return now < self._locked_until

    def _lockout_locked(self, now: float) -> Reply:
        self._locked_until = now + self.config.accelo_lockout_seconds  # an attempt restarts the timer
        body = {
            "more_info": "https://api.accelo.com/docs/#status-codes",
            "status": "too_many_failed_logins",
            "message": "User is locked out by their IP due to too many failed authentication attempts. "
            "Please use the 'Retry-After' header for accessing the locked delay in seconds.",
        }
        return json_reply(401, body, [("retry-after", str(math.ceil(self._locked_until - now)))])

    def _too_many(self, api: str, retry_after: int) -> Reply:
        self._rate_limited += 1
        if api == "awardco":
            reply = _awardco.error(429, "too_many_requests")
            reply.headers.append(("retry-after", str(retry_after)))
            return reply
        # Accelo's docs give a 429 the X-RateLimit-* headers only; Retry-After is sent on a lockout alone.
        return _accelo.error(429, "too_many_requests", "Rate limit exceeded for this deployment.")

    def _serve(self, api: str, scope: Scope) -> Reply:
        params = _params(scope)
        if api == "awardco":
            cfg = self.config
            return _awardco.users_reply(
                self._users,
                params,
                since_param=cfg.awardco_updated_since_param,
                page_size_max=cfg.awardco_page_size_max,
                include_total=cfg.awardco_include_total,
                order=cfg.awardco_order,
                ties=random.Random(f"{cfg.seed}:ties:{self._data_number}"),
            )
        pairs = parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1"), keep_blank_values=True)
        repeated = sorted({name for name, _ in pairs if sum(1 for other, _ in pairs if other == name) > 1})
        if repeated:
            # The docs' invalid_request: "includes a parameter more than once".
            return _accelo.error(400, "invalid_request", f"Parameter {repeated[0]} is given more than once.")
        # Lists are found by their documented path (`/time/externals`, `/contracts/types`), each with its `/count`
        # where the docs give one (elsewhere that is a 404, as for any undocumented path).
        path = scope["path"][len(_ACCELO_PREFIX) :].strip("/")
        counting = path.endswith("/count") and path[: -len("/count")] in self._paths
        table = self._tables.get(self._paths.get(path[: -len("/count")] if counting else path, ""))
        if table is None or (counting and not RESOURCES[table.spec.name].count):
            return _accelo.error(404, "not_found", f"No such endpoint: {scope['path']}")
        if counting:
            return _accelo.count_reply(table, params)
        return _accelo.list_reply(table, params, page_size_max=self.config.accelo_page_size_max)


class SimTransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` over a Simulator, turning a simulated drop into the error a socket would give."""

    def __init__(self, app: Simulator) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except ConnectionDropped as exc:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body (simulated drop)", request=request
            ) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()
