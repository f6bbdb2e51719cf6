"""`python -m syncflow.sim --port 0` serves both APIs on loopback and announces its URL on the first line."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from syncflow.sim import ACCELO_CLIENT_ID, ACCELO_CLIENT_SECRET, AWARDCO_API_KEY

SRC = Path(__file__).resolve().parents[1] / "src"


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    # readline() has no timeout of its own: read in a thread so a hung server fails the test instead of blocking it.
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout)
    assert box, f"no URL within {timeout}s"
    return box[0].strip()


def _start_sim(*args: str) -> subprocess.Popen[str]:
    """`python -m syncflow.sim ARGS` with this checkout's src/ importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "syncflow.sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_loopback_server_round_trip() -> None:
    proc = _start_sim("--port", "0", "--scale", "0.2", "--drop-rate", "0.0")
    try:
        url = _first_line(proc, timeout=20)
        assert url.startswith("http://127.0.0.1:")
        assert int(url.rsplit(":", 1)[1]) > 0
        basic = base64.b64encode(f"{ACCELO_CLIENT_ID}:{ACCELO_CLIENT_SECRET}".encode()).decode()
        with httpx.Client(base_url=url, timeout=10) as client:
            token = client.post(
                "/oauth2/v0/token",
                headers={"Authorization": f"Basic {basic}"},
                data={"grant_type": "client_credentials"},
            )
            assert token.status_code == 200
            r = client.get(
                "/api/v0/companies",
                params={"_fields": "_ALL", "_limit": 100},
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            )
            assert r.status_code == 200
            assert len(r.json()["response"]) == 60  # 300 x 0.2
            assert r.headers["x-ratelimit-remaining"] == "4999"
            assert "date" in r.headers and "server" not in r.headers
            users = client.get("/api/users", headers={"apiKey": AWARDCO_API_KEY}).json()
            assert users["total"] == 50
            stats = client.get("/_sim/stats").json()
            assert stats["data_requests"] == 2 and stats["token_requests"] == 1
            truth = client.get("/_sim/ground_truth").json()
            assert truth["accelo"]["companies"] == r.json()["response"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_dropped_connection_over_loopback_is_a_protocol_error() -> None:
    proc = _start_sim("--scale", "0.1", "--drop-rate", "1.0")
    try:
        url = _first_line(proc, timeout=20)
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(3):
                try:
                    client.get("/api/users", headers={"apiKey": AWARDCO_API_KEY})
                except httpx.RemoteProtocolError:
                    pass
                else:
                    raise AssertionError("expected a dropped connection")
            # the server survives drops and still answers
            assert client.get("/_sim/stats").json()["faults_by_kind"] == {"drop": 3}
    finally:
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
