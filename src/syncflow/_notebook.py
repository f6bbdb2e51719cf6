"""Progress for the Python API: a widget per stream in Jupyter, a tqdm bar per stream in a terminal, and plain text
lines anywhere else (a log file, CI, a notebook without ipywidgets) — never cursor codes or tqdm's warnings.

Only the Python API imports this module (the connector reports progress through `_progress.LogProgress`), so the
Fivetran package leaves it out and the deployed environment needs no tqdm.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

from ._http import RateStatistics
from ._pipeline import Batch
from ._progress import LogProgress

__all__ = ["TqdmProgress", "display_kind", "watched"]

DisplayKind = Literal["widgets", "terminal", "text"]


def _in_jupyter_kernel() -> bool:
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    if get_ipython is None:
        return False
    ip = get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def display_kind(stream: TextIO | None = None) -> DisplayKind:
    """How progress can be shown here: Jupyter with ipywidgets → widgets; a terminal → tqdm bars; else text lines."""
    if _in_jupyter_kernel():
        return "widgets" if _has_widgets() else "text"
    target = sys.stderr if stream is None else stream
    isatty = getattr(target, "isatty", None)
    return "terminal" if callable(isatty) and isatty() else "text"


def watched(stream: TextIO | None = None) -> bool:
    """Whether someone is watching progress here: a Jupyter kernel (widgets or text lines) or a terminal."""
    return _in_jupyter_kernel() or display_kind(stream) != "text"


class TqdmProgress:
    """One progress display per stream; `kind` defaults to what `display_kind()` finds.

    Text mode writes one line per stream every `every_seconds` and a final line per stream at the end; it is what a
    notebook without ipywidgets gets (install `syncflow[notebook]` for widgets) instead of tqdm's warning and bars
    redrawn with cursor codes.
    """

    def __init__(
        self, *, kind: DisplayKind | None = None, file: TextIO | None = None, every_seconds: float = 10.0,
        **tqdm_kwargs: Any,
    ) -> None:  # fmt: skip
        self.kind: DisplayKind = kind or display_kind(file)
        self._file = file
        self._kwargs = tqdm_kwargs
        self._bars: dict[str, Any] = {}
        self._tqdm: Callable[..., Any] | None = None
        self._text: LogProgress | None = None
        if self.kind == "widgets":
            from tqdm.notebook import tqdm as notebook_tqdm

            self._tqdm = notebook_tqdm
        elif self.kind == "terminal":
            from tqdm import tqdm as terminal_tqdm

            self._tqdm = terminal_tqdm
        else:
            self._text = LogProgress(every_seconds=every_seconds, write=self._write)

    def _write(self, line: str) -> None:
        print(line, file=self._file if self._file is not None else sys.stderr, flush=True)

    def on_start(self, budgets: Callable[[], Mapping[str, RateStatistics]]) -> None:
        if self._text is not None:
            self._text.on_start(budgets)

    def on_batch(self, batch: Batch) -> None:
        if self._text is not None:
            self._text.on_batch(batch)
            return
        assert self._tqdm is not None
        bar = self._bars.get(batch.stream)
        if bar is None:
            options: dict[str, Any] = {"desc": batch.stream, "unit": "rows", "total": batch.total_rows}
            if self.kind == "terminal":
                options["position"] = len(self._bars)  # stacked bars need cursor moves, which only a terminal has
            if self._file is not None:
                options["file"] = self._file
            bar = self._bars[batch.stream] = self._tqdm(**options, **self._kwargs)
        if batch.total_rows is not None and bar.total != batch.total_rows:
            bar.total = batch.total_rows
            bar.refresh()
        bar.update(len(batch.rows))

    def close(self) -> None:
        if self._text is not None:
            self._text.flush(time.monotonic())
        for bar in self._bars.values():
            bar.close()
