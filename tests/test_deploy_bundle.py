"""`fivetran deploy` readiness: the bundle the SDK uploads imports syncflow from src/ with no install step."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tracked_files() -> list[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to know which files ship")
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30)
    return [line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]


def test_the_deploy_bundle_contains_src_and_imports_syncflow_from_it(tmp_path: Path) -> None:
    from fivetran_connector_sdk_cli.connector_helper import create_package

    project = tmp_path / "project"
    for name in _tracked_files():
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (project / "files").mkdir()
    (project / "files" / "state.json").write_text("{}")  # never shipped
    bundle = Path(create_package(str(project)))
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        unpacked = tmp_path / "unpacked"
        archive.extractall(unpacked)
    assert {"connector.py", "requirements.txt", "src/syncflow/__init__.py", "src/syncflow/fivetran.py"} <= names
    assert not any(name.startswith(("files/", ".venv/")) for name in names)
    requirements = (unpacked / "requirements.txt").read_text().lower()
    assert "fivetran" not in requirements and "requests" not in requirements.split()
    probe = (
        "import runpy; runpy.run_path('connector.py'); "
        "import syncflow, syncflow.fivetran as f; print(syncflow.__file__); print(len(f.schema({'use_mock': 'true'})))"
    )
    # connector.py puts the bundle's src/ first on sys.path: the bundle's syncflow wins over any installed one.
    done = subprocess.run([sys.executable, "-c", probe], cwd=unpacked, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    module_path, tables = done.stdout.split()
    assert Path(module_path).resolve().is_relative_to(unpacked.resolve())
    assert tables == "7"
