"""Where the user enters (the Python API, the connector's `update()`, the setup tests): mock mode is resolved here.

The engine and the configuration never import the simulator; a mock-mode configuration gets its transport here, so
a real one leaves `syncflow.sim` (and uvicorn) unimported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike
from typing import Any

import httpx

from ._config import Settings, load_settings
from ._exceptions import ConfigurationError
from ._source import Source

__all__ = ["ConfigurationLike", "quiet_logs", "resolve_settings", "resolve_transport"]

ConfigurationLike = Settings | Mapping[str, Any] | str | PathLike[str]


def resolve_settings(configuration: ConfigurationLike, sources: Sequence[Source] | None = None) -> Settings:
    """Settings from a configuration (a dict, a configuration.json path, or Settings), read with `sources` added to
    the built-in ones."""
    if isinstance(configuration, Settings):
        if sources:
            raise ConfigurationError(
                "sources: already fixed by these Settings; pass the configuration dict or file with sources= instead"
            )
        return configuration
    if sources is None:
        return load_settings(configuration)
    from ._config import builtin_sources

    return load_settings(configuration, sources=(*builtin_sources(), *sources))


def resolve_transport(
    settings: Settings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncBaseTransport | None:
    """`transport`, or in mock mode (and none given) the simulator's."""
    if transport is None and settings.use_mock:
        from .sim import mock_transport

        return mock_transport(settings)
    return transport


@contextmanager
def quiet_logs() -> Iterator[None]:
    """syncflow's log off for a block: for a second reading of what another reading already reported (the
    configuration in `schema()` and in the connector's fetch process, a state the fetch process sent back)."""
    logger = logging.getLogger("syncflow")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous
