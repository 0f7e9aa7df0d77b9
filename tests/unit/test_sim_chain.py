"""Simulation against closed forms: the birth-death chain (exponential service) and
M/D/1 (token engine with one slot).

The chain is recomputed here from docs/model-spec.md section 2, independently of
controlloop.model, so the two implementations check each other.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from controlloop.sim import ReplicaParams, simulate


def chain(params: ReplicaParams, lam: float) -> dict[str, float]:
    """Stationary birth-death chain on 0..N+Q; p(j+1) = p(j) * lam / mu(j+1), in logs."""
    n_max, cap = params.batch, params.capacity
    a, b = params.chain_a, params.chain_b
    mu = [min(j, n_max) / (a + b * min(j, n_max)) for j in range(cap + 1)]
    logp = np.zeros(cap + 1)
    for j in range(1, cap + 1):
        logp[j] = logp[j - 1] + math.log(lam) - math.log(mu[j])
    p = np.exp(logp - logp.max())
    p /= p.sum()
    j = np.arange(cap + 1)
    big_l = float(j @ p)
    in_service = float(np.minimum(j, n_max) @ p)
    x = lam * (1 - p[-1])
    return {
        "L": big_l,
        "B": in_service,
        "X": x,
        "block": float(p[-1]),
        "W": (big_l - in_service) / x,
    }


@pytest.mark.parametrize(
    ("batch", "queue", "load"),
    [(4, 4, 0.95), (8, 80, 0.7), (1, 5, 0.8)],
)
def test_exponential_engine_matches_chain(batch: int, queue: int, load: float) -> None:
    params = ReplicaParams(
        alpha=1.0,
        beta=0.1,
        gamma=5.0,
        delta=0.01,
        batch=batch,
        in_tokens=100,
        out_tokens=10,
        queue=queue,
    )
    lam = load * params.service_rate(batch)
    # ~150k arrivals. Over 12 seeds the relative standard errors are <= 1 % for L,
    # B, X and W (W of the (8, 80) case: 6 %, hence the absolute floor of 2 % of R).
    duration = 150_000 / lam
    res = simulate(
        params,
        rate_per_ms=lam,
        duration_ms=duration,
        warmup_ms=0.02 * duration,
        seed=11,
        service="exponential",
    )
    ref = chain(params, lam)
    assert res.in_system_mean == pytest.approx(ref["L"], rel=0.04)
    assert res.in_service_mean == pytest.approx(ref["B"], rel=0.03)
    assert res.throughput_per_ms == pytest.approx(ref["X"], rel=0.02)
    assert res.loss_fraction == pytest.approx(ref["block"], rel=0.1, abs=2e-3)
    assert res.wait_mean_ms == pytest.approx(ref["W"], rel=0.06, abs=0.02 * ref["L"] / ref["X"])


def test_mm1_closed_form_against_own_chain() -> None:
    """Sanity of the helper: M/M/1 with room K=Q+1 has p(j) proportional to rho^j."""
    params = ReplicaParams(
        alpha=1.0, beta=0.0, gamma=5.0, delta=0.0, batch=1, in_tokens=100, out_tokens=10, queue=4
    )
    mu = 1 / params.chain_a
    rho = 0.7
    p = rho ** np.arange(6)
    p /= p.sum()
    assert chain(params, rho * mu)["L"] == pytest.approx(float(np.arange(6) @ p))


def test_single_slot_token_engine_is_md1() -> None:
    """N=1: each request is served alone for D = prefill + (K-1)*decode(1), deterministic,
    starting at once when idle or at the previous completion otherwise: an M/D/1 queue
    (the room of N+Q = 201 never fills at rho = 0.5).

    Pollaczek-Khinchine: W = rho * D / (2 * (1 - rho)); TTFT = W + max(prefill, decode(1)).
    ITL is exactly decode(1) = alpha + beta.
    """
    params = ReplicaParams(
        alpha=1.0, beta=0.1, gamma=30.0, delta=0.1, batch=1, in_tokens=100, out_tokens=50, queue=200
    )
    first = max(params.gamma + params.delta * params.in_tokens, params.alpha + params.beta)
    d = first + (params.out_tokens - 1) * (params.alpha + params.beta)
    rho = 0.5
    lam = rho / d
    # ~120k arrivals: standard errors ~0.9 % (TTFT) and ~1.6 % (wait) over seeds.
    duration = 120_000 / lam
    res = simulate(params, rate_per_ms=lam, duration_ms=duration, seed=4)
    wait = rho * d / (2 * (1 - rho))
    assert res.ttft_mean_ms == pytest.approx(wait + first, rel=0.035)
    assert res.wait_mean_ms == pytest.approx(wait, rel=0.07)
    assert res.itl_mean_ms == pytest.approx(params.alpha + params.beta, rel=1e-9)
    assert res.utilization == pytest.approx(rho, rel=0.03)
    assert res.loss_fraction == 0.0
