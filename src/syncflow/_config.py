"""configuration.json → typed, validated settings.

Fivetran hands `update()` a dict of strings. `Settings.from_mapping` turns it into frozen dataclasses, accepting the
example connectors' key names as aliases, and rejects every bad value with one line that names the key and the fix,
before any request is made. Credentials are wrapped in `Secret` at once, so no repr, log line or crash report can show
them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import ConfigurationError
from ._redaction import Secret

__all__ = ["AcceloSettings", "AwardcoSettings", "MockSettings", "Settings", "configured_secrets", "load_settings"]

logger = logging.getLogger("syncflow")

SOURCES = ("accelo", "awardco")
MOCK_BASE_URL = "http://sim.invalid"

# The example connectors' names for our keys: their users keep their files.
ALIASES: Mapping[str, str] = {
    "deployment": "accelo_deployment",
    "client_id": "accelo_client_id",
    "client_secret": "accelo_client_secret",
    "api_key": "awardco_api_key",
    "base_url": "awardco_base_url",
    "rate_limit": "awardco_requests_per_hour",
    "updated_since_param": "awardco_updated_since_param",
}

KNOWN_KEYS = frozenset(
    {
        "use_mock",
        "sources",
        "accelo_deployment",
        "accelo_client_id",
        "accelo_client_secret",
        "accelo_base_url",
        "accelo_requests_per_hour",
        "awardco_api_key",
        "awardco_base_url",
        "awardco_requests_per_hour",
        "awardco_updated_since_param",
        "max_concurrency",
        "start_date",
        "max_rate_limit_wait_seconds",
        "checkpoint_every_rows",
        "checkpoint_every_seconds",
        "queue_pages",
        "request_timeout_seconds",
        "max_retries",
        "max_retry_seconds",
        "reconcile_every_hours",
        "reconcile_max_requests",
        "mock_seed",
        "mock_scale",
        "mock_latency_seconds",
    }
)

# Chosen from the benchmark (see BENCHMARKS.md): enough pages in flight to hide a ~150 ms round trip without
# bursting past what a 5000/hour budget can sustain.
DEFAULT_MAX_CONCURRENCY = 16


@dataclass(frozen=True)
class AcceloSettings:
    deployment: str
    client_id: str
    client_secret: Secret
    base_url: str
    requests_per_hour: int


@dataclass(frozen=True)
class AwardcoSettings:
    api_key: Secret
    base_url: str
    requests_per_hour: int
    updated_since_param: str = "updated_since"


@dataclass(frozen=True)
class MockSettings:
    """How the embedded simulator is set up when `use_mock` is true."""

    seed: int = 7
    scale: float = 1.0
    latency_seconds: float = 0.0


@dataclass(frozen=True)
class Settings:
    accelo: AcceloSettings | None
    awardco: AwardcoSettings | None
    use_mock: bool = False
    mock: MockSettings = field(default_factory=MockSettings)
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    start_date: datetime | None = None
    max_rate_limit_wait_seconds: float = 300.0
    checkpoint_every_rows: int = 5000
    checkpoint_every_seconds: float = 30.0
    queue_pages: int = 64
    request_timeout_seconds: float = 60.0
    max_retries: int = 8
    max_retry_seconds: float = 300.0
    # How often each stream is swept whole to repair what date filters miss and to find deletes ("0": every sync).
    # A sweep costs a full read (rows / 100 requests per stream); daily keeps that under 1 % of a day's budget on an
    # account of 100,000 records, while a deleted record lingers at most a day.
    reconcile_every_hours: float = 24.0
    # The most requests a sweep may spend per API per sync (None: a quarter of that API's hourly budget), so the
    # incremental part of every sync keeps most of the budget; a bigger sweep continues in the next sync.
    reconcile_max_requests: int | None = None

    @classmethod
    def from_mapping(cls, configuration: Mapping[str, Any]) -> Settings:
        return _parse(configuration)


SECRET_KEYS = frozenset({"accelo_client_secret", "awardco_api_key"})


def configured_secrets(configuration: Mapping[str, Any]) -> tuple[Secret, ...]:
    """The credentials in a raw configuration (under their own or alias names), before it is validated: what must
    be scrubbed from anything logged while it is read."""
    found = []
    for key, value in configuration.items() if isinstance(configuration, Mapping) else ():
        if ALIASES.get(key, key) in SECRET_KEYS and isinstance(value, str) and value:
            found.append(Secret(value))
    return tuple(found)


def load_settings(source: Mapping[str, Any] | str | PathLike[str]) -> Settings:
    """Settings from a configuration dict, or from the path of a configuration.json file."""
    if isinstance(source, Mapping):
        return Settings.from_mapping(source)
    path = Path(source)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such configuration file") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid JSON (line {exc.lineno}); fix the file's syntax") from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"{path}: expected a JSON object of string values")
    return Settings.from_mapping(document)


class _Reader:
    """Reads typed values from the raw mapping; every error names the key the user wrote."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigurationError("configuration: expected a JSON object (dict) of string values")
        self.values: dict[str, str] = {}
        self.spelled: dict[str, str] = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                raise ConfigurationError(f"configuration key {key!r}: keys must be strings")
            canonical = ALIASES.get(key, key)
            if canonical in self.values and self.spelled[canonical] != key:
                raise ConfigurationError(
                    f"{key}: also given as {self.spelled[canonical]!r}; keep only one of the two keys"
                )
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (int, float)):
                value = str(value)
            elif not isinstance(value, str):
                raise ConfigurationError(f"{key}: expected a string value, got {type(value).__name__}")
            self.values[canonical] = value.strip()
            self.spelled[canonical] = key
        unknown = sorted(self.spelled[k] for k in self.values if k not in KNOWN_KEYS)
        if unknown:
            logger.warning("configuration: ignoring unknown key(s) %s", ", ".join(unknown))

    def name(self, key: str) -> str:
        return self.spelled.get(key, key)

    def text(self, key: str) -> str:
        return self.values.get(key, "")

    def boolean(self, key: str, default: bool) -> bool:
        value = self.text(key).lower()
        if not value:
            return default
        if value in {"true", "1", "yes", "on"}:
            return True
        if value in {"false", "0", "no", "off"}:
            return False
        raise ConfigurationError(f'{self.name(key)}: expected "true" or "false", got {value!r}')

    def integer(self, key: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
        value = self.text(key)
        if not value:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigurationError(f"{self.name(key)}: expected a whole number, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigurationError(f"{self.name(key)}: must be {bounds}, got {number}")
        return number

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.text(key)
        if not value:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigurationError(f"{self.name(key)}: expected a number, got {value!r}") from None
        if not math.isfinite(number) or number < minimum:
            raise ConfigurationError(f"{self.name(key)}: must be a finite number >= {minimum}, got {value!r}")
        return number

    def url(self, key: str, *, forbidden_suffixes: tuple[str, ...]) -> str:
        value = self.text(key)
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigurationError(
                f"{self.name(key)}: expected an http(s) URL such as https://host.example.com, got {_shown(value)}"
            )
        if parts.query or parts.fragment:
            raise ConfigurationError(f"{self.name(key)}: remove the query string or fragment from the URL")
        trimmed = value.rstrip("/")
        for suffix in forbidden_suffixes:
            if trimmed.lower().endswith(suffix):
                raise ConfigurationError(
                    f"{self.name(key)}: drop the trailing {suffix!r}; syncflow adds the API path itself"
                )
        return trimmed


def _shown(value: str) -> str:
    # A URL is not a secret, but keep the message one short line.
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _parse_start_date(reader: _Reader) -> datetime | None:
    value = reader.text("start_date")
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"{reader.name('start_date')}: expected an ISO-8601 date such as 2024-01-01 or 2024-01-01T00:00:00Z, "
            f"got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _parse_sources(reader: _Reader) -> tuple[str, ...]:
    value = reader.text("sources")
    if not value:
        return SOURCES
    names = tuple(part.strip().lower() for part in value.split(",") if part.strip())
    unknown = [name for name in names if name not in SOURCES]
    if unknown or not names:
        raise ConfigurationError(
            f"{reader.name('sources')}: unknown source {', '.join(map(repr, unknown)) or '(empty)'}; "
            f"use a comma list of {', '.join(SOURCES)}"
        )
    return names


def _parse_accelo(reader: _Reader, use_mock: bool) -> AcceloSettings | None:
    budget = reader.integer("accelo_requests_per_hour", 5000)
    if use_mock:
        from .sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET

        return AcceloSettings("syncflow-sim", ACCELO_CLIENT_ID, Secret(ACCELO_CLIENT_SECRET), MOCK_BASE_URL, budget)
    deployment = reader.text("accelo_deployment")
    client_id = reader.text("accelo_client_id")
    secret = reader.text("accelo_client_secret")
    has_url = bool(reader.text("accelo_base_url"))
    if not (deployment or client_id or secret or has_url):
        return None
    if not deployment and not has_url:
        raise ConfigurationError(
            "accelo_deployment: missing; set it to your deployment name (the 'acme' in acme.api.accelo.com)"
        )
    for key, value in (("accelo_client_id", client_id), ("accelo_client_secret", secret)):
        if not value:
            raise ConfigurationError(
                f"{reader.name(key)}: missing; copy it from Accelo → Configuration → API (a service application)"
            )
    if deployment and ("." in deployment or "/" in deployment):
        raise ConfigurationError(
            f"{reader.name('accelo_deployment')}: expected the bare deployment name (e.g. 'acme'), not a host or URL"
        )
    if has_url:
        base_url = reader.url("accelo_base_url", forbidden_suffixes=("/api/v0", "/api", "/oauth2/v0"))
    else:
        base_url = f"https://{deployment}.api.accelo.com"
    return AcceloSettings(deployment or urlsplit(base_url).hostname or "", client_id, Secret(secret), base_url, budget)


def _parse_awardco(reader: _Reader, use_mock: bool) -> AwardcoSettings | None:
    budget = reader.integer("awardco_requests_per_hour", 1000)
    param = reader.text("awardco_updated_since_param") or "updated_since"
    if not param.replace("_", "").isalnum():
        raise ConfigurationError(f"{reader.name('awardco_updated_since_param')}: expected a query parameter name")
    if use_mock:
        from .sim import AWARDCO_API_KEY

        return AwardcoSettings(Secret(AWARDCO_API_KEY), MOCK_BASE_URL, budget, param)
    key = reader.text("awardco_api_key")
    has_url = bool(reader.text("awardco_base_url"))
    if not key and not has_url:
        return None
    if not key:
        raise ConfigurationError(f"{reader.name('awardco_api_key')}: missing; set your AwardCo API key")
    if not has_url:
        raise ConfigurationError(
            f"{reader.name('awardco_base_url')}: missing; set your AwardCo host, e.g. https://api.awardco.com"
        )
    base_url = reader.url("awardco_base_url", forbidden_suffixes=("/api/users", "/api"))
    return AwardcoSettings(Secret(key), base_url, budget, param)


def _parse(raw: Mapping[str, Any]) -> Settings:
    reader = _Reader(raw)
    use_mock = reader.boolean("use_mock", False)
    sources = _parse_sources(reader)
    accelo = _parse_accelo(reader, use_mock) if "accelo" in sources else None
    awardco = _parse_awardco(reader, use_mock) if "awardco" in sources else None
    if accelo is None and awardco is None:
        raise ConfigurationError(
            'configuration: no source configured; set the accelo_* or awardco_* keys, or "use_mock": "true"'
        )
    mock = MockSettings(
        seed=reader.integer("mock_seed", 7, minimum=0),
        scale=reader.number("mock_scale", 1.0),
        latency_seconds=reader.number("mock_latency_seconds", 0.0),
    )
    return Settings(
        accelo=accelo,
        awardco=awardco,
        use_mock=use_mock,
        mock=mock,
        max_concurrency=reader.integer("max_concurrency", DEFAULT_MAX_CONCURRENCY, maximum=256),
        start_date=_parse_start_date(reader),
        max_rate_limit_wait_seconds=reader.number("max_rate_limit_wait_seconds", 300.0),
        checkpoint_every_rows=reader.integer("checkpoint_every_rows", 5000),
        checkpoint_every_seconds=reader.number("checkpoint_every_seconds", 30.0),
        queue_pages=reader.integer("queue_pages", 64, maximum=100_000),
        request_timeout_seconds=reader.number("request_timeout_seconds", 60.0, minimum=0.001),
        max_retries=reader.integer("max_retries", 8, minimum=0, maximum=100),
        max_retry_seconds=reader.number("max_retry_seconds", 300.0),
        reconcile_every_hours=reader.number("reconcile_every_hours", 24.0),
        reconcile_max_requests=reader.integer("reconcile_max_requests", 0, minimum=1) or None,
    )
