"""Reading a response body under a bound on its decoded size.

httpx's own decoders inflate each network chunk whole: one 64 KiB read of a gzip bomb becomes ~64 MiB at once. So
the body is read raw and inflated here with zlib's `max_length`, a bounded slice at a time, counting as it goes:
nothing larger than the bound (plus one slice) is ever held, whatever the compression ratio.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

from .._exceptions import MalformedResponseError

__all__ = ["ACCEPT_ENCODING", "DEFAULT_MAX_RESPONSE_MB", "MAX_RESPONSE_KEY", "read_bounded"]

MAX_RESPONSE_KEY = "max_response_mb"
# The largest real page is ~50 KB (100 Accelo prospects, all fields; 100 AwardCo users are ~23 KB): 16 MiB leaves
# room for records with long free-text fields (x300), while 16 pages in flight can never hold more than ~256 MiB.
DEFAULT_MAX_RESPONSE_MB = 16.0
# Only what `read_bounded` can inflate under its bound; a server should send nothing else.
ACCEPT_ENCODING = "gzip, deflate"
_SLICE = 256 * 1024
_MIB = 1024 * 1024


class _Inflater:
    """zlib inflation that never returns more than `_SLICE` bytes per step."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._zlib: zlib._Decompress | None = None
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            # `deflate` is a zlib stream by the RFC, raw deflate from some servers: tell them apart by the
            # zlib header (method 8, header checksum a multiple of 31), as browsers and httpx do.
            zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        while True:
            out = self._zlib.decompress(data, _SLICE)
            if out:
                yield out
            data = self._zlib.unconsumed_tail
            # A full slice with no input left may still have output pending inside zlib: drain it too.
            if self._zlib.eof or (not data and len(out) < _SLICE):
                return

    def flush(self) -> bytes:
        return self._zlib.flush() if self._zlib is not None else b""


def _encoding(response: httpx.Response, api: str, endpoint: str) -> str | None:
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return str(codings[0])
    raise MalformedResponseError(
        f"unsupported content-encoding {response.headers['content-encoding']!r} (syncflow asks for gzip or deflate)",
        api=api,
        endpoint=endpoint,
    )


def _too_large(limit: int, wire: int, encoding: str | None, api: str, endpoint: str) -> MalformedResponseError:
    how = f"{encoding}, {wire:,} bytes on the wire so far" if encoding else f"{wire:,} bytes read"
    return MalformedResponseError(
        f"body larger than {limit / _MIB:g} MiB once decoded ({how}); not read further. If pages this large are "
        f"genuine, raise {MAX_RESPONSE_KEY}",
        api=api,
        endpoint=endpoint,
    )


async def read_bounded(response: httpx.Response, *, limit: int, api: str, endpoint: str) -> httpx.Response:
    """Read a streamed response whole, decoded, failing beyond `limit` decoded bytes; return it as a read Response.

    Must be called inside `client.stream(...)`; transport errors while reading propagate as httpx's, for the caller
    to map. A body beyond the bound, a corrupt compressed body or an encoding we cannot bound is a
    `MalformedResponseError`: retried like any bad answer, never a truncated page.
    """
    if response.is_stream_consumed:
        # An in-process transport handed over a body already read and decoded (mock transports do): it is in memory
        # already, so only its size is left to check.
        if len(response.content) > limit:
            raise _too_large(limit, len(response.content), None, api, endpoint)
        return response
    encoding = _encoding(response, api, endpoint)
    inflater = _Inflater(encoding) if encoding is not None else None
    parts: list[bytes] = []
    size = wire = 0
    try:
        async for raw in response.aiter_raw():
            wire += len(raw)
            pieces = inflater.feed(raw) if inflater is not None else iter((raw,))
            for piece in pieces:
                size += len(piece)
                if size > limit:
                    raise _too_large(limit, wire, encoding, api, endpoint)
                parts.append(piece)
        if inflater is not None:
            tail = inflater.flush()
            size += len(tail)
            if size > limit:
                raise _too_large(limit, wire, encoding, api, endpoint)
            parts.append(tail)
    except zlib.error as exc:
        raise MalformedResponseError(
            f"body is not valid {encoding} ({wire:,} bytes received)", api=api, endpoint=endpoint
        ) from exc
    # The decoded copy: same status and headers, minus those describing the encoded form.
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(response.status_code, headers=headers, content=b"".join(parts), request=response.request)
