"""The connector's fetching in a child process: the event loop, HTTP, decoding and the drain's ordering run there,
and the SDK's thread in this process only upserts rows and checkpoints states.

Why: in `fivetran debug` the SDK's writer is CPU-bound (`op.upsert` per row, the runner's table writes), and the
event loop's CPU (HTTP, decoding: ~0.8 s per 35,000 rows) shares its interpreter lock, so every millisecond the loop
runs is one the writer waits, although the machine has a second core. In a child process the two run side by side:
the bare-loop floor's 87-88 % became ~95 % at zero latency (`python -m benchmarks.floor_ratio --scale 20`).

The child runs exactly what the thread would (`iterate_sync`: the same sources, retries, ordering, held runs of one
stream, state patches) and writes to its stdout, after a magic line, frames in the order its drain produced them:

    BASE (state) ROWS (rows, deletes, patch) ... CHECKPOINT (state) ... LOG (level, text) ... RESULT | ERROR

A batch counts as finished in the child once its ROWS frame is written, so a CHECKPOINT frame always follows the
ROWS frames of every batch it covers; this process upserts each ROWS frame before it reads the next frame, so it
never checkpoints a state whose rows it has not upserted (the thread's invariant, one pipe later). The pipe is the
back-pressure: a writer behind blocks the child's drain, whose bounded queue then stops the fetchers.

Failures keep what completed, as on the thread: a failure in the child sends its final CHECKPOINT before its ERROR;
a failure here (a sink that raises, an interrupt, a child that dies) checkpoints the last state the child sent
plus the patches of the batches upserted since (each ROWS frame carries its batch's patch), before it is raised.

Lifetimes: the configuration (with its secrets) goes over the child's stdin, never argv or the environment; the
child keeps reading stdin and exits at once when it closes, so a parent killed at any instant takes its child
with it, and every way out of `run_in_child` closes it. The child ignores SIGINT: an interrupt is the parent's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO

from ._edge import quiet_logs, resolve_transport
from ._exceptions import SyncflowError
from ._pipeline import Batch, Sink, deliver
from ._state import KeysNotIn, StateDocument, StatePatch
from ._sync import SyncResult

__all__ = ["FetchProcessUnavailable", "run_in_child"]

logger = logging.getLogger("syncflow")

_MAGIC = b"syncflow fetch frames 1\n"  # first on the pipe: anything else there (a stray print) is not our child
_HEADER = struct.Struct(">Q")
_MAX_FRAME = 1 << 32  # a length past this is not a frame (it would be a state of billions of keys)
_BASE, _ROWS, _CHECKPOINT, _LOG, _RESULT, _ERROR = range(6)
_PROTOCOL = pickle.HIGHEST_PROTOCOL
# How many queues' worth of pages the child's drain may hold to hand the writer one table at a time (`_Held`). The
# SDK's runner writes every table with rows waiting at each checkpoint (~0.15 s of the writer's CPU apiece), so
# fewer tables per checkpoint interval is writer time saved. The thread's drain holds 2 (its pages share the
# writer's memory); the child holds 4: scale 20, 0 ms, 13 -> 10 table writes (the bare loop: 12), 150 ms 16 -> 14,
# for a child peak of 105 MiB instead of 85 MiB on 104,400 rows behind a slow writer (bounded: at most
# queue_pages x 5 pages are queued or held).
_HOLD_QUEUES = 4


class FetchProcessUnavailable(SyncflowError):
    """The fetch process could not start, or ended before its first frame: nothing was delivered, so the caller
    may fetch on a thread instead."""


# The child ------------------------------------------------------------------------------------------------------


class _FrameWriter:
    """Frames to the parent, one at a time (the drain and the log sender share the pipe), each flushed at once: a
    page held in a buffer is a page the writer waits for."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, frame: tuple[Any, ...]) -> None:
        payload = pickle.dumps(frame, _PROTOCOL)  # before the lock: a frame that cannot be pickled writes nothing
        with self._lock:
            self._out.write(_HEADER.pack(len(payload)))
            self._out.write(payload)
            self._out.flush()


class _LogSender(logging.Handler):
    """The child's syncflow log records, as text, to the parent (which logs them through its own handlers: the
    SDK's log and its secret redaction). Queued and sent by a thread of their own, so a line logged on the event
    loop never waits for the pipe while the writer is behind."""

    def __init__(self, frames: _FrameWriter) -> None:
        super().__init__(logging.INFO)
        self._frames = frames
        self._queue: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._send_all, name="syncflow-log-sender", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._queue.put((record.levelno, record.getMessage()))
        except Exception:
            self.handleError(record)

    def _send_all(self) -> None:
        while (item := self._queue.get()) is not None:
            self._frames.send((_LOG, *item))

    def drain(self) -> None:
        """Send every line logged so far (before the result, so none is lost to the exit)."""
        self._queue.put(None)
        self._thread.join(timeout=30)


def _exit_when_parent_goes() -> None:
    # The parent holds our stdin open for as long as it reads our frames; EOF means it is gone or done with us.
    # (The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader's lock makes the
    # interpreter's shutdown abort.)
    try:
        while os.read(0, 65536):
            pass
    finally:  # EOF, or a read that failed: either way nobody is listening, and this thread must not die quietly
        os._exit(0)


def _portable(patch: StatePatch) -> StatePatch:
    # KeysNotIn changes nothing (it asks the child's drain a question) and holds a Future: it stays in the child.
    return [(path, value) for path, value in patch if not isinstance(value, KeysNotIn)]


def _describe(exc: BaseException) -> str:
    nested = getattr(exc, "exceptions", None)
    if nested:  # a task group's exception group: name what happened, not "1 sub-exception"
        return _describe(nested[0])
    return f"{type(exc).__name__}: {exc}"


def _send_error(frames: _FrameWriter, error: SyncflowError) -> None:
    try:
        frames.send((_ERROR, error))
    except Exception:  # an attribute that does not pickle: the message still gets through
        frames.send((_ERROR, SyncflowError(str(error) or type(error).__name__)))


def _child_main() -> int:
    from ._config import Settings
    from ._progress import LogProgress
    from ._sync import iterate_sync

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Frames own the real stdout; anything else printed here (a library's stray print) goes to stderr instead.
    frames_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)
    frames_out.write(_MAGIC)
    frames_out.flush()
    configuration, state = pickle.load(sys.stdin.buffer)
    threading.Thread(target=_exit_when_parent_goes, name="syncflow-parent-watch", daemon=True).start()
    frames = _FrameWriter(frames_out)
    with quiet_logs():  # the parent read the same configuration and state, and logged their warnings
        settings = Settings.from_mapping(configuration)
        document = StateDocument.load(state)
    syncflow_logger = logging.getLogger("syncflow")
    logs = _LogSender(frames)
    syncflow_logger.addHandler(logs)
    syncflow_logger.setLevel(logging.INFO)
    syncflow_logger.propagate = False
    batches = None
    try:
        batches = iterate_sync(
            settings, document, transport=resolve_transport(settings, None),
            progress=LogProgress(), on_checkpoint=lambda s: frames.send((_CHECKPOINT, s)),
            hold_pages=_HOLD_QUEUES * settings.queue_pages,
        )  # fmt: skip
        first = True
        while True:
            try:
                batch = next(batches)
            except StopIteration as done:
                result: SyncResult = done.value
                break
            if first:  # the state the patches apply to (sources adopted), for the parent's checkpoint on failure
                frames.send((_BASE, document.as_dict()))
                first = False
            patch = _portable(batch.patch)
            frames.send((_ROWS, batch.stream, batch.schema, batch.table, batch.rows, batch.deletes, patch))
    except BaseException as exc:
        # The generator takes its final checkpoint (of every batch whose frame went out) as it closes: before the
        # error, so the parent keeps those rows.
        if batches is not None:
            with contextlib.suppress(BaseException):
                batches.close()
        logs.drain()
        error = exc if isinstance(exc, SyncflowError) else SyncflowError(f"the fetch process failed: {_describe(exc)}")
        _send_error(frames, error)
        return 1
    logs.drain()
    try:
        frames.send((_RESULT, result))
    except Exception as exc:
        _send_error(frames, SyncflowError(f"the fetch process could not report its result: {_describe(exc)}"))
        return 1
    return 0


# The parent -----------------------------------------------------------------------------------------------------


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None
    if len(data) != size:
        raise SyncflowError(f"the fetch process ended mid-frame ({len(data)} of {size} bytes)")
    return data


def _frames(stream: IO[bytes]) -> Iterator[tuple[Any, ...]]:
    while True:
        header = _read_exactly(stream, _HEADER.size)
        if header is None:
            return
        (size,) = _HEADER.unpack(header)
        if size > _MAX_FRAME:
            raise SyncflowError(f"the fetch process sent something that is not a frame ({size} bytes announced)")
        payload = _read_exactly(stream, size)
        if payload is None:
            raise SyncflowError("the fetch process ended mid-frame")
        try:
            frame = pickle.loads(payload)
        except Exception as exc:
            raise SyncflowError(f"the fetch process sent a frame that could not be read ({_describe(exc)})") from exc
        yield frame


class _Delivered:
    """What the parent can still checkpoint if it fails: the last state the child sent (BASE or CHECKPOINT) and the
    patches of the batches upserted since."""

    def __init__(self) -> None:
        self.base: Mapping[str, Any] | None = None
        self.patches: list[tuple[str, StatePatch]] = []

    def rebase(self, state: Mapping[str, Any]) -> None:
        self.base, self.patches = state, []

    def checkpoint_on_failure(self, sink: Sink, cause: BaseException) -> None:
        if self.base is None or not self.patches:
            return
        try:
            with quiet_logs():  # the child's own state: nothing in it is news
                document = StateDocument.load(self.base)
            for stream, patch in self.patches:
                document.apply(stream, patch)
            sink.checkpoint(document.as_dict())
        except Exception as exc:
            logger.error("could not checkpoint on the way out (%s: %s) after: %s", type(exc).__name__, exc, cause)


# `python -m syncflow._fetch_process`, less httpx's command-line client: httpx imports it whenever click and rich
# are installed (they often are, beside notebooks and the SDK), ~45 ms of the child's ~265 ms start-up, which is on
# the sync's critical path (no row moves before the child's first frame). A None entry in sys.modules makes that
# import fail, as httpx expects without those packages (it then defines a stub `httpx.main`); the child never runs it.
_CHILD_BOOTSTRAP = (
    "import runpy, sys; sys.modules['httpx._main'] = None; "
    "runpy.run_module('syncflow._fetch_process', run_name='__main__', alter_sys=True)"
)


def _child_command() -> list[str]:
    # -P (3.11+): no current directory first on the child's path, so a file there cannot shadow a module.
    return [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-c", _CHILD_BOOTSTRAP]


def _child_environment() -> dict[str, str]:
    # The child imports what this process imports: this very syncflow first, then this process's own path (a
    # runtime that adds directories to sys.path, as connector.py adds src/, does not put them in PYTHONPATH).
    package_parent = str(Path(__file__).resolve().parent.parent)
    paths = [package_parent, *(p for p in sys.path if p), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in paths if p))}


def run_in_child(
    configuration: Mapping[str, Any],
    state: Mapping[str, Any],
    sink: Sink,
) -> SyncResult:
    """`run_sync(settings, sink, state)` with the fetching in a child process (see the module's docstring): rows
    and checkpoints reach `sink` on this thread, in the child's drain order. Raises what `run_sync` would
    (`StreamsFailed` after everything completed is checkpointed, another `SyncflowError` for a sync that could not
    run) as the child raised it; `FetchProcessUnavailable` when no child could be had (nothing was delivered)."""
    with tempfile.TemporaryFile() as stderr:
        try:
            child = subprocess.Popen(
                _child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                env=_child_environment(), bufsize=1 << 20,
            )  # fmt: skip
        except OSError as exc:
            raise FetchProcessUnavailable(f"the fetch process could not start: {exc}") from exc
        assert child.stdin is not None and child.stdout is not None
        delivered = _Delivered()
        heard = False
        try:
            with contextlib.suppress(BrokenPipeError):  # it ended at once: said below, with its stderr's last line
                child.stdin.write(pickle.dumps((dict(configuration), dict(state)), _PROTOCOL))
                child.stdin.flush()  # kept open: closing it tells the child to stop
            magic = child.stdout.read(len(_MAGIC))
            if magic != _MAGIC:
                code = child.wait() if not magic else child.poll()
                found = f"it wrote {magic[:40]!r}" if magic else f"exit code {code}"
                raise FetchProcessUnavailable(f"the fetch process did not start ({found}{_last_line(stderr)})")
            heard = True
            for frame in _frames(child.stdout):
                kind = frame[0]
                if kind == _ROWS:
                    _, stream, schema, table, rows, deletes, patch = frame
                    deliver(sink, Batch(stream=stream, schema=schema, table=table, rows=rows, deletes=deletes))
                    delivered.patches.append((stream, patch))
                elif kind == _CHECKPOINT:
                    sink.checkpoint(frame[1])
                    delivered.rebase(frame[1])
                elif kind == _BASE:
                    delivered.rebase(frame[1])
                elif kind == _LOG:
                    logger.log(frame[1], "%s", frame[2])
                elif kind == _RESULT:
                    result: SyncResult = frame[1]
                    return result
                else:
                    error: SyncflowError = frame[1]
                    raise error
            code = child.wait()
            raise SyncflowError(
                f"the fetch process ended without a result (exit code {code}{_last_line(stderr)}); the next sync "
                "resumes from the last checkpoint"
            )
        except BaseException as exc:
            delivered.checkpoint_on_failure(sink, exc)
            raise
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
    stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, stderr.tell() - 4096))
    lines = [line for line in stderr.read().decode(errors="replace").splitlines() if line.strip()]
    return f": {lines[-1].strip()[:300]}" if lines else ""


if __name__ == "__main__":
    try:
        code = _child_main()
    except BaseException as exc:  # the parent reports the exit; one line here, no traceback
        print(f"fetch process: {_describe(exc)}", file=sys.stderr, flush=True)
        code = 1
    # Everything is said (each frame is flushed as it is sent): skip the interpreter's teardown, which would only
    # keep the parent waiting.
    os._exit(code)
