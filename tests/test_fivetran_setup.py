"""The Fivetran-native surface: the setup form, its setup tests (`fivetran configuration --test`), and failures that
end with one line and no traceback in `fivetran debug`'s output."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from syncflow import Settings
from syncflow._config import ConfigurationError, all_keys
from syncflow._setup import probe
from syncflow.fivetran import configuration_form, schema
from syncflow.sim import SimConfig, Simulator
from syncflow.sources import ACCELO_STREAMS

sys.path.insert(0, str(Path(__file__).parent))
from support.crash import make_project, run_debug
from support.helpers import RuleTransport
from support.loopback import serve_on_loopback
from support.sim import SIM_URL

ROOT = Path(__file__).resolve().parents[1]
KEYS = all_keys().keys  # the engine's and every built-in source's
KNOWN_KEYS = all_keys().known
FIVETRAN = Path(sys.executable).parent / "fivetran"
SECRET = "cs-setup-7f3a-not-for-output"
API_KEY = "ak-setup-2c9e-not-for-output"
SMALL = {"companies": 20, "invoices": 10, "payments": 5, "prospects": 5, "jobs": 5, "staff": 3}


@pytest.fixture
def served() -> Iterator[tuple[str, Simulator]]:
    """The simulator on loopback (a real HTTP server in a thread), with credentials unlike the defaults."""
    sim = Simulator(SimConfig(accelo_client_secret=SECRET, awardco_api_key=API_KEY, accelo_counts=SMALL,
                              awardco_users=10))  # fmt: skip
    with serve_on_loopback(sim) as url:
        yield url, sim


def _configuration(url: str, **overrides: str) -> dict[str, str]:
    configuration = {
        "accelo_deployment": "sim",
        "accelo_client_id": "syncflow-sim",
        "accelo_client_secret": SECRET,
        "accelo_base_url": url,
        "awardco_api_key": API_KEY,
        "awardco_base_url": url,
    }
    configuration.update(overrides)
    return configuration


def _configuration_test(project: Path, configuration: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    """`fivetran configuration --test --non-interactive` in a copy of the connector (HOME holds the SDK's key)."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "connector.py").write_text((ROOT / "connector.py").read_text())
    if not (project / "src").exists():
        (project / "src").symlink_to(ROOT / "src", target_is_directory=True)
    (project / "configuration.json").write_text(json.dumps(configuration))
    env = {**os.environ, "HOME": str(home)}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(FIVETRAN), "configuration", "--test", "--non-interactive"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


# -- the form ----------------------------------------------------------------------------------------------------


def test_the_form_has_every_key_with_label_description_and_the_right_kind() -> None:
    from fivetran_connector_sdk import form_field

    form = configuration_form()
    fields = {field.name: field for field in form.to_response().fields}
    assert set(fields) == KNOWN_KEYS - {key.name for key in KEYS if key.deprecated}, "deprecated keys stay off it"
    for key in (key for key in KEYS if not key.deprecated):
        field = fields[key.name]
        assert field.label and field.description, key.name
        if key.kind in ("text", "secret", "url", "integer", "number", "date"):
            assert field.placeholder or (key.kind in ("text", "secret", "date") and not key.default), key.name
    assert fields["accelo_client_secret"].text_field == form_field.PASSWORD
    assert fields["awardco_api_key"].text_field == form_field.PASSWORD
    assert fields["accelo_client_id"].text_field == form_field.PLAIN_TEXT
    assert fields["use_mock"].toggle
    assert fields["sources"].dropdown_options is not None
    for option in fields["sources"].dropdown_options:  # every dropdown value is one the validation accepts
        Settings.from_mapping({"use_mock": "true", "sources": option.value})
    tests = [test.name for test in form.to_response().tests]
    assert tests == ["check_configuration", "check_credentials", "check_accelo_access", "check_rate_budget"]


def test_every_key_the_code_reads_is_registered() -> None:
    # A key read but not in `_config.KEYS` would be warned about as unknown, and missing from the form and README.
    read: set[str] = set()
    for path in (ROOT / "src" / "syncflow").rglob("*.py"):
        # The engine reads with `reader`, a source's configure() with `config` (both a ConfigReader).
        read.update(re.findall(r"(?:reader|config)\.\w+\(\s*\"([a-z_]+)\"", path.read_text(encoding="utf-8")))
    assert read, "the pattern finds the reader's calls"
    assert read <= KNOWN_KEYS, f"read but not in KEYS: {sorted(read - KNOWN_KEYS)}"


def test_what_fivetran_configuration_writes_from_the_form_is_a_valid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fivetran_connector_sdk_cli import configuration_command, configuration_decryption

    monkeypatch.setenv("HOME", str(tmp_path))  # the SDK keeps its encryption key under ~/.fivetran
    answers = {"use_mock": "true", "accelo_client_secret": "typed-secret", "max_concurrency": "4"}
    labels = {key.label: key.name for key in KEYS}

    def answer(prompt: str) -> str:
        return answers.get(labels[prompt.removesuffix(": ")], "")  # every other field left blank, as allowed

    path = tmp_path / "configuration.json"
    form = configuration_form().to_response()
    assert configuration_command.run_configuration_form(form, str(path), False, answer, answer) == 0
    written = json.loads(path.read_text())
    offered = KNOWN_KEYS - {key.name for key in KEYS if key.deprecated}
    assert set(written) == offered and written["accelo_client_secret"].startswith("fivetran_encrypted:")
    settings = Settings.from_mapping(configuration_decryption.decrypt_configuration_values(written))
    assert settings.use_mock and settings.max_concurrency == 4


def test_an_unknown_key_suggests_the_nearest_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="syncflow"):
        Settings.from_mapping({"use_mock": "true", "acelo_client_id": "x", "zzz": "1"})
    lines = [r.getMessage() for r in caplog.records]
    assert "configuration: unknown key 'acelo_client_id' ignored; did you mean 'accelo_client_id'?" in lines
    assert any(line.startswith("configuration: unknown key 'zzz' ignored") and "did you mean" not in line
               for line in lines)  # fmt: skip


def test_problems_of_both_apis_are_reported_together() -> None:
    with pytest.raises(ConfigurationError) as failure:
        Settings.from_mapping({"accelo_deployment": "acme", "accelo_client_id": "x", "awardco_api_key": "k"})
    lines = str(failure.value).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["accelo_client_secret", "awardco_base_url"]


def test_a_still_encrypted_secret_is_one_clear_line() -> None:
    with pytest.raises(ConfigurationError, match=r"^accelo_client_secret: still encrypted; run through") as failure:
        Settings.from_mapping({"accelo_deployment": "a", "accelo_client_id": "x",
                               "accelo_client_secret": "fivetran_encrypted:QUJDREVG"})  # fmt: skip
    assert "QUJDREVG" not in str(failure.value)


def test_schema_declares_nothing_instead_of_raising_on_a_bad_configuration() -> None:
    assert schema({"accelo_deployment": "acme"}) == []
    assert len(schema({"use_mock": "true"})) == len(ACCELO_STREAMS) + 1  # the whole catalogue and AwardCo
    chosen = schema({"use_mock": "true", "streams": "accelo.tasks,awardco"})
    assert [(t["schema"], t["table"]) for t in chosen] == [("accelo", "tasks"), ("awardco", "user")]


# -- setup tests ---------------------------------------------------------------------------------------------------


def test_setup_tests_pass_on_good_credentials_against_the_loopback_simulator(
    served: tuple[str, Simulator], tmp_path: Path
) -> None:
    url, _ = served
    done = _configuration_test(tmp_path / "project", _configuration(url), tmp_path / "home")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "All tests passed!" in output
    for name in ("check_configuration", "check_credentials", "check_accelo_access", "check_rate_budget"):
        assert re.search(rf"\[{name} - [^\]]+\]: PASSED", output), name
    assert "Traceback" not in output


def test_setup_tests_name_both_apis_on_bad_credentials_without_echoing_them(
    served: tuple[str, Simulator], tmp_path: Path
) -> None:
    url, _ = served
    bad = _configuration(url, accelo_client_secret=SECRET + "-wrong", awardco_api_key=API_KEY + "-wrong")
    done = _configuration_test(tmp_path / "project", bad, tmp_path / "home")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    failed = re.search(r"\[check_credentials - [^\]]+\]: (.*)\n(.*)\n", output)
    assert failed, output
    assert failed.group(1).startswith("accelo POST /oauth2/v0/token: credentials refused (401")
    assert "awardco GET /api/users: answered 401; the API key was refused, check awardco_api_key" in failed.group(2)
    assert SECRET not in output and API_KEY not in output
    assert "Traceback" not in output


def test_setup_tests_read_the_values_fivetran_configuration_encrypted(
    served: tuple[str, Simulator], tmp_path: Path
) -> None:
    from fivetran_connector_sdk_cli import configuration_decryption

    url, _ = served
    home = tmp_path / "home"
    real_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)  # the SDK keeps its key under ~/.fivetran; encrypt as `fivetran configuration` does
    try:
        key = configuration_decryption.get_or_create_key()
    finally:
        if real_home is None:
            os.environ.pop("HOME")
        else:
            os.environ["HOME"] = real_home
    configuration = _configuration(url)
    for name in ("accelo_client_secret", "awardco_api_key"):
        configuration[name] = configuration_decryption.encrypt_value(configuration[name], name, key)
    done = _configuration_test(tmp_path / "project", configuration, home)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "All tests passed!" in output


def test_access_check_names_each_resource_answering_403() -> None:
    sim = Simulator(SimConfig(accelo_counts=SMALL, awardco_users=5))

    def forbid(request: httpx.Request, _: int) -> httpx.Response | None:
        if request.url.path in ("/api/v0/payments", "/api/v0/staff"):
            body = {"meta": {"status": "forbidden", "message": "no permission"}, "response": None}
            return httpx.Response(403, json=body)
        return None

    settings = Settings.from_mapping(_configuration(SIM_URL, accelo_client_secret="syncflow-sim-secret",
                                                    awardco_api_key="syncflow-sim-key"))  # fmt: skip
    report = probe(settings, {}, transport=RuleTransport(sim, forbid))
    assert report.credential_problems() == []
    [line] = report.access_problems("the streams key")
    assert line.startswith("accelo: the credentials may not read payments, staff (403); give the service application")


def test_budget_check_warns_when_little_remains() -> None:
    sim = Simulator(SimConfig(accelo_counts=SMALL, awardco_users=5, accelo_rate_limit=30, awardco_rate_limit=1000))
    settings = Settings.from_mapping(_configuration(SIM_URL, accelo_client_secret="syncflow-sim-secret",
                                                    awardco_api_key="syncflow-sim-key"))  # fmt: skip
    report = probe(settings, {}, transport=sim.transport(), access=False)
    warnings = report.budget_warnings()
    assert len(warnings) == 1 and warnings[0].startswith("accelo: only 29 requests left in this rate window")


# -- no tracebacks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configuration", "message"),
    [
        ({"accelo_deployment": "acme", "accelo_client_id": "x", "acelo_client_secret": "s"},
         "accelo_client_secret: missing; copy it from Accelo"),
        ({"use_mock": "maybe"}, "use_mock: expected \"true\" or \"false\", got 'maybe'"),
        ({"use_mock": "true", "max_concurrency": "-3"}, "max_concurrency: must be between 1 and 256, got -3"),
    ],
)  # fmt: skip
def test_fivetran_debug_ends_a_bad_configuration_with_its_line_and_no_traceback(
    tmp_path: Path, configuration: dict[str, str], message: str
) -> None:
    project = make_project(tmp_path, configuration)
    run = run_debug(project, timeout=120)
    assert run.returncode == 1
    assert message in run.output
    assert "Traceback" not in run.output, run.output
    assert 'File "' not in run.output
    assert not (project / "crash-reports").exists() or not any((project / "crash-reports").iterdir())


def test_fivetran_debug_ends_a_failed_sync_with_its_line_and_no_traceback(
    served: tuple[str, Simulator], tmp_path: Path
) -> None:
    url, _ = served
    # Both APIs' credentials wrong: one sync reports both.
    bad = _configuration(url, accelo_client_secret=SECRET + "-x", awardco_api_key=API_KEY + "-x")
    run = run_debug(make_project(tmp_path, bad), timeout=120)
    assert run.returncode == 1
    error = run.output.split("Error: ", 1)[1]
    assert "accelo POST /oauth2/v0/token: credentials refused (401" in error
    assert "awardco GET /api/users: answered 401; the API key was refused, check awardco_api_key" in error
    assert API_KEY not in run.output
    assert "SYNC FAILED" in run.output
    assert "Traceback" not in run.output, run.output
    assert SECRET not in run.output


def test_fivetran_debug_syncs_with_the_values_fivetran_configuration_encrypted(
    served: tuple[str, Simulator], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fivetran_connector_sdk_cli import configuration_decryption

    url, _ = served
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # run_debug passes this environment on
    key = configuration_decryption.get_or_create_key()
    # One table per API: each decrypted secret is used (the token, the API key). The whole catalogue through the SDK's
    # writer is tests/test_accelo_types.py's and tests/test_secrets.py's; here it would only add ~5 s of table writes.
    configuration = _configuration(url, streams="accelo.companies,awardco.user")
    for name in ("accelo_client_secret", "awardco_api_key"):
        configuration[name] = configuration_decryption.encrypt_value(configuration[name], name, key)
    run = run_debug(make_project(tmp_path, configuration), timeout=120)
    assert run.returncode == 0, run.output
    assert "SYNC SUCCEEDED" in run.output and run.rows.get("awardco.user") == 10
    assert run.rows.get("accelo.companies") == SMALL["companies"], run.rows
    assert SECRET not in run.output and API_KEY not in run.output
