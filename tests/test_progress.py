"""Progress in notebooks and scripts: widgets in Jupyter (with `syncflow[notebook]`), plain text lines elsewhere,
never tqdm's "IProgress not found" warning or cursor codes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

import syncflow
from syncflow._notebook import TqdmProgress, display_kind

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def test_outside_a_terminal_progress_is_plain_lines_without_cursor_codes() -> None:
    out = io.StringIO()
    assert display_kind(out) == "text"
    progress = TqdmProgress(file=out)
    result = syncflow.to_duckdb({"use_mock": "true"}, ":memory:", streams=["accelo.staff", "awardco.user"],
                                progress=progress)  # fmt: skip
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert any(line.startswith(f"accelo.staff: {result.rows['accelo.staff']} rows") for line in lines), text
    assert any(line.startswith(f"awardco.user: {result.rows['awardco.user']} rows") for line in lines), text


def test_in_jupyter_progress_is_widgets_and_text_without_warnings_when_ipywidgets_is_missing(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipywidgets")  # the dev install includes syncflow[notebook]
    cells = [
        "import warnings\nwarnings.simplefilter('always')\nimport syncflow\n"
        "r = syncflow.to_duckdb({'use_mock': 'true'}, 'a.duckdb', streams=['accelo.staff'])",
        # A notebook without ipywidgets: the same call prints text lines, not tqdm's warning and redrawn bars.
        "import sys\nsys.modules['ipywidgets'] = None\n"
        "r = syncflow.to_duckdb({'use_mock': 'true'}, 'b.duckdb', streams=['accelo.jobs'])",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()
    widgets, plain = (list(cell.outputs) for cell in notebook.cells)
    assert not [o for o in widgets + plain if o.get("output_type") == "error"]
    assert any(WIDGET_MIME in o.get("data", {}) for o in widgets), widgets
    for outputs in (widgets, plain):
        text = "".join(_text(o) for o in outputs)
        assert "IProgress" not in text and "Warning" not in text, text
    text = "".join(_text(o) for o in plain)
    assert not any(WIDGET_MIME in o.get("data", {}) for o in plain)
    assert "accelo.jobs: " in text and "\x1b" not in text and "\r" not in text, text


def _text(output: Any) -> str:
    if output.get("output_type") == "stream":
        return str(output.get("text", ""))
    return str(output.get("data", {}).get("text/plain", ""))


def test_the_periodic_progress_line_has_rows_pages_rate_budget_and_eta(caplog: Any) -> None:
    import logging

    from syncflow._http import RateStatistics
    from syncflow._pipeline import Batch
    from syncflow._progress import LogProgress

    progress = LogProgress(every_seconds=0.0)
    budget = RateStatistics("accelo", 10, 10, 0, 4, 4990, None, 0, 0.0)
    progress.on_start(lambda: {"accelo": budget})
    with caplog.at_level(logging.INFO, logger="syncflow"):
        progress.on_batch(Batch("accelo.jobs", "accelo", "jobs", [{"id": 1}] * 100, requests=1, total_rows=400))
    line = caplog.records[-1].getMessage()
    assert line.startswith("accelo.jobs: 100 rows, 1 pages, 1 requests (")
    assert "25% of ~400" in line and "ETA" in line and "accelo budget: 4990 requests left" in line
