"""The connector's fetch process (`_fetch_process.run_in_child`): the same rows, checkpoints that are safe to resume
from, the same errors as the thread, and no child outliving its parent or dying unnoticed.

The simulator is served on loopback (a child process cannot share an in-process transport).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.loopback import serve_on_loopback
from support.processes import fetch_processes, running
from support.sim import RecordingSink, assert_matches_truth, sim_configuration, sync_once
from syncflow._exceptions import (
    AuthenticationError,
    BudgetExhausted,
    HTTPStatusError,
    PermissionDenied,
    StreamsFailed,
    SyncflowError,
    TransportError,
)
from syncflow._fetch_process import FetchProcessUnavailable, run_in_child
from syncflow._state import StateDocument
from syncflow.sim import SimConfig, Simulator

COUNTS = {"companies": 230, "invoices": 410, "payments": 170, "prospects": 90, "jobs": 260, "staff": 35}


@pytest.fixture
def served() -> Iterator[tuple[Simulator, dict[str, str]]]:
    sim = Simulator(SimConfig(seed=5, accelo_counts=COUNTS, awardco_users=180))
    with serve_on_loopback(sim) as url:
        yield sim, sim_configuration(accelo_base_url=url, awardco_base_url=url, checkpoint_every_rows="150")


def _same_source(configuration: dict[str, str]) -> dict[str, str]:
    # A state names the source it came from (its base URLs): resumed against another, it would start over and
    # prove nothing. The in-process transport answers whatever host a request names.
    return {key: configuration[key] for key in ("accelo_base_url", "awardco_base_url")}


def _resumed_from_the_last_checkpoint_equals_truth(
    sim: Simulator, sink: RecordingSink, configuration: dict[str, str]
) -> None:
    """What a sync resumed from the sink's last checkpoint, on top of the rows it holds, leaves: the ground truth."""
    resumed = RecordingSink()
    resumed.tables = {stream: dict(rows) for stream, rows in sink.tables.items()}
    sync_once(sim, resumed, StateDocument.load(sink.checkpoints[-1]), **_same_source(configuration))
    assert_matches_truth(resumed, sim)


def test_syncflow_errors_survive_a_pickle_with_their_class_and_attributes() -> None:
    denied = PermissionDenied("no", api="accelo", endpoint="GET /api/v0/prospects", status_code=403)
    errors: list[SyncflowError] = [
        denied,
        AuthenticationError("refused", api="accelo", endpoint="POST /oauth2/v0/token", status_code=401),
        HTTPStatusError("teapot", api="awardco", endpoint="GET /api/users", status_code=418, retry_after=2.5),
        TransportError("reset", api="accelo", endpoint="GET /api/v0/jobs"),
        BudgetExhausted("spent", api="accelo", endpoint="GET /api/v0/jobs", reset_in=1800.0),
        StreamsFailed("accelo.prospects failed", failures={"accelo.prospects": denied}, result={"rows": 3}),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy).keys() == vars(error).keys()
    copy = pickle.loads(pickle.dumps(errors[-1]))
    inner = copy.failures["accelo.prospects"]
    assert type(inner) is PermissionDenied and (inner.status_code, inner.api) == (403, "accelo")
    assert copy.result == {"rows": 3}


def test_the_child_delivers_every_row_and_each_checkpoint_is_safe_to_resume_from(
    served: tuple[Simulator, dict[str, str]],
) -> None:
    sim, configuration = served
    sink = RecordingSink()
    result = run_in_child(configuration, {}, sink)
    assert_matches_truth(sink, sim)
    assert sum(result.rows.values()) == sink.upserts
    assert len(sink.checkpoints) >= 5
    # A kill right after checkpoint k leaves the rows upserted before it and that state: a sync resumed from there
    # must end at the ground truth (it would not if a checkpoint covered rows the parent had not upserted yet).
    positions = [i for i, (kind, _) in enumerate(sink.log) if kind == "checkpoint"]
    for k in (0, len(positions) // 2, len(positions) - 2):
        resumed = RecordingSink()
        for kind, what in sink.log[: positions[k]]:
            if kind == "upsert":
                stream, key = what
                resumed.tables.setdefault(stream, {})[key] = sink.tables[stream][key]
        state = StateDocument.load(sink.checkpoints[k])
        sync_once(sim, resumed, state, **_same_source(configuration))
        assert_matches_truth(resumed, sim)


def test_errors_and_warnings_reach_the_parent_as_the_thread_raises_and_logs_them(caplog: Any) -> None:
    sim = Simulator(SimConfig(seed=5, accelo_counts=COUNTS, awardco_users=40, forbidden=("accelo.prospects",)))
    with serve_on_loopback(sim) as url:
        configuration = sim_configuration(accelo_base_url=url, awardco_base_url=url)
        with caplog.at_level(logging.WARNING, logger="syncflow"):
            result = run_in_child(configuration, {}, RecordingSink())
        assert "accelo.prospects" in result.skipped
        assert any("accelo.prospects" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)

        with pytest.raises(SyncflowError) as in_thread:
            sync_once(sim, RecordingSink(), accelo_client_secret="wrong-secret")
        with pytest.raises(SyncflowError) as in_child:
            run_in_child({**configuration, "accelo_client_secret": "wrong-secret"}, {}, RecordingSink())
    assert type(in_child.value) is type(in_thread.value) is StreamsFailed  # a 401 ends Accelo; AwardCo completes
    assert str(in_child.value) == str(in_thread.value)
    assert "wrong-secret" not in str(in_child.value)
    failures = in_child.value.failures
    assert failures and all(type(e) is AuthenticationError and e.status_code == 401 for e in failures.values())
    assert "awardco.user" in in_child.value.result.completed  # the other source still synced, and says so


def test_a_child_that_dies_mid_sync_is_an_error_and_earlier_checkpoints_stand(
    served: tuple[Simulator, dict[str, str]],
) -> None:
    sim, configuration = served

    killed: list[int] = []

    class KillsTheChild(RecordingSink):
        # Killed while a row after the second checkpoint is upserted: whatever the child had written to the pipe
        # by then, the parent holds rows its last checkpoint from the child does not cover. (Killed at the
        # checkpoint itself, the pipe may hold nothing more, and there would be nothing left to checkpoint.)
        def upsert(self, schema: str, table: str, row: Any) -> None:
            super().upsert(schema, table, row)
            if len(self.checkpoints) == 2 and not killed:
                killed.extend(fetch_processes(parent=os.getpid()))
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)

    sink = KillsTheChild()
    with pytest.raises(SyncflowError, match="fetch process ended"):
        run_in_child(configuration, {}, sink)
    assert len(killed) == 1 and not running(killed[0])
    # The rows upserted after the last checkpoint the child sent are checkpointed on the way out (their batches'
    # patches came with them): the state covers every row the parent holds, and no more.
    assert sink.log[-1][0] == "checkpoint" and len(sink.checkpoints) >= 3
    _resumed_from_the_last_checkpoint_equals_truth(sim, sink, configuration)


def test_the_child_exits_when_its_parent_is_killed_even_while_it_waits_on_the_network(tmp_path: Path) -> None:
    # A server that takes connections and never answers: the child sits in its first request (minutes of timeout
    # and retries), so only its watch on the parent's pipe can end it within the deadline below.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    configuration = sim_configuration(accelo_base_url=url, awardco_base_url=url, max_retry_seconds="120")
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parents[1] / "src")]!r}
            from support.sim import RecordingSink
            from syncflow._fetch_process import run_in_child
            run_in_child({configuration!r}, {{}}, RecordingSink())
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 30
        while not (children := fetch_processes(parent=parent.pid)):
            assert parent.poll() is None and time.monotonic() < deadline, "no fetch process started"
            time.sleep(0.05)
        time.sleep(2.0)  # past its imports, waiting on the silent server
        assert all(running(pid) for pid in children)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while any(running(pid) for pid in children):
            assert time.monotonic() < deadline, "the fetch process outlived its parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
        silent.close()


def test_a_sink_that_fails_stops_the_child_and_checkpoints_what_it_took(
    served: tuple[Simulator, dict[str, str]],
) -> None:
    sim, configuration = served
    started: list[int] = []

    class Breaks(RecordingSink):
        def upsert(self, schema: str, table: str, row: Any) -> None:
            if not started:
                started.extend(fetch_processes(parent=os.getpid()))
            if self.upserts == 700:
                raise OSError("the destination went away")
            super().upsert(schema, table, row)

    sink = Breaks()
    with pytest.raises(OSError, match="destination went away"):
        run_in_child(configuration, {}, sink)
    assert len(started) == 1 and not running(started[0])
    assert sink.log[-1][0] == "checkpoint"  # taken on the way out, after the last whole batch upserted
    _resumed_from_the_last_checkpoint_equals_truth(sim, sink, configuration)


def test_a_child_that_prints_before_its_frames_is_not_trusted(monkeypatch: Any) -> None:
    import syncflow._fetch_process as fetch_process

    script = "import sys; print('hello from a sitecustomize', flush=True); sys.stdin.buffer.read()"
    monkeypatch.setattr(fetch_process, "_child_command", lambda: [sys.executable, "-c", script])
    with pytest.raises(FetchProcessUnavailable, match="hello from"):
        run_in_child(sim_configuration(), {}, RecordingSink())


@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python"])
def test_a_child_that_cannot_start_leaves_the_connector_to_fetch_on_a_thread(
    served: tuple[Simulator, dict[str, str]], tmp_path: Path, monkeypatch: Any, capfd: Any, executable: str
) -> None:
    from fivetran_connector_sdk import Connector, Logging
    from fivetran_connector_sdk_cli import core_adapter

    from syncflow.fivetran import schema, update

    sim, configuration = served
    monkeypatch.setattr(sys, "executable", executable)
    with pytest.raises(FetchProcessUnavailable):
        run_in_child(configuration, {}, RecordingSink())
    monkeypatch.setattr(Logging, "LOG_LEVEL", Logging.Level.INFO)
    connector = Connector(update=update, schema=schema)
    connector.project_path = str(tmp_path)
    connector.configuration = configuration
    core_adapter.run(connector, str(tmp_path), configuration, {})  # raises if the sync fails
    output = capfd.readouterr()
    logged = output.out + output.err
    assert "fetching on a thread of this process instead" in logged
    import duckdb

    with duckdb.connect(str(tmp_path / "files" / "warehouse.db"), read_only=True) as db:
        ids = {row[0] for row in db.sql("select id from tester_accelo.invoices").fetchall()}
    assert ids == {int(r["id"]) for r in sim.ground_truth()["accelo"]["invoices"]}


def test_an_outage_that_outlasts_the_retries_keeps_everything_completed_in_the_sink_and_the_state() -> None:
    from syncflow.sim import Outage

    sim = Simulator(
        SimConfig(seed=5, accelo_counts=COUNTS, awardco_users=180,
                  outages=(Outage("accelo", start_after_requests=8, seconds=4.0),))
    )  # fmt: skip
    with serve_on_loopback(sim) as url:
        configuration = sim_configuration(
            accelo_base_url=url, awardco_base_url=url, max_retry_seconds="1", checkpoint_every_rows="150"
        )
        sink = RecordingSink()
        started = time.monotonic()
        with pytest.raises(StreamsFailed) as failed:
            run_in_child(configuration, {}, sink)
        assert set(failed.value.failures) and all(key.startswith("accelo.") for key in failed.value.failures)
        assert "awardco.user" in failed.value.result.completed
        # What completed is in the sink, and the last thing the sink got is a checkpoint covering it.
        truth = {r["employeeId"] for r in sim.ground_truth()["awardco"]["user"]}
        assert set(sink.tables["awardco.user"]) == truth
        assert sink.log[-1][0] == "checkpoint"
        assert any(kind == "upsert" and what[0].startswith("accelo.") for kind, what in sink.log)  # some did land
        time.sleep(max(0.0, started + 4.5 - time.monotonic()))  # the outage is over
        _resumed_from_the_last_checkpoint_equals_truth(sim, sink, configuration)
