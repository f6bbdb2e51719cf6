"""The connector's fetching in a child process: the event loop, HTTP, decoding and the drain's ordering run there,
and the SDK's thread in this process only upserts rows and checkpoints states.

Why: in `fivetran debug` the SDK's writer is CPU-bound (`op.upsert` per row, the runner's table writes), and the
event loop's CPU (HTTP, decoding: ~0.8 s per 35,000 rows) shares its interpreter lock, so every millisecond the loop
runs is one the writer waits, although the machine has a second core. In a child process the two run side by side:
the bare-loop floor's 87-88 % became 96 % at zero latency (`python -m benchmarks.floor_ratio --scale 20`).

The child runs exactly what the thread would (`iterate_sync`: the same sources, retries, ordering, held runs of one
stream, state patches) and writes, to its stdout, frames in the order the drain produced them:

    ROWS (schema, table, rows, deletes) ... CHECKPOINT (state) ... LOG (level, text) ... RESULT | ERROR

A batch counts as finished in the child once its frame is written, so a CHECKPOINT frame always follows the ROWS
frames of every batch it covers; this process upserts each ROWS frame before it reads the next frame, so it never
checkpoints a state whose rows it has not upserted (the same invariant as the thread's drain, one pipe later).
The pipe is the back-pressure: a writer behind blocks the child's drain, whose bounded queue then stops the
fetchers, so memory stays bounded.

Lifetimes: the configuration (with its secrets) goes over the child's stdin, never argv or the environment; the
child keeps reading stdin and exits at once when it closes, so a parent killed at any instant takes its child
with it. Every way out of `run_in_child` ends the child. The child ignores SIGINT: an interrupt is the parent's to
handle (it stops reading and ends the child; its last checkpoint covers what it upserted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from ._exceptions import SyncflowError
from ._pipeline import Batch, Sink, deliver
from ._progress import LogProgress
from ._streams import Stream
from ._sync import SyncResult

__all__ = ["FetchProcessUnavailable", "run_in_child"]

logger = logging.getLogger("syncflow")

_HEADER = struct.Struct(">Q")
_ROWS, _CHECKPOINT, _LOG, _RESULT, _ERROR = range(5)
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class _FrameWriter:
    """Frames to the parent, one at a time: the drain (rows, checkpoints) and every thread that logs share it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, frame: tuple[Any, ...]) -> None:
        payload = pickle.dumps(frame, _PROTOCOL)
        with self._lock:
            self._out.write(_HEADER.pack(len(payload)))
            self._out.write(payload)
            # At once: a page held in a buffer is a page the writer waits for (at the start, the whole sync would
            # wait for the buffer to fill).
            self._out.flush()


class _FrameLogHandler(logging.Handler):
    """The child's syncflow log records, as text, to the parent (which logs them through its own handlers, so the
    SDK's log and secret redaction apply as they do to the thread's records)."""

    def __init__(self, frames: _FrameWriter) -> None:
        super().__init__(logging.INFO)
        self._frames = frames

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._frames.send((_LOG, record.levelno, record.getMessage()))
        except Exception:
            self.handleError(record)


def _exit_when_parent_goes() -> None:
    # The parent holds our stdin open for as long as it reads our frames; EOF means it is gone or done with us.
    # (The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader's lock makes the
    # interpreter's shutdown abort.)
    while os.read(0, 65536):
        pass
    os._exit(0)


def _child_main() -> int:
    from ._config import Settings
    from ._edge import resolve_transport
    from ._state import StateDocument
    from ._sync import iterate_sync

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Frames own the real stdout; anything else printed here (a library's stray print) goes to stderr instead.
    frames_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    configuration, state, streams = pickle.load(stdin)
    threading.Thread(target=_exit_when_parent_goes, name="syncflow-parent-watch", daemon=True).start()
    frames = _FrameWriter(frames_out)
    syncflow_logger = logging.getLogger("syncflow")
    syncflow_logger.disabled = True  # the parent parsed the same configuration and logged its warnings once
    try:
        settings = Settings.from_mapping(configuration)
    finally:
        syncflow_logger.disabled = False
    syncflow_logger.addHandler(_FrameLogHandler(frames))
    syncflow_logger.setLevel(logging.INFO)
    syncflow_logger.propagate = False
    try:
        batches = iterate_sync(
            settings, StateDocument.load(state), streams=streams, transport=resolve_transport(settings, None),
            progress=LogProgress(), on_checkpoint=lambda s: frames.send((_CHECKPOINT, s)),
            hold_pages=2 * settings.queue_pages,  # as run_sync: runs of one table, fewer table writes by the runner
        )  # fmt: skip
        while True:
            try:
                batch = next(batches)
            except StopIteration as done:
                frames.send((_RESULT, done.value))
                return 0
            frames.send((_ROWS, batch.schema, batch.table, list(batch.rows), list(batch.deletes)))
    except SyncflowError as exc:  # StreamsFailed (everything else checkpointed) included: raised again there
        frames.send((_ERROR, exc))
    except BaseException as exc:  # a bug: the parent reports it as one line (its type and message), no traceback
        error = SyncflowError(f"the fetch process failed: {type(exc).__name__}: {exc}")
        frames.send((_ERROR, error))
    return 0


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None
    if len(data) != size:
        raise SyncflowError(f"the fetch process ended mid-frame ({len(data)} of {size} bytes)")
    return data


def _frames(stream: IO[bytes]) -> Any:
    while True:
        header = _read_exactly(stream, _HEADER.size)
        if header is None:
            return
        payload = _read_exactly(stream, _HEADER.unpack(header)[0])
        if payload is None:
            raise SyncflowError("the fetch process ended mid-frame")
        yield pickle.loads(payload)


class FetchProcessUnavailable(SyncflowError):
    """The fetch process could not start, or ended before its first word: nothing was delivered, so the caller
    may fetch on a thread instead."""


def run_in_child(
    configuration: Mapping[str, Any],
    state: Mapping[str, Any],
    sink: Sink,
    *,
    streams: Sequence[str | Stream] | None = None,
) -> SyncResult:
    """`run_sync(settings, sink, state)` with the fetching in a child process (see the module's docstring): rows
    and checkpoints reach `sink` on this thread, in the child's drain order. Raises what `run_sync` would
    (`StreamsFailed` after everything completed is checkpointed, another `SyncflowError` for a sync that could not
    run) as the child raised it; `FetchProcessUnavailable` when no child could be had (nothing was delivered)."""
    package_parent = str(Path(__file__).resolve().parent.parent)  # so the child imports this very syncflow
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryFile() as stderr:
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "syncflow._fetch_process"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr, env=env, bufsize=1 << 20,
            )  # fmt: skip
        except OSError as exc:
            raise FetchProcessUnavailable(f"the fetch process could not start: {exc}") from exc
        assert child.stdin is not None and child.stdout is not None
        heard = False
        try:
            with contextlib.suppress(BrokenPipeError):  # it ended at once: said below, with its stderr's last line
                child.stdin.write(pickle.dumps((dict(configuration), dict(state), streams), _PROTOCOL))
                child.stdin.flush()  # kept open: closing it tells the child to stop
            for frame in _frames(child.stdout):
                heard = True
                kind = frame[0]
                if kind == _ROWS:
                    _, schema, table, rows, deletes = frame
                    batch = Batch(stream=f"{schema}.{table}", schema=schema, table=table, rows=rows, deletes=deletes)
                    deliver(sink, batch)
                elif kind == _CHECKPOINT:
                    sink.checkpoint(frame[1])
                elif kind == _LOG:
                    logger.log(frame[1], "%s", frame[2])
                elif kind == _RESULT:
                    result: SyncResult = frame[1]
                    return result
                else:
                    error: SyncflowError = frame[1]
                    raise error
            code = child.wait()
            last = _last_line(stderr)
            why = f"exit code {code}" + (f": {last}" if last else "")
            if not heard:
                raise FetchProcessUnavailable(f"the fetch process ended before it started ({why})")
            raise SyncflowError(f"the fetch process ended without a result ({why}); the next sync resumes from the "
                                "last checkpoint")  # fmt: skip
        finally:
            with contextlib.suppress(BrokenPipeError):  # a child that died leaves a pipe nobody reads
                child.stdin.close()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            child.stdout.close()
            if heard:
                for line in _lines(stderr)[:20]:  # what a library printed there, said where the user will see it
                    logger.warning("fetch process: %s", line)


def _lines(stderr: IO[bytes]) -> list[str]:
    stderr.seek(0)
    return [line for line in stderr.read(65536).decode(errors="replace").splitlines() if line.strip()]


def _last_line(stderr: IO[bytes]) -> str:
    lines = _lines(stderr)
    return lines[-1].strip()[:300] if lines else ""


if __name__ == "__main__":
    code = _child_main()
    # Everything is said (each frame is flushed as it is sent): skip the interpreter's teardown, which would only
    # keep the parent waiting.
    os._exit(code)
