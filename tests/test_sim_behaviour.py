"""Simulator knobs: rate limits, faults, mutations, latency, statistics, determinism."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from syncflow.sim import (
    ACCELO_CLIENT_ID,
    ACCELO_CLIENT_SECRET,
    AWARDCO_API_KEY,
    DATA_END,
    Faults,
    Mutation,
    SimConfig,
    Simulator,
)

SMALL = {"companies": 120, "invoices": 150, "payments": 90, "prospects": 60, "jobs": 80, "staff": 15}
BASIC = "Basic " + base64.b64encode(f"{ACCELO_CLIENT_ID}:{ACCELO_CLIENT_SECRET}".encode()).decode()


class FakeClock:
    def __init__(self, now: float = DATA_END + 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(**overrides: Any) -> Simulator:
    overrides.setdefault("accelo_counts", SMALL)
    overrides.setdefault("awardco_users", 60)
    return Simulator(SimConfig(**overrides))


@contextlib.asynccontextmanager
async def authed(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding both an Accelo bearer token and the AwardCo key."""
    async with httpx.AsyncClient(
        transport=sim.transport(), base_url="http://sim", headers={"apiKey": AWARDCO_API_KEY}
    ) as client:
        r = await client.post(
            "/oauth2/v0/token", headers={"Authorization": BASIC}, data={"grant_type": "client_credentials"}
        )
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield client


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    yield FakeClock()


# ----------------------------------------------------------------------------------------------------------------
# Rate limiting


async def test_rate_limit_headers_429_and_window_reset(clock: FakeClock) -> None:
    sim = make(accelo_rate_limit=5, rate_window=60, clock=clock)
    async with authed(sim) as c:
        start = clock.now
        remaining = []
        for _ in range(5):
            r = await c.get("/api/v0/companies")
            assert r.status_code == 200
            assert r.headers["x-ratelimit-limit"] == "5"
            assert r.headers["x-ratelimit-reset"] == str(int(start + 60))
            remaining.append(int(r.headers["x-ratelimit-remaining"]))
            clock.now += 1
        assert remaining == [4, 3, 2, 1, 0]
        r = await c.get("/api/v0/companies/count")  # counts share the deployment's budget
        assert r.status_code == 429
        assert r.json()["meta"]["status"] == "too_many_requests"
        # The docs give a 429 the X-RateLimit-* headers; Retry-After only comes with a lockout.
        assert "retry-after" not in r.headers
        assert r.headers["x-ratelimit-remaining"] == "0"
        assert r.headers["x-ratelimit-reset"] == str(int(start + 60))
        # Token requests are never limited.
        tok = await c.post(
            "/oauth2/v0/token", headers={"Authorization": BASIC}, data={"grant_type": "client_credentials"}
        )
        assert tok.status_code == 200
        # AwardCo has its own window.
        assert (await c.get("/api/users")).status_code == 200
        clock.now = start + 59.5
        r = await c.get("/api/v0/staff")
        assert r.status_code == 429
        assert "retry-after" not in r.headers
        clock.now = start + 60
        r = await c.get("/api/v0/staff")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining"] == "4"
        assert r.headers["x-ratelimit-reset"] == str(int(start + 120))
        # After idle windows the alignment to the first request is kept.
        clock.now = start + 60 * 5 + 10
        r = await c.get("/api/v0/staff")
        assert r.headers["x-ratelimit-reset"] == str(int(start + 360))
    stats = sim.stats()
    assert stats.rate_limited == 2
    assert stats.by_status[429] == 2


async def test_awardco_rate_limit() -> None:
    sim = make(awardco_rate_limit=3, clock=FakeClock())
    async with authed(sim) as c:
        statuses = [(await c.get("/api/users")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        r = await c.get("/api/users")
        assert r.json() == {"error": "too_many_requests"}
        assert int(r.headers["retry-after"]) >= 1
        # Accelo's budget is untouched.
        assert (await c.get("/api/v0/staff")).headers["x-ratelimit-remaining"] == "4999"


# ----------------------------------------------------------------------------------------------------------------
# Faults


async def test_fault_rates_are_roughly_as_configured() -> None:
    sim = make(faults=Faults(error_rate=0.1, malformed_rate=0.05, drop_rate=0.05))
    statuses: Counter[int] = Counter()
    malformed = dropped = 0
    async with authed(sim) as c:
        for _ in range(1000):
            try:
                r = await c.get("/api/v0/staff", params={"_limit": 2})
            except httpx.RemoteProtocolError:
                dropped += 1
                continue
            statuses[r.status_code] += 1
            if r.status_code == 200:
                try:
                    r.json()
                except json.JSONDecodeError:
                    malformed += 1
    errors = sum(n for code, n in statuses.items() if code >= 500)
    assert 60 <= errors <= 140
    assert set(statuses) <= {200, 500, 502, 503, 504}
    assert 20 <= malformed <= 80
    assert 20 <= dropped <= 80
    stats = sim.stats()
    assert stats.faults_injected == errors + malformed + dropped
    assert stats.faults_by_kind["drop"] == dropped
    assert stats.data_requests == 1000


async def test_fault_schedule_is_deterministic() -> None:
    schedule = {1: "503", 2: "429", 3: "401", 4: "malformed", 5: "html", 6: "drop", 7: "500", 8: "502", 9: "504"}

    async def run() -> list[tuple[str, str]]:
        sim = make(faults=Faults(schedule=schedule))
        seen: list[tuple[str, str]] = []
        async with authed(sim) as c:
            for _ in range(11):
                try:
                    r = await c.get("/api/v0/companies", params={"_limit": 3})
                except httpx.RemoteProtocolError:
                    seen.append(("drop", ""))
                    continue
                seen.append((str(r.status_code), r.headers["content-type"]))
                if r.status_code == 429:
                    # A spent window, reset a second away; no Retry-After (the docs send it only on lockout).
                    assert "retry-after" not in r.headers
                    assert r.headers["x-ratelimit-remaining"] == "0"
                    served = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
                    assert 1 <= int(r.headers["x-ratelimit-reset"]) - served <= 2
                if r.status_code == 401:
                    assert r.json()["meta"]["status"] == "invalid_client"
                if r.status_code == 200 and len(seen) == 4:
                    with pytest.raises(json.JSONDecodeError):
                        r.json()
        assert sim.stats().faults_injected == 9
        return seen

    first = await run()
    assert [s for s, _ in first] == ["503", "429", "401", "200", "502", "drop", "500", "502", "504", "200", "200"]
    assert first[4][1] == "text/html"
    assert await run() == first


async def test_random_faults_are_reproducible_per_seed() -> None:
    async def outcome(seed: int) -> list[int]:
        sim = make(seed=seed, faults=Faults(error_rate=0.3))
        async with authed(sim) as c:
            return [(await c.get("/api/v0/staff")).status_code for _ in range(60)]

    assert await outcome(3) == await outcome(3)
    assert await outcome(3) != await outcome(4)


async def test_faults_never_hit_the_token_endpoint() -> None:
    sim = make(faults=Faults(error_rate=1.0))
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        for _ in range(20):
            r = await c.post(
                "/oauth2/v0/token", headers={"Authorization": BASIC}, data={"grant_type": "client_credentials"}
            )
            assert r.status_code == 200
        assert (await c.get("/api/users", headers={"apiKey": AWARDCO_API_KEY})).status_code >= 500


async def test_slow_fault_delays_the_answer() -> None:
    sim = make(faults=Faults(schedule={2: "slow"}, slow_seconds=0.3))
    async with authed(sim) as c:
        t0 = time.perf_counter()
        assert (await c.get("/api/v0/staff")).status_code == 200
        fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert (await c.get("/api/v0/staff")).status_code == 200
        slow = time.perf_counter() - t0
    assert fast < 0.2 <= 0.3 <= slow + 0.01
    assert sim.stats().faults_by_kind == {"slow": 1}


def test_invalid_fault_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Faults(schedule={1: "teapot"})
    with pytest.raises(ValueError):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError):
        Mutation(after_requests=1, source="accelo", entity="user")
    with pytest.raises(ValueError):
        SimConfig(accelo_counts={"widgets": 3})


# ----------------------------------------------------------------------------------------------------------------
# Mutations


async def test_mutation_moves_records_out_of_a_frozen_window(clock: FakeClock) -> None:
    mutation = Mutation(after_requests=3, source="accelo", entity="companies", modify=5, create=4)
    sim = make(mutations=[mutation], clock=clock)
    before = sim.ground_truth()["accelo"]["companies"]
    upper = DATA_END + 1  # a window frozen before the mutation
    window = f"date_modified_after(0),date_modified_before({upper})"
    async with authed(sim) as c:
        first = await c.get("/api/v0/companies/count", params={"_filters": window})
        second = await c.get("/api/v0/companies/count", params={"_filters": window})
        assert first.json()["response"]["count"] == second.json()["response"]["count"] == str(len(before))
        third = await c.get("/api/v0/companies/count", params={"_filters": window})  # the mutation lands first
        assert int(third.json()["response"]["count"]) == len(before) - 5
        newer = await c.get(
            "/api/v0/companies",
            params={"_filters": f"date_modified_after({upper - 1})", "_fields": "_ALL", "_limit": 50},
        )
    after = sim.ground_truth()["accelo"]["companies"]
    assert len(after) == len(before) + 4
    now = str(int(clock.now))
    changed = [r for r in after if r["date_modified"] == now]
    assert len(changed) == 9
    assert newer.json()["response"] == changed
    old = {r["id"]: r for r in before}
    modified = [r for r in changed if r["id"] in old]
    assert len(modified) == 5
    assert all(r["name"] != old[r["id"]]["name"] for r in modified)
    created = [r for r in changed if r["id"] not in old]
    assert all(int(r["id"]) > int(before[-1]["id"]) for r in created)
    assert all(r["date_created"] == now for r in created)
    assert [int(r["id"]) for r in after] == sorted(int(r["id"]) for r in after)


async def test_payments_mutations_only_create_and_awardco_mutations(clock: FakeClock) -> None:
    sim = make(clock=clock)
    before = sim.ground_truth()
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="payments", modify=10, create=2))
    sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="staff", modify=2))
    sim.apply_mutation(Mutation(after_requests=1, source="awardco", entity="user", modify=3, create=1))
    after = sim.ground_truth()
    assert after["accelo"]["payments"][: len(before["accelo"]["payments"])] == before["accelo"]["payments"]
    assert len(after["accelo"]["payments"]) == len(before["accelo"]["payments"]) + 2
    assert sum(a != b for a, b in zip(before["accelo"]["staff"], after["accelo"]["staff"], strict=True)) == 2
    users = after["awardco"]["user"]
    assert len(users) == len(before["awardco"]["user"]) + 1
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now))
    assert sum(u["updated_at"] == stamp for u in users) == 4
    async with authed(sim) as c:
        body = (await c.get("/api/users", params={"updated_since": stamp})).json()
    assert len(body["users"]) == 4
    assert body["users"][-1]["employeeId"] > before["awardco"]["user"][-1]["employeeId"]


async def test_mutations_apply_once_on_the_request_number() -> None:
    sim = make(mutations=[Mutation(after_requests=2, source="accelo", entity="jobs", create=3)])
    n = len(sim.ground_truth()["accelo"]["jobs"])
    async with authed(sim) as c:
        counts = [int((await c.get("/api/v0/jobs/count")).json()["response"]["count"]) for _ in range(4)]
    assert counts == [n, n + 3, n + 3, n + 3]


# ----------------------------------------------------------------------------------------------------------------
# Determinism and data shape


def test_same_seed_same_truth_and_different_seed_differs() -> None:
    a, b, c = make(seed=11).ground_truth(), make(seed=11).ground_truth(), make(seed=12).ground_truth()
    assert a == b
    assert a != c
    assert a["accelo"]["companies"] != c["accelo"]["companies"]


def test_ground_truth_is_a_copy() -> None:
    sim = make()
    truth = sim.ground_truth()
    truth["accelo"]["companies"][0]["name"] = "changed"
    truth["accelo"]["companies"].clear()
    assert sim.ground_truth()["accelo"]["companies"][0]["name"] != "changed"


def test_bulk_edit_clusters_share_a_second() -> None:
    truth = Simulator().ground_truth()["accelo"]
    for entity in ("companies", "invoices", "prospects", "jobs"):
        per_second = Counter(r["date_modified"] for r in truth[entity])
        clustered = sum(n for n in per_second.values() if n >= 5)
        assert clustered >= 0.2 * len(truth[entity]), entity
    assert max(Counter(r["date_modified"] for r in truth["invoices"]).values()) > 100
    for entity, records in truth.items():
        for r in records:
            for key, value in r.items():
                if key.startswith("date_") and value not in (None, "0"):
                    assert DATA_END - 5 * 365 * 86400 < int(value) < DATA_END + 200 * 86400, (entity, key, value)


def test_default_counts_and_config_merge() -> None:
    truth = Simulator(SimConfig(accelo_counts={"staff": 3}, awardco_users=7)).ground_truth()
    assert len(truth["accelo"]["staff"]) == 3
    assert len(truth["accelo"]["companies"]) == 300
    assert len(truth["awardco"]["user"]) == 7


# ----------------------------------------------------------------------------------------------------------------
# Latency, concurrency, statistics, lifespan


async def test_latency_and_peak_in_flight() -> None:
    sim = make(latency=0.1, jitter=0.02)
    async with authed(sim) as c:
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(c.get, "/api/v0/companies")
            for _ in range(3):
                tg.start_soon(c.get, "/api/users")
        elapsed = time.perf_counter() - t0
    assert 0.08 <= elapsed < 0.5  # concurrent, not serialized
    stats = sim.stats()
    assert stats.peak_in_flight == 11
    assert stats.peak_in_flight_by_api == {"accelo": 8, "awardco": 3}
    assert stats.data_requests == 11
    assert stats.token_requests == 1
    assert stats.requests == 12
    assert stats.by_endpoint == {"POST /oauth2/v0/token": 1, "GET /api/v0/companies": 8, "GET /api/users": 3}
    assert stats.by_status == {200: 12}
    sim.reset_stats()
    stats = sim.stats()
    assert (stats.requests, stats.peak_in_flight, dict(stats.by_status)) == (0, 0, {})


async def test_control_endpoints_are_not_counted() -> None:
    sim = make(accelo_rate_limit=1)
    async with authed(sim) as c:
        await c.get("/api/v0/staff")
        for _ in range(3):
            stats = (await c.get("/_sim/stats")).json()
        truth = (await c.get("/_sim/ground_truth")).json()
        assert (await c.post("/_sim/reset_stats")).json() == {"ok": True}
    assert stats["data_requests"] == 1
    assert stats["by_status"] == {"200": 2}
    assert truth == sim.ground_truth()
    assert sim.stats().requests == 0


async def test_lifespan_protocol() -> None:
    sim = make()
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await sim({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_date_header_follows_the_injected_clock(clock: FakeClock) -> None:
    sim = make(clock=clock)
    async with authed(sim) as c:
        clock.now = 1_760_000_000
        r = await c.get("/api/v0/staff")
    assert r.headers["date"] == "Thu, 09 Oct 2025 08:53:20 GMT"


async def test_served_rows_reflect_mutations_after_being_served_once(clock: FakeClock) -> None:
    # Rows are serialized once and cached; a mutation must invalidate exactly the changed rows.
    sim = make(clock=clock)
    async with authed(sim) as c:
        params = {"_fields": "_ALL", "_limit": 100}
        first = (await c.get("/api/v0/companies", params=params)).json()["response"]
        narrow = (await c.get("/api/v0/companies", params={"_fields": "name", "_limit": 100})).json()["response"]
        users_before = (await c.get("/api/users", params={"per_page": 100})).json()["users"]
        assert first == sim.ground_truth()["accelo"]["companies"][:100]
        sim.apply_mutation(Mutation(after_requests=1, source="accelo", entity="companies", modify=60, create=2))
        sim.apply_mutation(Mutation(after_requests=1, source="awardco", entity="user", modify=20, create=2))
        truth = sim.ground_truth()
        second = (await c.get("/api/v0/companies", params=params)).json()["response"]
        narrow2 = (await c.get("/api/v0/companies", params={"_fields": "name", "_limit": 100})).json()["response"]
        users_after = (await c.get("/api/users", params={"per_page": 100})).json()["users"]
        tail = (await c.get("/api/v0/companies", params={**params, "_offset": 100})).json()["response"]
    assert second == truth["accelo"]["companies"][:100] != first
    assert narrow2 == [{"id": r["id"], "name": r["name"]} for r in second] != narrow
    assert users_after == truth["awardco"]["user"] != users_before
    assert tail == truth["accelo"]["companies"][100:]
