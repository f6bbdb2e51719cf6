"""The sources syncflow ships, each a plug-in behind `syncflow.Source`: Accelo (the docs' catalogue) and AwardCo.

`BUILTIN_SOURCES` is the one list of them: the engine reads it (through `syncflow._config.builtin_sources`) when no
`sources=` is given, and never names a source itself. A third API is added by passing its plug-in in `sources=`
(see `examples/custom_source.py`), or by adding it here.
"""

from __future__ import annotations

from .._source import Source
from .accelo import ACCELO_STREAMS, AcceloSettings, AcceloSource
from .awardco import AWARDCO_STREAMS, AwardcoSettings, AwardcoSource

__all__ = [
    "ACCELO_STREAMS",
    "AWARDCO_STREAMS",
    "BUILTIN_SOURCES",
    "AcceloSettings",
    "AcceloSource",
    "AwardcoSettings",
    "AwardcoSource",
]

BUILTIN_SOURCES: tuple[Source, ...] = (AcceloSource(), AwardcoSource())
