"""Keep secrets out of anything a person or a log may read.

A `Secret` holds a credential; its `str`/`repr` never show the value, so it can travel through dataclasses,
exceptions and the SDK's crash report (which prints local variables) without leaking. `redact_url` strips
credentials and sensitive query parameters from a URL before it is logged or put into an error message.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["Secret", "redact_text", "redact_url"]

_REDACTED = "****"
_SENSITIVE_PARAMS = frozenset(
    {"access_token", "token", "apikey", "api_key", "client_secret", "secret", "password", "key", "authorization"}
)


class Secret:
    """A credential whose value is only reachable through `reveal()`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy the value into places we do not control (crash dumps, caches).
        raise TypeError("a Secret cannot be pickled")


def redact_url(url: str) -> str:
    """The URL with user info and sensitive query values replaced by ****."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = [
            (name, _REDACTED if name.lower() in _SENSITIVE_PARAMS else value)
            for name, value in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="(),_*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: Iterable[Secret | str]) -> str:
    """`text` with every occurrence of each (non-trivial) secret replaced by ****."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if len(value) >= 4:
            text = text.replace(value, _REDACTED)
    return text
