"""`controlloop demo` end to end: the production Controller against the emulated cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlloop.cli import main
from controlloop.demo.command import run_scenario
from controlloop.demo.loadscript import parse_scenario

SERVERS = ["Premium-llama_7b", "Bronze-granite_13b"]
STEP_UP, STEP_DOWN = 600.0, 1500.0

RAMP = f"""
name: step
system: large
interval: 60
cycles: 36
startupSeconds: 120
servers: {json.dumps(SERVERS)}
load:
  "*":
    phases:
      - {{duration: {STEP_UP:g}, rate: x1}}
      - {{duration: {STEP_DOWN - STEP_UP:g}, rate: x3}}
      - {{duration: 900, rate: x1}}
"""

TINY = """
name: tiny
description: two servers, a step
system: large
interval: 60
cycles: 4
servers: [Premium-llama_7b, Free-mistral_7b]
load:
  "*": {phases: [{duration: 120, rate: x1}, {duration: 600, rate: x2}], noise: 0.05}
"""


def _direction_changes(values: list[int]) -> int:
    steps = [b - a for a, b in zip(values, values[1:], strict=False) if b != a]
    return sum(1 for a, b in zip(steps, steps[1:], strict=False) if (a > 0) != (b > 0))


def test_step_scales_up_within_two_cycles_and_down_after_stabilization() -> None:
    run = run_scenario(parse_scenario(RAMP, where="step.yaml"), seed=2)
    t = [r.t_s for r in run.records]
    for name in SERVERS:
        reps = [r.cluster[name]["replicas"] for r in run.records]
        base = reps[0]
        # The first window entirely after the step closes at STEP_UP + 60 s.
        by = max(i for i, ts in enumerate(t) if ts <= STEP_UP + 2 * 60)
        assert max(reps[: by + 1]) > base, (name, reps)
        high = max(reps)
        assert high >= 2 * base, (name, reps)
        # Not before the 300 s scale-down stabilization, but soon after it. (A
        # recommendation that already fell shortly before the step may act 300 s after
        # it fell, i.e. a little before STEP_DOWN + 300: with tuning on, the tuned sizing
        # may shave one replica off the high phase that way; the big drop comes after.)
        at_step = reps[max(i for i, ts in enumerate(t) if ts <= STEP_DOWN)]
        early = [reps[i] for i, ts in enumerate(t) if STEP_DOWN < ts < STEP_DOWN + 240]
        assert early and at_step - 1 <= min(early) <= at_step, (name, reps)
        late = [reps[i] for i, ts in enumerate(t) if ts >= STEP_DOWN + 300 + 3 * 60]
        assert late and max(late) < high and late[-1] <= base + 1, (name, reps)
        # No oscillation: within each phase the replica count turns at most once.
        for lo, hi in ((0, STEP_UP), (STEP_UP, STEP_DOWN), (STEP_DOWN, 1e9)):
            phase = [reps[i] for i, ts in enumerate(t) if lo < ts <= hi]
            assert _direction_changes(phase) <= 1, (name, lo, reps)
        assert all(r.report.outcome == "ok" for r in run.records)


def test_demo_command_writes_report_plots_and_cycle_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    out = tmp_path / "out"
    assert main(["demo", str(scenario), "--out", str(out), "--cycles", "3"]) == 0
    printed = capsys.readouterr().out
    # one line per regular cycle; surge cycles between them ("[ surge ]") come on top
    regular = [ln for ln in printed.splitlines()
               if ln.startswith("[") and not ln.startswith("[ surge ]")]
    assert len(regular) == 3 and all("SLO met" in ln for ln in regular) and "[  3/3]" in printed
    lines = (out / "cycles.jsonl").read_text().splitlines()
    triggers = [json.loads(ln)["trigger"] for ln in lines]
    assert triggers.count("regular") == 3 and set(triggers) <= {"regular", "surge"}
    assert printed.count("[ surge ]") == triggers.count("surge")
    cycle = json.loads(lines[0])
    assert {s["server"] for s in cycle["servers"]} == {"Premium-llama_7b", "Free-mistral_7b"}
    assert cycle["servers"][0]["load"]["source"] == "emulator"
    for png in ("load", "replicas", "cost", "latency", "gpus"):
        assert (out / f"{png}.png").stat().st_size > 10_000
        assert f"]({png}.png)" in (out / "report.md").read_text()
    report = (out / "report.md").read_text()
    assert "# controlloop demo: tiny" in report and "| Premium-llama_7b |" in report


def test_demo_assignment_scenario_has_tables_and_bars(tmp_path: Path) -> None:
    scenario = tmp_path / "a.yaml"
    scenario.write_text(TINY.replace("name: tiny", "name: a\nreport: assignment\nunlimited: true"))
    assert main(["demo", str(scenario), "--out", str(tmp_path), "--cycles", "4"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "## Assignment" in report and "| model | Premium | Free |" in report
    assert "→" in report  # the load change shows old → new
    assert "## Cards and cost per accelerator type" in report
    assert (tmp_path / "bars-replicas.png").exists() and (tmp_path / "bars-latency.png").exists()


def test_demo_list_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--list"]) == 0
    assert "ramp" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("cycles: zero\n")
    assert main(["demo", str(bad), "--out", str(tmp_path)]) == 2
    assert f"{bad}: cycles: must be an integer >= 1 (got 'zero')" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("servers: [Nope]\n")
    assert main(["demo", str(unknown), "--out", str(tmp_path)]) == 2
    assert "unknown server(s) Nope" in capsys.readouterr().err
