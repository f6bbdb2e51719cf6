"""The HTTP layer against `respx` routes: auth (token caching, expiry, single-flight refresh on 401), retries
(retryable vs fail-fast statuses, Retry-After, the time bound), the rate gate (X-RateLimit-* headers, 429) and the
mapping of httpx's failures, bad bodies and redirects to syncflow's errors.

Each test builds the layer as a sync does (one `httpx.AsyncClient` per API, an `ApiClient` with its auth and gate)
and routes the API with respx, so what is asserted is what goes over the wire: how many requests, with what.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import httpx
import pytest
import respx

from syncflow import (
    AuthenticationError,
    BudgetExhausted,
    HTTPStatusError,
    MalformedResponseError,
    PermissionDenied,
    Secret,
    SourceError,
    TransportError,
)
from syncflow._http import ApiClient, ApiKeyAuth, Authenticator, OAuth2ClientCredentials, RateGate, RetryPolicy
from syncflow._http._errors import describe_transport_error

BASE = "https://api.example.test"
TOKEN = "/oauth2/v0/token"
CLIENT_SECRET = "client-secret-value-123"
API_KEY = "api-key-value-456"
# Retries that take milliseconds: the policy under test is the same, only its constants are small.
FAST = RetryPolicy(max_time=5.0, base=0.001, max_delay=0.005)

T = TypeVar("T")


class FakeClock:
    """A clock the test moves by hand (token lifetimes are minutes; a test does not wait for one)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    # assert_all_mocked: a request no route expects fails the test instead of reaching a network.
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(scenario)


def token_reply(value: str, expires_in: str = "3600") -> httpx.Response:
    return httpx.Response(200, json={"access_token": value, "token_type": "bearer", "expires_in": expires_in})


def oauth(http: httpx.AsyncClient, clock: Callable[[], float] = time.time) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        http, TOKEN, api="accelo", client_id="client-id", client_secret=Secret(CLIENT_SECRET), clock=clock,
        refused_hint="check accelo_client_id and accelo_client_secret",  # the source's wording (sources/accelo.py)
    )  # fmt: skip


def client(
    http: httpx.AsyncClient,
    auth: Authenticator | None = None,
    *,
    retry: RetryPolicy = FAST,
    max_wait: float = 5.0,
    api: str = "accelo",
) -> ApiClient:
    gate = RateGate(api, requests_per_hour=100_000, max_concurrency=8, max_wait=max_wait)
    return ApiClient(api, http, auth=auth or ApiKeyAuth(Secret(API_KEY)), gate=gate, retry=retry)


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=BASE, follow_redirects=False)


def page(rows: int = 1) -> httpx.Response:
    return httpx.Response(200, json={"response": [{"id": i} for i in range(rows)]})


# -- auth -------------------------------------------------------------------------------------------------------------


def test_the_token_is_fetched_once_and_sent_as_a_bearer_header(api: respx.MockRouter) -> None:
    token = api.post(TOKEN).mock(return_value=token_reply("tok-1"))
    jobs = api.get("/api/v0/jobs").mock(return_value=page())

    async def scenario() -> None:
        async with http_client() as http:
            accelo = client(http, oauth(http))
            for _ in range(3):
                await accelo.get_json("/api/v0/jobs", {})

    run(scenario)
    assert token.call_count == 1
    assert jobs.call_count == 3
    assert {call.request.headers["authorization"] for call in jobs.calls} == {"Bearer tok-1"}
    sent = token.calls[0].request
    assert sent.headers["authorization"].startswith("Basic ")  # client credentials in the header, not the body
    assert dict(httpx.QueryParams(sent.content.decode())) == {"grant_type": "client_credentials", "scope": "read(all)"}


def test_an_expired_token_is_renewed_before_the_next_request(api: respx.MockRouter) -> None:
    token = api.post(TOKEN).mock(side_effect=[token_reply("tok-1", "600"), token_reply("tok-2", "600")])
    jobs = api.get("/api/v0/jobs").mock(return_value=page())
    clock = FakeClock()

    async def scenario() -> None:
        async with http_client() as http:
            accelo = client(http, oauth(http, clock))
            await accelo.get_json("/api/v0/jobs", {})
            clock.now += 545  # within the 60 s margin before the stated expiry: renewed before it can lapse
            await accelo.get_json("/api/v0/jobs", {})

    run(scenario)
    assert token.call_count == 2
    assert [call.request.headers["authorization"] for call in jobs.calls] == ["Bearer tok-1", "Bearer tok-2"]


def test_a_401_refreshes_the_token_once_for_every_request_that_met_it(api: respx.MockRouter) -> None:
    token = api.post(TOKEN).mock(side_effect=[token_reply("old"), token_reply("new")])

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer old":
            return httpx.Response(401, json={"meta": {"status": "invalid_token"}})
        return page()

    jobs = api.get("/api/v0/jobs").mock(side_effect=answer)

    async def scenario() -> ApiClient:
        async with http_client() as http:
            accelo = client(http, oauth(http))
            await accelo.auth.headers()  # every request below leaves with the token the server will refuse
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(accelo.get_json, "/api/v0/jobs", {})
            return accelo

    accelo = run(scenario)
    assert token.call_count == 2  # single-flight: six refusals, one new token
    assert jobs.call_count == 12
    assert accelo.statistics().token_refreshes == 6
    assert accelo.statistics().by_status == {401: 6, 200: 6}


def test_a_401_that_a_new_token_does_not_cure_is_an_authentication_error(api: respx.MockRouter) -> None:
    token = api.post(TOKEN).mock(side_effect=[token_reply("a"), token_reply("b")])
    jobs = api.get("/api/v0/jobs").mock(return_value=httpx.Response(401))

    async def scenario() -> None:
        async with http_client() as http:
            await client(http, oauth(http)).get_json("/api/v0/jobs", {})

    with pytest.raises(AuthenticationError, match=r"answered 401; check the accelo credentials") as caught:
        run(scenario)
    assert (token.call_count, jobs.call_count) == (2, 2)  # one refresh, then no retry of a refusal
    assert caught.value.endpoint == "GET /api/v0/jobs"


def test_refused_client_credentials_fail_at_once_naming_the_keys(api: respx.MockRouter) -> None:
    token = api.post(TOKEN).mock(return_value=httpx.Response(401, json={"error": "invalid_client"}))

    async def scenario() -> None:
        async with http_client() as http:
            auth = oauth(http)
            await client(http, auth).call(f"POST {TOKEN}", auth.token)

    with pytest.raises(AuthenticationError, match=r"credentials refused .*accelo_client_secret") as caught:
        run(scenario)
    assert token.call_count == 1
    assert CLIENT_SECRET not in str(caught.value)


def test_a_token_body_without_a_token_is_malformed_and_retried(api: respx.MockRouter) -> None:
    token = api.post(TOKEN).mock(side_effect=[httpx.Response(200, json={"expires_in": 60}), token_reply("tok")])

    async def scenario() -> float | None:
        async with http_client() as http:
            auth = oauth(http)
            await client(http, auth).call(f"POST {TOKEN}", auth.token)
            return await auth.server_time()

    run(scenario)
    assert token.call_count == 2


def test_an_api_key_is_sent_in_its_header_and_never_refreshed(api: respx.MockRouter) -> None:
    users = api.get("/api/users").mock(return_value=httpx.Response(401, json={"message": "bad key"}))

    async def scenario() -> None:
        async with http_client() as http:
            await client(http, ApiKeyAuth(Secret(API_KEY)), api="awardco").get_json("/api/users", {})

    with pytest.raises(AuthenticationError, match=r"answered 401 \(bad key\)") as caught:
        run(scenario)
    assert users.call_count == 1
    assert users.calls[0].request.headers["apiKey"] == API_KEY
    assert API_KEY not in str(caught.value) and API_KEY not in repr(caught.value)


# -- retries ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_retryable_status_is_retried_until_it_succeeds(api: respx.MockRouter, status: int) -> None:
    failing = httpx.Response(status, headers={"retry-after": "0"} if status == 429 else {})
    jobs = api.get("/api/v0/jobs").mock(side_effect=[failing, failing, page(3)])

    async def scenario() -> tuple[Any, ApiClient]:
        async with http_client() as http:
            accelo = client(http)
            reply = await accelo.get_json("/api/v0/jobs", {"_limit": 3})
            return reply.body, accelo

    body, accelo = run(scenario)
    assert len(body["response"]) == 3
    assert jobs.call_count == 3
    assert accelo.statistics().retries == 2
    assert accelo.statistics().by_status == {status: 2, 200: 1}
    assert all(call.request.url.params["_limit"] == "3" for call in jobs.calls)  # the same request each time


@pytest.mark.parametrize(
    ("status", "error", "said"),
    [
        (400, HTTPStatusError, "answered 400"),
        (404, HTTPStatusError, "answered 404"),
        (422, HTTPStatusError, "answered 422"),
        (403, PermissionDenied, "the accelo credentials may not read this resource"),
        (401, AuthenticationError, "check the accelo credentials"),
    ],
)
def test_a_status_that_will_not_change_fails_at_once(
    api: respx.MockRouter, status: int, error: type[SourceError], said: str
) -> None:
    jobs = api.get("/api/v0/jobs").mock(return_value=httpx.Response(status))

    async def scenario() -> None:
        async with http_client() as http:
            await client(http).get_json("/api/v0/jobs", {})

    with pytest.raises(error, match=said) as caught:
        run(scenario)
    assert type(caught.value) is error
    assert jobs.call_count == 1
    assert "retries exhausted" not in str(caught.value)


def test_retries_stop_at_the_time_bound_and_say_so(api: respx.MockRouter) -> None:
    jobs = api.get("/api/v0/jobs").mock(return_value=httpx.Response(503))

    async def scenario() -> None:
        async with http_client() as http:
            await client(http, retry=RetryPolicy(max_time=0.05, base=0.001, max_delay=0.005)).get_json(
                "/api/v0/jobs", {}
            )

    with pytest.raises(HTTPStatusError, match="answered 503; retries exhausted") as caught:
        run(scenario)
    assert caught.value.status_code == 503
    assert jobs.call_count >= 2


def test_retry_after_holds_the_next_request_for_as_long_as_it_says(api: respx.MockRouter) -> None:
    jobs = api.get("/api/v0/jobs").mock(side_effect=[httpx.Response(429, headers={"retry-after": "1"}), page()])

    async def scenario() -> ApiClient:
        async with http_client() as http:
            accelo = client(http)
            await accelo.get_json("/api/v0/jobs", {})
            return accelo

    accelo = run(scenario)
    assert jobs.call_count == 2
    waited = accelo.gate.statistics().seconds_waited_for_budget
    assert 0.5 < waited <= 1.0  # the gate's own account of its wait: the server's second, not the backoff's 5 ms


def test_a_retry_after_longer_than_the_allowed_wait_stops_without_asking_again(api: respx.MockRouter) -> None:
    jobs = api.get("/api/v0/jobs").mock(return_value=httpx.Response(429, headers={"retry-after": "600"}))

    async def scenario() -> None:
        async with http_client() as http:
            await client(http, max_wait=5.0).get_json("/api/v0/jobs", {})

    with pytest.raises(BudgetExhausted, match="Retry-After") as caught:
        run(scenario)
    assert jobs.call_count == 1
    assert caught.value.reset_in > 590


# -- the rate gate ----------------------------------------------------------------------------------------------------


def budget(remaining: int, reset: float) -> dict[str, str]:
    return {"x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": str(int(reset))}


@pytest.mark.parametrize("reset_as", ["unix timestamp", "seconds from now"])
def test_the_gate_sends_no_more_than_the_headers_say_remain(api: respx.MockRouter, reset_as: str) -> None:
    def headers(remaining: int) -> dict[str, str]:
        return budget(remaining, time.time() + 600 if reset_as == "unix timestamp" else 600)

    jobs = api.get("/api/v0/jobs").mock(
        side_effect=[httpx.Response(200, json={"response": []}, headers=headers(n)) for n in (2, 1, 0)]
    )

    async def scenario() -> int:
        async with http_client() as http:
            accelo = client(http, max_wait=5.0)
            sent = 0
            with pytest.raises(BudgetExhausted, match="X-RateLimit-Reset"):
                for _ in range(10):
                    await accelo.get_json("/api/v0/jobs", {})
                    sent += 1
            return sent

    assert run(scenario) == 3
    assert jobs.call_count == 3  # the fourth never left: the server said none remain until the reset


def test_a_429_without_retry_after_waits_for_the_advertised_reset(api: respx.MockRouter) -> None:
    jobs = api.get("/api/v0/jobs").mock(return_value=httpx.Response(429, headers=budget(0, 120)))

    async def scenario() -> ApiClient:
        async with http_client() as http:
            accelo = client(http, max_wait=5.0)
            with pytest.raises(BudgetExhausted, match=r"rate budget spent; it resets in 1[12][0-9] s") as caught:
                await accelo.get_json("/api/v0/jobs", {})
            assert 110 < caught.value.reset_in <= 121
            return accelo

    accelo = run(scenario)
    assert jobs.call_count == 1
    assert accelo.statistics().rate_limited == 1 and accelo.gate.statistics().rate_limited == 1


# -- error mapping ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (httpx.ConnectTimeout("timed out"), "timed out (ConnectTimeout)"),
        (httpx.ReadTimeout("timed out"), "timed out (ReadTimeout)"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection refused (nothing listens on that port)"),
        (httpx.ConnectError("[Errno -2] Name or service not known"),
         "DNS lookup failed (the host name does not resolve)"),
        (httpx.RemoteProtocolError("peer closed connection"), "connection failed (RemoteProtocolError)"),
    ],
)
def test_transport_failures_become_transport_errors_naming_the_host(
    api: respx.MockRouter, failure: httpx.TransportError, cause: str
) -> None:
    jobs = api.get("/api/v0/jobs").mock(side_effect=[failure, failure, page()])
    token = api.post(TOKEN).mock(side_effect=[failure, token_reply("tok")])

    async def recovered() -> None:
        async with http_client() as http:
            await client(http, oauth(http)).get_json("/api/v0/jobs", {})

    run(recovered)  # transient: retried, then the answer
    assert (token.call_count, jobs.call_count) == (2, 3)

    async def failing(path: str) -> None:
        async with http_client() as http:
            auth = oauth(http)
            retry = RetryPolicy(max_time=0.02, base=0.001, max_delay=0.005)
            if path == TOKEN:
                await client(http, auth, retry=retry).call(f"POST {TOKEN}", auth.token)
            else:
                await client(http, retry=retry).get_json(path, {})

    api.get("/api/v0/jobs").mock(side_effect=failure)
    api.post(TOKEN).mock(side_effect=failure)
    messages = {}
    for path in ("/api/v0/jobs", TOKEN):
        with pytest.raises(TransportError) as caught:
            run(lambda path=path: failing(path))  # type: ignore[misc]
        assert caught.value.__cause__ is failure
        messages[path] = str(caught.value)
    # The page GET and the token POST go through one mapping: the same cause, in the same words.
    assert messages["/api/v0/jobs"] == f"accelo GET /api/v0/jobs: api.example.test: {cause}; retries exhausted"
    assert messages[TOKEN] == f"accelo POST {TOKEN}: token request failed: api.example.test: {cause}; retries exhausted"


def _wrapping(cause: BaseException) -> httpx.ConnectError:
    error = httpx.ConnectError("connect failed", request=httpx.Request("GET", "https://acme.api.accelo.com/x"))
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("cause", "phrase"),
    [
        (socket.gaierror(-2, "Name or service not known"), "DNS lookup failed"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection reset by the peer"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "TLS certificate verification failed"),
        (ssl.SSLError(1, "wrong version number"), "TLS handshake failed"),
    ],
)
def test_a_connection_failure_says_why_from_the_socket_error_httpx_wraps(cause: BaseException, phrase: str) -> None:
    # Called directly: respx re-raises a side effect's exception from its own wrapper, which replaces the chain
    # this reads (httpx's error raised from the socket's).
    text = describe_transport_error(_wrapping(cause), "fallback")
    assert text.startswith("acme.api.accelo.com: ") and phrase in text, text


def test_an_untrusted_certificate_is_not_retried_and_says_how_to_trust_a_proxy() -> None:
    sent: list[str] = []
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "self-signed certificate in certificate chain"  # as ssl sets it

    def refuse(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        raise httpx.ConnectError("[SSL] certificate verify failed", request=request) from refused

    async def scenario(path: str) -> None:
        # httpx's MockTransport, not respx: the certificate error must stay on the chain (see above).
        async with httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(refuse)) as http:
            auth = oauth(http)
            if path == TOKEN:
                await client(http, auth).call(f"POST {TOKEN}", auth.token)
            else:
                await client(http).get_json(path, {})

    said = r"TLS certificate not trusted \(self-signed certificate in certificate chain\).*set ca_bundle"
    for path in ("/api/v0/jobs", TOKEN):
        with pytest.raises(SourceError, match=said) as caught:
            run(lambda path=path: scenario(path))  # type: ignore[misc]
        assert not isinstance(caught.value, TransportError)  # not retryable: a refused certificate stays refused
    assert sent == ["GET /api/v0/jobs", f"POST {TOKEN}"]


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (httpx.Response(200, content=b'{"response": [{"id": 1}'),
         "body is not JSON (23 bytes, content-type 'unknown')"),
        (httpx.Response(200, content=b"<html>maintenance</html>", headers={"content-type": "text/html"}),
         "body is not JSON (24 bytes, content-type 'text/html')"),
        (httpx.Response(200, json=["not", "an", "object"]), "no 'response' list"),
    ],
)  # fmt: skip
def test_a_malformed_body_is_retried_then_named(api: respx.MockRouter, reply: httpx.Response, said: str) -> None:
    jobs = api.get("/api/v0/jobs").mock(side_effect=[reply, page(2)])

    def validate(body: Any) -> str | None:
        return None if isinstance(body, dict) and isinstance(body.get("response"), list) else "no 'response' list"

    async def scenario(policy: RetryPolicy) -> Any:
        async with http_client() as http:
            return (await client(http, retry=policy).get_json("/api/v0/jobs", {}, validate=validate)).body

    assert len(run(lambda: scenario(FAST))["response"]) == 2  # a truncated page is worth asking for again
    assert jobs.call_count == 2

    jobs.side_effect = None
    jobs.return_value = reply
    with pytest.raises(MalformedResponseError, match=re.escape(f"{said}; retries exhausted")):
        run(lambda: scenario(RetryPolicy(max_time=0.02, base=0.001, max_delay=0.005)))


def test_an_html_error_page_is_named_not_echoed(api: respx.MockRouter) -> None:
    html = "<html><body>Internal error, trace id 1234, user secret-ish</body></html>"
    api.get("/api/v0/jobs").mock(return_value=httpx.Response(418, text=html, headers={"content-type": "text/html"}))

    async def scenario() -> None:
        async with http_client() as http:
            await client(http).get_json("/api/v0/jobs", {})

    with pytest.raises(HTTPStatusError) as caught:
        run(scenario)
    assert str(caught.value) == "accelo GET /api/v0/jobs: answered 418 (an HTML error page)"


def test_a_redirect_is_reported_with_its_location_and_never_followed(api: respx.MockRouter) -> None:
    moved = "https://new.example.test/api/v0/jobs?access_token=leaked-token-789"
    jobs = api.get("/api/v0/jobs").mock(return_value=httpx.Response(301, headers={"location": moved}))
    elsewhere = respx.get(moved).mock(return_value=page())

    async def scenario() -> None:
        async with http_client() as http:
            await client(http).get_json("/api/v0/jobs", {})

    with pytest.raises(HTTPStatusError) as caught:
        run(scenario)
    message = str(caught.value)
    assert (jobs.call_count, elsewhere.call_count) == (1, 0)
    assert "redirecting to https://new.example.test/api/v0/jobs?access_token=****" in message
    assert "set accelo_base_url to https://new.example.test" in message
    assert "leaked-token-789" not in message
    assert caught.value.status_code == 301


def test_a_token_request_redirected_elsewhere_is_not_followed(api: respx.MockRouter) -> None:
    token = api.post(TOKEN).mock(return_value=httpx.Response(302, headers={"location": "https://login.example.test/"}))

    async def scenario() -> None:
        async with http_client() as http:
            auth = oauth(http)
            await client(http, auth).call(f"POST {TOKEN}", auth.token)

    with pytest.raises(HTTPStatusError, match=re.escape("answered 302 redirecting to https://login.example.test/")):
        run(scenario)
    assert token.call_count == 1


def test_no_credential_reaches_an_error_or_a_repr(api: respx.MockRouter) -> None:
    api.post(TOKEN).mock(return_value=token_reply("bearer-token-value-000"))
    api.get("/api/v0/jobs").mock(return_value=httpx.Response(500, json={"meta": {"message": "boom"}}))

    async def scenario() -> list[str]:
        async with http_client() as http:
            auth = oauth(http)
            accelo = client(http, auth, retry=RetryPolicy(max_time=0.01, base=0.001, max_delay=0.005))
            with pytest.raises(HTTPStatusError) as caught:
                await accelo.get_json("/api/v0/jobs", {})
            return [str(caught.value), repr(caught.value), repr(auth), repr(accelo), json.dumps(caught.value.args)]

    for text in run(scenario):
        for secret in (CLIENT_SECRET, "bearer-token-value-000", API_KEY):
            assert secret not in text, text
