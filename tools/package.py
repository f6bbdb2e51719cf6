"""Build the Fivetran upload package with the SDK's own packager, from what the connector runs and nothing else.

    python tools/package.py [--stage build/connector] [--out dist/syncflow-connector.zip]

The SDK's packager zips the project folder, skipping only what `.gitignore` (and its defaults: hidden files,
`files/`, `__pycache__/`, configuration.json) excludes; it has no ignore file of its own. Ignoring tests/ in
`.gitignore` would hide them from git too, so the connector is first *staged*: connector.py, requirements.txt and the
tracked (or new, not ignored) files under src/, less the modules only the Python API uses (the DuckDB sink and notebook
progress, which need duckdb and tqdm, and the simulator's loopback server, which needs uvicorn). `make deploy` runs
`fivetran deploy` on the same staged folder, so what is tested here is what is uploaded.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("connector.py", "requirements.txt")
# Modules of the Python API that the connector never imports (their third-party imports are not in requirements.txt).
NOT_SHIPPED = frozenset({"src/syncflow/_duckdb.py", "src/syncflow/_notebook.py", "src/syncflow/sim/__main__.py"})


def shipped_files(root: Path = ROOT) -> list[str]:
    """The project files that make up the connector, relative to `root`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *TOP_LEVEL, "src"],
        cwd=root, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    names = sorted({line for line in listed.stdout.splitlines() if (root / line).is_file()})
    missing = [name for name in TOP_LEVEL if name not in names]
    if missing:
        raise SystemExit(f"package: {', '.join(missing)} not found in {root} (run from a clone of the repository)")
    return [name for name in names if name not in NOT_SHIPPED and "__pycache__" not in name]


def stage(target: Path, root: Path = ROOT) -> Path:
    """Copy the connector's files into `target` (emptied first)."""
    if target.exists():
        shutil.rmtree(target)
    for name in shipped_files(root):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)
    return target


def build(target: Path, out: Path | None = None) -> Path:
    """Stage into `target`, then zip it with the SDK's packager (offline: no dependency validation, no upload)."""
    stage(target)
    sys.path.insert(0, str(target / "src"))
    from fivetran_connector_sdk_cli.connector_helper import create_package

    from syncflow.fivetran import configuration_form

    package = Path(create_package(str(target), configuration_form))
    if out is None:
        return package
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(package, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=Path, default=ROOT / "build" / "connector", help="staging folder")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "syncflow-connector.zip", help="the zip")
    parser.add_argument("--stage-only", action="store_true", help="stage the connector; do not zip it")
    args = parser.parse_args()
    if args.stage_only:
        print(stage(args.stage))
    else:
        print(build(args.stage, args.out))


if __name__ == "__main__":
    main()
