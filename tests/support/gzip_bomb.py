"""Run one AwardCo sync against a loopback server, in its own process, and print its outcome and peak memory.

    python tests/support/gzip_bomb.py normal|bomb

`normal`: three ordinary pages of users. `bomb`: the first page is ordinary, every later one a gzip body of ~0.25 MB
that inflates to 256 MiB (what a broken or hostile proxy can send): one such body read whole is already more than the
test's 160 MiB of slack over a normal sync's peak, so the test fails unless the cap stops decompression. Prints one
JSON line: the error (or null), the rows delivered, the requests the server answered and the process's peak RSS in
MiB (`ru_maxrss`).
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "bomb-test-key"
TOTAL = 300
INFLATED_MIB = 256


def _users(page: int) -> list[dict[str, Any]]:
    return [
        {
            "employeeId": f"E{page:02d}{i:04d}",
            "firstName": "Ada",
            "lastName": f"Lovelace {i}",
            "email": f"ada{page}.{i}@example.com",
            "balance": 12.5,
            "currencyCode": "USD",
            "updated_at": "2024-05-01T12:00:00Z",
            "created_at": "2024-01-01T12:00:00Z",
        }
        for i in range(100)
    ]


def _bomb() -> bytes:
    # Zeros compress ~1000:1; built a MiB at a time so the server never holds the inflated form either.
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1024 * 1024)
    parts = [packer.compress(zeros) for _ in range(INFLATED_MIB)]
    parts.append(packer.flush())
    return b"".join(parts)


def serve(mode: str) -> tuple[ThreadingHTTPServer, dict[str, int]]:
    bomb = _bomb() if mode == "bomb" else b""
    seen = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen["requests"] += 1
            query = parse_qs(urlsplit(self.path).query)
            page = int(query.get("page", ["1"])[0])
            if self.headers.get("apiKey") != API_KEY:
                self._send(401, b'{"error": "bad key"}')
            elif mode == "bomb" and page > 1:
                self._send(200, bomb, {"Content-Encoding": "gzip"})
            else:
                body = {"users": _users(page) if page <= TOTAL // 100 else [], "total": TOTAL, "page": page}
                self._send(200, json.dumps(body).encode())

        def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            # The client stops reading a body over its bound: what this test wants.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def main(mode: str) -> None:
    from syncflow import Settings
    from syncflow._state import StateDocument
    from syncflow._sync import run_sync

    server, seen = serve(mode)
    rows = 0

    class Sink:
        def upsert(self, schema: str, table: str, row: Any) -> None:
            nonlocal rows
            rows += 1

        def checkpoint(self, state: Any) -> None:
            return None

    settings = Settings.from_mapping(
        {
            "awardco_api_key": API_KEY,
            "awardco_base_url": f"http://127.0.0.1:{server.server_address[1]}",
            "max_retries": "2",
            # The cap's error is retried (a proxy may recover) until this window ends: 2 s still re-fetches each bomb
            # page several times (every try must stop at the cap), without 20 s of waiting between them.
            "max_retry_seconds": "2",
        }
    )
    error = None
    try:
        run_sync(settings, Sink(), StateDocument())
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        server.shutdown()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"error": error, "rows": rows, "requests": seen["requests"], "peak_mib": round(peak_mib, 1)}))


if __name__ == "__main__":
    main(sys.argv[1])
