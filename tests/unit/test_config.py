"""Loading the three config forms, and one clear line + exit 2 for each kind of bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlloop.cli import main
from controlloop.config import ConfigError, load_config
from controlloop.specs import SaturationPolicy

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "config" / "examples" / "small"
LARGE = ROOT / "config" / "examples" / "large"


def copy_small(tmp_path: Path) -> Path:
    target = tmp_path / "small"
    shutil.copytree(SMALL, target)
    return target


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def run_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


# --- the good forms ------------------------------------------------------------------


def test_large_sample_counts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_validate(LARGE, capsys)
    assert code == 0
    assert "21 accelerators" in out
    assert "9 models" in out
    assert "3 used by servers" in out  # the 4th class, Batch2K, has no server
    assert "27 servers" in out
    assert "A100=196" in out


def test_reference_keys_are_case_insensitive() -> None:
    system = load_config(SMALL).system
    # server-data.json spells AvgInTokens, optimizer-data.json spells milpsolver
    assert system.servers[0].load.avg_in_tokens == 128
    assert system.servers[0].load.avg_out_tokens == 1024
    assert system.optimizer.milp_solver is False
    assert system.optimizer.saturation_policy is SaturationPolicy.ROUND_ROBIN
    target = system.service_class("Premium").target("granite_13b")  # type: ignore[union-attr]
    assert target is not None and target.slo_itl == 40 and target.slo_ttft == 1000


def test_three_forms_give_the_same_system(tmp_path: Path) -> None:
    from_dir = load_config(LARGE).system
    # one JSON file in the {"system": {...}} shape
    one_file = tmp_path / "system.json"
    one_file.write_text(json.dumps(from_dir.to_reference_json()))
    from_file = load_config(one_file).system
    # the same as YAML
    one_yaml = tmp_path / "system.yaml"
    one_yaml.write_text(yaml.safe_dump(from_dir.to_reference_json()))
    from_yaml = load_config(one_yaml).system
    # the shipped YAML directory holds the large sample plus placement fields
    from_config_dir = load_config(ROOT / "config").system
    assert from_file == from_dir == from_yaml
    assert len(from_config_dir.servers) == 27
    assert [m.name for m in from_config_dir.models] == [m.name for m in from_dir.models]
    assert from_config_dir.accelerators[0].node_selector


def test_published_scenarios_load() -> None:
    for path in sorted((ROOT / "config" / "examples" / "scenarios").glob("*.json")):
        system = load_config(path).system
        assert system.servers, path


# --- bad input: one line naming file, field path, value; exit 2 ----------------------------


def test_unknown_key_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    edit_json(d / "accelerator-data.json", lambda doc: doc["accelerators"][1].update(costt=3))
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert f"{d / 'accelerator-data.json'}: accelerators[1].costt: unknown key" in err
    assert "did you mean 'cost'?" in err


def test_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    edit_json(
        d / "server-data.json",
        lambda doc: doc["servers"][2]["currentAlloc"]["load"].update(arrivalRate="lots"),
    )
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert (
        f"{d / 'server-data.json'}: servers[2].currentAlloc.load.arrivalRate: "
        'expected a number, got "lots"'
    ) in err


def test_zero_where_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    edit_json(d / "model-data.json", lambda doc: doc["models"][4]["decodeParms"].update(alpha=-3))
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert f"{d / 'model-data.json'}: models[4].decodeParms.alpha: must be >= 0.001, got -3" in err


def test_negative_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    edit_json(d / "capacity-data.json", lambda doc: doc["count"][0].update(count=-1))
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert "capacity-data.json: count[0].count: must be >= 0, got -1" in err


def test_server_with_unknown_model_and_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = copy_small(tmp_path)

    def change(doc: Any) -> None:
        doc["servers"][0]["model"] = "llama_13"
        doc["servers"][1]["class"] = "Gold"

    edit_json(d / "server-data.json", change)
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert "server-data.json: servers[0].model: unknown model 'llama_13' (did you mean" in err
    assert "server-data.json: servers[1].class: unknown service class 'Gold'" in err
    assert "known: Bronze, Free, Premium" in err


def test_perf_for_unknown_accelerator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    edit_json(d / "model-data.json", lambda doc: doc["models"][0].update(acc="A1000"))
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert (
        "model-data.json: models[0].acc: unknown accelerator 'A1000' (did you mean 'A100'?)"
        in err
    )


def test_duplicate_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    edit_json(d / "server-data.json", lambda doc: doc["servers"].append(doc["servers"][3]))
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert (
        "server-data.json: servers[15]: duplicate server 'Premium-granite_34b' "
        "(first at servers[3])"
    ) in err


def test_priority_out_of_range_warns_and_uses_100(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = copy_small(tmp_path)
    edit_json(d / "serviceclass-data.json", lambda doc: doc["serviceClasses"][1].update(priority=0))
    code, _, err = run_validate(d, capsys)
    assert code == 0
    assert (
        "warning: " + f"{d / 'serviceclass-data.json'}: serviceClasses[1].priority: "
        "must be an integer in 1..100, got 0; using 100"
    ) in err
    assert load_config(d).system.service_classes[1].priority == 100


def test_malformed_json_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    path = d / "capacity-data.json"
    path.write_text('{\n  "count": [\n    {"type": "L4" "count": 3}\n  ]\n}\n')
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert f"{path}: line 3, column 19: invalid JSON: Expecting ',' delimiter" in err


def test_malformed_yaml_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "system.yaml"
    path.write_text("system:\n  acceleratorData:\n    accelerators: [\n  - bad\n")
    code, _, err = run_validate(path, capsys)
    assert code == 2
    assert f"{path}: line " in err and "invalid YAML" in err
    assert err.count("\n") == 1  # one line


def test_one_file_paths_carry_the_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = load_config(SMALL).system.to_reference_json()
    doc["system"]["serverData"]["servers"][0]["minNumReplicas"] = -2
    path = tmp_path / "sys.json"
    path.write_text(json.dumps(doc))
    code, _, err = run_validate(path, capsys)
    assert code == 2
    assert f"{path}: system.serverData.servers[0].minNumReplicas: must be >= 0, got -2" in err


def test_unknown_section_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "sys.json"
    path.write_text(json.dumps({"system": {"acceleratorDta": {}}}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "system.acceleratorDta: unknown section (did you mean 'acceleratorData'?)" in str(
        exc.value
    )


def test_missing_required_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    (d / "model-data.json").unlink()
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert "missing models.yaml or model-data.json" in err


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_validate(tmp_path / "nope", capsys)
    assert code == 2
    assert "no such file or directory" in err


def test_bad_saturation_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    edit_json(
        d / "optimizer-data.json", lambda doc: doc["optimizer"].update(saturationPolicy="Greedy")
    )
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert "optimizer-data.json: optimizer.saturationPolicy: must be one of" in err
    assert '"Greedy"' in err


def test_no_traceback_for_non_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_small(tmp_path)
    (d / "server-data.json").write_text("[1, 2]")
    code, _, err = run_validate(d, capsys)
    assert code == 2
    assert "server-data.json: (top level): expected a mapping" in err
    assert "Traceback" not in err
