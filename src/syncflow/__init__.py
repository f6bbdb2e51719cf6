"""syncflow: async, high-throughput extraction of Accelo and AwardCo, for Fivetran and for Python.

import syncflow
syncflow.to_duckdb({"use_mock": "true"}, "syncflow.duckdb")
"""

from ._api import (
    Extraction,
    Page,
    extract,
    iter_rows,
    list_streams,
    sync,
    sync_async,
    to_duckdb,
    to_duckdb_async,
)
from ._config import AcceloSettings, AwardcoSettings, MockSettings, Settings, load_settings
from ._exceptions import (
    AuthenticationError,
    BudgetExhausted,
    ConfigurationError,
    HTTPStatusError,
    MalformedResponseError,
    PermissionDenied,
    SourceError,
    StateError,
    StreamsFailed,
    SyncflowError,
    TransportError,
)
from ._pipeline import Sink
from ._redaction import Secret
from ._streams import Stream
from ._sync import StreamSummary, SyncResult
from .sources._accelo_catalog import AcceloResource, accelo_resource

__version__ = "0.1.0"

__all__ = [
    "AcceloResource",
    "AcceloSettings",
    "AuthenticationError",
    "AwardcoSettings",
    "BudgetExhausted",
    "ConfigurationError",
    "Extraction",
    "HTTPStatusError",
    "MalformedResponseError",
    "MockSettings",
    "Page",
    "PermissionDenied",
    "Secret",
    "Settings",
    "Sink",
    "SourceError",
    "StateError",
    "Stream",
    "StreamSummary",
    "StreamsFailed",
    "SyncResult",
    "SyncflowError",
    "TransportError",
    "__version__",
    "accelo_resource",
    "extract",
    "iter_rows",
    "list_streams",
    "load_settings",
    "sync",
    "sync_async",
    "to_duckdb",
    "to_duckdb_async",
]
