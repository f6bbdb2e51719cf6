"""The dlt peer: one `rest_api` source for both APIs into DuckDB, configured as a competent dlt user would.

- auth: Accelo's client-credentials token is fetched once up front (dlt's `OAuth2ClientCredentials` posts the client
  secret in the form body, Accelo wants HTTP Basic) and used as a bearer token; AwardCo uses an `api_key` header;
- paginators: `page_number` (Accelo `_page` from 0, AwardCo `page` from 1), 100 per page, stopping at the empty page;
- incremental: Accelo's `<cursor>_after(...)` filter and AwardCo's `updated_since` from `{incremental.start_value}`;
- merge write disposition on the primary key;
- `rest_api_source(..., parallelized=True)`, so the seven resources are extracted concurrently.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from syncflow.sources._accelo_catalog import RESOURCES, STREAM_NAMES

# The benchmarks compare systems on the six tables every peer implements (not the whole catalogue).
ACCELO_STREAMS = {name: RESOURCES[name] for name in STREAM_NAMES}

__all__ = ["run_dlt"]

REQUEST_TIMEOUT = 30.0

_ACCELO_CURSOR = {"companies": "date_modified", "invoices": "date_modified", "payments": "date_created",
                  "prospects": "date_modified", "jobs": "date_modified", "staff": None}  # fmt: skip


def _quiet_local_dlt(workdir: Path) -> None:
    # Every byte of traffic stays on loopback: no telemetry; and dlt's state stays in the run's temp dir.
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["DLT_DATA_DIR"] = str(workdir / "dlt-data")
    os.environ["DLT_PROJECT_DIR"] = str(workdir)
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"


def _config(url: str, token: str, api_key: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for entity, stream in ACCELO_STREAMS.items():
        params: dict[str, Any] = {"_fields": ",".join(stream.columns), "_limit": 100}
        endpoint: dict[str, Any] = {
            "path": f"api/v0/{entity}",
            "params": params,
            "data_selector": "response",
            "paginator": {"type": "page_number", "base_page": 0, "page_param": "_page", "total_path": None},
        }
        cursor = _ACCELO_CURSOR[entity]
        if cursor is not None:
            params["_filters"] = f"{cursor}_after({{incremental.start_value}})"
            endpoint["incremental"] = {"cursor_path": cursor, "initial_value": "0"}
        resources.append({"name": entity, "primary_key": "id", "write_disposition": "merge", "endpoint": endpoint})
    resources.append(
        {
            "name": "user",
            "primary_key": "employeeId",
            "write_disposition": "merge",
            "endpoint": {
                "path": "api/users",
                "auth": {"type": "api_key", "name": "apiKey", "api_key": api_key, "location": "header"},
                "params": {"per_page": 100, "updated_since": "{incremental.start_value}"},
                "incremental": {"cursor_path": "updated_at", "initial_value": "1970-01-01T00:00:00Z"},
                "data_selector": "users",
                "paginator": {"type": "page_number", "base_page": 1, "page_param": "page", "total_path": None},
            },
        }
    )
    return {
        "client": {"base_url": url + "/", "auth": {"type": "bearer", "token": token}},
        "resource_defaults": {"endpoint": {"params": {}}},
        "resources": resources,
    }


def run_dlt(configuration: Mapping[str, str], workdir: Path, database: Path) -> float:
    """Wall seconds of one dlt run (token fetch, extract, normalize, load) into `database`."""
    _quiet_local_dlt(workdir)
    import dlt  # after the environment is set: dlt reads it at import
    from dlt.sources.rest_api import rest_api_source

    started = time.perf_counter()
    token = requests.post(
        configuration["accelo_base_url"] + "/oauth2/v0/token",
        auth=(configuration["accelo_client_id"], configuration["accelo_client_secret"]),
        data={"grant_type": "client_credentials", "scope": "read(all)"},
        timeout=REQUEST_TIMEOUT,
    ).json()["access_token"]
    source = rest_api_source(
        _config(configuration["accelo_base_url"], token, configuration["awardco_api_key"]),  # type: ignore[arg-type]
        name="bench",
        parallelized=True,
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="bench",
        pipelines_dir=str(workdir / "dlt-pipelines"),
    )
    pipeline.run(source)
    return time.perf_counter() - started
