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
from ._config import ConfigReader, Key, MockSettings, Settings, load_settings
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
from ._http import (
    AccessToken,
    ApiClient,
    ApiKeyAuth,
    Authenticator,
    OAuth2ClientCredentials,
    PathStatistics,
    RateStatistics,
    Reply,
    RequestStatistics,
)
from ._pipeline import Batch, Progress, Sink
from ._redaction import Secret
from ._source import Source, SourceReport, SourceRun, SourceSettings, run_alone
from ._streams import RowConverter, Stream
from ._sync import StreamSummary, SyncResult
from ._version import __version__
from .sources import AcceloSettings, AcceloSource, AwardcoSettings, AwardcoSource
from .sources._accelo_catalog import AcceloResource, accelo_resource

__all__ = [
    "AcceloResource",
    "AcceloSettings",
    "AcceloSource",
    "AccessToken",
    "ApiClient",
    "ApiKeyAuth",
    "AsyncExtraction",
    "AuthenticationError",
    "Authenticator",
    "AwardcoSettings",
    "AwardcoSource",
    "Batch",
    "BudgetExhausted",
    "ConfigReader",
    "ConfigurationError",
    "Extraction",
    "HTTPStatusError",
    "Key",
    "MalformedResponseError",
    "MockSettings",
    "OAuth2ClientCredentials",
    "Page",
    "PathStatistics",
    "PermissionDenied",
    "Progress",
    "RateStatistics",
    "Reply",
    "RequestStatistics",
    "RowConverter",
    "Secret",
    "Settings",
    "Sink",
    "Source",
    "SourceError",
    "SourceReport",
    "SourceRun",
    "SourceSettings",
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
    "extract_async",
    "iter_rows",
    "list_streams",
    "load_settings",
    "run_alone",
    "sync",
    "sync_async",
    "to_duckdb",
    "to_duckdb_async",
]
