"""The Fivetran Connector SDK adapter: `schema()` and `update()`; the only module that imports the SDK.

`update()` runs on the SDK's thread; syncflow's drain runs there too, so `op.upsert` and `op.checkpoint` are only
ever called from it. syncflow's log records are forwarded to the SDK's `Logging`, scrubbed of secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fivetran_connector_sdk import Logging as log
from fivetran_connector_sdk import Operations as op

from ._config import Settings, configured_secrets
from ._exceptions import SyncflowError
from ._progress import LogProgress
from ._redaction import Secret, redact_text
from ._state import StateDocument
from ._sync import SyncResult, available_streams, run_sync

__all__ = ["FivetranSink", "SyncFailed", "schema", "update"]


class SyncFailed(RuntimeError):
    """An expected failure (bad configuration, refused credentials, an API error): its message says what to fix."""


class FivetranSink:
    """Writes through the SDK's operations. Called only from the thread running `update()`."""

    def upsert(self, schema: str, table: str, row: Mapping[str, Any]) -> None:
        op.upsert(table, row, schema=schema)

    def delete(self, schema: str, table: str, keys: Sequence[Mapping[str, Any]]) -> None:
        # SDK 3.0: op.delete(table, keys: dict, *, schema=None), one call per row; Fivetran soft-deletes it
        # (sets _fivetran_deleted).
        for key in keys:
            op.delete(table, dict(key), schema=schema)

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        op.checkpoint(state)  # serialises at once (json.dumps), as the Sink protocol requires


class _SdkLogHandler(logging.Handler):
    def __init__(self, secrets: tuple[Secret, ...]) -> None:
        super().__init__(logging.INFO)
        self._secrets = secrets

    def emit(self, record: logging.LogRecord) -> None:
        # A log line must never fail the sync (the SDK's Logging raises when its level is unset): like every
        # logging handler, report our own failure through handleError instead of raising into the fetch.
        try:
            message = redact_text(record.getMessage(), self._secrets)
            if record.levelno >= logging.ERROR:
                log.severe(message)
            elif record.levelno >= logging.WARNING:
                log.warning(message)
            else:
                log.info(message)
        except Exception:
            self.handleError(record)


@contextmanager
def _forward_logs(secrets: tuple[Secret, ...]) -> Iterator[None]:
    logger = logging.getLogger("syncflow")
    handler = _SdkLogHandler(secrets)
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the SDK prints; a root handler would print it twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate


def _settings(configuration: Mapping[str, Any]) -> Settings:
    try:
        return Settings.from_mapping(configuration)
    except SyncflowError as exc:
        raise SyncFailed(str(exc)) from None


def schema(configuration: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The destination tables of every configured source (schema `accelo` and/or `awardco`)."""
    return [stream.schema_entry() for stream in available_streams(_settings(configuration))]


def update(configuration: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Sync every configured stream from `state`; checkpoints as rows land; raises SyncFailed on expected errors."""
    secrets = configured_secrets(configuration)
    with _forward_logs(secrets):  # before parsing, so its warnings (unknown keys) reach the SDK's log too
        settings = _settings(configuration)
        try:
            document = StateDocument.load(state)
            if settings.use_mock:
                log.info("use_mock is true: syncing from the embedded simulated Accelo and AwardCo APIs")
            result = run_sync(settings, FivetranSink(), document, progress=LogProgress())
        except SyncflowError as exc:
            # One clear line, not a traceback through the event loop: the message names the API, endpoint and fix.
            raise SyncFailed(redact_text(str(exc), secrets)) from None
        _summarise(result)


def _summarise(result: SyncResult) -> None:
    for api, stats in sorted(result.requests.items()):
        log.info(
            f"{api}: {stats.requests} requests, {stats.retries} retries, {stats.rate_limited} answered 429, "
            f"{stats.token_refreshes} token refreshes"
        )
    for stream, summary in sorted(result.streams.items()):
        log.info(
            f"{stream}: {summary.rows} rows, {summary.requests} requests, {summary.retries} retries, "
            f"{summary.rate_limited} answered 429, {summary.seconds:.1f} s"
            + (f"; reconciliation: {summary.repaired} rows repaired, {summary.deleted} deleted"
               if summary.repaired or summary.deleted else "")
        )  # fmt: skip
    for warning in result.warnings:
        log.warning(warning)
    state = "stopped early (rate budget); the next sync resumes" if result.stopped_early else "complete"
    log.info(f"sync {state} in {result.seconds:.1f} s with {result.checkpoints} checkpoints")
