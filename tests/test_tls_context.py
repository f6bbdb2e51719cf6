"""The TLS contexts of a sync's API clients: one verifying context shared by every https API; none trusted for http."""

from __future__ import annotations

import ssl

from support.sim import sim_configuration
from syncflow import Settings
from syncflow._sync import _Producer


def _producer(**overrides: str) -> _Producer:
    return _Producer(Settings.from_mapping(sim_configuration(**overrides)), [], {}, None)


def test_https_apis_share_one_verifying_context_per_sync() -> None:
    producer = _producer()
    first = producer._verify("https://acme.api.accelo.com")
    assert producer._verify("https://api.awardco.com") is first
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert first.cert_store_stats()["x509_ca"] > 0  # the CA bundle httpx would load (certifi, or SSL_CERT_FILE)
    assert _producer()._verify("https://acme.api.accelo.com") is not first  # per sync, not per process


def test_a_cleartext_api_gets_a_context_that_trusts_nothing() -> None:
    context = _producer()._verify("http://127.0.0.1:8080")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs() == [] and context.cert_store_stats()["x509_ca"] == 0
