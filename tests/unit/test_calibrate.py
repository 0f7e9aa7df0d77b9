"""Calibrated margin: simulated safe rates, their cache (memory + JSON), monotonicity."""

from __future__ import annotations

from pathlib import Path

from controlloop.optimizer.api import optimize
from controlloop.optimizer.calibrate import (
    Calibrator,
    SimOracle,
    SimSettings,
    calibrate_candidates,
    replica_params,
)
from controlloop.optimizer.candidates import build_candidates
from tests.helpers.systems import tiny_system

FAST = SimSettings(requests=800, min_s=600.0)


def pair() -> tuple:  # type: ignore[type-arg]
    system = tiny_system()
    server = system.servers[0]
    perf = system.perf(server.model, "2xG2")
    assert perf is not None
    cand = build_candidates(system).candidates[server.name][0]
    params = replica_params(perf, server, cand.batch)
    assert params is not None
    return params, cand.rate_per_replica


def test_safe_rate_passes_and_caps() -> None:
    params, lam = pair()
    cal = Calibrator(oracle=SimOracle(FAST))
    (rate,) = cal.rates([(params, lam, 1000.0, 40.0)])
    assert 0 < rate < lam  # the chain's lam* misses TTFT in simulation here
    (res,) = cal.oracle.run([(params, rate)])
    assert cal.oracle.meets(res, ttft=1000.0, itl=40.0)


def test_monotone_in_target() -> None:
    params, lam = pair()
    cal = Calibrator(oracle=SimOracle(FAST))
    rates = cal.rates([(params, lam, t, 0.0) for t in (600.0, 1000.0, 2000.0, 1e9)])
    assert rates == sorted(rates)
    assert rates[-1] == lam  # a target that always holds never lowers lam*


def test_cache_hit_miss_and_disk(tmp_path: Path) -> None:
    params, lam = pair()
    path = tmp_path / "cal.json"
    cal = Calibrator(oracle=SimOracle(FAST), path=path)
    first = cal.rates([(params, lam, 1000.0, 40.0), (params, lam, 1000.0, 40.0)])
    assert (cal.misses, cal.hits) == (1, 1)
    sims = cal.oracle.misses
    assert cal.rates([(params, lam, 1000.0, 40.0)]) == first[:1]
    assert cal.hits == 2 and cal.oracle.misses == sims  # no new simulation
    cal.save()
    loaded = Calibrator(oracle=SimOracle(FAST), path=path)
    assert len(loaded) == 1
    assert loaded.rates([(params, lam, 1000.0, 40.0)]) == first[:1]
    assert (loaded.hits, loaded.misses, loaded.oracle.misses) == (1, 0, 0)
    # other settings: the file is not trusted
    other = Calibrator(oracle=SimOracle(SimSettings(seed=2)), path=path)
    assert len(other) == 0


def test_candidates_capped_and_optimize_option() -> None:
    system = tiny_system()
    cset = build_candidates(system)
    cal = Calibrator(oracle=SimOracle(FAST))
    capped = calibrate_candidates(system, cset, cal)
    before, after = cset.candidates["Premium-mistral_7b"][0], capped.candidates[
        "Premium-mistral_7b"][0]
    assert after.rate_per_replica < before.rate_per_replica
    assert after.replicas >= before.replicas and after.limited_by == "sim"
    assert after.replicas * after.rate_per_replica >= cset.servers["Premium-mistral_7b"].demand
    solution = optimize(system, margin="calibrated")  # default settings: its own search
    assert solution.decisions["Premium-mistral_7b"].replicas > before.replicas
