"""The simulator follows the Accelo v0 and AwardCo contracts (SPEC.md, "The two APIs")."""

from __future__ import annotations

import base64
import email.utils
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from syncflow.sim import (
    ACCELO_CLIENT_ID,
    ACCELO_CLIENT_SECRET,
    ACCELO_ENTITIES,
    AWARDCO_API_KEY,
    DATA_END,
    SimConfig,
    Simulator,
)
from syncflow.sim._model import NEW_RESOURCE_COUNT

SMALL = {"companies": 120, "invoices": 150, "payments": 90, "prospects": 60, "jobs": 80, "staff": 15}


class FakeClock:
    def __init__(self, now: float = DATA_END + 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def basic(client_id: str = ACCELO_CLIENT_ID, secret: str = ACCELO_CLIENT_SECRET) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def get_token(client: httpx.AsyncClient) -> str:
    r = await client.post(
        "/oauth2/v0/token",
        headers={"Authorization": basic()},
        data={"grant_type": "client_credentials", "scope": "read(all)"},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(accelo_counts=SMALL, awardco_users=130, clock=FakeClock()))


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        token = await get_token(c)
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def _path(entity: str) -> str:
    # A table's documented list path (`accelo.time_externals` is GET /time/externals).
    from syncflow.sources._accelo_catalog import RESOURCES

    return RESOURCES[entity].path.strip("/") if entity in RESOURCES else entity


async def rows(client: httpx.AsyncClient, entity: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(f"/api/v0/{_path(entity)}", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["status"] == "ok"
    result: list[dict[str, Any]] = body["response"]
    return result


async def count(client: httpx.AsyncClient, entity: str, **params: Any) -> int:
    r = await client.get(f"/api/v0/{_path(entity)}/count", params=params)
    assert r.status_code == 200, r.text
    value = r.json()["response"]["count"]
    assert isinstance(value, str)
    return int(value)


def ids(records: list[dict[str, Any]]) -> list[int]:
    return [int(r["id"]) for r in records]


# ----------------------------------------------------------------------------------------------------------------
# Token


async def test_token_grant_shape(sim: Simulator) -> None:
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        r = await c.post(
            "/oauth2/v0/token", headers={"Authorization": basic()}, data={"grant_type": "client_credentials"}
        )
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == "2592000"
    assert body["deployment"] == "syncflow-sim"
    assert body["access_token"]
    assert "x-ratelimit-limit" not in r.headers  # the token endpoint is not rate limited
    assert email.utils.parsedate_to_datetime(r.headers["date"]).timestamp() == DATA_END + 1000


@pytest.mark.parametrize(
    ("auth", "grant", "status", "meta"),
    [
        (basic(secret="wrong"), "client_credentials", 401, "invalid_client"),
        (basic(client_id="someone-else"), "client_credentials", 401, "invalid_client"),
        (None, "client_credentials", 401, "invalid_client"),
        ("Basic !!!not-base64", "client_credentials", 401, "invalid_client"),
        (basic(), "password", 400, "unsupported_grant_type"),
        (basic(), None, 400, "invalid_request"),
    ],
)
async def test_token_rejections(sim: Simulator, auth: str | None, grant: str | None, status: int, meta: str) -> None:
    headers = {"Authorization": auth} if auth else {}
    data = {"grant_type": grant} if grant else {}
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        r = await c.post("/oauth2/v0/token", headers=headers, data=data)
    assert r.status_code == status
    # The docs' token-endpoint errors are OAuth 2.0's: {"error", "error_description"}, no `meta` object.
    body = r.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == meta
    assert body["error_description"]
    assert sim.stats().token_requests == 1
    assert sim.stats().data_requests == 0


async def test_data_requires_a_valid_token(sim: Simulator) -> None:
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": basic()}):
            r = await c.get("/api/v0/companies", headers=headers)
            assert r.status_code == 401
            assert r.json()["meta"]["status"] == "invalid_client"
            assert "x-ratelimit-remaining" in r.headers


async def test_token_expires_on_the_server_clock() -> None:
    clock = FakeClock()
    sim = Simulator(SimConfig(accelo_counts=SMALL, token_ttl=100, clock=clock))
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        c.headers["Authorization"] = f"Bearer {await get_token(c)}"
        assert (await c.get("/api/v0/staff")).status_code == 200
        clock.now += 99
        assert (await c.get("/api/v0/staff")).status_code == 200
        clock.now += 1
        r = await c.get("/api/v0/staff")
        assert r.status_code == 401
        assert r.json()["meta"]["status"] == "invalid_client"
        c.headers["Authorization"] = f"Bearer {await get_token(c)}"
        assert (await c.get("/api/v0/staff")).status_code == 200


# ----------------------------------------------------------------------------------------------------------------
# Lists: fields, limits, pages, offsets


async def test_default_fields_and_all_fields(client: httpx.AsyncClient, sim: Simulator) -> None:
    truth = sim.ground_truth()["accelo"]
    default = await rows(client, "companies")
    assert len(default) == 10
    assert set(default[0]) == {"id", "name"}
    full = await rows(client, "companies", _fields="_ALL", _limit=100)
    assert full == truth["companies"][:100]
    assert set(full[0]) >= {"date_modified", "date_created", "standing", "website"}


async def test_fields_selection_always_includes_id_and_ignores_unknown(client: httpx.AsyncClient) -> None:
    got = await rows(client, "invoices", _fields="amount,date_modified,no_such_field", _limit=3)
    assert [set(r) for r in got] == [{"id", "amount", "date_modified"}] * 3


async def test_every_scalar_is_a_string(client: httpx.AsyncClient, sim: Simulator) -> None:
    for entity in ACCELO_ENTITIES:
        for record in await rows(client, entity, _fields="_ALL", _limit=100):
            for key, value in record.items():
                assert value is None or isinstance(value, str), (entity, key, value)
    for entity, records in sim.ground_truth()["accelo"].items():
        for record in records:
            assert int(record["id"]) > 0
            created = record.get("date_created") or record.get("date_raised")
            if "date_modified" in record:
                assert int(record["date_modified"]) >= int(created or 0), (entity, record)


async def test_limit_default_clamp_and_invalid(client: httpx.AsyncClient) -> None:
    assert len(await rows(client, "companies", _limit=5)) == 5
    assert len(await rows(client, "companies", _limit=500)) == 100
    for bad in ("ten", "0", "-3"):
        r = await client.get("/api/v0/companies", params={"_limit": bad})
        assert r.status_code == 400, bad
        assert r.json()["meta"]["status"] == "invalid_request"


async def test_pages_and_offsets_walk_the_ids_in_order(client: httpx.AsyncClient, sim: Simulator) -> None:
    every = ids(sim.ground_truth()["accelo"]["jobs"])
    paged: list[int] = []
    page = 0
    while batch := ids(await rows(client, "jobs", _limit=30, _page=page)):
        paged.extend(batch)
        page += 1
    assert paged == every
    assert ids(await rows(client, "jobs", _limit=7, _offset=13)) == every[13:20]
    # The docs: _offset "will be overridden if _page is set"
    assert ids(await rows(client, "jobs", _limit=7, _offset=13, _page=2)) == every[14:21]
    assert ids(await rows(client, "jobs", _limit=7, _page=0, _offset=13)) == every[:7]
    assert await rows(client, "jobs", _limit=10, _offset=len(every)) == []
    assert every == sorted(every)
    assert len(every) == len(set(every))
    assert any(b - a > 1 for a, b in itertools.pairwise(every)), "ids should have gaps"


# ----------------------------------------------------------------------------------------------------------------
# Filters


async def test_date_filters_are_strict_at_the_boundary_second(client: httpx.AsyncClient, sim: Simulator) -> None:
    truth = sim.ground_truth()["accelo"]["companies"]
    stamps = sorted({int(r["date_modified"]) for r in truth})
    lo, hi = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    expected = [int(r["id"]) for r in truth if lo < int(r["date_modified"]) < hi]
    filters = f"date_modified_after({lo}),date_modified_before({hi})"
    got = ids(await rows(client, "companies", _limit=100, _filters=filters))
    got += ids(await rows(client, "companies", _limit=100, _offset=100, _filters=filters))
    assert got == expected
    assert await count(client, "companies", _filters=filters) == len(expected)
    # exactly at the boundary: a record modified at second `lo` is excluded by _after(lo), included by _after(lo-1)
    at_lo = {int(r["id"]) for r in truth if int(r["date_modified"]) == lo}
    assert at_lo
    assert not at_lo & set(ids(await rows(client, "companies", _limit=100, _filters=f"date_modified_after({lo})")))
    widened = ids(await rows(client, "companies", _limit=100, _filters=f"date_modified_after({lo - 1})"))
    assert at_lo <= set(widened) or len(widened) == 100
    before = await count(client, "companies", _filters=f"date_modified_before({lo})")
    assert before == sum(1 for r in truth if int(r["date_modified"]) < lo)


@pytest.mark.parametrize(
    ("entity", "field"),
    [
        ("companies", "date_created"),
        ("invoices", "date_raised"),
        ("invoices", "date_due"),
        ("payments", "date_created"),
        ("prospects", "date_due"),
        ("jobs", "date_started"),
        ("jobs", "date_completed"),
    ],
)
async def test_each_supported_date_filter(client: httpx.AsyncClient, sim: Simulator, entity: str, field: str) -> None:
    truth = sim.ground_truth()["accelo"][entity]
    values = sorted(int(r[field] or 0) for r in truth)
    pivot = values[len(values) // 2]
    after = await count(client, entity, _filters=f"{field}_after({pivot})")
    before = await count(client, entity, _filters=f"{field}_before({pivot})")
    assert after == sum(1 for v in values if v > pivot)
    assert before == sum(1 for v in values if v < pivot)


async def test_id_ranges_and_ordering(client: httpx.AsyncClient, sim: Simulator) -> None:
    every = ids(sim.ground_truth()["accelo"]["invoices"])
    a, b = every[20], every[60]
    cases = {
        f"id_greater_than({a})": [i for i in every if i > a],
        f"id_greater_than_or_equal({a})": [i for i in every if i >= a],
        f"id_less_than({b})": [i for i in every if i < b],
        f"id_less_than_or_equal({b})": [i for i in every if i <= b],
        f"id_greater_than({a}),id_less_than({b})": [i for i in every if a < i < b],
        f"id({a},{b},999999)": [a, b],
        f"id({a})": [a],
    }
    for filters, expected in cases.items():
        assert ids(await rows(client, "invoices", _limit=100, _filters=filters)) == expected[:100], filters
        assert await count(client, "invoices", _filters=filters) == len(expected), filters
    desc = ids(await rows(client, "invoices", _limit=100, _filters=f"id_less_than({b}),order_by_desc(id)"))
    assert desc == [i for i in reversed(every) if i < b][:100]
    asc = ids(await rows(client, "invoices", _limit=5, _filters="order_by_asc(id)"))
    assert asc == every[:5]


async def test_order_by_date_desc_then_id(client: httpx.AsyncClient, sim: Simulator) -> None:
    truth = sim.ground_truth()["accelo"]["prospects"]
    got = await rows(client, "prospects", _limit=100, _fields="date_modified", _filters="order_by_desc(date_modified)")
    keys = [(int(r["date_modified"]), int(r["id"])) for r in got]
    expected = sorted(((int(r["date_modified"]), int(r["id"])) for r in truth), key=lambda k: (-k[0], k[1]))
    assert keys == expected[: len(keys)]
    got = await rows(client, "prospects", _limit=10, _fields="date_created", _filters="order_by_asc(date_created)")
    assert [int(r["date_created"]) for r in got] == sorted(int(r["date_created"]) for r in truth)[:10]


@pytest.mark.parametrize(
    ("entity", "filters"),
    [
        ("staff", "date_modified_after(1)"),
        ("staff", "date_created_before(1)"),
        ("payments", "date_modified_after(1)"),
        ("companies", "date_raised_after(1)"),
        ("companies", "invoice_number(3)"),
        ("companies", "no_such_filter(3)"),
        ("companies", "order_by_desc(website)"),
        ("staff", "order_by_asc(date_modified)"),
        ("staff", "order_by_asc(id)"),  # the docs list no order filter on staff at all
        ("jobs", "date_last_interacted_after(1)"),
        ("payments", "amount(5)"),
        ("invoices", "standing_not(active)"),
        ("companies", "id_greater_than(abc)"),
        ("companies", "date_modified_after(1"),
        ("companies", "date_modified_after"),
    ],
)
async def test_unsupported_filters_are_rejected(client: httpx.AsyncClient, entity: str, filters: str) -> None:
    for path in (f"/api/v0/{entity}", f"/api/v0/{entity}/count"):
        r = await client.get(path, params={"_filters": filters})
        assert r.status_code == 400, (path, filters)
        meta = r.json()["meta"]
        assert meta["status"] == "invalid_filter"
        assert meta["message"]


async def test_unsupported_filter_message_names_it(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v0/payments", params={"_filters": "date_modified_after(5)"})
    assert "date_modified_after" in r.json()["meta"]["message"]


async def test_counts(client: httpx.AsyncClient, sim: Simulator) -> None:
    truth = sim.ground_truth()["accelo"]
    from syncflow.sources._accelo_catalog import RESOURCES

    for entity in ACCELO_ENTITIES:
        if not RESOURCES[entity].count:  # the docs give this list no /count: the simulator neither
            r = await client.get(f"/api/v0/{_path(entity)}/count")
            assert r.status_code == 404, entity
            continue
        assert await count(client, entity) == len(truth[entity]) == SMALL.get(entity, NEW_RESOURCE_COUNT)


async def test_unknown_entity_and_path(client: httpx.AsyncClient) -> None:
    for path in ("/api/v0/widgets", "/api/v0/widgets/count", "/api/v0/companies/12/extra"):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert r.json()["meta"]["status"] == "not_found"
    assert (await client.get("/nothing/here")).status_code == 404
    assert (await client.post("/api/v0/companies")).status_code == 405


# ----------------------------------------------------------------------------------------------------------------
# AwardCo


@pytest.fixture
async def awardco(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=sim.transport(), base_url="http://sim", headers={"apiKey": AWARDCO_API_KEY}
    ) as c:
        yield c


async def test_awardco_pagination(awardco: httpx.AsyncClient, sim: Simulator) -> None:
    truth = sim.ground_truth()["awardco"]["user"]
    seen: list[dict[str, Any]] = []
    page = 1
    while True:
        r = await awardco.get("/api/users", params={"page": page, "per_page": 40})
        assert r.status_code == 200
        body = r.json()
        assert body["page"] == page and body["per_page"] == 40 and body["total"] == 130
        seen.extend(body["users"])
        if not body["has_more"]:
            break
        page += 1
    assert page == 4
    assert seen == truth
    keys = [u["employeeId"] for u in seen]
    assert keys == sorted(keys)
    user = seen[0]
    assert isinstance(user["balance"], float)
    assert set(user) >= {"employeeId", "firstName", "lastName", "email", "balance", "currencyCode", "updated_at"}
    assert user["updated_at"].endswith("Z")
    assert "x-ratelimit-limit" in r.headers


async def test_awardco_defaults_and_clamp(awardco: httpx.AsyncClient) -> None:
    body = (await awardco.get("/api/users")).json()
    assert (body["page"], body["per_page"], len(body["users"]), body["has_more"]) == (1, 50, 50, True)
    body = (await awardco.get("/api/users", params={"per_page": 1000})).json()
    assert (body["per_page"], len(body["users"]), body["has_more"]) == (100, 100, True)
    body = (await awardco.get("/api/users", params={"page": 99})).json()
    assert body["users"] == [] and body["has_more"] is False
    for params in ({"page": "0"}, {"page": "x"}, {"per_page": "0"}, {"updated_since": "yesterday"}):
        assert (await awardco.get("/api/users", params=params)).status_code == 400, params


async def test_awardco_updated_since_is_inclusive(awardco: httpx.AsyncClient, sim: Simulator) -> None:
    truth = sim.ground_truth()["awardco"]["user"]
    stamps = sorted({u["updated_at"] for u in truth})
    since = stamps[len(stamps) // 2]
    expected = [u for u in truth if u["updated_at"] >= since]
    body = (await awardco.get("/api/users", params={"updated_since": since, "per_page": 100})).json()
    assert body["users"] == expected[:100]
    assert body["total"] == len(expected)
    assert any(u["updated_at"] == since for u in body["users"])
    # An offset form of the same instant selects the same users.
    offset_form = since.replace("Z", "+00:00")
    same = (await awardco.get("/api/users", params={"updated_since": offset_form, "per_page": 100})).json()
    assert same["users"] == body["users"]


async def test_awardco_shared_updated_at_seconds(sim: Simulator) -> None:
    users = sim.ground_truth()["awardco"]["user"]
    assert len({u["updated_at"] for u in users}) < len(users) * 0.85


async def test_awardco_without_total_and_custom_since_param() -> None:
    sim = Simulator(
        SimConfig(
            accelo_counts=SMALL, awardco_users=30, awardco_include_total=False, awardco_updated_since_param="since"
        )
    )
    async with httpx.AsyncClient(
        transport=sim.transport(), base_url="http://sim", headers={"apiKey": AWARDCO_API_KEY}
    ) as c:
        body = (await c.get("/api/users", params={"since": "2100-01-01T00:00:00Z"})).json()
    assert "total" not in body
    assert body["users"] == [] and body["has_more"] is False


async def test_awardco_rejects_a_bad_key(sim: Simulator) -> None:
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        for headers in ({}, {"apiKey": "wrong"}):
            r = await c.get("/api/users", headers=headers)
            assert r.status_code == 401
            assert r.json() == {"error": "unauthorized"}


# ----------------------------------------------------------------------------------------------------------------
# As the docs have it (and never more forgiving)


async def test_the_last_of_a_repeated_filter_wins(client: httpx.AsyncClient, sim: Simulator) -> None:
    every = ids(sim.ground_truth()["accelo"]["invoices"])
    a, b = every[10], every[40]
    assert (
        ids(await rows(client, "invoices", _limit=100, _filters=f"id_greater_than({a}),id_greater_than({b})"))
        == [i for i in every if i > b][:100]
    )
    assert await count(client, "invoices", _filters=f"id_greater_than({b}),id_greater_than({a})") == sum(
        1 for i in every if i > a
    )
    assert (
        ids(await rows(client, "invoices", _filters="order_by_desc(id),order_by_desc(id)", _limit=3)) == every[::-1][:3]
    )


async def test_a_repeated_query_parameter_is_an_invalid_request(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v0/companies?_limit=5&_limit=7")
    assert r.status_code == 400
    assert r.json()["meta"]["status"] == "invalid_request"
    assert "_limit" in r.json()["meta"]["message"]


async def test_documented_filters_beyond_ids_and_dates(client: httpx.AsyncClient, sim: Simulator) -> None:
    truth = sim.ground_truth()["accelo"]
    active = [int(r["id"]) for r in truth["companies"] if r["standing"] == "active"]
    assert active and len(active) < len(truth["companies"])
    assert await count(client, "companies", _filters="standing(active)") == len(active)
    assert await count(client, "companies", _filters="standing_not(active)") == len(truth["companies"]) - len(active)
    big = [r for r in truth["invoices"] if float(r["amount"]) > 20000]
    assert await count(client, "invoices", _filters="amount_greater_than(20000)") == len(big)
    names = [r["name"] for r in truth["companies"]]
    got = await rows(client, "companies", _fields="name", _limit=100, _filters="order_by_desc(name)")
    assert [r["name"] for r in got] == sorted(names, reverse=True)[: len(got)]
    word = names[0].split()[0]
    assert await count(client, "companies", _search=word) == sum(1 for r in truth["companies"] if word in r["name"])
    r = await client.get("/api/v0/payments", params={"_search": "x"})  # the docs list no search on payments
    assert r.status_code == 400


async def test_records_hold_the_documented_fields_in_the_documented_formats(sim: Simulator) -> None:
    from syncflow.sources._accelo_catalog import CATALOG, RESOURCES, list_endpoint

    for entity, records in sim.ground_truth()["accelo"].items():
        resource = RESOURCES[entity]
        anchor = list_endpoint(resource.doc_resource, resource.path).object
        fields = CATALOG[resource.doc_resource]["objects"][anchor]["fields"]
        for record in records:
            assert list(record) == [f["name"] for f in fields], entity
            for f in fields:
                value = record[f["name"]]
                if value is None:
                    continue
                assert isinstance(value, str), (entity, f["name"], value)
                if f["type"] in ("LONG", "UTC_DATETIME"):
                    assert value.isdigit(), (entity, f["name"], value)
                elif f["type"].startswith("DECIMAL"):
                    assert re.fullmatch(r"-?\d+\.\d{2,6}", value), (entity, f["name"], value)
                elif f.get("values"):
                    assert value in f["values"], (entity, f["name"], value)


async def test_ids_past_32_bits_with_the_id_base_knob() -> None:
    sim = Simulator(SimConfig(accelo_counts=SMALL, accelo_id_base=2**31 - 1, clock=FakeClock()))
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        c.headers["Authorization"] = f"Bearer {await get_token(c)}"
        first = ids(await rows(c, "invoices", _limit=5, _filters=f"id_greater_than_or_equal({2**31})"))
    assert first and first[0] >= 2**31
    assert all(int(r["id"]) >= 2**31 for records in sim.ground_truth()["accelo"].values() for r in records)


async def test_lockout_after_too_many_failed_logins_is_the_only_retry_after() -> None:
    clock = FakeClock()
    sim = Simulator(SimConfig(accelo_counts=SMALL, accelo_lockout_after=3, accelo_lockout_seconds=300, clock=clock))
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as c:
        for _ in range(4):  # the 4th failure within the period locks the client out
            r = await c.post("/oauth2/v0/token", headers={"Authorization": basic(secret="wrong")},
                             data={"grant_type": "client_credentials"})  # fmt: skip
            assert r.status_code == 401 and "retry-after" not in r.headers
        clock.now += 10
        r = await c.post(
            "/oauth2/v0/token", headers={"Authorization": basic()}, data={"grant_type": "client_credentials"}
        )
        assert r.status_code == 401
        assert r.json()["status"] == "too_many_failed_logins"
        assert r.headers["retry-after"] == "300"  # each attempt while locked out restarts the timer
        r = await c.get("/api/v0/companies", headers={"Authorization": "Bearer whatever"})
        assert r.status_code == 401 and r.json()["status"] == "too_many_failed_logins"
        clock.now += 301
        assert (await c.post("/oauth2/v0/token", headers={"Authorization": basic()},
                             data={"grant_type": "client_credentials"})).status_code == 200  # fmt: skip
