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
        self.gzip = encoding in ("gzip", "x-gzip")
        self._zlib: zlib._Decompress | None = None
        self._pending = b""  # the first bytes of a deflate body, until its header can be told apart
        self.received = False

    def _start(self, data: bytes) -> zlib._Decompress:
        if self.gzip:
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        # `deflate` is a zlib stream by the RFC, raw deflate from some servers: tell them apart by the zlib
        # header (method 8, header checksum a multiple of 31), as browsers and httpx do.
        zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        self.received = True
        if self._zlib is None:
            data = self._pending + data
            if len(data) < 2 and not self.gzip:
                self._pending = data
                return
            self._zlib = self._start(data)
        while True:
            if self._zlib.eof:
                if not data or not self.gzip:
                    return  # bytes after a deflate stream's end are not part of the body (httpx ignores them too)
                self._zlib = self._start(data)  # gzip allows several members, one after the other
            out = self._zlib.decompress(data, _SLICE)
            if out:
                yield out
            before, data = data, self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
            if not out and data and data == before and not self._zlib.eof:
                raise zlib.error("the compressed stream makes no progress")
            # A full slice with no input left may still have output pending inside zlib: go round to drain it.
            if not data and not self._zlib.eof and len(out) < _SLICE:
                return

    def finish(self) -> None:
        """Raise if the compressed stream stopped before its end (a cut body is never a page)."""
        if self.received and (self._zlib is None or not self._zlib.eof):
            raise zlib.error("the compressed stream ends early")


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


def _too_large(
    limit: int, wire: int, encoding: str | None, api: str, endpoint: str, *, declared: bool = False
) -> MalformedResponseError:
    if declared:
        how = f"Content-Length {wire:,} bytes"
    elif encoding:
        how = f"{encoding}, {wire:,} bytes on the wire so far"
    else:
        how = f"{wire:,} bytes read"
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
    declared = response.headers.get("content-length", "")
    if encoding is None and declared.isdigit() and int(declared) > limit:
        # Said up front: no need to read any of it.
        raise _too_large(limit, int(declared), None, api, endpoint, declared=True)
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
            inflater.finish()
    except zlib.error as exc:
        raise MalformedResponseError(
            f"body is not valid {encoding} ({exc}; {wire:,} bytes received)", api=api, endpoint=endpoint
        ) from exc
    # The decoded copy: same status and headers, minus those describing the encoded form.
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(response.status_code, headers=headers, content=b"".join(parts), request=response.request)
