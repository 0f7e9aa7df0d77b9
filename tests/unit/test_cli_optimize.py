"""``controlloop optimize``: formats, --output, --explain and the overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controlloop.cli import main

SMALL = str(Path(__file__).resolve().parents[2] / "config" / "examples" / "small")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["optimize", SMALL, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["SERVER", "CLASS", "PRI", "MODEL"]
    # sorted by priority then name: Premium (1) rows come first
    assert lines[1].startswith("Premium-")
    assert any(" 0->52 " in line and "32.3/80" in line for line in lines)
    assert "total cost: 43819.00 cents/h" in out
    assert "solver: greedy, status feasible" in out
    assert any(line.startswith("A100") and "424/512" in line for line in lines)


def test_json_is_the_solution(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--format", "json", "--solver", "milp")
    doc = json.loads(out)
    assert code == 0
    assert doc["solver"] == "milp" and doc["status"] == "optimal"
    assert doc["totalCost"] == pytest.approx(41857.75)
    alloc = doc["allocations"]["Premium-llama_70b"]
    assert {"accelerator", "numReplicas", "maxBatch", "cost", "itlAverage", "ttftAverage",
            "load"} <= set(alloc)
    assert doc["unallocated"] == []


def test_yaml_and_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "plan.yaml"
    code, out, _ = _run(capsys, "--format", "yaml", "--unlimited", "-o", str(target))
    assert code == 0 and out == ""
    doc = yaml.safe_load(target.read_text())
    assert doc["solver"] == "unlimited"
    assert doc["totalCost"] == pytest.approx(35924.5)
    assert doc["usageByType"]["A100"]["capacity"] is None


def test_overrides_reach_optimize(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--format", "json", "--limited",
                        "--saturation-policy", "None", "--time-limit", "5")
    assert code == 0
    assert "saturation policy None" in json.loads(out)["message"]


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--explain", "Free-llama_70b")
    assert code == 0
    assert out.startswith("server Free-llama_70b: class Free (priority 3), model llama_70b")
    rows = {line.split()[0]: line for line in out.splitlines()[4:]}
    assert list(rows) == ["2xAIU2", "G2", "4xA100", "A100", "L4", "AIU2"]  # by value
    assert rows["4xA100"].split()[1:4] == ["0.03785", "106", "16960.00"]
    assert rows["4xA100"].split()[-2:] == ["ttft", "chosen"]
    assert "did not fit capacity: needs 3054 AIU2 cards" in rows["2xAIU2"]
    assert "did not fit capacity: needs 500 G2 cards" in rows["G2"]
    assert "higher value than the chosen (+32032.00)" in rows["A100"]
    assert "rejected: ITL target 320 ms" in rows["AIU2"]


def test_explain_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--explain", "Free-llama_70b", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["server"] == "Free-llama_70b"
    verdicts = [c["verdict"] for c in doc["candidates"]]
    assert verdicts.count("chosen") == 1


def test_explain_unknown_server(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--explain", "Free-lama_70b")
    assert code == 2 and out == ""
    assert err.strip() == "error: unknown server 'Free-lama_70b'; did you mean 'Free-llama_70b'?"


def test_bad_path_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["optimize", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_output_directory_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "plan.json"
    code, out, err = _run(capsys, "-o", str(target))
    assert code == 2 and out == ""
    assert err.strip() == f"error: --output {target}: directory {target.parent} does not exist"
    assert not target.parent.exists()


def test_output_is_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "-o", str(tmp_path))
    assert code == 2
    assert err.strip() == f"error: --output {tmp_path}: is a directory; give a file name"
