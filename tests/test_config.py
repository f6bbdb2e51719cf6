"""Reading a configuration: defaults, the example connector's key names, one line per bad value."""

from __future__ import annotations

import pytest

from syncflow import AcceloSettings, AwardcoSettings, ConfigurationError, Settings

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
    assert settings.max_concurrency == 16  # the README's default (chosen by benchmark)
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
