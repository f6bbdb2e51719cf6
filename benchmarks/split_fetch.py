"""A prototype of lever 1 in PROFILE.md, for measurement only: fetching and decoding in a child process.

The child runs syncflow's own `iterate_sync` (event loop, HTTP, `RowConverter`, ordering, state patches) and writes
each batch's typed rows, and each checkpoint's state, to its stdout as length-prefixed msgpack frames, in the order
the drain would handle them. `update()` (the SDK's thread) only reads frames, `op.upsert`s rows and `op.checkpoint`s
states: a checkpoint frame comes after the rows it covers, so no checkpoint covers a row not yet upserted.

This is not the product: no resumption from a given state, no error mapping, no progress; it exists so that
`python -m benchmarks.floor_ratio --systems syncflow,split_fetch,bare_upsert` can measure what moving the event
loop off the writer's interpreter buys, side by side with today's syncflow and the bare floor. Needs `msgspec`
(`pip install msgspec`; not a dependency).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["update"]

_HEADER = struct.Struct(">I")
_ROWS, _CHECKPOINT = 0, 1


def _child() -> int:
    import msgspec

    from syncflow._config import Settings
    from syncflow._state import StateDocument
    from syncflow._sync import iterate_sync

    configuration = json.loads(sys.stdin.read())
    out = sys.stdout.buffer
    encode = msgspec.msgpack.Encoder().encode

    def send(frame: Any) -> None:
        payload = encode(frame)
        out.write(_HEADER.pack(len(payload)))
        out.write(payload)

    def checkpoint(state: Mapping[str, Any]) -> None:
        send((_CHECKPOINT, dict(state)))
        out.flush()  # the writer should not wait for a buffer to fill to see a checkpoint

    settings = Settings.from_mapping(configuration)
    # The same drain order as `run_sync` gives the SDK sink: a stream at a time (fewer table writes by the runner).
    batches = iterate_sync(
        settings, StateDocument.load({}), on_checkpoint=checkpoint, hold_pages=2 * settings.queue_pages
    )
    for batch in batches:
        send((_ROWS, batch.schema, batch.table, list(batch.rows)))
    out.flush()
    return 0


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise RuntimeError(f"the fetch process ended mid-frame ({len(data)} of {n} bytes)")
    return data


def update(configuration: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    import msgspec
    from fivetran_connector_sdk import Operations as op

    decode = msgspec.msgpack.Decoder().decode
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.split_fetch", "--child"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1 << 20,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(json.dumps(dict(configuration)).encode())  # stdin, not argv: argv is visible in `ps`
        child.stdin.close()
        upsert = op.upsert
        while True:
            header = child.stdout.read(_HEADER.size)
            if not header:
                break
            frame = decode(_read_exactly(child.stdout, _HEADER.unpack(header)[0]))
            if frame[0] == _ROWS:
                _, schema, table, rows = frame
                for row in rows:
                    upsert(table, row, schema=schema)
            else:
                op.checkpoint(frame[1])
        code = child.wait(timeout=60)
        if code != 0:
            raise RuntimeError(f"the fetch process exited with {code}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    sys.exit(_child())
