"""Unit tests of the small pieces: configuration, state, redaction, paginators, the rate gate, the public API."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

import syncflow
from syncflow import AcceloSettings, AwardcoSettings, ConfigurationError, Secret, Settings, StateError
from syncflow._http import RateGate, parse_retry_after
from syncflow._pagination import IdKeysetPaginator, page_count, page_has_more
from syncflow._redaction import redact_text, redact_url
from syncflow._state import StateDocument
from syncflow._streams import Stream

# -- public surface ---------------------------------------------------------------------------------------------------


def test_all_is_honest() -> None:
    public = {name for name in dir(syncflow) if not name.startswith("_")} - {"sim", "sources", "fivetran"}
    assert set(syncflow.__all__) - {"__version__"} == public
    for name in syncflow.__all__:
        assert getattr(syncflow, name) is not None


# -- configuration ----------------------------------------------------------------------------------------------------

GOOD = {
    "accelo_deployment": "acme",
    "accelo_client_id": "id",
    "accelo_client_secret": "s3cret-value",
    "awardco_api_key": "k3y-value",
    "awardco_base_url": "https://api.awardco.example",
}


def test_a_full_configuration_parses_with_defaults() -> None:
    settings = Settings.from_mapping(GOOD)
    accelo, awardco = settings.sources["accelo"], settings.sources["awardco"]
    assert isinstance(accelo, AcceloSettings) and accelo.base_url == "https://acme.api.accelo.com"
    assert accelo.requests_per_hour == 5000
    assert isinstance(awardco, AwardcoSettings) and awardco.requests_per_hour == 1000
    assert settings.max_concurrency >= 1
    assert "s3cret-value" not in repr(settings) and "k3y-value" not in repr(settings)


def test_the_example_connectors_key_names_are_aliases() -> None:
    settings = Settings.from_mapping(
        {"deployment": "acme", "client_id": "i", "client_secret": "s", "api_key": "k",
         "base_url": "https://a.example", "rate_limit": "50", "updated_since_param": "since"}
    )  # fmt: skip
    accelo, awardco = settings.sources["accelo"], settings.sources["awardco"]
    assert isinstance(accelo, AcceloSettings) and accelo.deployment == "acme"
    assert isinstance(awardco, AwardcoSettings) and awardco.requests_per_hour == 50
    assert awardco.updated_since_param == "since"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"accelo_client_secret": ""}, "accelo_client_secret: missing"),
        ({"accelo_deployment": "acme.api.accelo.com"}, "accelo_deployment: expected the bare deployment name"),
        ({"awardco_base_url": "https://api.awardco.example/api"}, "awardco_base_url: drop the trailing '/api'"),
        ({"awardco_base_url": "api.awardco.example"}, "awardco_base_url: expected an http(s) URL"),
        ({"accelo_requests_per_hour": "lots"}, "accelo_requests_per_hour: expected a whole number"),
        ({"max_concurrency": "0"}, "max_concurrency: must be between 1 and 256"),
        ({"sources": "accelo,salesforce"}, "sources: unknown source 'salesforce'"),
        ({"use_mock": "maybe"}, 'use_mock: expected "true" or "false"'),
        ({"start_date": "yesterday"}, "start_date: expected an ISO-8601 date"),
        ({"deployment": "other"}, "deployment: also given as 'accelo_deployment'"),
        ({"awardco_api_key": ""}, "awardco_api_key: missing"),
    ],
)
def test_every_bad_value_gets_one_line_naming_the_key(change: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_mapping({**GOOD, **change})
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert "s3cret-value" not in message and "k3y-value" not in message


def test_no_source_at_all_says_how_to_configure_one() -> None:
    with pytest.raises(ConfigurationError, match="no source configured"):
        Settings.from_mapping({})


def test_mock_mode_needs_no_credentials() -> None:
    settings = Settings.from_mapping({"use_mock": "true"})
    assert settings.use_mock and set(settings.sources) == {"accelo", "awardco"}


# -- state ------------------------------------------------------------------------------------------------------------


def test_state_patches_apply_in_order_and_delete() -> None:
    state = StateDocument()
    state.apply("accelo.jobs", [(("run",), {"lower": 1, "slices": {"0": {"after": None}}})])
    state.apply("accelo.jobs", [(("run", "slices", "0"), {"after": 7})])
    assert state.stream("accelo.jobs") == {"run": {"lower": 1, "slices": {"0": {"after": 7}}}}
    state.apply("accelo.jobs", [((), {"cursor": 9})])
    assert state.as_dict() == {"version": 1, "streams": {"accelo.jobs": {"cursor": 9}}}
    json.dumps(state.as_dict())


def test_the_example_connectors_state_is_migrated_with_a_lookback() -> None:
    legacy = {"last_company_sync": "2024-05-01T00:00:00Z", "last_job_sync": "2024-05-02T00:00:00Z",
              "last_sync_time": "2024-05-03T10:00:00Z"}  # fmt: skip
    state = StateDocument.load(legacy)
    assert state.stream("accelo.companies") == {"cursor": 1714435200}  # one day earlier
    assert state.stream("accelo.jobs") == {"cursor": 1714521600}
    assert state.stream("awardco.user") == {"cursor": "2024-05-02T10:00:00Z"}


def test_a_state_from_a_newer_syncflow_is_refused_rather_than_clobbered() -> None:
    with pytest.raises(StateError, match="version 99"):
        StateDocument.load({"version": 99, "streams": {}})


# -- redaction --------------------------------------------------------------------------------------------------------


def test_secrets_never_show_in_reprs_or_urls() -> None:
    secret = Secret("hunter2-password")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    assert redact_url("https://u:pw@host/x?access_token=abc&page=2") == "https://****@host/x?access_token=****&page=2"
    assert redact_text("token hunter2-password leaked", [secret]) == "token **** leaked"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)


# -- streams and pagination -------------------------------------------------------------------------------------------


def test_unconvertible_values_become_null_and_are_counted_once_per_column() -> None:
    stream = Stream("s", "t", {"id": "INT", "n": "FLOAT", "ok": "BOOLEAN", "at": "UTC_DATETIME"}, ("id",), None)
    converter = stream.converter()
    row = converter.convert({"id": "3", "n": "x", "ok": "yes", "at": "1495671183"})
    assert row is not None and row["n"] is None and row["ok"] is True and row["at"].year == 2017
    converter.convert({"id": "4", "n": "y", "ok": "maybe", "at": "0"})
    assert converter.failures == {"n": 2, "ok": 1}
    assert converter.convert({"id": None}) is None and converter.missing_key == 1


def test_keyset_paginator_bounds_a_slice_and_stops_at_its_end() -> None:
    paginator = IdKeysetPaginator(limit=2, window_filters=["date_modified_before(9)"], after=None,
                                  lower_inclusive=10, upper=20)  # fmt: skip
    params: dict[str, Any] = {}
    paginator.init_request(params)
    assert (
        params["_filters"] == "date_modified_before(9),id_greater_than_or_equal(10),id_less_than(20),order_by_asc(id)"
    )
    kept, trimmed = paginator.trim([{"id": 12}, {"id": 15}])
    paginator.update_state(None, kept, served=2, trimmed=trimmed)
    assert paginator.has_next_page and paginator.after == 15
    paginator.update_request(params)
    assert "id_greater_than(15)" in params["_filters"]
    kept, trimmed = paginator.trim([{"id": 18}, {"id": 21}])
    assert kept == [{"id": 18}] and trimmed
    paginator.update_state(None, kept, served=2, trimmed=trimmed)
    assert not paginator.has_next_page


def test_numbered_pages_follow_has_more_and_learn_the_total() -> None:
    assert page_has_more({"users": [], "has_more": True, "total": 250}, 100, 100)
    assert page_count({"users": [], "has_more": True, "total": 250}, 100) == 3
    assert page_count({"total": 250, "per_page": 50}, 100) == 5, "counted by the size the server says it served"
    assert page_count({"users": []}, 100) is None
    assert not page_has_more({"users": []}, 40, 100), "no has_more: a short page ends it"
    assert page_has_more({"users": [], "per_page": 40}, 40, 100), "a page full at the server's cap is not the end"


# -- the rate gate ----------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_parses_seconds_and_dates() -> None:
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert parse_retry_after("soon", 0.0) is None


def test_the_gate_never_sends_more_than_the_server_says_remain() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=8, max_wait=0.5, clock=clock)
        async with gate.admit("GET /x"):
            gate.observe(200, {"x-ratelimit-remaining": "2", "x-ratelimit-reset": str(int(clock.now) + 60)})
        async with gate.admit("GET /x"), gate.admit("GET /x"):
            pass
        # Two more were allowed; the third must wait for the reset, 60 s away: more than max_wait.
        with pytest.raises(syncflow.BudgetExhausted) as caught:
            async with gate.admit("GET /x"):
                pass
        assert caught.value.reset_in > 59
        clock.now += 61  # the window rolled over: one probe goes, the rest wait for what it learns
        async with gate.admit("GET /x"):
            assert gate.statistics().server_remaining is None
            gate.observe(200, {"x-ratelimit-remaining": "99", "x-ratelimit-reset": str(int(clock.now) + 60)})
        assert gate.statistics().server_remaining == 99

    anyio.run(scenario)


def test_a_429_blocks_every_request_until_retry_after() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        gate = RateGate("api", requests_per_hour=10_000, max_concurrency=8, max_wait=5, clock=clock)
        async with gate.admit("GET /x"):
            gate.observe(429, {"retry-after": "30"})
        with pytest.raises(syncflow.BudgetExhausted):  # 30 s > max_wait 5 s
            async with gate.admit("GET /x"):
                pass
        assert gate.statistics().rate_limited == 1

    anyio.run(scenario)


def test_a_server_that_caps_page_size_does_not_end_the_stream_early() -> None:
    from syncflow._pagination import page_has_more

    assert page_has_more({"users": [], "per_page": 50}, 50, 100)  # capped at 50: a full page, not the last
    assert not page_has_more({"users": []}, 50, 100)  # no word from the server: a short page is the last
    assert not page_has_more({"users": [], "per_page": 50}, 0, 100)
    assert page_has_more({"has_more": True}, 3, 100)  # has_more wins


def test_the_slice_budget_is_shared_in_proportion_to_the_work() -> None:
    from syncflow.sources.accelo import MIN_PAGES_PER_SLICE, allocate_slices

    shares = allocate_slices({"big": 400, "mid": 100, "small": 9, "one": 1, "none": 0}, 16)
    assert shares["big"] > shares["mid"] > shares["small"] >= 1
    assert shares["one"] == shares["none"] == 1
    assert sum(shares.values()) <= 16 + 3  # about the concurrency: the pages held while planning stay bounded
    assert 400 // shares["big"] >= MIN_PAGES_PER_SLICE
    assert allocate_slices({"a": 10_000}, 16) == {"a": 16}  # a single huge table uses the whole budget


def test_the_periodic_progress_line_has_rows_pages_rate_budget_and_eta(caplog: Any) -> None:
    import logging

    from syncflow._http import RateStatistics
    from syncflow._pipeline import Batch
    from syncflow._progress import LogProgress

    progress = LogProgress(every_seconds=0.0)
    budget = RateStatistics("accelo", 10, 10, 0, 4, 4990, None, 0, 0.0)
    progress.on_start(lambda: {"accelo": budget})
    with caplog.at_level(logging.INFO, logger="syncflow"):
        progress.on_batch(Batch("accelo.jobs", "accelo", "jobs", [{"id": 1}] * 100, requests=1, total_rows=400))
    line = caplog.records[-1].getMessage()
    assert line.startswith("accelo.jobs: 100 rows, 1 pages, 1 requests (")
    assert "25% of ~400" in line and "ETA" in line and "accelo budget: 4990 requests left" in line
