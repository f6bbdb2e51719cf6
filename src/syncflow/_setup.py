"""Setup checks: what `fivetran configuration --test` (and the dashboard's setup tests) ask of the APIs.

Each check makes a handful of requests through the same clients a sync uses (auth, admission, retries) and returns
what it found as plain lines, one per problem, each naming the API and the fix. Both APIs are probed concurrently and
every problem is reported together, so a user fixing credentials sees all of them at once. No line ever holds a
secret: messages come from syncflow's own errors (which never carry one) and are scrubbed again on the way out.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from anyio.from_thread import start_blocking_portal

from ._config import Settings, configured_secrets
from ._edge import resolve_transport
from ._exceptions import AuthenticationError, BudgetExhausted, HTTPStatusError, SourceError
from ._http import ApiClient, ApiKeyAuth, OAuth2ClientCredentials, RateStatistics, RetryPolicy
from ._redaction import redact_text
from ._sync import _Producer, available_streams
from .sources import AcceloSettings, AwardcoSettings
from .sources.accelo import TOKEN_PATH

__all__ = ["ApiProbe", "SetupReport", "probe"]

# A setup test is interactive: a few quick retries, not a sync's five-minute patience.
_SETUP_RETRY = RetryPolicy(max_time=20.0, base=0.5, max_delay=5.0)
# Below this share of the hourly budget (or this many requests) the budget check warns.
LOW_BUDGET_SHARE = 0.10
LOW_BUDGET_FLOOR = 50


@dataclass
class ApiProbe:
    """What one API answered."""

    api: str
    credentials: str | None = None  # the problem with the credentials, or None when they were accepted
    forbidden: list[str] = field(default_factory=list)  # Accelo resources answering 403
    failures: list[str] = field(default_factory=list)  # other per-resource failures (one line each)
    budget: RateStatistics | None = None
    budget_exhausted: str | None = None
    requests_per_hour: int = 0


@dataclass(frozen=True)
class SetupReport:
    accelo: ApiProbe | None
    awardco: ApiProbe | None

    def probes(self) -> list[ApiProbe]:
        return [p for p in (self.accelo, self.awardco) if p is not None]

    def credential_problems(self) -> list[str]:
        return [p.credentials for p in self.probes() if p.credentials is not None]

    def access_problems(self, leave_out_key: str) -> list[str]:
        lines: list[str] = []
        for p in self.probes():
            if p.forbidden:
                names = ", ".join(p.forbidden)
                lines.append(
                    f"{p.api}: the credentials may not read {names} (403); give the service application read "
                    f"access to them in Accelo, or leave them out with {leave_out_key}"
                )
            lines.extend(p.failures)
        return lines

    def budget_warnings(self) -> list[str]:
        lines: list[str] = []
        for p in self.probes():
            if p.budget_exhausted is not None:
                lines.append(f"{p.api}: {p.budget_exhausted}; a sync now would stop at once and resume after the reset")
                continue
            stats = p.budget
            if stats is None or stats.server_remaining is None:
                continue
            low = max(LOW_BUDGET_FLOOR, int(p.requests_per_hour * LOW_BUDGET_SHARE))
            if stats.server_remaining < low:
                reset = "" if stats.server_reset_at is None else f", resetting in {_minutes(stats)}"
                lines.append(
                    f"{p.api}: only {stats.server_remaining} requests left in this rate window{reset}; the first sync "
                    "will stop early (checkpointed) and carry on in the next one"
                )
        return lines


def _minutes(stats: RateStatistics) -> str:
    seconds = max(0.0, (stats.server_reset_at or 0.0) - time.time())
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def probe(settings: Settings, configuration: Mapping[str, Any], *, transport: httpx.AsyncBaseTransport | None = None,
          access: bool = True) -> SetupReport:  # fmt: skip
    """Probe every configured API: credentials (Accelo's token, AwardCo's key), with `access` also one small read of
    every selected Accelo resource, and the rate budget the server reports. Safe to call inside a running loop."""
    transport = resolve_transport(settings, transport)
    secrets = configured_secrets(configuration)
    with start_blocking_portal() as portal:
        report = portal.call(_probe, settings, transport, access)
    for p in report.probes():
        p.credentials = None if p.credentials is None else redact_text(p.credentials, secrets)
        p.failures = [redact_text(line, secrets) for line in p.failures]
    return report


async def _probe(settings: Settings, transport: httpx.AsyncBaseTransport | None, access: bool) -> SetupReport:
    producer = _Producer(settings, [], {}, transport)
    # The setup tests are the connector's, for the built-in sources (a plug-in of the Python API has none).
    accelo_settings = settings.sources.get("accelo")
    awardco_settings = settings.sources.get("awardco")
    accelo = ApiProbe("accelo") if isinstance(accelo_settings, AcceloSettings) else None
    awardco = ApiProbe("awardco") if isinstance(awardco_settings, AwardcoSettings) else None
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        if accelo is not None and isinstance(accelo_settings, AcceloSettings):
            http = await stack.enter_async_context(producer._http(accelo_settings.base_url, "accelo"))
            tg.start_soon(_probe_accelo, settings, accelo_settings, producer, http, accelo, access)
        if awardco is not None and isinstance(awardco_settings, AwardcoSettings):
            http = await stack.enter_async_context(producer._http(awardco_settings.base_url, "awardco"))
            tg.start_soon(_probe_awardco, settings, awardco_settings, producer, http, awardco)
    return SetupReport(accelo, awardco)


async def _probe_accelo(
    settings: Settings, accelo: AcceloSettings, producer: _Producer, http: httpx.AsyncClient, result: ApiProbe,
    access: bool,
) -> None:  # fmt: skip
    result.requests_per_hour = accelo.requests_per_hour
    auth = accelo.authenticator(http, api="accelo", max_response_bytes=settings.max_response_bytes)
    assert isinstance(auth, OAuth2ClientCredentials)
    client = ApiClient(
        "accelo", http, auth=auth, gate=producer._gate("accelo", accelo.requests_per_hour), retry=_SETUP_RETRY,
        max_response_bytes=settings.max_response_bytes,
    )  # fmt: skip
    try:
        await client.call(f"POST {TOKEN_PATH}", auth.token)
    except SourceError as exc:
        result.credentials = f"{exc}" if isinstance(exc, AuthenticationError) else f"{exc}; check accelo_base_url"
        return
    streams = [s for s in available_streams(settings) if s.source == "accelo"]
    if not access:
        streams = streams[:1]  # one read is enough to learn the rate budget

    async def read(endpoint: str, table: str) -> None:
        try:
            await client.get_json(endpoint, {"_limit": 1, "_fields": "id"})
        except BudgetExhausted as exc:
            result.budget_exhausted = str(exc)
        except HTTPStatusError as exc:
            if exc.status_code == 403:
                result.forbidden.append(table)
            elif exc.status_code == 401:
                result.credentials = f"{exc}"
            else:
                result.failures.append(f"{exc}")
        except SourceError as exc:
            result.failures.append(f"{exc}")

    async with anyio.create_task_group() as tg:
        for stream in streams:
            tg.start_soon(read, stream.endpoint, stream.table)
    result.forbidden.sort()
    result.failures.sort()
    result.budget = client.gate.statistics()


async def _probe_awardco(
    settings: Settings, awardco: AwardcoSettings, producer: _Producer, http: httpx.AsyncClient, result: ApiProbe
) -> None:
    result.requests_per_hour = awardco.requests_per_hour
    client = ApiClient(
        "awardco", http, auth=ApiKeyAuth(awardco.api_key),
        gate=producer._gate("awardco", awardco.requests_per_hour), retry=_SETUP_RETRY,
        max_response_bytes=settings.max_response_bytes,
    )  # fmt: skip
    try:
        await client.get_json("/api/users", {"page": 1, "per_page": 1})
    except BudgetExhausted as exc:
        result.budget_exhausted = str(exc)
    except AuthenticationError as exc:
        result.credentials = (
            f"{exc.api} {exc.endpoint}: answered {exc.status_code}; the API key was refused, check awardco_api_key"
        )
    except SourceError as exc:
        result.credentials = f"{exc}; check awardco_base_url and awardco_api_key"
    result.budget = client.gate.statistics()
