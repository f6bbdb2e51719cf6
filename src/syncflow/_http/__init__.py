"""HTTP layer: client factory, auth, admission control and retries."""

from ._auth import AccessToken, ApiKeyAuth, Authenticator, OAuth2ClientCredentials, server_time
from ._client import RETRYABLE_STATUSES, ApiClient, PathStatistics, Reply, RequestStatistics, RetryPolicy
from ._limits import RateGate, RateStatistics, parse_retry_after

__all__ = [
    "RETRYABLE_STATUSES",
    "AccessToken",
    "ApiClient",
    "ApiKeyAuth",
    "Authenticator",
    "OAuth2ClientCredentials",
    "PathStatistics",
    "RateGate",
    "RateStatistics",
    "Reply",
    "RequestStatistics",
    "RetryPolicy",
    "parse_retry_after",
    "server_time",
]
