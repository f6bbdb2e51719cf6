"""The simulated Accelo and AwardCo APIs: one deterministic ASGI app for tests, ``use_mock`` and benchmarks.

In process::

    sim = Simulator(SimConfig(seed=7, latency=0.05))
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as client: ...

On loopback: ``python -m syncflow.sim --port 0`` prints its base URL on the first line of stdout.
Both APIs live under one base URL: ``/oauth2/v0/token`` and ``/api/v0/{entity}[/count]`` (Accelo),
``/api/users`` (AwardCo); ``/_sim/stats`` and ``/_sim/ground_truth`` expose statistics and the current records.

Mock mode (``"use_mock": "true"``) is resolved where the user enters, not in the engine: the built-in sources'
``mock_configuration`` point them at ``MOCK_BASE_URL`` with the credentials below, and the entry points (the Python
API, the connector's ``update()``, the setup tests) pass ``mock_transport(settings)`` as the transport::

    settings = syncflow.load_settings({"use_mock": "true"})
    transport = syncflow.sim.mock_transport(settings)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from ._app import SimTransport, Simulator
from ._data import DATA_END
from ._model import (
    ACCELO_CLIENT_ID,
    ACCELO_CLIENT_SECRET,
    ACCELO_ENTITIES,
    AWARDCO_API_KEY,
    Faults,
    Mutation,
    Outage,
    SimConfig,
    SimStats,
)

if TYPE_CHECKING:
    from .._config import Settings

__all__ = [
    "ACCELO_CLIENT_ID",
    "ACCELO_CLIENT_SECRET",
    "ACCELO_ENTITIES",
    "AWARDCO_API_KEY",
    "DATA_END",
    "MOCK_BASE_URL",
    "Faults",
    "Mutation",
    "Outage",
    "SimConfig",
    "SimStats",
    "SimTransport",
    "Simulator",
    "mock_simulator",
    "mock_transport",
]

# Where mock mode points every source: never resolved, the requests go to the simulator's in-process transport.
MOCK_BASE_URL = "http://sim.invalid"


def mock_simulator(settings: Settings) -> Simulator:
    """The in-process simulated APIs that `use_mock` syncs from, set up as `settings.mock` says."""
    base = SimConfig()
    scale = settings.mock.scale
    counts = {name: max(1, round(count * scale)) for name, count in base.accelo_counts.items()}
    return Simulator(
        SimConfig(
            seed=settings.mock.seed,
            accelo_counts=counts,
            awardco_users=max(1, round(base.awardco_users * scale)),
            latency=settings.mock.latency_seconds,
        )
    )


def mock_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    """The transport a mock-mode sync sends its requests through (a fresh simulator, as `settings.mock` says)."""
    return mock_simulator(settings).transport()
