"""The README says what the code does: its configuration table lists every key (and no key that does not exist),
and its example figures and messages are what the code prints."""

from __future__ import annotations

import re
from pathlib import Path

import syncflow
from syncflow._config import all_keys, unknown_key_message

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_the_configuration_table_lists_every_key_and_only_real_ones() -> None:
    rows = [line for line in _section("Configuration").splitlines() if line.startswith("| `")]
    first_cells = "\n".join(row.split("|")[1] for row in rows)
    listed = set(re.findall(r"`([a-z_]+)`", first_cells))
    registry = all_keys()  # the engine's keys and every built-in source's
    KNOWN_KEYS, ALIASES = registry.known, registry.aliases
    assert listed >= KNOWN_KEYS, f"missing from the README table: {sorted(KNOWN_KEYS - listed)}"
    assert not listed - KNOWN_KEYS - set(ALIASES), f"not configuration keys: {sorted(listed - KNOWN_KEYS)}"


def test_the_unknown_key_example_is_the_message_the_code_writes() -> None:
    assert f"(`{unknown_key_message('acelo_client_id')}`)" in _section("Configuration")


def test_the_python_examples_figures_are_what_the_code_returns(tmp_path: Path) -> None:
    section = _section("From Python and notebooks")
    companies = int(re.search(r"\{'accelo\.companies': (\d+), \.\.\.\} with the shipped file", section).group(1))  # type: ignore[union-attr]
    invoices = int(re.search(r"# (\d+) rows from the simulator", section).group(1))  # type: ignore[union-attr]
    shipped = Path(__file__).resolve().parent.parent / "configuration.json"
    assert syncflow.list_streams(shipped)[0] == "accelo.companies"
    result = syncflow.to_duckdb(shipped, tmp_path / "syncflow.duckdb", streams=["accelo.companies"], progress=False)
    assert result.rows["accelo.companies"] == companies
    pages = syncflow.extract({"use_mock": "true"}, "accelo.invoices")
    assert sum(len(page.rows) for page in pages) == invoices
