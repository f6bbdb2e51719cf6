"""The simulated Accelo and AwardCo APIs: one deterministic ASGI app for tests, ``use_mock`` and benchmarks.

In process::

    sim = Simulator(SimConfig(seed=7, latency=0.05))
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://sim") as client: ...

On loopback: ``python -m syncflow.sim --port 0`` prints its base URL on the first line of stdout.
Both APIs live under one base URL: ``/oauth2/v0/token`` and ``/api/v0/{entity}[/count]`` (Accelo),
``/api/users`` (AwardCo); ``/_sim/stats`` and ``/_sim/ground_truth`` expose statistics and the current records.
"""

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

__all__ = [
    "ACCELO_CLIENT_ID",
    "ACCELO_CLIENT_SECRET",
    "ACCELO_ENTITIES",
    "AWARDCO_API_KEY",
    "DATA_END",
    "Faults",
    "Mutation",
    "Outage",
    "SimConfig",
    "SimStats",
    "SimTransport",
    "Simulator",
]
