"""Tuning in the control loop, end to end on the emulated cluster: servers slower than the
profile; tuned sizing says so in its reasons, predictions match what the cluster shows,
a restart keeps what was learnt; metrics and the demo report carry the model error."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from controlloop.demo.command import DemoRun, run_scenario
from controlloop.demo.fidelity_figures import run_figures
from controlloop.demo.loadscript import parse_scenario
from controlloop.demo.report import write_report
from controlloop.metrics import ControllerMetrics

DRIFT = """
name: small-drift
system: large
interval: 60
cycles: 22
servers: [Premium-llama_13b, Bronze-granite_13b]
truth:
  "*": {alpha: 1.35, beta: 1.3, gamma: 1.3, delta: 1.3}
load:
  "*": {phases: [{duration: 1320, rate: x1.5}], noise: 0.05}
"""


@cache
def _run(tuning: str, restart_at: int | None = None) -> DemoRun:
    return run_scenario(parse_scenario(DRIFT, where="drift.yaml"), seed=3, tuning=tuning,
                        restart_at=restart_at)


def test_tuned_predictions_match_the_cluster_and_untuned_ones_do_not() -> None:
    tuned = run_figures([r.report for r in _run("apply").records], from_cycle=12)
    untuned = run_figures([r.report for r in _run("off").records], from_cycle=12)
    assert untuned.itl_error is not None and tuned.itl_error is not None
    assert untuned.itl_error > 0.25  # the profile is ~30 % fast: the error shows it
    assert tuned.itl_error < 0.10
    assert tuned.tuned_share > 0.8
    assert tuned.attainment >= untuned.attainment
    assert tuned.attainment > 0.9


def test_decisions_sized_with_tuned_values_say_so() -> None:
    last = _run("apply").records[-1].report
    reasons = [s.reason for s in last.servers if s.desired_replicas is not None]
    assert reasons and all("sized with tuned perf alpha x1." in r for r in reasons), reasons
    assert any(p["warmedUp"] for p in last.tuning["pairs"])
    assert all("tuned perf" not in s.reason for s in _run("off").records[-1].report.servers)


def test_a_restart_keeps_the_learnt_parameters() -> None:
    base, restarted = _run("apply"), _run("apply", restart_at=16)
    # The first cycle of the new controller already sizes with tuned values: learnt state
    # came back from the store, not from new warm-up.
    after = restarted.records[16].report
    assert any("sized with tuned perf" in s.reason for s in after.servers)
    before = {p["pair"]: p for p in restarted.records[15].report.tuning["pairs"]}
    for p in after.tuning["pairs"]:
        if p["pair"] in before and before[p["pair"]]["warmedUp"]:
            assert p["warmedUp"]
            assert p["observations"] >= before[p["pair"]]["observations"]
    got = run_figures([r.report for r in restarted.records], from_cycle=12)
    want = run_figures([r.report for r in base.records], from_cycle=12)
    assert got.itl_error is not None and got.itl_error < 0.10
    assert abs(got.attainment - want.attainment) < 0.1


def test_metrics_and_report_carry_model_error_and_tuning(tmp_path: Path) -> None:
    run = _run("apply")
    metrics = ControllerMetrics()
    metrics.observe(run.records[-1].report)
    text = metrics.exposition().decode()
    assert 'controlloop_server_model_error_ratio{' in text and 'metric="itl"' in text
    assert 'controlloop_tuning_warmed_up{accelerator=' in text
    assert 'controlloop_tuning_multiplier{' in text and 'parameter="alpha"' in text
    assert "controlloop_tuning_nis{" in text
    files = write_report(run, tmp_path)
    assert tmp_path / "model-error.png" in files
    md = (tmp_path / "report.md").read_text()
    assert "## Model error and tuning" in md and "Tuning `apply`" in md
    assert "alpha x1.35" in md  # the truth column
