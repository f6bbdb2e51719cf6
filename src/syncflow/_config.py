"""configuration.json → typed, validated settings.

Fivetran hands `update()` a dict of strings. `Settings.from_mapping` turns it into frozen dataclasses, accepting the
example connectors' key names as aliases, and rejects every bad value with one line that names the key and the fix,
before any request is made. Credentials are wrapped in `Secret` at once, so no repr, log line or crash report can show
them.

This module reads the engine's keys (`KEYS`: concurrency, checkpoints, retries, budgets, mock mode); each source
declares and parses its own (`Source.keys`, `Source.configure`, given a `ConfigReader`). `all_keys(sources)` is the
whole registry the setup form, the README table and the unknown-key warning use. It names no source, and never
imports the simulator: mock mode only asks each source for the values that point it there.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ._exceptions import ConfigurationError
from ._http._body import DEFAULT_MAX_RESPONSE_MB, MAX_RESPONSE_KEY
from ._http._origin import cleartext_problem
from ._redaction import Secret
from ._time import parse_iso8601

if TYPE_CHECKING:
    from ._source import Source, SourceSettings

__all__ = [
    "KEYS",
    "ConfigReader",
    "Key",
    "KeyRegistry",
    "MockSettings",
    "Settings",
    "all_keys",
    "builtin_sources",
    "configured_secrets",
    "load_settings",
    "unknown_key_message",
]

logger = logging.getLogger("syncflow")


# Chosen from the benchmark (see BENCHMARKS.md): enough pages in flight to hide a ~150 ms round trip without
# bursting past what a 5000/hour budget can sustain.
DEFAULT_MAX_CONCURRENCY = 16

KeyKind = Literal["text", "secret", "url", "integer", "number", "boolean", "choice", "date"]


@dataclass(frozen=True)
class Key:
    """One configuration key: everything the setup form, the validation and the README table say about it.

    Adding an engine key is one entry in `KEYS` (and its use in `_parse`); a source's keys are its `Source.keys`
    (read in its `configure`). The form (`syncflow.fivetran.configuration_form`),
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
    Key("use_mock", "Use the simulated APIs", "Sync from syncflow's built-in simulated APIs, offline, with no "
        "credentials (for trying the connector out).", "boolean", "false"),
    Key("streams", "Streams", "Which tables to sync: a comma list of source.table, source.* (every table of a "
        "source) or a source name; default: every table of the configured sources (a resource the credentials may "
        "not read is skipped with a warning).", placeholder="source.table,source.*"),
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
    Key("queue_pages", "Pages buffered",
        "Pages queued between fetching and writing (bounds memory; a sync's writer holds up to twice as many more, "
        "to write a table at a time).", "integer",
        "64", "64", minimum=1, maximum=100_000),
    Key("fetch_process", "Fetch in a separate process", "fivetran debug / deploy: fetch and decode pages in a child "
        "process, so the SDK's writer has the Python interpreter to itself (~10 % faster on two or more cores); "
        "false: on a thread of the connector's own process.", "boolean", "true"),
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


def _sources_key(names: Sequence[str]) -> Key:
    """The `sources` key: its dropdown offers every source together and each alone."""
    labels = " and ".join(names)
    choices = ((",".join(names), labels), *((name, f"{name} only") for name in names)) if len(names) > 1 else ()
    return Key("sources", "Sources", f"Which APIs to sync (a comma list of {', '.join(names)}); default: every API "
               "whose credentials are set.", "choice" if choices else "text", choices=choices)  # fmt: skip


def builtin_sources() -> tuple[Source, ...]:
    """The sources syncflow ships (`syncflow.sources.BUILTIN_SOURCES`), imported when first needed."""
    from .sources import BUILTIN_SOURCES

    return tuple(BUILTIN_SOURCES)


@dataclass(frozen=True)
class KeyRegistry:
    """Every configuration key of the engine and of the given sources, and what derives from them."""

    keys: tuple[Key, ...]

    @property
    def by_name(self) -> Mapping[str, Key]:
        return {key.name: key for key in self.keys}

    @property
    def known(self) -> frozenset[str]:
        return frozenset(key.name for key in self.keys)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(key.name for key in self.keys if key.secret)

    @property
    def aliases(self) -> Mapping[str, str]:
        """The example connectors' names for our keys: their users keep their files."""
        return {alias: key.name for key in self.keys for alias in key.aliases}


def all_keys(sources: Sequence[Source] | None = None) -> KeyRegistry:
    """The engine's keys and every source's (the built-in ones when `sources` is None), in the form's order."""
    plugins = builtin_sources() if sources is None else tuple(sources)
    names = [plugin.name for plugin in plugins]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"sources: two sources share a name ({', '.join(names)}); give each its own")
    engine = [key for key in KEYS if key.name != "use_mock"]
    keys = (KEYS[0], *(key for plugin in plugins for key in plugin.keys), _sources_key(names), *engine)
    seen: set[str] = set()
    for key in keys:
        if key.name in seen:
            raise ConfigurationError(f"{key.name}: declared twice (by the engine or two sources); rename one")
        seen.add(key.name)
    return KeyRegistry(keys)

# What `fivetran configuration` writes in front of a password field it encrypted (the SDK decrypts it for debug
# runs and setup tests; one that reaches us still encrypted was not decrypted).
ENCRYPTED_PREFIX = "fivetran_encrypted:"




@dataclass(frozen=True)
class MockSettings:
    """How the embedded simulator is set up when `use_mock` is true."""

    seed: int = 7
    scale: float = 1.0
    latency_seconds: float = 0.0


@dataclass(frozen=True)
class Settings:
    """The engine's settings, and each configured source's (`sources`, by source name): a checked configuration
    (`syncflow.load_settings`); every public call also takes the raw mapping or path."""

    sources: Mapping[str, SourceSettings]
    use_mock: bool = False
    mock: MockSettings = field(default_factory=MockSettings)
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    start_date: datetime | None = None
    max_rate_limit_wait_seconds: float = 300.0
    checkpoint_every_rows: int = 5000
    checkpoint_every_seconds: float = 30.0
    queue_pages: int = 64
    # The connector (`syncflow.fivetran.update`) fetches in a child process (`_fetch_process`); the Python API
    # always fetches on a thread of the caller's process.
    fetch_process: bool = True
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
    # The source plug-ins this configuration was read with (their streams are the ones it can sync).
    plugins: tuple[Source, ...] = field(default_factory=builtin_sources, repr=False, compare=False)

    def configured(self) -> list[tuple[Source, SourceSettings]]:
        """Each source this configuration sets up, with its settings, in the plug-ins' order."""
        return [(plugin, self.sources[plugin.name]) for plugin in self.plugins if plugin.name in self.sources]

    @property
    def max_response_bytes(self) -> int:
        return int(self.max_response_mb * 1024 * 1024)

    @classmethod
    def from_mapping(cls, configuration: Mapping[str, Any], *, sources: Sequence[Source] | None = None) -> Settings:
        """Settings from a configuration dict, read by the engine and by `sources` (default: the built-in ones)."""
        return _parse(configuration, builtin_sources() if sources is None else tuple(sources))


def configured_secrets(
    configuration: Mapping[str, Any], sources: Sequence[Source] | None = None
) -> tuple[Secret, ...]:
    """The credentials in a raw configuration (under their own or alias names), before it is validated: what must
    be scrubbed from anything logged while it is read."""
    registry = all_keys(sources)
    aliases, secrets = registry.aliases, registry.secrets
    found = []
    for key, value in configuration.items() if isinstance(configuration, Mapping) else ():
        if aliases.get(key, key) in secrets and isinstance(value, str) and value:
            found.append(Secret(value))
    return tuple(found)


def load_settings(
    source: Mapping[str, Any] | str | PathLike[str], *, sources: Sequence[Source] | None = None
) -> Settings:
    """Settings from a configuration dict, or from the path of a configuration.json file."""
    return Settings.from_mapping(read_configuration(source), sources=sources)


def read_configuration(source: Mapping[str, Any] | str | PathLike[str]) -> Mapping[str, Any]:
    """The configuration mapping itself, or the JSON object in a configuration.json file."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such configuration file") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid JSON (line {exc.lineno}); fix the file's syntax") from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"{path}: expected a JSON object of string values")
    return document


class ConfigReader:
    """Reads typed values from the raw configuration; every error names the key the user wrote.

    A source's `configure` gets one: `text`, `boolean`, `integer`, `number` and `url` read its keys (defaults and
    bounds from their `Key` entries), `name` is the key as the user spelled it (an alias, perhaps), for messages.
    `mock` is true in mock mode (`use_mock`): the values a source's `mock_configuration` gave are in place then.
    """

    def __init__(self, raw: Mapping[str, Any], registry: KeyRegistry | None = None) -> None:
        self.registry = registry if registry is not None else all_keys()
        self.mock = False
        self._by_name = self.registry.by_name
        known, aliases = self.registry.known, self.registry.aliases
        self._known = known
        if not isinstance(raw, Mapping):
            raise ConfigurationError("configuration: expected a JSON object (dict) of string values")
        self.values: dict[str, str] = {}
        self.spelled: dict[str, str] = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                raise ConfigurationError(f"configuration key {key!r}: keys must be strings")
            canonical = aliases.get(key, key)
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
        for name in sorted(self.spelled[k] for k in self.values if k not in known):
            logger.warning("%s", unknown_key_message(name, self.registry))
        for key in self.registry.secrets:
            if self.values.get(key, "").startswith(ENCRYPTED_PREFIX):
                raise ConfigurationError(
                    f"{self.name(key)}: still encrypted; run through `fivetran debug` or `fivetran configuration "
                    "--test` (they decrypt it), or re-run `fivetran configuration` to enter it again"
                )

    def name(self, key: str) -> str:
        return self.spelled.get(key, key)

    def overlaid(self, values: Mapping[str, str]) -> ConfigReader:
        """This reader with `values` in place of what the user wrote (mock mode: the simulator's endpoints)."""
        copy = ConfigReader({}, self.registry)
        copy.values = {**self.values, **values}
        copy.spelled = {**self.spelled, **{key: key for key in values}}
        copy.mock = True
        return copy

    def default(self, key: str) -> str:
        entry = self._by_name.get(key)
        if entry is None:
            raise KeyError(f"{key}: not a declared key; give it a Key entry (or pass a default)")
        return entry.default

    def text(self, key: str) -> str:
        return self.values.get(key, "")

    def boolean(self, key: str, default: bool | None = None) -> bool:
        if default is None:
            default = self.default(key) == "true"
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
        entry = self._by_name.get(key)
        if minimum is None:
            minimum = 1 if entry is None or entry.minimum is None else int(entry.minimum)
        if maximum is None and entry is not None and entry.maximum is not None:
            maximum = int(entry.maximum)
        value = self.text(key) or ("" if default is not None else self.default(key))
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
        entry = self._by_name.get(key)
        if minimum is None:
            minimum = 0.0 if entry is None or entry.minimum is None else float(entry.minimum)
        value = self.text(key) or ("" if default is not None else self.default(key))
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
        # In mock mode the requests go to an in-process transport, never a network.
        problem = None if self.mock else cleartext_problem(value, self.name(key))
        if problem is not None:
            raise ConfigurationError(problem)
        trimmed = value.rstrip("/")
        for suffix in forbidden_suffixes:
            if trimmed.lower().endswith(suffix):
                raise ConfigurationError(
                    f"{self.name(key)}: drop the trailing {suffix!r}; syncflow adds the API path itself"
                )
        return trimmed


def unknown_key_message(name: str, registry: KeyRegistry | None = None) -> str:
    """One line for a key syncflow does not know, with the nearest known key when it looks like a typo."""
    registry = registry if registry is not None else all_keys()
    known = sorted(registry.known | set(registry.aliases))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    count = len(registry.keys)
    hint = f"; did you mean {close[0]!r}?" if close else f"; the known keys are listed in the README ({count})"
    return f"configuration: unknown key {name!r} ignored{hint}"


def _shown(value: str) -> str:
    # A URL is not a secret, but keep the message one short line.
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _parse_ca_bundle(reader: ConfigReader) -> Path | None:
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


def _parse_start_date(reader: ConfigReader) -> datetime | None:
    value = reader.text("start_date")
    if not value:
        return None
    try:
        parsed = parse_iso8601(value)
    except ValueError:
        raise ConfigurationError(
            f"{reader.name('start_date')}: expected an ISO-8601 date such as 2024-01-01 or 2024-01-01T00:00:00Z, "
            f"got {value!r}"
        ) from None
    return parsed.astimezone(timezone.utc)


def _parse_sources(reader: ConfigReader, names: Sequence[str]) -> tuple[str, ...]:
    value = reader.text("sources")
    if not value:
        return tuple(names)
    chosen = tuple(part.strip().lower() for part in value.split(",") if part.strip())
    unknown = [name for name in chosen if name not in names]
    if unknown or not chosen:
        raise ConfigurationError(
            f"{reader.name('sources')}: unknown source {', '.join(map(repr, unknown)) or '(empty)'}; "
            f"use a comma list of {', '.join(names)}"
        )
    return chosen


_STREAM_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.([a-z][a-z0-9_]*|\*))?")


def _parse_streams(reader: ConfigReader) -> tuple[str, ...]:
    # Only the form is checked here; which names exist is known once the sources are (`select_streams`).
    names = tuple(part.strip().lower() for part in reader.text("streams").split(",") if part.strip())
    malformed = [name for name in names if not _STREAM_PATTERN.fullmatch(name)]
    if malformed:
        raise ConfigurationError(
            f"{reader.name('streams')}: {', '.join(map(repr, malformed))} is not a stream; use a comma list of "
            "source.table, source.* (every table of a source) or a source name"
        )
    return names


def _parse(raw: Mapping[str, Any], plugins: tuple[Source, ...]) -> Settings:
    reader = ConfigReader(raw, all_keys(plugins))
    use_mock = reader.boolean("use_mock", False)
    chosen = _parse_sources(reader, [plugin.name for plugin in plugins])
    # Every source is checked before any error is raised: a user fixing credentials sees every problem at once.
    problems: list[str] = []
    configured: dict[str, SourceSettings] = {}
    for plugin in plugins:
        if plugin.name not in chosen:
            continue
        view = reader.overlaid(plugin.mock_configuration()) if use_mock else reader
        try:
            found = plugin.configure(view)
        except ConfigurationError as exc:
            problems.append(str(exc))
            continue
        if found is not None:
            configured[plugin.name] = found
    if problems:
        raise ConfigurationError("\n".join(problems))
    if not configured:
        prefixes = " or ".join(f"{plugin.name}_*" for plugin in plugins if plugin.name in chosen)
        raise ConfigurationError(
            f'configuration: no source configured; set the {prefixes or "sources"} keys, or "use_mock": "true"'
        )
    _warn_deprecated_max_retries(reader)
    mock = MockSettings(
        seed=reader.integer("mock_seed"),
        scale=reader.number("mock_scale"),
        latency_seconds=reader.number("mock_latency_seconds"),
    )
    return Settings(
        sources=configured,
        use_mock=use_mock,
        mock=mock,
        max_concurrency=reader.integer("max_concurrency"),
        start_date=_parse_start_date(reader),
        max_rate_limit_wait_seconds=reader.number("max_rate_limit_wait_seconds"),
        checkpoint_every_rows=reader.integer("checkpoint_every_rows"),
        checkpoint_every_seconds=reader.number("checkpoint_every_seconds"),
        queue_pages=reader.integer("queue_pages"),
        fetch_process=reader.boolean("fetch_process"),
        request_timeout_seconds=reader.number("request_timeout_seconds"),
        max_retry_seconds=reader.number("max_retry_seconds"),
        max_response_mb=reader.number(MAX_RESPONSE_KEY),
        ca_bundle=_parse_ca_bundle(reader),
        reconcile_every_hours=reader.number("reconcile_every_hours"),
        reconcile_max_requests=reader.integer("reconcile_max_requests", 0, minimum=1) or None,
        streams=_parse_streams(reader),
        plugins=plugins,
    )


def _warn_deprecated_max_retries(reader: ConfigReader) -> None:
    # An attempt count ended outages long before max_retry_seconds (9 tries of jittered backoff last ~40 s), so it
    # no longer bounds anything. The key stays accepted (and checked) so existing configuration files keep working.
    if reader.text("max_retries"):
        reader.integer("max_retries", 8, minimum=0, maximum=100)
        logger.warning(
            "%s: deprecated and ignored; retries are bounded by time alone (max_retry_seconds); remove the key",
            reader.name("max_retries"),
        )
