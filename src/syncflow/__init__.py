"""syncflow: async, high-throughput extraction of Accelo and AwardCo, for Fivetran and for Python.

import syncflow
syncflow.to_duckdb({"use_mock": "true"}, "syncflow.duckdb")

Blocking calls (`extract`, `sync`, `to_duckdb`) and their native async twins (`extract_async`, `sync_async`,
`to_duckdb_async`, asyncio only) take the same `streams`, `state` and `progress` parameters; see `syncflow._api`.
"""

from ._api import (
    AsyncExtraction,
    Extraction,
    Page,
    extract,
    extract_async,
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
from ._http import PathStatistics, RateStatistics, RequestStatistics
from ._pipeline import Batch, Progress, Sink
from ._redaction import Secret
from ._streams import RowConverter, Stream
from ._sync import StreamSummary, SyncResult
from ._version import __version__

__all__ = [
    "AcceloSettings",
    "AsyncExtraction",
    "AuthenticationError",
    "AwardcoSettings",
    "Batch",
    "BudgetExhausted",
    "ConfigurationError",
    "Extraction",
    "HTTPStatusError",
    "MalformedResponseError",
    "MockSettings",
    "Page",
    "PathStatistics",
    "PermissionDenied",
    "Progress",
    "RateStatistics",
    "RequestStatistics",
    "RowConverter",
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
    "extract",
    "extract_async",
    "iter_rows",
    "list_streams",
    "load_settings",
    "sync",
    "sync_async",
    "to_duckdb",
    "to_duckdb_async",
]
