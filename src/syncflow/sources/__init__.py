"""The sources syncflow ships: Accelo (six entities) and AwardCo (users)."""

from .accelo import ACCELO_STREAMS, AcceloSource
from .awardco import AWARDCO_STREAMS, AwardcoSource

__all__ = ["ACCELO_STREAMS", "AWARDCO_STREAMS", "AcceloSource", "AwardcoSource"]
