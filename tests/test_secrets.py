"""No secret (client secret, API key, access token) reaches any output: logs, errors, state or crash reports.

The connector runs through the Fivetran SDK's own local runner, in this process, against the simulator served on
loopback by a real HTTP server, with credentials unlike any default; everything written to stdout, stderr and the
project folder is then searched for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.loopback import serve_on_loopback
from syncflow.sim import Faults, SimConfig, Simulator

CLIENT_SECRET = "cs-4f9a7e2b-not-for-logs"
API_KEY = "ak-93jd8-not-for-logs"


@pytest.fixture
def served_sim() -> Iterator[tuple[str, Simulator]]:
    sim = Simulator(
        SimConfig(
            accelo_client_secret=CLIENT_SECRET,
            awardco_api_key=API_KEY,
            accelo_counts={"companies": 150, "invoices": 40, "payments": 10, "prospects": 5, "jobs": 5, "staff": 3},
            awardco_users=120,
            faults=Faults(schedule={4: "503", 7: "malformed"}),
        )
    )
    with serve_on_loopback(sim) as url:
        yield url, sim


def _run_connector(project: Path, configuration: dict[str, str]) -> None:
    from fivetran_connector_sdk import Connector, Logging
    from fivetran_connector_sdk_cli import core_adapter
    from fivetran_connector_sdk_core import ConnectorTask

    from syncflow.fivetran import schema, update

    Logging.LOG_LEVEL = Logging.Level.INFO  # as `fivetran debug` sets it
    connector = Connector(update=update, schema=schema)
    connector.project_path = str(project)
    connector.configuration = configuration
    try:
        core_adapter.run(connector, str(project), configuration, {})
    except (Exception, ConnectorTask) as exc:  # a failed update() ends by op.error (ConnectorTask); text checked below
        print(f"runner raised: {exc}")


def _everything_written(project: Path, captured: Any) -> str:
    texts = [captured.out, captured.err]
    texts += [
        path.read_text(errors="replace") for path in project.rglob("*") if path.is_file() and path.suffix != ".db"
    ]
    return "\n".join(texts)


def test_no_secret_reaches_any_output(served_sim: tuple[str, Simulator], tmp_path: Path, capfd: Any) -> None:
    url, sim = served_sim
    configuration = {
        "accelo_deployment": "acme",
        "accelo_client_id": "syncflow-sim",
        "accelo_client_secret": CLIENT_SECRET,
        "accelo_base_url": url,
        "awardco_api_key": API_KEY,
        "awardco_base_url": url,
        "max_retry_seconds": "10",
    }
    _run_connector(tmp_path / "ok", configuration)
    # And the failing paths: refused credentials, and an API key the server refuses.
    _run_connector(tmp_path / "bad-secret", {**configuration, "accelo_client_secret": CLIENT_SECRET + "-x"})
    _run_connector(tmp_path / "bad-key", {**configuration, "awardco_api_key": API_KEY + "-x", "sources": "awardco"})
    written = _everything_written(tmp_path, capfd.readouterr())
    assert "SYNC SUCCEEDED" in written or "rows, " in written, "the good sync ran"
    assert "credentials refused" in written and "answered 401" in written, "the failing syncs said why"
    tokens = list(sim._tokens)  # every access token the server issued
    assert tokens
    for secret in [CLIENT_SECRET, API_KEY, *tokens]:
        assert secret not in written, f"a secret leaked: {secret[:6]}..."
