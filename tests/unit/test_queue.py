"""The chain of docs/model-spec.md section 2 against closed forms, a simulation and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlloop.model import queue
from controlloop.model.queue import (
    ChainParams,
    evaluate_chain,
    geometric_mean_index,
    log_geometric_sum,
    rate_range,
    state_probabilities,
)
from tests.helpers.des_chain import simulate


def mmc_k(lam: float, mu: float, c: int, k: int) -> dict[str, float]:
    """M/M/c/K textbook formulas (Gross & Harris): c servers of rate mu, room K."""
    r = lam / mu
    rho = r / c
    head = sum(r**n / math.factorial(n) for n in range(c))
    tail = r**c / math.factorial(c) * sum(rho**n for n in range(k - c + 1))
    p0 = 1 / (head + tail)
    if rho == 1:
        lq = p0 * r**c / math.factorial(c) * (k - c) * (k - c + 1) / 2
    else:
        lq = (p0 * r**c * rho / (math.factorial(c) * (1 - rho) ** 2)
              * (1 - rho ** (k - c + 1) - (1 - rho) * (k - c + 1) * rho ** (k - c)))
    pk = r**k / (math.factorial(c) * c ** (k - c)) * p0
    x = lam * (1 - pk)
    return {"p0": p0, "blocking": pk, "L": lq + r * (1 - pk), "W": lq / x, "X": x}


@pytest.mark.parametrize(("c", "load"), [(1, 0.3), (3, 0.7), (5, 0.95), (5, 1.0), (8, 1.6)])
def test_flat_service_time_is_erlang_mmck(c: int, load: float) -> None:
    # b = 0: mu(n) = n/a for n <= N, an M/M/N queue with room N + Q.
    a, q = 250.0, 10 * c
    lam = load * c / a
    got = evaluate_chain(ChainParams(a=[a], b=[0.0], batch=[c]), lam)
    want = mmc_k(lam, 1 / a, c, c + q)
    assert got.p0[0] == pytest.approx(want["p0"], rel=1e-10)
    assert got.blocking[0] == pytest.approx(want["blocking"], rel=1e-9)
    assert got.in_system[0] == pytest.approx(want["L"], rel=1e-10)
    assert got.wait[0] == pytest.approx(want["W"], rel=1e-9)
    assert got.throughput[0] == pytest.approx(want["X"], rel=1e-12)
    assert got.service[0] == pytest.approx(a, rel=1e-12)  # every request takes a


@pytest.mark.parametrize("rho", [0.2, 0.9, 1.0, 1.0 + 1e-9, 1.3, 40.0])
def test_single_slot_is_mm1k(rho: float) -> None:
    # N = 1: mu = 1/(a + b) in every busy state, M/M/1/K with K = Q + 1.
    a, b, q = 80.0, 20.0, 10
    k = q + 1
    lam = rho / (a + b)
    got = evaluate_chain(ChainParams(a=[a], b=[b], batch=[1]), lam)
    if rho == 1.0:
        p = np.full(k + 1, 1 / (k + 1))
    else:
        p = (1 - rho) * rho ** np.arange(k + 1) / (1 - rho ** (k + 1))
    assert got.blocking[0] == pytest.approx(p[-1], rel=1e-8)
    assert got.in_system[0] == pytest.approx(np.arange(k + 1) @ p, rel=1e-8)
    assert got.in_service[0] == pytest.approx(1 - p[0], rel=1e-8)


@pytest.mark.parametrize(("a", "b", "n", "load", "seed"),
                         [(100.0, 3.0, 4, 0.8, 1), (2000.0, 150.0, 12, 0.97, 2),
                          (50.0, 10.0, 2, 1.5, 3)])
def test_agrees_with_a_simulation(a: float, b: float, n: int, load: float, seed: int) -> None:
    q = 10 * n
    lam = load * n / (a + b * n)
    got = evaluate_chain(ChainParams(a=[a], b=[b], batch=[n]), lam)
    sim = simulate(a, b, n, q, lam, seed=seed, events=120_000)
    for name, est in [("in_system", sim.in_system), ("in_service", sim.in_service),
                      ("throughput", sim.throughput), ("wait", sim.wait),
                      ("blocking", sim.blocking)]:
        value = getattr(got, name)[0]
        floor = 5e-4 if name == "blocking" else 0.0  # rare losses may not show at all
        assert abs(value - est.mean) <= 4.5 * est.stderr + 1e-3 * value + floor, (name, est)


@pytest.mark.parametrize("slab", [None, 1, 500])
def test_matches_the_full_distribution_on_a_mixed_fleet(
    slab: int | None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Different N in one call exercises the buckets; each pair is checked alone. A small
    # slab makes every bucket's sums run a few rows (or one) at a time, as a fleet's do.
    if slab is not None:
        monkeypatch.setattr(queue, "_SLAB_STATES", slab)
    rng = np.random.default_rng(7)
    p = 200
    n = rng.integers(1, 300, p)
    a, b = rng.uniform(10, 5e4, p), rng.uniform(0, 500, p)
    params = ChainParams(a=a, b=b, batch=n)
    mu_n = params.service_rate(n)
    lam = mu_n * rng.uniform(0.05, 1.5, p)
    got = evaluate_chain(params, lam)
    for i in range(0, p, 7):
        d = state_probabilities(a[i], b[i], int(n[i]), lam[i])
        j = np.arange(d.size)
        assert d.sum() == pytest.approx(1, abs=1e-12)
        assert got.in_system[i] == pytest.approx(j @ d, rel=1e-9)
        assert got.in_service[i] == pytest.approx(np.minimum(j, n[i]) @ d, rel=1e-9)
        assert got.blocking[i] == pytest.approx(d[-1], rel=1e-7, abs=1e-300)
        assert got.p0[i] == pytest.approx(d[0], rel=1e-7, abs=1e-300)


def test_long_chains_and_extreme_loads_stay_finite() -> None:
    n = np.array([1, 1000, 1000, 1000, 612, 3])
    a = np.array([1e-3, 5e5, 5e5, 1.0, 2e4, 0.0])
    b = np.array([0.0, 1e3, 0.0, 1e-6, 400.0, 7.0])
    params = ChainParams(a=a, b=b, batch=n)
    mu_n = params.service_rate(n)
    for factor in (0.0, 1e-300, 1e-9, 0.999, 1.0, 1.0001, 1e3, 1e250):
        s = evaluate_chain(params, mu_n * factor)
        for name, v in vars(s).items():
            assert np.all(np.isfinite(v)), (factor, name, v)
        assert np.all(s.throughput <= s.rate * (1 + 1e-12))
        assert np.all((s.blocking >= 0) & (s.blocking <= 1))
    s = evaluate_chain(params, mu_n * 1e250)  # saturated: full, all busy
    np.testing.assert_allclose(s.in_system, 11 * n, rtol=1e-9)
    np.testing.assert_allclose(s.in_service, n, rtol=1e-12)


def test_zero_rate_gives_the_light_load_limit() -> None:
    s = evaluate_chain(ChainParams(a=[100.0], b=[5.0], batch=[8]), 0.0)
    assert s.throughput[0] == 0 and s.p0[0] == pytest.approx(1)
    assert s.response[0] == pytest.approx(105.0, rel=1e-9)  # T(1) = a + b
    assert s.wait[0] == pytest.approx(0, abs=1e-9)


def test_rate_range() -> None:
    lo, hi = rate_range(ChainParams(a=[100.0], b=[5.0], batch=[8]))
    assert lo[0] == pytest.approx(0.001 / 105)
    assert hi[0] == pytest.approx(0.999 * 8 / 140)


@pytest.mark.parametrize("x", [-800.0, -3.0, -1e-9, -1e-17, 0.0, 1e-17, 1e-9, 0.5, 30.0])
@pytest.mark.parametrize("n", [1, 2, 10, 6000])
def test_geometric_helpers(x: float, n: int) -> None:
    k = np.arange(n)
    logw = k * x
    top = logw.max()
    w = np.exp(logw - top)
    arr = np.array([x])
    assert log_geometric_sum(arr, n)[0] == pytest.approx(top + np.log(w.sum()), rel=1e-12,
                                                         abs=1e-12)
    assert geometric_mean_index(arr, n)[0] == pytest.approx(k @ w / w.sum(), rel=1e-9,
                                                            abs=1e-12)


def test_invalid_params_name_the_entry() -> None:
    with pytest.raises(ValueError, match=r"batch\[1\]: must be >= 1"):
        ChainParams(a=[1.0, 1.0], b=[0.0, 0.0], batch=[1, 0])
    with pytest.raises(ValueError, match=r"a \+ b\[0\]"):
        ChainParams(a=[0.0], b=[0.0], batch=[1])


chain_inputs = st.tuples(
    st.floats(0.0, 1e5), st.floats(0.0, 1e3), st.integers(1, 400),
).filter(lambda t: t[0] + t[1] > 1e-6)


@settings(max_examples=60, deadline=None)
@given(chain_inputs, st.lists(st.floats(1e-6, 3.0), min_size=2, max_size=6))
def test_property_monotone_and_consistent(inputs: tuple[float, float, int],
                                          loads: list[float]) -> None:
    a, b, n = inputs
    params = ChainParams(a=[a] * len(loads), b=[b] * len(loads), batch=[n] * len(loads))
    lam = np.sort(np.asarray(loads)) * params.service_rate(n)
    s = evaluate_chain(params, lam)
    for name, v in vars(s).items():
        assert np.all(np.isfinite(v)), name
    assert np.all(s.throughput <= lam * (1 + 1e-12))
    assert np.all(s.in_service <= s.in_system * (1 + 1e-12))
    slack = 1e-9 * np.abs(s.wait[1:]) + 1e-9 * a
    assert np.all(np.diff(s.wait) >= -slack)
    assert np.all(np.diff(s.in_system) >= -1e-9 * s.in_system[1:])
    assert np.all(np.diff(s.service) >= -1e-9 * s.service[1:])
