"""Fixtures shared by the tests. Helpers live in `tests/support/` (`from support.sim import ...`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from support.sim import SMALL_COUNTS
from syncflow.sim import SimConfig, Simulator


@pytest.fixture
def make_sim() -> Callable[..., Simulator]:
    def factory(**config: Any) -> Simulator:
        config.setdefault("accelo_counts", SMALL_COUNTS)
        config.setdefault("awardco_users", 330)
        return Simulator(SimConfig(**config))

    return factory
