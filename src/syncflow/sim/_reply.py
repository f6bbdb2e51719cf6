"""The answer a handler produces before the ASGI layer adds common headers and sends it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_reply(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    # Serialized once per response, compactly: the benchmark pushes tens of thousands of rows through here.
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, body, headers=headers or [])


def raw_json_reply(status: int, text: str) -> Reply:
    """A reply whose JSON text was assembled by the caller (from cached row fragments)."""
    return Reply(status, text.encode())
