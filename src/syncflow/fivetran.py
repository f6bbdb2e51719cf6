"""The Fivetran Connector SDK adapter: `schema()`, `update()`, the setup form and its setup tests; the only module
that imports the SDK.

`update()` runs on the SDK's thread; syncflow's drain runs there too, so `op.upsert` and `op.checkpoint` are only
ever called from it. syncflow's log records are forwarded to the SDK's `Logging`, scrubbed of secrets.

An expected failure (a bad configuration value, refused credentials, an API error) ends the sync through
`op.error(message)`: the SDK's supported way to fail a sync with a message for the dashboard. Raising instead would
make the SDK print the message followed by a Python traceback and write a crash report. `schema()` never fails on a
bad configuration (a raise there prints a traceback too, and `op` is not usable yet): it declares what it can and
leaves the one-line report to `update()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fivetran_connector_sdk import ConfigurationForm, Test, form_field
from fivetran_connector_sdk import Logging as log
from fivetran_connector_sdk import Operations as op

from ._config import Key, Settings, all_keys, configured_secrets
from ._edge import quiet_logs, resolve_transport
from ._exceptions import AuthenticationError, PermissionDenied, StreamsFailed, SyncflowError
from ._fetch_process import FetchProcessUnavailable, run_in_child
from ._progress import LogProgress
from ._redaction import Secret, redact_text
from ._setup import SetupReport, probe
from ._state import StateDocument
from ._sync import SyncResult, run_sync, select_streams

__all__ = [
    "FivetranSink",
    "SyncFailed",
    "check_accelo_access",
    "check_configuration",
    "check_credentials",
    "check_rate_budget",
    "configuration_form",
    "schema",
    "update",
]


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


def schema(configuration: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The destination tables of the chosen streams (the `streams` key; default every table of each configured source).

    A configuration that does not parse declares no tables: `update()` then reports it in one line (see above)."""
    with quiet_logs():  # update() parses the configuration too and says its warnings (unknown keys) once
        try:
            settings = Settings.from_mapping(configuration)
        except SyncflowError:
            return []
        try:
            chosen = select_streams(settings, None)
        except SyncflowError:
            return []
    return [stream.schema_entry() for stream in chosen]


def _fail(message: str) -> None:
    """End the sync with `message` and no traceback: `op.error` reports it and stops the sync (it raises the SDK's
    own task signal). Should an SDK's `op.error` return instead, the sync must still not look successful."""
    op.error(message)
    raise SyncFailed(message)


def update(configuration: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Sync every configured stream from `state`; checkpoints as rows land; an expected error ends the sync with its
    one-line message (`op.error`)."""
    secrets = configured_secrets(configuration)
    with _forward_logs(secrets):  # before parsing, so its warnings (unknown keys) reach the SDK's log too
        settings: Settings | None = None
        try:
            settings = Settings.from_mapping(configuration)
            document = StateDocument.load(state)
            if settings.use_mock:
                log.info("use_mock is true: syncing from the embedded simulated Accelo and AwardCo APIs")
            result = _run(settings, configuration, state, document)
        except StreamsFailed as exc:
            # Everything else completed and is checkpointed: say so per stream, then fail with one line.
            _summarise(exc.result)
            lines = [str(exc)]
            refused = [e for e in exc.failures.values() if _refused(e)]
            if refused and settings is not None:
                # Credentials were refused: report every configured API's credential problems together.
                problems = _credential_problems(settings, configuration)
                if problems:
                    done = sorted(exc.result.completed)
                    lines = problems + ([f"completed and checkpointed: {', '.join(done)}"] if done else [])
            _fail(redact_text("\n".join(lines), secrets))
            return
        except SyncflowError as exc:
            # One clear line, not a traceback through the event loop: the message names the API, endpoint and fix.
            lines = [str(exc)]
            if _refused(exc) and settings is not None:
                lines = _credential_problems(settings, configuration) or lines
            _fail(redact_text("\n".join(lines), secrets))
            return
        _summarise(result)


def _run(
    settings: Settings, configuration: Mapping[str, Any], state: Mapping[str, Any], document: StateDocument
) -> SyncResult:
    if settings.fetch_process:
        # The event loop in a child process: the SDK's writer keeps the interpreter lock to itself.
        try:
            return run_in_child(configuration, state, FivetranSink())
        except FetchProcessUnavailable as exc:  # nothing was delivered: the thread can do the whole sync
            logging.getLogger("syncflow").warning(  # through the SDK's log, redacted like every syncflow line
                "%s; fetching on a thread of this process instead (fetch_process=false skips the try)", exc
            )
    transport = resolve_transport(settings, None)  # the simulator's, when use_mock
    return run_sync(settings, FivetranSink(), document, progress=LogProgress(), transport=transport)


def _refused(error: SyncflowError) -> bool:
    return isinstance(error, AuthenticationError) and not isinstance(error, PermissionDenied)


def _credential_problems(settings: Settings, configuration: Mapping[str, Any]) -> list[str]:
    """After refused credentials, ask every configured API once more (a token, one small read), so a user whose
    Accelo and AwardCo credentials are both wrong learns it from one sync, not one per fix."""
    try:
        return probe(settings, configuration, access=False).credential_problems()
    except SyncflowError as exc:  # the probe itself failed: the sync's own error stands
        logging.getLogger("syncflow").warning("could not re-check the credentials: %s", exc)
        return []


# -- the setup form and its setup tests ------------------------------------------------------------------------


def _form_field(key: Key) -> Any:
    """One configuration key (of `_config.all_keys()`) as a form field: secrets masked, booleans as toggles, fixed
    choices as dropdowns."""
    if key.kind == "boolean":
        return form_field.ToggleField(key.name, key.label, description=key.description)
    if key.kind == "choice":
        options = [form_field.DropdownFieldParam(value=value, label=label) for value, label in key.choices]
        return form_field.DropdownField(
            key.name, key.label, fields=options, description=key.description, placeholder=key.placeholder or None
        )
    kind = form_field.TextField.password if key.secret else form_field.TextField.plain_text
    return form_field.TextField(
        key.name, key.label, kind, description=key.description, placeholder=key.placeholder or None
    )


def configuration_form() -> ConfigurationForm:
    """The setup form: one field per configuration key (the engine's and every source's), and the setup tests."""
    form = ConfigurationForm()
    for key in all_keys().keys:
        if not key.deprecated:
            form.add_field(_form_field(key))
    form.add_test(label="Configuration values", func=check_configuration)
    form.add_test(label="Accelo and AwardCo credentials", func=check_credentials)
    form.add_test(label="Accelo read access to each entity", func=check_accelo_access)
    form.add_test(label="Rate budget left", func=check_rate_budget)
    return form


def _setup_settings(configuration: Mapping[str, Any]) -> tuple[Settings | None, str | None]:
    secrets = configured_secrets(configuration)
    with _forward_logs(secrets):
        try:
            return Settings.from_mapping(configuration), None
        except SyncflowError as exc:
            return None, redact_text(str(exc), secrets)


def _probe(configuration: Mapping[str, Any], *, access: bool) -> tuple[SetupReport | None, str | None]:
    settings, problem = _setup_settings(configuration)
    if settings is None:
        return None, problem
    with _forward_logs(configured_secrets(configuration)):
        return probe(settings, configuration, access=access), None


def _result(lines: list[str]) -> Any:
    return Test.failure("\n".join(lines)) if lines else Test.success()


def check_configuration(configuration: dict[str, Any]) -> Any:
    """Every value is valid (one line per API with a problem, naming the key and the fix)."""
    _, problem = _setup_settings(configuration)
    return _result([problem] if problem else [])


def check_credentials(configuration: dict[str, Any]) -> Any:
    """Accelo grants a token and AwardCo accepts the key; both APIs are asked, and both answers reported."""
    report, problem = _probe(configuration, access=False)
    if report is None:
        return _result([problem or "configuration: not valid"])
    return _result(report.credential_problems())


def check_accelo_access(configuration: dict[str, Any]) -> Any:
    """One small read of every selected Accelo resource: each one answering 403 is named."""
    report, problem = _probe(configuration, access=True)
    if report is None:
        return _result([problem or "configuration: not valid"])
    known = all_keys().known
    leave_out = "the streams key" if "streams" in known else "the sources key (which leaves out all of Accelo)"
    return _result(report.credential_problems() + report.access_problems(leave_out))


def check_rate_budget(configuration: dict[str, Any]) -> Any:
    """The rate budget each server reports: a warning (not a failure) when little is left, since a sync then stops
    early, checkpointed, and carries on in the next one."""
    report, problem = _probe(configuration, access=False)
    if report is None:
        return _result([problem or "configuration: not valid"])
    if report.credential_problems():
        return _result(report.credential_problems())
    for line in report.budget_warnings():
        log.warning(line)
    for p in report.probes():
        stats = p.budget
        left = "not reported" if stats is None or stats.server_remaining is None else str(stats.server_remaining)
        log.info(f"{p.api}: requests left in this rate window: {left} (budget {p.requests_per_hour}/hour)")
    return Test.success()


def _summarise(result: SyncResult) -> None:
    """End-of-sync lines: per API, then per stream (completed, skipped or failed, and why), then the warnings."""
    for api, stats in sorted(result.requests.items()):
        log.info(
            f"{api}: {stats.requests} requests, {stats.retries} retries, {stats.rate_limited} answered 429, "
            f"{stats.token_refreshes} token refreshes"
        )
    for stream, summary in sorted(result.streams.items()):
        line = (
            f"{stream}: {summary.rows} rows, {summary.requests} requests, {summary.retries} retries, "
            f"{summary.rate_limited} answered 429, {summary.seconds:.1f} s; {summary.status}"
            + (f" ({summary.reason})" if summary.reason else "")
            + (f"; reconciliation: {summary.repaired} rows repaired, {summary.deleted} deleted"
               if summary.repaired or summary.deleted else "")
        )  # fmt: skip
        if summary.status in ("completed", "not finished"):
            log.info(line)
        else:
            log.warning(line)
    for warning in result.warnings:
        if any(warning.startswith(f"{stream} skipped:") for stream in result.skipped):
            # The SDK's warning channel: shown on the Fivetran dashboard, not only in the log.
            op.warning(warning)
        else:
            log.warning(warning)
    if result.failed:
        state = f"failed for {', '.join(sorted(result.failed))}; everything else is checkpointed"
    elif result.stopped_early:
        state = "stopped early (rate budget); the next sync resumes"
    else:
        state = "complete" + (f" except skipped {', '.join(sorted(result.skipped))}" if result.skipped else "")
    log.info(f"sync {state} in {result.seconds:.1f} s with {result.checkpoints} checkpoints")
