"""Shipped examples validate and round-trip; the schema is current; the CLI reports and exits right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from evdlm.cli import main
from evdlm.config import SecretUnavailable, load_site_config, parse_site_config, resolve_secret
from evdlm.config.models import SecretRef
from evdlm.config.schema import site_config_schema
from evdlm.data import DEMO_SITE_PATH

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "site_configs").glob("*.yaml"))


def test_examples_exist() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {"demo", "workplace-12", "depot-200", "stress-1000"} <= names


# The security posture each example really has (tests/config/test_security_posture.py has the why):
# the demo is a loopback lab, the others leave their charger listener open and name no DR bridge.
EXPECTED_WARNINGS = {
    "demo": {"mqtt.username"},
    "workplace-12": {"demand_response.publishers", "ocpp.security_profile"},
    "depot-200": {"ocpp.security_profile"},
    "stress-1000": set(),
}


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_validates_and_round_trips(path: Path, tmp_path: Path) -> None:
    loaded = load_site_config(path)
    warned = {w.field for w in loaded.warnings if "not set here" not in w.message}
    assert warned == EXPECTED_WARNINGS.get(path.stem, set()), loaded.warnings
    dumped = tmp_path / path.name
    with dumped.open("w", encoding="utf-8") as stream:
        YAML(typ="safe").dump(loaded.config.model_dump(mode="json"), stream)
    again = load_site_config(dumped).config
    assert again == loaded.config


def test_example_sizes_match_their_names() -> None:
    assert load_site_config(REPO / "site_configs/workplace-12.yaml").config.evse_count == 12
    depot = load_site_config(REPO / "site_configs/depot-200.yaml").config
    assert len(depot.chargers) == 200 and depot.battery is not None
    depth = max(len(_ancestors(depot, circuit.id)) for circuit, _ in depot.iter_circuits())
    assert depth == 3
    assert load_site_config(REPO / "site_configs/stress-1000.yaml").config.evse_count == 1000


def _ancestors(config, circuit_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    parents = {circuit.id: parent.id if parent else None for circuit, parent in config.iter_circuits()}
    chain = [circuit_id]
    while parents[chain[-1]] is not None:
        chain.append(parents[chain[-1]])  # type: ignore[arg-type]
    return chain


def test_demo_is_the_embedded_default() -> None:
    assert (REPO / "site_configs/demo.yaml").resolve() == DEMO_SITE_PATH


def test_schema_json_is_current() -> None:
    committed = json.loads((REPO / "site_configs/schema.json").read_text(encoding="utf-8"))
    assert committed == site_config_schema(), "run: evdlm schema -o site_configs/schema.json"


def test_cli_accepts_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK") == len(EXAMPLES)
    assert "1000 EVSEs" in out


def test_cli_rejects_broken_file_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(DEMO_SITE_PATH.read_text().replace("import_limit_kw: 55", "import_limit_kw: -55"))
    assert main(["validate", str(broken)]) == 2
    err = capsys.readouterr().err
    line = next(n for n, text in enumerate(broken.read_text().splitlines(), 1) if "-55" in text)
    assert f"{broken}:{line}:3: error: grid.import_limit_kw:" in err
    assert "INVALID (1 error)" in err


def test_cli_as_module_and_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "evdlm", "validate", "--help"], capture_output=True, text=True, check=True
    )
    assert "example:" in result.stdout and "evdlm validate" in result.stdout


def test_validate_never_prints_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVDLM_MQTT_PASSWORD", "s3cret-value-123")
    assert main(["validate", str(REPO / "site_configs/workplace-12.yaml")]) == 0
    captured = capsys.readouterr()
    assert "s3cret-value-123" not in captured.out + captured.err


def test_secret_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CP_PASS", "from-env")
    (tmp_path / "cp.secret").write_text("from-file\n")
    assert resolve_secret(SecretRef(env="CP_PASS")) == "from-env"
    assert resolve_secret(SecretRef(file="cp.secret"), tmp_path) == "from-file"
    with pytest.raises(SecretUnavailable, match="NOT_THERE"):
        resolve_secret(SecretRef(env="NOT_THERE"))


def test_loading_is_pure_and_frozen() -> None:
    text = DEMO_SITE_PATH.read_text()
    first = parse_site_config(text).config
    assert parse_site_config(text).config == first
    with pytest.raises(Exception, match="frozen"):
        first.grid.import_limit_kw = 1.0  # type: ignore[misc]


def test_field_reference_is_current() -> None:
    from evdlm.config.reference import field_reference

    committed = (REPO / "site_configs/README.md").read_text(encoding="utf-8")
    assert committed == field_reference(), "regenerate site_configs/README.md from evdlm.config.reference"
    assert "| `phase_rotation` |" in committed and "grid + = import" in committed
