"""`make package` / `make deploy` readiness: from a fresh clone, the SDK's own packager builds a zip that holds the
connector and what it runs (no tests, benchmarks, notebooks), whose requirements.txt is exactly what its code imports,
and which imports syncflow from its own src/ with no install step."""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from syncflow.sources import ACCELO_STREAMS

ROOT = Path(__file__).resolve().parent.parent

# What the bundle must run without: the Python API's extras, never installed on Fivetran.
NOT_INSTALLED_THERE = ("duckdb", "tqdm", "uvicorn", "ipywidgets", "pytz")
PROVIDED_BY_FIVETRAN = {"fivetran_connector_sdk", "requests"}
# Installed though not imported: httpcore imports it lazily on every request (see requirements.txt).
RUNTIME_ONLY = {"sniffio"}
# One worker runs this module under `make test` (pytest-xdist): the `bundle` clone and package are built once.
pytestmark = pytest.mark.xdist_group("deploy_bundle")


def _fresh_clone(target: Path) -> Path:
    """The working tree's files as a clone would have them (tracked, or new and not ignored), as a git repository."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout to know which files ship")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    (target / "files").mkdir()
    (target / "files" / "state.json").write_text("{}")  # never shipped
    (target / "configuration.json").write_text('{"use_mock": "true", "accelo_client_secret": "x"}')
    subprocess.run(["git", "init", "-q"], cwd=target, check=True, timeout=30)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True, timeout=30)
    return target


def _requirement_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower())
    return names


def _third_party_imports(root: Path) -> set[str]:
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in {"syncflow", "__future__"}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], Path]:
    clone = _fresh_clone(tmp_path_factory.mktemp("clone"))
    out = clone / "dist" / "syncflow-connector.zip"
    # As `make package` runs it: the SDK's packager, offline.
    done = subprocess.run([sys.executable, "tools/package.py", "--stage", "build/connector", "--out", str(out)],
                          cwd=clone, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    unpacked = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        archive.extractall(unpacked)
    return names, unpacked


def test_the_package_holds_the_connector_and_nothing_else(bundle: tuple[set[str], Path]) -> None:
    names, _ = bundle
    assert {"connector.py", "requirements.txt", "configuration_form.pb", "src/syncflow/__init__.py",
            "src/syncflow/fivetran.py", "src/syncflow/sim/_app.py"} <= names  # fmt: skip
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"connector.py", "requirements.txt", "configuration_form.pb", "src"}, sorted(tops)
    assert not [name for name in names if "__pycache__" in name or name.endswith((".pyc", ".ipynb", ".db"))]
    # Python-API-only modules (DuckDB sink, notebook bars, the loopback server) stay out with their dependencies.
    assert not names & {"src/syncflow/_duckdb.py", "src/syncflow/_notebook.py", "src/syncflow/sim/__main__.py"}


def test_requirements_are_exactly_what_the_package_imports(bundle: tuple[set[str], Path]) -> None:
    _, unpacked = bundle
    required = _requirement_names((unpacked / "requirements.txt").read_text())
    imported = _third_party_imports(unpacked)
    assert not required & PROVIDED_BY_FIVETRAN, "the platform provides the SDK and requests"
    assert imported - PROVIDED_BY_FIVETRAN == required - RUNTIME_ONLY


def test_the_package_imports_syncflow_from_its_src_and_runs_without_the_python_api_extras(
    bundle: tuple[set[str], Path],
) -> None:
    _, unpacked = bundle
    # The local SDK itself imports duckdb (its debug warehouse): load it first, then forget those modules and refuse
    # them, so only an import from the bundle's own code can trip the refusal.
    probe = (
        "import sys, importlib.abc, fivetran_connector_sdk\n"
        f"for name in [m for m in sys.modules if m.split('.')[0] in {NOT_INSTALLED_THERE!r}]: del sys.modules[name]\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {NOT_INSTALLED_THERE!r}: raise ImportError('not installed: ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import runpy; runpy.run_path('connector.py')\n"
        "import syncflow, syncflow.fivetran as f\n"
        "print(syncflow.__file__); print(len(f.schema({'use_mock': 'true'})))\n"
        "print(len(f.configuration_form().to_response().fields))\n"
        "print(sum(len(p.rows) for p in syncflow.extract({'use_mock': 'true'}, 'accelo.staff')), flush=True)\n"
        "import os; os._exit(0)\n"  # duckdb's extension crashes at teardown once its modules were forgotten
    )
    # connector.py puts the bundle's src/ first on sys.path: the bundle's syncflow wins over any installed one.
    done = subprocess.run([sys.executable, "-c", probe], cwd=unpacked, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    module_path, tables, fields, staff = done.stdout.split()
    assert Path(module_path).resolve().is_relative_to(unpacked.resolve())
    assert tables == str(len(ACCELO_STREAMS) + 1) and int(fields) > 10 and int(staff) > 0  # the catalogue + AwardCo


class _FakeFivetran:
    """The few Fivetran REST endpoints `fivetran deploy` calls for a new connection, on loopback; keeps the upload."""

    def __init__(self) -> None:
        self.uploads: list[bytes] = []
        self.created: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.calls.append(f"GET {path}")
                if path == "/v1/groups":
                    self._reply(200, {"data": {"items": [{"id": "group_1", "name": "warehouse"}]}})
                elif path == "/v1/groups/group_1/connectors":
                    self._reply(200, {"data": {"items": []}})
                else:
                    self._reply(404, {"code": "NotFound", "message": "not found"})

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.calls.append(f"POST {path}")
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if path == "/v1/connector-sdk/packages":
                    fake.uploads.append(body)
                    self._reply(201, {"data": {"id": "package_1"}})
                elif path == "/v1/connectors":
                    request = json.loads(body)
                    fake.created.append(request)
                    self._reply(201, {"data": {"id": "connection_1", "config": {"python_version": "3.12"},
                                               "destination_schema_names": request["destination_schema_names"],
                                               "setup_tests": [{"title": "all", "status": "PASSED"}]}})
                else:
                    self._reply(404, {"code": "NotFound", "message": "not found"})

        return Handler


def _zip_members(multipart: bytes) -> set[str]:
    start = multipart.index(b"PK\x03\x04")
    end = multipart.rindex(b"\r\n--")
    with zipfile.ZipFile(io.BytesIO(multipart[start:end])) as archive:
        return set(archive.namelist())


def test_make_deploy_as_the_readme_says_uploads_the_staged_package(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    clone = _fresh_clone(tmp_path / "clone")
    fake = _FakeFivetran()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    home = tmp_path / "home"
    (home / ".fivetran" / "connector_sdk").mkdir(parents=True)
    (home / ".fivetran" / "connector_sdk" / "_config.json").write_text(
        json.dumps({"production_base_url": f"http://127.0.0.1:{server.server_address[1]}"})
    )  # the SDK's own override of the API's address
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # As the README says, with the venv *not* on PATH: the Makefile must put it there for the SDK's pipreqs.
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(venv)))
    env.update(HOME=str(home), CI="true", FIVETRAN_API_KEY="ZmFrZTprZXk=", FIVETRAN_DESTINATION_NAME="warehouse",
               FIVETRAN_CONNECTION_NAME="syncflow_test", DO_NOT_TRACK="1")  # fmt: skip
    try:
        done = subprocess.run(
            ["make", "-o", f"{venv}/.installed-stamp", f"VENV={venv}", "deploy", "DEPLOY_FLAGS=--non-interactive"],
            cwd=clone, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        server.shutdown()
        thread.join(timeout=10)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "FileNotFoundError" not in output and "Traceback (most recent call last)" not in output.split("pipreqs")[0]
    assert "connection created" in output
    [upload] = fake.uploads
    members = _zip_members(upload)
    assert {"connector.py", "requirements.txt", "configuration_form.pb", "src/syncflow/fivetran.py"} <= members
    assert {name.split("/", 1)[0] for name in members} == {"connector.py", "requirements.txt",
                                                           "configuration_form.pb", "src"}  # fmt: skip
    [created] = fake.created
    secrets = {item["key"]: item["value"] for item in created["config"]["secrets_list"]}
    assert secrets["use_mock"] == "true" and created["service"] == "connector_sdk"
