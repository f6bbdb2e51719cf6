"""configuration.json → typed, validated settings.

Fivetran hands `update()` a dict of strings. `Settings.from_mapping` turns it into frozen dataclasses, accepting the
example connectors' key names as aliases, and rejects every bad value with one line that names the key and the fix,
before any request is made. Credentials are wrapped in `Secret` at once, so no repr, log line or crash report can show
them.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ._exceptions import ConfigurationError
from ._http._body import DEFAULT_MAX_RESPONSE_MB, MAX_RESPONSE_KEY
from ._http._origin import cleartext_problem
from ._redaction import Secret

__all__ = [
    "KEYS",
    "KNOWN_KEYS",
    "AcceloSettings",
    "AwardcoSettings",
    "Key",
    "MockSettings",
    "Settings",
    "configured_secrets",
    "load_settings",
    "unknown_key_message",
]

logger = logging.getLogger("syncflow")

SOURCES = ("accelo", "awardco")
MOCK_BASE_URL = "http://sim.invalid"

# Chosen from the benchmark (see BENCHMARKS.md): enough pages in flight to hide a ~150 ms round trip without
# bursting past what a 5000/hour budget can sustain.
DEFAULT_MAX_CONCURRENCY = 16
# Accelo stamps date_modified when a change starts, and a long transaction (a bulk edit, an import, a workflow
# cascade) commits seconds to minutes later. Five minutes covers those and a server clock a few minutes off, and
# costs no extra request on an incremental sync unless over a page of records changed in those five minutes.
DEFAULT_ACCELO_LOOKBACK_SECONDS = 300

KeyKind = Literal["text", "secret", "url", "integer", "number", "boolean", "choice", "date"]


@dataclass(frozen=True)
class Key:
    """One configuration key: everything the setup form, the validation and the README table say about it.

    Adding a key is one entry in `KEYS` (and its use in `_parse`): the form (`syncflow.fivetran.configuration_form`),
    `KNOWN_KEYS`, `SECRET_KEYS`, the aliases and the defaults the reader falls back to all come from here, and a test
    checks that the README's configuration table lists every key.
    """

    name: str
    label: str
    description: str
    kind: KeyKind = "text"
    default: str = ""
    placeholder: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[tuple[str, str], ...] = ()  # (value, label) for a dropdown
    aliases: tuple[str, ...] = ()  # the example connectors' names for this key
    deprecated: bool = False  # still accepted (and validated), left out of the setup form

    @property
    def secret(self) -> bool:
        return self.kind == "secret"


KEYS: tuple[Key, ...] = (
    Key("use_mock", "Use the simulated APIs", "Sync from syncflow's built-in simulated Accelo and AwardCo APIs, "
        "offline, with no credentials (for trying the connector out).", "boolean", "false"),
    Key("accelo_deployment", "Accelo deployment", "Your deployment name: the 'acme' in acme.api.accelo.com.",
        placeholder="acme", aliases=("deployment",)),
    Key("accelo_client_id", "Accelo client ID", "The client ID of an Accelo service application "
        "(Accelo → Configuration → API).", placeholder="a1b2c3d4e5@acme.accelo.com", aliases=("client_id",)),
    Key("accelo_client_secret", "Accelo client secret", "The client secret of that service application.",
        "secret", aliases=("client_secret",)),
    Key("accelo_base_url", "Accelo base URL", "Optional: overrides https://{deployment}.api.accelo.com "
        "(proxies, tests). No trailing /api/v0.", "url", placeholder="https://acme.api.accelo.com"),
    Key("accelo_requests_per_hour", "Accelo requests per hour", "Client-side budget shared by every Accelo "
        "entity; the server's rate-limit headers also apply.", "integer", "5000", "5000", minimum=1),
    Key("awardco_api_key", "AwardCo API key", "Your AwardCo API key (sent as the apiKey header).", "secret",
        aliases=("api_key",)),
    Key("awardco_base_url", "AwardCo base URL", "Your AwardCo host, without a trailing /api.", "url",
        placeholder="https://api.awardco.com", aliases=("base_url",)),
    Key("awardco_requests_per_hour", "AwardCo requests per hour", "Client-side budget for AwardCo; the server's "
        "rate-limit headers also apply.", "integer", "1000", "1000", minimum=1, aliases=("rate_limit",)),
    Key("awardco_updated_since_param", "AwardCo incremental parameter", "Name of the query parameter AwardCo "
        "filters updated users by.", default="updated_since", placeholder="updated_since",
        aliases=("updated_since_param",)),
    Key("sources", "Sources", "Which APIs to sync (a comma list of accelo, awardco); default: every API whose "
        "credentials are set.", "choice", choices=(("accelo,awardco", "Accelo and AwardCo"), ("accelo", "Accelo only"),
        ("awardco", "AwardCo only"))),
    Key("streams", "Streams", "Which tables to sync: a comma list of source.table (accelo.companies), source.* "
        "(accelo.*) or a source name; default: every table of the configured sources (an Accelo resource the "
        "credentials may not read is skipped with a warning).", placeholder="accelo.*,awardco.user"),
    Key("start_date", "Start date", "Optional ISO-8601 lower bound for the first sync; default: everything.",
        "date", placeholder="2024-01-01"),
    Key("max_concurrency", "Requests in flight", "Requests in flight per API (chosen by benchmark).", "integer",
        str(DEFAULT_MAX_CONCURRENCY), str(DEFAULT_MAX_CONCURRENCY), minimum=1, maximum=256),
    Key("max_rate_limit_wait_seconds", "Longest wait for rate budget (s)", "When the budget resets later than "
        "this, the sync checkpoints and ends cleanly; the next sync carries on.", "number", "300", "300", minimum=0),
    Key("checkpoint_every_rows", "Checkpoint every N rows", "Checkpoint cadence in rows (and at the end).",
        "integer", "5000", "5000", minimum=1),
    Key("checkpoint_every_seconds", "Checkpoint every N seconds", "Checkpoint cadence in seconds.", "number", "30",
        "30", minimum=0),
    Key("queue_pages", "Pages buffered", "Pages buffered between fetching and writing (bounds memory).", "integer",
        "64", "64", minimum=1, maximum=100_000),
    Key("request_timeout_seconds", "Request timeout (s)", "Timeout of one HTTP request.", "number", "60", "60",
        minimum=0.001),
    Key("max_retries", "Retries per request (deprecated)", "Deprecated and ignored: retries are bounded by time "
        "alone (max_retry_seconds). Accepted so existing files keep working.", "integer", "8", "8", minimum=0,
        maximum=100, deprecated=True),
    Key("max_retry_seconds", "Longest retry time (s)", "How long a failing request is retried after its first "
        "failure before its stream fails (outages shorter than this are survived).", "number", "300", "300",
        minimum=0),
    Key("reconcile_every_hours", "Reconcile every (hours)", "How often each stream is re-read whole, without date "
        "filters, to repair what date filters miss and soft-delete records gone at the source; 0 = every sync.",
        "number", "24", "24", minimum=0),
    Key("reconcile_max_requests", "Reconciliation requests per sync", "The most requests a sweep may spend per API "
        "per sync (default: a quarter of that API's hourly budget); a larger sweep continues in the next sync.",
        "integer", placeholder="1250", minimum=1),
    Key("accelo_lookback_seconds", "Accelo lookback (s)", "Each incremental Accelo window re-reads this many seconds "
        "before the saved cursor, for records committed late (long transactions) and a server clock a few minutes "
        "off.", "integer", str(DEFAULT_ACCELO_LOOKBACK_SECONDS), str(DEFAULT_ACCELO_LOOKBACK_SECONDS), minimum=0,
        maximum=7 * 24 * 3600),
    Key(MAX_RESPONSE_KEY, "Largest response (MiB)", "Bound on one response's decoded size; a larger body (e.g. a "
        "compression bomb) is an error, never read whole.", "number", f"{DEFAULT_MAX_RESPONSE_MB:g}",
        f"{DEFAULT_MAX_RESPONSE_MB:g}", minimum=0.01),
    Key("ca_bundle", "CA bundle", "Optional path to PEM CA certificates to trust instead of the default store "
        "(a corporate TLS proxy); verification stays on.", placeholder="/etc/ssl/certs/corporate-ca.pem"),
    Key("mock_seed", "Simulator seed", "use_mock only: the simulated data's random seed.", "integer", "7", "7",
        minimum=0),
    Key("mock_scale", "Simulator scale", "use_mock only: multiplies the simulated record counts.", "number", "1",
        "1", minimum=0),
    Key("mock_latency_seconds", "Simulator latency (s)", "use_mock only: simulated latency per request.", "number",
        "0", "0", minimum=0),
)  # fmt: skip

KEYS_BY_NAME: Mapping[str, Key] = {key.name: key for key in KEYS}
KNOWN_KEYS = frozenset(KEYS_BY_NAME)
SECRET_KEYS = frozenset(key.name for key in KEYS if key.secret)
# The example connectors' names for our keys: their users keep their files.
ALIASES: Mapping[str, str] = {alias: key.name for key in KEYS for alias in key.aliases}
# What `fivetran configuration` writes in front of a password field it encrypted (the SDK decrypts it for debug
# runs and setup tests; one that reaches us still encrypted was not decrypted).
ENCRYPTED_PREFIX = "fivetran_encrypted:"




@dataclass(frozen=True)
class AcceloSettings:
    deployment: str
    client_id: str
    client_secret: Secret
    base_url: str
    requests_per_hour: int
    # How far each incremental window reaches back before the last one ended (late commits); see DEFAULT_LOOKBACK.
    lookback_seconds: int = 300


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
    max_retry_seconds: float = 300.0  # how long one request is retried after its first failure (the only bound)
    max_response_mb: float = DEFAULT_MAX_RESPONSE_MB
    ca_bundle: Path | None = None  # PEM CA certificates trusted instead of the default store (verification stays on)
    # How often each stream is swept whole to repair what date filters miss and to find deletes ("0": every sync).
    # A sweep costs a full read (rows / 100 requests per stream); daily keeps that under 1 % of a day's budget on an
    # account of 100,000 records, while a deleted record lingers at most a day.
    reconcile_every_hours: float = 24.0
    # The most requests a sweep may spend per API per sync (None: a quarter of that API's hourly budget), so the
    # incremental part of every sync keeps most of the budget; a bigger sweep continues in the next sync.
    reconcile_max_requests: int | None = None
    # The `streams` key: the tables to sync ("accelo.companies", "accelo.*", "awardco"); empty: every table.
    streams: tuple[str, ...] = ()

    @property
    def max_response_bytes(self) -> int:
        return int(self.max_response_mb * 1024 * 1024)

    @classmethod
    def from_mapping(cls, configuration: Mapping[str, Any]) -> Settings:
        return _parse(configuration)


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
        for name in sorted(self.spelled[k] for k in self.values if k not in KNOWN_KEYS):
            logger.warning("%s", unknown_key_message(name))
        for key in SECRET_KEYS:
            if self.values.get(key, "").startswith(ENCRYPTED_PREFIX):
                raise ConfigurationError(
                    f"{self.name(key)}: still encrypted; run through `fivetran debug` or `fivetran configuration "
                    "--test` (they decrypt it), or re-run `fivetran configuration` to enter it again"
                )

    def name(self, key: str) -> str:
        return self.spelled.get(key, key)

    def text(self, key: str) -> str:
        return self.values.get(key, "")

    def boolean(self, key: str, default: bool | None = None) -> bool:
        if default is None:
            default = _default(key) == "true"
        value = self.text(key).lower()
        if not value:
            return default
        if value in {"true", "1", "yes", "on"}:
            return True
        if value in {"false", "0", "no", "off"}:
            return False
        raise ConfigurationError(f'{self.name(key)}: expected "true" or "false", got {value!r}')

    def integer(
        self, key: str, default: int | None = None, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        entry = KEYS_BY_NAME.get(key)
        if minimum is None:
            minimum = 1 if entry is None or entry.minimum is None else int(entry.minimum)
        if maximum is None and entry is not None and entry.maximum is not None:
            maximum = int(entry.maximum)
        value = self.text(key) or ("" if default is not None else _default(key))
        if not value and default is not None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigurationError(f"{self.name(key)}: expected a whole number, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigurationError(f"{self.name(key)}: must be {bounds}, got {number}")
        return number

    def number(self, key: str, default: float | None = None, *, minimum: float | None = None) -> float:
        entry = KEYS_BY_NAME.get(key)
        if minimum is None:
            minimum = 0.0 if entry is None or entry.minimum is None else float(entry.minimum)
        value = self.text(key) or ("" if default is not None else _default(key))
        if not value and default is not None:
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
        problem = cleartext_problem(value, self.name(key))
        if problem is not None:
            raise ConfigurationError(problem)
        trimmed = value.rstrip("/")
        for suffix in forbidden_suffixes:
            if trimmed.lower().endswith(suffix):
                raise ConfigurationError(
                    f"{self.name(key)}: drop the trailing {suffix!r}; syncflow adds the API path itself"
                )
        return trimmed


def _default(key: str) -> str:
    entry = KEYS_BY_NAME.get(key)
    if entry is None:
        raise KeyError(f"{key}: not in KEYS; give it an entry there (or pass a default)")
    return entry.default


def unknown_key_message(name: str) -> str:
    """One line for a key syncflow does not know, with the nearest known key when it looks like a typo."""
    known = sorted(KNOWN_KEYS | set(ALIASES))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else f"; the known keys are listed in the README ({len(KEYS)})"
    return f"configuration: unknown key {name!r} ignored{hint}"


def _shown(value: str) -> str:
    # A URL is not a secret, but keep the message one short line.
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _parse_ca_bundle(reader: _Reader) -> Path | None:
    value = reader.text("ca_bundle")
    if not value:
        return None
    name = reader.name("ca_bundle")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"{name}: no such file {_shown(value)}; give the path of a PEM file of CA certificates"
        )
    try:
        # Loading it now is the check that it is readable and holds certificates, before any request.
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        raise ConfigurationError(
            f"{name}: {_shown(value)} holds no PEM CA certificate; give a file of -----BEGIN CERTIFICATE----- blocks"
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"{name}: cannot read {_shown(value)} ({exc.strerror or type(exc).__name__}); check its permissions"
        ) from None
    return path


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


_STREAM_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.([a-z][a-z0-9_]*|\*))?")


def _parse_streams(reader: _Reader) -> tuple[str, ...]:
    # Only the form is checked here; which names exist is known once the sources are (`select_streams`).
    names = tuple(part.strip().lower() for part in reader.text("streams").split(",") if part.strip())
    malformed = [name for name in names if not _STREAM_PATTERN.fullmatch(name)]
    if malformed:
        raise ConfigurationError(
            f"{reader.name('streams')}: {', '.join(map(repr, malformed))} is not a stream; use a comma list of "
            "source.table (accelo.companies), source.* (accelo.*) or a source (awardco)"
        )
    return names


def _parse_accelo(reader: _Reader, use_mock: bool) -> AcceloSettings | None:
    budget = reader.integer("accelo_requests_per_hour")
    lookback = reader.integer("accelo_lookback_seconds")
    if use_mock:
        from .sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET

        return AcceloSettings(
            "syncflow-sim", ACCELO_CLIENT_ID, Secret(ACCELO_CLIENT_SECRET), MOCK_BASE_URL, budget, lookback
        )
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
    return AcceloSettings(
        deployment or urlsplit(base_url).hostname or "", client_id, Secret(secret), base_url, budget, lookback
    )


def _parse_awardco(reader: _Reader, use_mock: bool) -> AwardcoSettings | None:
    budget = reader.integer("awardco_requests_per_hour")
    param = reader.text("awardco_updated_since_param") or _default("awardco_updated_since_param")
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
    # Both APIs are checked before either error is raised: a user fixing credentials sees every problem at once.
    problems: list[str] = []
    accelo = awardco = None
    try:
        accelo = _parse_accelo(reader, use_mock) if "accelo" in sources else None
    except ConfigurationError as exc:
        problems.append(str(exc))
    try:
        awardco = _parse_awardco(reader, use_mock) if "awardco" in sources else None
    except ConfigurationError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigurationError("\n".join(problems))
    if accelo is None and awardco is None:
        raise ConfigurationError(
            'configuration: no source configured; set the accelo_* or awardco_* keys, or "use_mock": "true"'
        )
    _warn_deprecated_max_retries(reader)
    mock = MockSettings(
        seed=reader.integer("mock_seed"),
        scale=reader.number("mock_scale"),
        latency_seconds=reader.number("mock_latency_seconds"),
    )
    return Settings(
        accelo=accelo,
        awardco=awardco,
        use_mock=use_mock,
        mock=mock,
        max_concurrency=reader.integer("max_concurrency"),
        start_date=_parse_start_date(reader),
        max_rate_limit_wait_seconds=reader.number("max_rate_limit_wait_seconds"),
        checkpoint_every_rows=reader.integer("checkpoint_every_rows"),
        checkpoint_every_seconds=reader.number("checkpoint_every_seconds"),
        queue_pages=reader.integer("queue_pages"),
        request_timeout_seconds=reader.number("request_timeout_seconds"),
        max_retry_seconds=reader.number("max_retry_seconds"),
        max_response_mb=reader.number(MAX_RESPONSE_KEY),
        ca_bundle=_parse_ca_bundle(reader),
        reconcile_every_hours=reader.number("reconcile_every_hours"),
        reconcile_max_requests=reader.integer("reconcile_max_requests", 0, minimum=1) or None,
        streams=_parse_streams(reader),
    )


def _warn_deprecated_max_retries(reader: _Reader) -> None:
    # An attempt count ended outages long before max_retry_seconds (9 tries of jittered backoff last ~40 s), so it
    # no longer bounds anything. The key stays accepted (and checked) so existing configuration files keep working.
    if reader.text("max_retries"):
        reader.integer("max_retries", 8, minimum=0, maximum=100)
        logger.warning(
            "%s: deprecated and ignored; retries are bounded by time alone (max_retry_seconds); remove the key",
            reader.name("max_retries"),
        )
