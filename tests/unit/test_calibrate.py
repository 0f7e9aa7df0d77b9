"""Calibrated margin: simulated safe rates, their cache (memory + JSON), monotonicity.

The safe rates are checked against truth the calibrator does not compute: the M/D/1 closed
form at batch 1, and fresh simulations (other seeds, longer horizon) run with
``controlloop.sim`` directly, never the oracle's cached probes.
"""

from __future__ import annotations

import math
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
from controlloop.sim import ReplicaParams
from tests.helpers.plans import Replicated, replicate
from tests.helpers.systems import tiny_system

FAST = SimSettings(requests=800, min_s=600.0)


def pair() -> tuple[ReplicaParams, float]:
    system = tiny_system()
    server = system.servers[0]
    perf = system.perf(server.model, "2xG2")
    assert perf is not None
    cand = build_candidates(system).candidates[server.name][0]
    params = replica_params(perf, server, cand.batch)
    assert params is not None
    return params, cand.rate_per_replica


def probe_sd(params: ReplicaParams, rate: float, settings: SimSettings) -> float:
    """Sampling error of one calibration probe at ``rate``: the spread of 8 independent runs
    of the oracle's horizon (other seeds), straight from ``controlloop.sim``."""
    rep = replicate(params, rate, requests=settings.requests, min_s=settings.min_s, reps=8,
                    seed=100)
    return rep.ttft_se * math.sqrt(8)


def test_safe_rate_matches_the_m_d_1_closed_form() -> None:
    """Batch 1 with ample room is M/D/1: every request takes the same ``S`` (joining
    iteration ``F = max(gamma + delta*I, alpha + beta)`` then ``K-1`` decodes of
    ``alpha + beta``), TTFT = Pollaczek-Khinchine wait + ``F``. The TTFT target is set where
    that curve crosses at rho 0.6, so the exact safe rate is ``0.6 / S``.

    What the search promises, in terms of the truth: the returned rate passed a probe
    (``mean + z*se <= target``; a mean is within 3 sd of its expectation) and a rate at
    most ``1/(1-rtol)`` higher failed one (its ``se`` taken as up to 1.5 sd). Hence
    ``TTFT(r) <= target + 3 sd`` and ``TTFT(r/(1-rtol)) >= target - (1.5 z + 3) sd``, with
    sd from fresh runs: the rate is pinned to about [0.89, 1.03] x ``0.6/S`` here.
    """
    system = tiny_system()
    server = system.servers[0]
    perf = system.perf(server.model, "2xG2")
    assert perf is not None and perf.decode_parms and perf.prefill_parms
    a, b = perf.decode_parms.alpha, perf.decode_parms.beta
    g, dl = perf.prefill_parms.gamma, perf.prefill_parms.delta
    i_tok, k_tok = round(server.load.avg_in_tokens), round(server.load.avg_out_tokens)
    params = ReplicaParams(alpha=a, beta=b, gamma=g, delta=dl, batch=1, in_tokens=i_tok,
                           out_tokens=k_tok, queue=200)  # loss < 1e-12 at rho 0.6: no room limit
    first = max(g + dl * i_tok, a + b)
    s_ms = first + (k_tok - 1) * (a + b)

    def ttft(rate_per_s: float) -> float:
        lam = rate_per_s / 1000.0
        return first + lam * s_ms**2 / (2 * (1 - lam * s_ms))

    exact = 0.6 / s_ms * 1000.0
    target = ttft(exact)
    settings = SimSettings(requests=4000, min_s=600.0)
    cal = Calibrator(oracle=SimOracle(settings))
    (rate,) = cal.rates([(params, 0.95 / s_ms * 1000.0, target, 0.0)])  # start at rho 0.95
    assert 0 < rate < exact * 1.1
    failed = rate / (1 - cal.rtol)
    assert ttft(rate) <= target + 3 * probe_sd(params, rate, settings)
    assert ttft(failed) >= target - (1.5 * settings.z + 3) * probe_sd(params, failed, settings)


def test_chain_rate_misses_and_safe_rate_is_bracketed_in_a_fresh_run() -> None:
    """N = 38, rho ~0.95: the chain's lam* misses TTFT, and the rate at which TTFT meets its
    target in a fresh simulation (6 runs of 4x the calibration horizon, other seeds) lies in
    the search's resolution around the calibrated rate, ``[r (1-rtol), r / (1-rtol)]``.

    A miss is a sign test: every run's mean above the target (were the median run at or
    below it, 6 of 6 above has probability 1/64; TTFT means are right-skewed, so the mean is
    above too). A hold is the mean within 3 standard errors across the runs.
    """
    params, lam = pair()
    cal = Calibrator(oracle=SimOracle(FAST))
    (rate,) = cal.rates([(params, lam, 1000.0, 40.0)])
    assert 0 < rate < lam

    def run(r: float) -> Replicated:
        return replicate(params, r, requests=4 * FAST.requests, min_s=4 * FAST.min_s, reps=6,
                         seed=200)

    assert min(run(lam).ttft_runs) > 1000.0  # the chain is optimistic here
    assert run(rate * (1 - cal.rtol)).misses(ttft=1000.0, itl=40.0) == []
    assert min(run(rate / (1 - cal.rtol)).ttft_runs) > 1000.0


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


def test_the_queue_bound_is_part_of_the_calibration_key() -> None:
    """A bounded queue loses requests instead of queueing them: its safe rate differs,
    so a rate learned without a bound must not be reused for one with a bound."""
    from dataclasses import replace as _replace

    from controlloop.optimizer.calibrate import Calibrator, SimOracle, SimSettings
    from controlloop.sim import ReplicaParams

    cal = Calibrator(SimOracle(SimSettings()))
    params = ReplicaParams(alpha=10.0, beta=0.5, gamma=50.0, delta=0.01, batch=8,
                           in_tokens=128, out_tokens=256)
    unbounded = cal.key(params, ttft=1000.0, itl=50.0)
    bounded = cal.key(_replace(params, queue=4), ttft=1000.0, itl=50.0)
    assert unbounded != bounded
