"""Bad input, table-driven: configuration values, API responses and state files. Each gets either one clear line
naming the key or endpoint, or a handled warning; none corrupts state or loses rows already synced (after the bad
run, resuming from its last checkpoint against a healthy API yields the ground truth); and no secret (client
secret, API key, access token) appears in any exception, log record, checkpoint or repr."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from support.helpers import RuleTransport, durable_sink, leaked, text_of
from support.sim import RecordingSink, assert_matches_truth, sim_configuration, sync_once
from syncflow import (
    AuthenticationError,
    ConfigurationError,
    HTTPStatusError,
    MalformedResponseError,
    Settings,
    StateError,
    StreamsFailed,
    SyncflowError,
)
from syncflow._state import StateDocument
from syncflow._sync import run_sync
from syncflow.sim import ACCELO_CLIENT_SECRET, AWARDCO_API_KEY, Simulator
from syncflow.sources._accelo_catalog import STREAM_NAMES as ENTITIES  # the tables sim_configuration syncs

SECRET = "s3cr3t-CLIENT-value-9f2"
API_KEY = "k3y-AWARDCO-value-77b"
GOOD = {
    "accelo_deployment": "acme",
    "accelo_client_id": "client-1",
    "accelo_client_secret": SECRET,
    "awardco_api_key": API_KEY,
    "awardco_base_url": "https://api.awardco.example",
}

# ---------------------------------------------------------------------------------------------------------------
# Configuration: (id, configuration, the key the one-line message must name, a word of the fix)

CONFIG_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing client secret", {**GOOD, "accelo_client_secret": ""}, "accelo_client_secret", "missing"),
    ("missing client id", {k: v for k, v in GOOD.items() if k != "accelo_client_id"}, "accelo_client_id", "missing"),
    ("blank client id", {**GOOD, "accelo_client_id": "   "}, "accelo_client_id", "missing"),
    ("missing deployment", {k: v for k, v in GOOD.items() if k != "accelo_deployment"}, "accelo_deployment", "missing"),
    ("deployment is a host", {**GOOD, "accelo_deployment": "acme.api.accelo.com"}, "accelo_deployment", "bare"),
    ("accelo url with /api", {**GOOD, "accelo_base_url": "https://acme.api.accelo.com/api/v0"}, "accelo_base_url",
     "drop the trailing"),
    ("awardco url with /api", {**GOOD, "awardco_base_url": "https://api.awardco.example/api/"}, "awardco_base_url",
     "drop the trailing"),
    ("url without scheme", {**GOOD, "awardco_base_url": "api.awardco.example"}, "awardco_base_url", "http(s) URL"),
    ("url with query", {**GOOD, "awardco_base_url": "https://h.example?x=1"}, "awardco_base_url", "query string"),
    ("ftp url", {**GOOD, "accelo_base_url": "ftp://acme.example"}, "accelo_base_url", "http(s) URL"),
    ("non-numeric budget", {**GOOD, "accelo_requests_per_hour": "lots"}, "accelo_requests_per_hour", "whole number"),
    ("zero budget", {**GOOD, "awardco_requests_per_hour": "0"}, "awardco_requests_per_hour", "at least 1"),
    ("fractional budget", {**GOOD, "accelo_requests_per_hour": "10.5"}, "accelo_requests_per_hour", "whole number"),
    ("unknown source", {**GOOD, "sources": "accelo,salesforce"}, "sources", "unknown source"),
    ("alias and canonical", {**GOOD, "client_secret": "other"}, "client_secret", "only one"),
    ("alias and canonical key", {**GOOD, "api_key": "other"}, "api_key", "only one"),
    ("bad use_mock", {**GOOD, "use_mock": "maybe"}, "use_mock", "true"),
    ("bad start_date", {**GOOD, "start_date": "yesterday"}, "start_date", "ISO-8601"),
    ("concurrency too high", {**GOOD, "max_concurrency": "1000"}, "max_concurrency", "between"),
    ("negative retries", {**GOOD, "max_retries": "-1"}, "max_retries", "between"),
    ("nan wait", {**GOOD, "max_rate_limit_wait_seconds": "nan"}, "max_rate_limit_wait_seconds", "finite"),
    ("non-string value", {**GOOD, "max_concurrency": ["8"]}, "max_concurrency", "string"),
    ("api key without url", {k: v for k, v in GOOD.items() if k != "awardco_base_url"}, "awardco_base_url", "missing"),
    ("nothing configured", {"start_date": "2024-01-01"}, "configuration", "no source"),
    ("bad since param", {**GOOD, "awardco_updated_since_param": "updated since!"}, "awardco_updated_since_param",
     "parameter"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("configuration", "key", "fix"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_configuration_gets_one_clear_line(configuration: dict[str, Any], key: str, fix: str) -> None:
    with pytest.raises(ConfigurationError) as failure:
        Settings.from_mapping(configuration)
    message = str(failure.value)
    assert "\n" not in message and len(message) < 300
    assert message.split(":", 1)[0].endswith(key), message
    assert fix.lower() in message.lower(), message
    assert not leaked(text_of(failure.value, failure.value.args), [SECRET, API_KEY])


def test_unknown_configuration_key_is_a_warning_and_settings_hide_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="syncflow")
    settings = Settings.from_mapping({**GOOD, "acelo_client_id": "typo"})
    assert any("acelo_client_id" in r.getMessage() for r in caplog.records)
    assert not leaked(text_of(settings, *settings.sources.values()) + caplog.text, [SECRET, API_KEY])


# ---------------------------------------------------------------------------------------------------------------
# API responses. A rule answers one path instead of the simulator; outcome "error" expects a SyncflowError of the
# given type naming the endpoint; "warn" expects the sync to complete with a handled warning.

Rule = Callable[[httpx.Request, int], "httpx.Response | None"]


def _on(path: str, make: Callable[[httpx.Request, int], httpx.Response | None]) -> Rule:
    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        return make(request, n) if request.url.path == path else None

    return rule


def _json(status: int, body: Any) -> Callable[[httpx.Request, int], httpx.Response]:
    return lambda _r, _n: httpx.Response(status, json=body)


def _raw(status: int, content: bytes, content_type: str) -> Callable[[httpx.Request, int], httpx.Response]:
    return lambda _r, _n: httpx.Response(status, content=content, headers={"content-type": content_type})


HTML = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
ACCELO_META = {"status": "ok", "message": "", "more_info": ""}


def _edited_accelo_page(edit: Callable[[dict[str, Any]], None]) -> Rule:
    """The simulator's real first companies page, with every record edited (wrong types, missing or extra fields)."""

    def make(request: httpx.Request, n: int) -> httpx.Response | None:
        if n != 1:
            return None
        params = dict(request.url.params)
        page = [
            {"id": str(i), "name": f"Co {i}", "date_modified": "1700000000", "date_created": "1600000000"}
            for i in range(1, 6)
        ]
        for record in page:
            edit(record)
        del params
        return httpx.Response(200, json={"meta": ACCELO_META, "response": page})

    return make


def _users_page(edit: Callable[[dict[str, Any]], None], **extra: Any) -> Callable[[httpx.Request, int], httpx.Response]:
    def make(_request: httpx.Request, _n: int) -> httpx.Response:
        users = [
            {"employeeId": f"X{i:03d}", "firstName": "A", "lastName": "B", "email": "a@b.c", "balance": 1.5,
             "currencyCode": "USD", "updated_at": "2024-01-01T00:00:00Z", "created_at": "2023-01-01T00:00:00Z"}
            for i in range(3)
        ]  # fmt: skip
        for user in users:
            edit(user)
        return httpx.Response(200, json={"users": users, "has_more": False, **extra})

    return make


@dataclass(frozen=True)
class ApiCase:
    name: str
    rule: Rule
    outcome: str  # "error" or "warn"
    error: type[SyncflowError] = SyncflowError
    says: str = ""  # a fragment the error or warning must contain
    streams: tuple[str, ...] = ()


COMPANIES = "/api/v0/companies"
USERS = "/api/users"
API_CASES = [
    ApiCase("non-JSON body", _on(COMPANIES, _raw(200, b"{not json", "application/json")), "error",
            MalformedResponseError, "GET /api/v0/companies: body is not JSON"),
    ApiCase("HTML error page", _on(COMPANIES, _raw(502, HTML, "text/html")), "error", HTTPStatusError,
            "GET /api/v0/companies: answered 502 (an HTML error page)"),
    ApiCase("HTML with 200", _on(USERS, _raw(200, HTML, "text/html")), "error", MalformedResponseError,
            "awardco GET /api/users: body is not JSON"),
    ApiCase("401 body on every data request", _on(COMPANIES, _json(401, {"meta": {"status": "invalid_client"}})),
            "error", AuthenticationError, "accelo GET /api/v0/companies: answered 401"),
    ApiCase("403 body", _on(COMPANIES, _json(403, {"meta": {"status": "forbidden", "message": "no access"}})),
            "warn", says="answered 403 (forbidden: no access)"),  # that stream is skipped, the sync completes
    ApiCase("404 body", _on(COMPANIES, _json(404, {"meta": {"status": "not_found"}})), "error", HTTPStatusError,
            "accelo GET /api/v0/companies: answered 404"),
    ApiCase("400 body", _on(USERS, _json(400, {"error": "bad updated_since"})), "error", HTTPStatusError,
            "awardco GET /api/users: answered 400 (bad updated_since)"),
    ApiCase("token refused", _on("/oauth2/v0/token", _json(401, {"meta": {"status": "invalid_client"}})), "error",
            AuthenticationError, "POST /oauth2/v0/token: credentials refused"),
    ApiCase("token body without access_token", _on("/oauth2/v0/token", _json(200, {"token_type": "bearer"})),
            "error", MalformedResponseError, "token response is not the documented JSON"),
    ApiCase("response is an object", _on(COMPANIES, _json(200, {"meta": ACCELO_META, "response": {"id": "1"}})),
            "error", MalformedResponseError, "no 'response' list"),
    ApiCase("meta status not ok", _on(COMPANIES, _json(200, {"meta": {"status": "error"}, "response": []})),
            "error", MalformedResponseError, "meta status is 'error'"),
    ApiCase("records are not objects", _on(COMPANIES, _json(200, {"meta": ACCELO_META, "response": [1, 2]})),
            "error", MalformedResponseError, "something other than records"),
    ApiCase("count not a number", _on(COMPANIES + "/count", _json(200, {"response": {"count": "many"}})), "error",
            MalformedResponseError, "GET /api/v0/companies/count: body has no 'response.count' number"),
    ApiCase("users missing", _on(USERS, _json(200, {"data": []})), "error", MalformedResponseError,
            "awardco GET /api/users: body has no 'users' list"),
    ApiCase("has_more a string", _on(USERS, _json(200, {"users": [], "has_more": "false"})), "error",
            MalformedResponseError, "'has_more' is not a boolean"),
    ApiCase("wrong types", _on(COMPANIES, _edited_accelo_page(lambda r: r.update(date_modified="soon", status="x"))),
            "warn", says="is not a valid"),
    ApiCase("null ids", _on(COMPANIES, _edited_accelo_page(lambda r: r.update(id=None) if r["id"] == "3" else None)),
            "warn", says="without a usable primary key"),
    ApiCase("missing fields", _on(COMPANIES, _edited_accelo_page(lambda r: r.pop("name"))), "warn"),
    ApiCase("unexpected extra fields", _on(USERS, _users_page(lambda u: u.update(nickname="Zed", tags=["a"]))),
            "warn", streams=("awardco.user",)),
    ApiCase("null employeeId", _on(USERS, _users_page(lambda u: u.update(employeeId=None) if u["email"] else None)),
            "warn", says="without a usable primary key", streams=("awardco.user",)),
    ApiCase("balance not a number", _on(USERS, _users_page(lambda u: u.update(balance="lots"))), "warn",
            says="is not a valid FLOAT", streams=("awardco.user",)),
    ApiCase("no total, no has_more", _on(USERS, lambda r, n: httpx.Response(200, json={"users": []})), "warn",
            streams=("awardco.user",)),
]  # fmt: skip


def _huge_users(simulator: Simulator) -> Rule:
    """Every user in one page of thousands (far over per_page), with has_more false."""
    users = simulator.ground_truth()["awardco"]["user"]
    many = users * 1 + [{**u, "employeeId": f"H{i:06d}"} for i, u in enumerate(users * 12)]
    return _on(USERS, lambda _r, _n: httpx.Response(200, json={"users": many, "has_more": False, "total": len(many)}))


def _secrets(simulator: Simulator) -> list[str]:
    return [ACCELO_CLIENT_SECRET, AWARDCO_API_KEY, *simulator._tokens]


def _probe(path: str) -> httpx.Request:
    return httpx.Request("GET", f"http://sim.test{path}")


def _resume_equals_truth(simulator: Simulator, sink: RecordingSink, skip: str | None = None) -> None:
    """The destination as of the bad run's last checkpoint, resumed from that state against a healthy API."""
    durable = durable_sink(sink)
    state = StateDocument.load(sink.checkpoints[-1]) if sink.checkpoints else StateDocument()
    sync_once(simulator, durable, state)
    streams = [s for s in (*(f"accelo.{e}" for e in ENTITIES), "awardco.user") if s != skip]
    assert_matches_truth(durable, simulator, streams=streams)


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_bad_api_response(make_sim: Callable[..., Simulator], caplog: pytest.LogCaptureFixture, case: ApiCase) -> None:
    offset = [0.0]
    simulator = make_sim(seed=31, clock=lambda: time.time() + offset[0])
    transport = RuleTransport(simulator, case.rule)
    # Retried failures give up after 0.5 s: the outcome (the same error, naming the endpoint) does not depend on how
    # long they were retried, only on their being retried until the bound; tests/test_reliability_faults.py times that.
    settings = Settings.from_mapping(sim_configuration(max_retries="1", max_retry_seconds="0.5"))
    caplog.set_level(logging.INFO, logger="syncflow")
    sink = RecordingSink()
    streams = list(case.streams) or None
    captured = ""
    if case.outcome == "error":
        with pytest.raises(SyncflowError) as failure:
            run_sync(settings, sink, StateDocument(), streams=streams, transport=transport)
        error = failure.value
        # The failed stream's own error; the other streams completed (StreamsFailed says which failed, and why).
        assert isinstance(error, StreamsFailed) and len(error.failures) >= 1, f"{type(error).__name__}: {error}"
        cause = next(iter(error.failures.values()))
        assert isinstance(cause, case.error), f"{type(cause).__name__}: {cause}"
        message = str(error)
        assert "\n" not in message and case.says in message, message
        captured = text_of(error, error.args, error.__cause__, error.__context__)
    else:
        result = run_sync(settings, sink, StateDocument(), streams=streams, transport=transport)
        assert not result.stopped_early
        if case.says:
            said = [w for w in result.warnings] + [r.getMessage() for r in caplog.records if r.levelno >= 30]
            assert any(case.says in w for w in said), said
        captured = text_of(result.warnings, result)
        if case.name == "null ids":
            assert 3 not in sink.tables["accelo.companies"] and 4 in sink.tables["accelo.companies"]
        if case.name == "unexpected extra fields":
            row = next(iter(sink.tables["awardco.user"].values()))
            assert row["nickname"] == "Zed" and row["tags"] == '["a"]'
    captured += caplog.text + json.dumps(sink.checkpoints) + repr(settings)
    assert not leaked(captured, _secrets(simulator)), "a secret leaked into the output"
    for checkpoint in sink.checkpoints:
        StateDocument.load(checkpoint)
    # A failed run is resumed against a healthy API and must end equal to the truth. A completed run took the
    # mangled answers as the API's word for the stream it mangled; every other stream must equal the truth.
    mangled = None
    if case.outcome != "error":
        mangled = "awardco.user" if case.rule(_probe(USERS), 1) else "accelo.companies"
    # The resume comes later on the server's clock, as a real one does: started within the bad run's last second, a
    # sync waits that second out (up to ~1 s, for edits made in it), which is tests/test_reliability_edits.py's subject.
    offset[0] += 2.0
    _resume_equals_truth(simulator, sink, skip=mangled)


def test_huge_page_is_taken_whole(make_sim: Callable[..., Simulator]) -> None:
    simulator = make_sim(seed=31)
    transport = RuleTransport(simulator, _huge_users(simulator))
    settings = Settings.from_mapping(sim_configuration())
    sink = RecordingSink()
    result = run_sync(settings, sink, StateDocument(), streams=["awardco.user"], transport=transport)
    assert result.rows["awardco.user"] == 330 * 13
    assert len(sink.tables["awardco.user"]) == 330 * 13


# ---------------------------------------------------------------------------------------------------------------
# State files.

LEGACY_ACCELO = {
    "last_company_sync": "2024-06-01T00:00:00Z",
    "last_invoice_sync": "2024-06-01T00:00:00+00:00",
    "last_payment_sync": "2024-06-01T00:00:00",
    "last_prospect_sync": "2024-06-01T00:00:00Z",
    "last_job_sync": "2024-06-01T00:00:00Z",
}

STATE_ERRORS: list[tuple[str, Any, str]] = [
    ("a list", ["not", "an", "object"], "expected a JSON object"),
    ("a string", "garbage", "expected a JSON object"),
    ("newer version", {"version": 2, "streams": {}}, "version 2"),
    ("older version", {"version": 0, "streams": {}}, "version 0"),
    ("version as string", {"version": "1", "streams": {}}, "version '1'"),
    ("streams not an object", {"version": 1, "streams": []}, "'streams' must be a JSON object"),
]


@pytest.mark.parametrize(("raw", "says"), [c[1:] for c in STATE_ERRORS], ids=[c[0] for c in STATE_ERRORS])
def test_unreadable_state_is_one_clear_error(raw: Any, says: str) -> None:
    with pytest.raises(StateError) as failure:
        StateDocument.load(raw)
    assert says in str(failure.value) and "\n" not in str(failure.value)
    assert str(failure.value).startswith("state:")


STATE_WARNINGS: list[tuple[str, dict[str, Any], str]] = [
    ("malformed accelo run", {"version": 1, "streams": {"accelo.companies": {"run": {"slices": "x"}}}},
     "malformed 'run'"),
    ("malformed accelo cursor", {"version": 1, "streams": {"accelo.jobs": {"cursor": "yesterday"}}},
     "malformed cursor"),
    ("malformed awardco cursor", {"version": 1, "streams": {"awardco.user": {"cursor": 12}}}, "malformed cursor"),
    ("malformed awardco run", {"version": 1, "streams": {"awardco.user": {"run": {"next_page": 0}}}},
     "malformed 'run'"),
    ("legacy keys unreadable", {"last_company_sync": "not a date", "something": 1}, "no recognised keys"),
    ("stream entry not an object", {"version": 1, "streams": {"accelo.invoices": "x"}}, ""),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "says"), [c[1:] for c in STATE_WARNINGS], ids=[c[0] for c in STATE_WARNINGS])
def test_damaged_state_entries_are_a_warning_and_a_full_resync(
    make_sim: Callable[..., Simulator], caplog: pytest.LogCaptureFixture, raw: dict[str, Any], says: str
) -> None:
    simulator = make_sim(seed=41)
    caplog.set_level(logging.WARNING, logger="syncflow")
    sink = RecordingSink()
    result, state = sync_once(simulator, sink, StateDocument.load(raw))
    assert_matches_truth(sink, simulator)
    if says:
        assert says in caplog.text
        assert any(says in w for w in result.warnings) or says == "no recognised keys"
    assert all("run" not in state.stream(k) for k in sink.tables)


def test_example_connector_state_is_migrated_and_resumed(make_sim: Callable[..., Simulator]) -> None:
    from datetime import datetime, timedelta, timezone

    simulator = make_sim(seed=43)
    raw = {**LEGACY_ACCELO, "last_sync_time": "2024-06-01T00:00:00Z"}
    document = StateDocument.load(raw)
    cutoff = int((datetime(2024, 6, 1, tzinfo=timezone.utc) - timedelta(days=1)).timestamp())
    for entity in ("companies", "invoices", "payments", "prospects", "jobs"):
        assert document.stream(f"accelo.{entity}") == {"cursor": cutoff}
    assert document.stream("awardco.user") == {"cursor": "2024-05-31T00:00:00Z"}
    sink = RecordingSink()
    sync_once(simulator, sink, document)
    truth = simulator.ground_truth()
    for entity, records in truth["accelo"].items():
        if entity not in ENTITIES:
            continue  # the tables sim_configuration syncs: the five the legacy state knew, and staff
        field = {"payments": "date_created", "staff": None}.get(entity, "date_modified")
        expected = {int(r["id"]) for r in records if field is None or int(r[field]) >= cutoff}
        assert set(sink.tables.get(f"accelo.{entity}", {})) == expected, entity
    users = {u["employeeId"] for u in truth["awardco"]["user"] if u["updated_at"] >= "2024-05-31T00:00:00Z"}
    assert set(sink.tables.get("awardco.user", {})) == users


def test_secrets_never_reach_state_or_reprs(
    make_sim: Callable[..., Simulator], caplog: pytest.LogCaptureFixture
) -> None:
    simulator = make_sim(seed=47)
    caplog.set_level(logging.DEBUG, logger="syncflow")
    sink = RecordingSink()
    result, state = sync_once(simulator, sink)
    text = text_of(result, state, sink.checkpoints, Settings.from_mapping(sim_configuration())) + caplog.text
    assert not leaked(text, _secrets(simulator))
    assert re.search(r"\*\*\*\*", repr(Settings.from_mapping(sim_configuration())))
