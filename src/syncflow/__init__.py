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
from ._http import ApiClient, ApiKeyAuth, Authenticator, OAuth2ClientCredentials, Reply
from ._pipeline import Batch, Sink
from ._redaction import Secret
from ._source import Source, SourceReport, SourceRun, SourceSettings, run_alone
from ._streams import Stream
from ._sync import StreamSummary, SyncResult
from .sources import AcceloSettings, AcceloSource, AwardcoSettings, AwardcoSource

__version__ = "0.1.0"

__all__ = [
    "AcceloSettings",
    "AcceloSource",
    "ApiClient",
    "ApiKeyAuth",
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
    "PermissionDenied",
    "Reply",
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
    "extract",
    "iter_rows",
    "list_streams",
    "load_settings",
    "run_alone",
    "sync",
    "sync_async",
    "to_duckdb",
    "to_duckdb_async",
]
