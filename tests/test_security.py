"""Safe on a hostile network: no credential in cleartext, no response without a size bound, no credential to another
origin, TLS verification always on (a CA bundle may be added). Against loopback servers where the network matters.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from support.helpers import RuleTransport
from support.loopback import serve_on_loopback
from support.sim import RecordingSink, sim_configuration
from syncflow import (
    ConfigurationError,
    MalformedResponseError,
    Secret,
    Settings,
    SourceError,
    SyncflowError,
)
from syncflow._http._body import _SLICE, _Inflater, read_bounded
from syncflow._http._origin import origin_guard, redirect_error
from syncflow._state import StateDocument
from syncflow._sync import run_sync, tls_verification
from syncflow.sim import SimConfig, Simulator
from syncflow.sources import AwardcoSettings

MIB = 1024 * 1024
REAL = {
    "accelo_deployment": "acme",
    "accelo_client_id": "id",
    "accelo_client_secret": "secret-not-shown",
    "awardco_api_key": "key-not-shown",
    "awardco_base_url": "https://api.awardco.example",
}


# ---------------------------------------------------------------------------------------------------------------
# 1. No credential in cleartext


@pytest.mark.parametrize("key", ["accelo_base_url", "awardco_base_url", "base_url"])
@pytest.mark.parametrize(
    "url", ["http://acme.example.com", "HTTP://acme.example.com", "http://10.0.0.1", "http://localhost.evil.example",
            "http://127.0.0.1.nip.io", "http://[::2]:80"],
)  # fmt: skip
def test_plain_http_to_a_network_host_is_refused_in_one_line(key: str, url: str) -> None:
    configuration = {k: v for k, v in REAL.items() if not (key == "base_url" and k == "awardco_base_url")}
    configuration[key] = url
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_mapping(configuration)
    message = str(refused.value)
    assert message.startswith(f"{key}: http:// would send the credentials unencrypted; use https://"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:9000", "http://localhost:1", "http://LOCALHOST.",
            "https://acme.example.com"],
)  # fmt: skip
def test_loopback_and_https_urls_are_accepted(url: str) -> None:
    settings = Settings.from_mapping({**REAL, "accelo_base_url": url, "awardco_base_url": url})
    assert settings.sources["accelo"].base_url == url.rstrip("/")
    assert settings.sources["awardco"].base_url == url.rstrip("/")


def test_settings_built_in_code_are_refused_before_any_request() -> None:
    # No configuration check runs for settings made in code, so the client factory checks again (the host does
    # not resolve: were a request made, the error would be a connection failure instead).
    settings = replace(
        Settings.from_mapping({**REAL, "sources": "awardco"}),
        sources={"awardco": AwardcoSettings(Secret("k"), "http://api.awardco.invalid", 1000)},
    )
    with pytest.raises(ConfigurationError, match=r"^awardco_base_url: http:// would send the credentials"):
        run_sync(settings, RecordingSink(), StateDocument())


async def test_no_request_leaves_for_another_origin() -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200, json={}))
    guard = origin_guard("https://api.awardco.example", api="awardco", key="awardco_base_url")
    async with httpx.AsyncClient(
        base_url="https://api.awardco.example", transport=transport, event_hooks={"request": [guard]}
    ) as client:
        await client.get("/api/users", headers={"apiKey": "k"})
        for elsewhere in ("https://evil.example/api/users", "http://api.awardco.example/api/users",
                          "https://api.awardco.example:8443/api/users"):  # fmt: skip
            with pytest.raises(SourceError, match=r"refusing to send credentials to .*not the origin of awardco_base"):
                await client.get(elsewhere, headers={"apiKey": "k"})
    assert [str(r.url) for r in sent] == ["https://api.awardco.example/api/users"]


# ---------------------------------------------------------------------------------------------------------------
# 2. Every response has a size bound (decoded)


class _Chunks(httpx.AsyncByteStream):
    """A body arriving in network-sized pieces, not read yet (as from a real connection)."""

    def __init__(self, data: bytes, size: int = 64 * 1024) -> None:
        self._data = data
        self._size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), self._size):
            yield self._data[start : start + self._size]


def _gzip(data: bytes, wbits: int = zlib.MAX_WBITS | 16) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


def _streamed(body: bytes, encoding: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json", **({"content-encoding": encoding} if encoding else {})}
    return httpx.Response(200, headers=headers, stream=_Chunks(body), request=httpx.Request("GET", "https://h/x"))


ZEROS_64_MIB = _gzip(bytes(64 * MIB))


async def _read(response: httpx.Response, limit: int) -> httpx.Response:
    return await read_bounded(response, limit=limit, api="awardco", endpoint="GET /api/users")


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [(None, lambda b: b), ("gzip", _gzip), ("x-gzip", _gzip), ("deflate", lambda b: _gzip(b, zlib.MAX_WBITS)),
     ("deflate", lambda b: _gzip(b, -zlib.MAX_WBITS)), ("identity", lambda b: b)],
)  # fmt: skip
async def test_a_body_within_the_bound_is_read_whole_and_decoded(
    encoding: str | None, pack: Callable[[bytes], bytes]
) -> None:
    body = json.dumps({"users": [{"employeeId": f"E{i}", "note": "x" * 900} for i in range(3000)]}).encode()
    assert 2 * MIB < len(body) < 3 * MIB
    read = await _read(_streamed(pack(body), encoding), limit=len(body))  # exactly at the bound is fine
    assert read.content == body and read.json()["users"][-1]["employeeId"] == "E2999"
    assert "content-encoding" not in read.headers


@pytest.mark.parametrize("encoding", ["gzip", None])
async def test_a_body_beyond_the_bound_is_an_error_naming_endpoint_size_and_key(encoding: str | None) -> None:
    body = ZEROS_64_MIB if encoding else bytes(3 * MIB)
    with pytest.raises(MalformedResponseError) as failure:
        await _read(_streamed(body, encoding), limit=1 * MIB)
    message = str(failure.value)
    assert message.startswith("awardco GET /api/users: body larger than 1 MiB once decoded"), message
    assert "raise max_response_mb" in message


async def test_compressed_bodies_in_any_framing_decode_whole() -> None:
    body = json.dumps({"users": [{"employeeId": f"E{i}"} for i in range(5000)]}).encode()
    half = len(body) // 2
    members = _gzip(body[:half]) + _gzip(body[half:])  # gzip allows several members back to back
    read = await _read(_streamed(members, "gzip"), limit=MIB)
    assert read.content == body
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):  # the first byte alone cannot tell zlib from raw deflate
        one_byte_chunks = httpx.Response(
            200, headers={"content-encoding": "deflate"}, stream=_Chunks(_gzip(body, wbits), size=1),
            request=httpx.Request("GET", "https://h/x"),
        )  # fmt: skip
        assert (await _read(one_byte_chunks, limit=MIB)).content == body


async def test_a_cut_compressed_body_is_malformed_not_a_short_page() -> None:
    packed = _gzip(json.dumps({"users": [{"employeeId": f"E{i}"} for i in range(5000)]}).encode())
    with pytest.raises(MalformedResponseError, match=r"body is not valid gzip .*ends early"):
        await _read(_streamed(packed[: len(packed) // 2], "gzip"), limit=MIB)


async def test_a_declared_length_over_the_bound_is_refused_before_reading() -> None:
    response = httpx.Response(
        200, headers={"content-length": str(5 * MIB)}, stream=_Chunks(b""), request=httpx.Request("GET", "https://h/x")
    )
    with pytest.raises(MalformedResponseError, match=r"larger than 1 MiB once decoded \(Content-Length 5,242,880"):
        await _read(response, limit=MIB)


def test_inflating_never_produces_more_than_a_slice_at_a_time() -> None:
    # One 64 KiB network read of a bomb is ~64 MiB inflated in one piece by a plain decoder.
    pieces = list(_Inflater("gzip").feed(ZEROS_64_MIB[: 64 * 1024]))
    assert max(map(len, pieces)) <= _SLICE and sum(map(len, pieces)) > 32 * MIB


@pytest.mark.parametrize(
    ("body", "encoding", "says"),
    [(b"\x1f\x8b\x08\x00not gzip at all", "gzip", "body is not valid gzip"),
     (b"{}", "br", "unsupported content-encoding 'br'"), (b"{}", "gzip, gzip", "unsupported content-encoding")],
)  # fmt: skip
async def test_a_body_that_cannot_be_decoded_under_the_bound_is_malformed(
    body: bytes, encoding: str, says: str
) -> None:
    with pytest.raises(MalformedResponseError, match=says):
        await _read(_streamed(body, encoding), limit=MIB)


def _bomb_on(path: str) -> Callable[[httpx.Request, int], httpx.Response | None]:
    def rule(request: httpx.Request, _count: int) -> httpx.Response | None:
        if request.url.path != path:
            return None
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=_Chunks(ZEROS_64_MIB))

    return rule


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [("/api/v0/companies", "GET /api/v0/companies"), ("/oauth2/v0/token", "POST /oauth2/v0/token")],
)
def test_an_oversized_page_or_token_is_retried_then_fails_never_an_empty_page(
    make_sim: Callable[..., Simulator], path: str, endpoint: str
) -> None:
    transport = RuleTransport(make_sim(), _bomb_on(path))
    settings = Settings.from_mapping(sim_configuration(max_retry_seconds="1", max_response_mb="2"))
    sink = RecordingSink()
    with pytest.raises(SyncflowError) as failure:
        run_sync(settings, sink, StateDocument(), streams=["accelo.companies"], transport=transport)
    message = str(failure.value)
    assert f"accelo {endpoint}: body larger than 2 MiB once decoded" in message and "max_response_mb" in message
    assert transport.overridden[path] >= 2, "retried like a malformed body (until max_retry_seconds), token included"
    assert not sink.tables.get("accelo.companies"), "no page was delivered from a body that was not read"


def test_max_response_mb_is_validated() -> None:
    with pytest.raises(ConfigurationError, match=r"^max_response_mb: must be a finite number >= 0.01"):
        Settings.from_mapping({**REAL, "max_response_mb": "0"})
    assert Settings.from_mapping({**REAL, "max_response_mb": "0.5"}).max_response_bytes == MIB // 2
    assert Settings.from_mapping(REAL).max_response_mb == 16.0


BOMB_SCRIPT = Path(__file__).parent / "support" / "gzip_bomb.py"


def _run_bomb_script(mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BOMB_SCRIPT), mode], capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


def test_a_gzip_bomb_fails_the_sync_with_memory_near_a_normal_syncs() -> None:
    normal = _run_bomb_script("normal")
    assert normal["error"] is None and normal["rows"] == 300
    bomb = _run_bomb_script("bomb")
    # Each bomb page inflates to 256 MiB: reading one whole is over the 160 MiB below, and two are fetched at once.
    assert bomb["error"] is not None, bomb
    assert "awardco GET /api/users: body larger than 16 MiB once decoded" in bomb["error"], bomb
    assert "max_response_mb" in bomb["error"]
    assert bomb["rows"] == 100, "the ordinary first page was delivered, nothing from the bombs"
    # Pages 2 and 3 are fetched at once: at most 2 x 16 MiB is ever held for them, so 160 MiB is ample slack.
    assert bomb["peak_mib"] < normal["peak_mib"] + 160, (normal, bomb)


# ---------------------------------------------------------------------------------------------------------------
# 3. No credential to another origin: a redirect is an error naming its Location


class _Server:
    """A loopback HTTP server in a thread, recording every request it receives (method, path, headers)."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]) -> None:
        self.received: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                outer.received.append((self.command, self.path, dict(self.headers.items())))
                status, headers, body = answer(self)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[Callable[..., _Server]]:
    started: list[_Server] = []

    def start(answer: Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]) -> _Server:
        started.append(_Server(answer))
        return started[-1]

    yield start
    for server in started:
        server.close()


TOKEN = json.dumps({"access_token": "tok-not-for-elsewhere", "token_type": "bearer", "expires_in": "3600"}).encode()
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("stream", "redirected", "key"),
    [("accelo.staff", "GET", "accelo_base_url"), ("awardco.user", "GET", "awardco_base_url"),
     ("accelo.staff", "POST", "accelo_base_url")],
    ids=["accelo-list", "awardco-list", "accelo-token"],
)  # fmt: skip
def test_a_redirect_to_another_port_carries_no_credential_and_names_its_location(
    servers: Callable[..., _Server], stream: str, redirected: str, key: str
) -> None:
    # The second server answers anything with a valid empty page: following the redirect would "succeed", empty.
    moved = servers(lambda h: (200, JSON, TOKEN if h.command == "POST" else b'{"response": [], "users": []}'))

    def first(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if handler.command == redirected:
            return (307 if redirected == "POST" else 302), {"Location": f"{moved.url}{handler.path}"}, b""
        return 200, JSON, TOKEN

    origin = servers(first)
    configuration = {**REAL, "accelo_base_url": origin.url, "awardco_base_url": origin.url, "max_retries": "3"}
    with pytest.raises(SyncflowError) as failure:
        run_sync(Settings.from_mapping(configuration), RecordingSink(), StateDocument(), streams=[stream])
    message = str(failure.value)
    assert "\n" not in message
    assert f"redirecting to {moved.url}/" in message, message
    assert f"set {key} to {moved.url}" in message, message
    assert moved.received == [], "nothing at all reached the other origin"
    paths = [path for method, path, _ in origin.received if method == redirected]
    assert paths and len(paths) == len(set(paths)), f"a redirect is not retried: {paths}"


@pytest.mark.parametrize(
    ("base", "location", "advice"),
    [("https://acme.api.accelo.com", "https://new.example/api/v0/staff?_limit=100", "set accelo_base_url to https://new.example"),
     ("https://proxy.example/accelo", "https://proxy.example/v2/api/v0/staff", "set accelo_base_url to https://proxy.example/v2"),
     ("https://acme.api.accelo.com", "/login?next=%2Fapi", "check accelo_base_url"),
     ("https://acme.api.accelo.com", "https://u:pw@evil.example/x?access_token=abc", "check accelo_base_url")],
)  # fmt: skip
def test_a_redirect_error_names_the_location_and_what_to_set(base: str, location: str, advice: str) -> None:
    request = httpx.Request("GET", f"{base}/api/v0/staff?_limit=100")
    response = httpx.Response(301, headers={"location": location}, request=request)
    error = redirect_error(response, api="accelo", endpoint="GET /api/v0/staff", key="accelo_base_url", base_url=base)
    message = str(error)
    assert message.startswith("accelo GET /api/v0/staff: answered 301 redirecting to "), message
    assert message.endswith(advice), message
    assert "pw" not in message and "abc" not in message, "user info and tokens in a Location are redacted"
    assert error.status_code == 301


# ---------------------------------------------------------------------------------------------------------------
# 4. TLS verification stays on; a CA bundle can be added


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "corporate-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture
def tls_sim(tls_ca: tuple[trustme.CA, Path], tmp_path: Path) -> Iterator[tuple[str, Simulator]]:
    """The simulator served over TLS on loopback with a certificate from a private CA."""
    ca, _ = tls_ca
    chain = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(chain))
    sim = Simulator(
        SimConfig(
            accelo_counts={"companies": 30, "invoices": 5, "payments": 5, "prospects": 5, "jobs": 5, "staff": 3},
            awardco_users=40,
        )
    )
    with serve_on_loopback(sim, scheme="https", ssl_certfile=str(chain), ssl_keyfile=str(chain)) as url:
        yield url, sim


def _tls_configuration(url: str, **extra: str) -> dict[str, str]:
    return {**sim_configuration(max_retries="3"), "accelo_base_url": url, "awardco_base_url": url, **extra}


def test_a_ca_bundle_makes_a_private_ca_trusted_with_verification_on(
    tls_sim: tuple[str, Simulator], tls_ca: tuple[trustme.CA, Path]
) -> None:
    url, _ = tls_sim
    settings = Settings.from_mapping(_tls_configuration(url, ca_bundle=str(tls_ca[1])))
    context = tls_verification(settings)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    sink = RecordingSink()
    run_sync(settings, sink, StateDocument(), streams=["accelo.companies", "awardco.user"])
    assert len(sink.tables["accelo.companies"]) == 30 and len(sink.tables["awardco.user"]) == 40


@pytest.mark.parametrize("stream", ["accelo.companies", "awardco.user"])
def test_an_untrusted_certificate_fails_at_once_saying_how_to_trust_it(
    tls_sim: tuple[str, Simulator], stream: str
) -> None:
    url, sim = tls_sim
    settings = Settings.from_mapping(_tls_configuration(url))
    assert tls_verification(settings) is True
    with pytest.raises(SyncflowError) as failure:
        run_sync(settings, RecordingSink(), StateDocument(), streams=[stream])
    message = str(failure.value)
    assert "TLS certificate not trusted" in message and "set ca_bundle" in message, message
    assert sim.stats().requests == 0, "a refused handshake sends no request, and is not retried into one"


def test_a_ca_bundle_is_validated_in_one_line(tmp_path: Path, tls_ca: tuple[trustme.CA, Path]) -> None:
    garbage = tmp_path / "not-a-cert.pem"
    garbage.write_text("hello\n")
    cases = {
        str(tmp_path / "missing.pem"): "ca_bundle: no such file",
        str(tmp_path): "ca_bundle: no such file",
        str(garbage): "holds no PEM CA certificate",
    }
    for path, says in cases.items():
        with pytest.raises(ConfigurationError) as refused:
            Settings.from_mapping({**REAL, "ca_bundle": path})
        assert says in str(refused.value) and "\n" not in str(refused.value)
    assert Settings.from_mapping({**REAL, "ca_bundle": str(tls_ca[1])}).ca_bundle == tls_ca[1]
