"""SLO sizing (docs/model-spec.md section 3): hand-checked roots, statuses, cache and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlloop.model.perf import DecodePrefillPerf, IterationPerf
from controlloop.model.sizing import (
    INFEASIBLE_ITL,
    INFEASIBLE_TTFT,
    OK,
    SizingCache,
    analyze,
    size,
)
from tests.helpers.systems import GRANITE, plain_chain

A, B, N = 21217.98, 421.07, 16  # granite_13b/A100 at I=128, K=1024 (see test_perf)
MU_1, MU_N = 1 / (A + B), N / (A + B * N)


def granite(**kw: object) -> DecodePrefillPerf:
    return DecodePrefillPerf(**GRANITE, in_tokens=128, out_tokens=1024, batch=N, **kw)


def plain_ttft(lam: float) -> float:
    ref = plain_chain(A, B, N, lam)
    n_star = min(max((ref["S"] - A) / B, 0.0), N)
    return ref["W"] + 164.64 + 1.64 * n_star


def test_granite_premium_by_bisection() -> None:
    # Premium: slo-ttft 1000, slo-itl 40. ITL at lam_max is at most 20.58 + 0.41*16 = 27.1
    # < 40, so TTFT binds; its root by plain bisection on the book-style chain:
    lo, hi = 0.001 * MU_1, 0.999 * MU_N
    assert plain_ttft(lo) < 1000 < plain_ttft(hi)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if plain_ttft(mid) <= 1000 else (lo, mid)
    r = size(granite(), ttft_target=1000.0, itl_target=40.0)
    assert r.status[0] == OK
    assert r.lam_star[0] == pytest.approx(lo, rel=1e-9)
    assert r.lam_star[0] * 60_000 == pytest.approx(24.8403, rel=1e-5)  # req/min
    assert r.metrics.ttft[0] <= 1000.0
    assert r.metrics.ttft[0] == pytest.approx(1000.0, rel=1e-7)
    assert r.metrics.itl[0] < 40.0
    assert r.lam_min[0] == pytest.approx(0.001 * MU_1)
    assert r.lam_max[0] == pytest.approx(0.999 * MU_N)


def test_infeasible_targets_are_statuses() -> None:
    # At lam_min, TTFT ~ gamma + delta*I*1 = 166.28 ms and ITL ~ alpha + beta = 20.99 ms.
    perf = granite().take(np.zeros(4, np.intp))
    r = size(perf, ttft_target=[100.0, 1000.0, 100.0, 1000.0],
             itl_target=[40.0, 10.0, 10.0, 40.0])
    assert r.status.tolist() == [INFEASIBLE_TTFT, INFEASIBLE_ITL,
                                 INFEASIBLE_TTFT | INFEASIBLE_ITL, OK]
    assert r.lam_star[:3].tolist() == [0.0, 0.0, 0.0]
    assert r.feasible.tolist() == [False, False, False, True]
    assert "TTFT target 100 ms is below the 166.2" in r.reason(0, ttft_target=100.0)
    assert "ITL target 10 ms" in r.reason(1, itl_target=10.0)
    assert r.reason(3) == ""
    assert np.all(np.isfinite(r.metrics.ttft))


def test_loose_tps_and_missing_targets() -> None:
    perf = granite().take(np.zeros(5, np.intp))
    r = size(perf, ttft_target=[1e9, 0, 0, 1000.0, 0], itl_target=[0, 1e9, 0, 0, 0],
             tps_target=[0, 0, 2000.0, 2000.0, 0])
    lam_max = 0.999 * MU_N
    assert r.lam_star[0] == lam_max == r.lam_star[1] == r.lam_star[4]  # loose or unset
    assert r.lam_star[2] == pytest.approx(0.9 * lam_max, rel=1e-15)
    assert r.lam_star[3] == pytest.approx(min(0.9 * lam_max, 24.8403 / 60_000), rel=1e-5)
    m = analyze(perf, r.lam_star)
    np.testing.assert_allclose(r.metrics.ttft, m.ttft, rtol=1e-12)
    np.testing.assert_allclose(r.metrics.itl, m.itl, rtol=1e-12)


def test_tolerance_on_the_rate() -> None:
    perf = granite().take(np.zeros(3, np.intp))
    kw = {"ttft_target": [300.0, 1000.0, 5000.0], "itl_target": [22.0, 0, 25.0]}
    coarse, fine = size(perf, **kw), size(perf, rtol=1e-14, **kw)
    np.testing.assert_allclose(coarse.lam_star, fine.lam_star, rtol=1e-9)


def test_cache_and_duplicates() -> None:
    rng = np.random.default_rng(3)
    p = 50
    perf = DecodePrefillPerf(**GRANITE, in_tokens=rng.integers(16, 2048, p),
                             out_tokens=rng.integers(64, 2048, p), batch=rng.integers(1, 64, p))
    twice = perf.take(np.r_[np.arange(p), np.arange(p)])
    ttft = np.tile(rng.uniform(200, 5000, p), 2)
    cache = SizingCache()
    first = size(twice, ttft_target=ttft, itl_target=60.0, cache=cache)
    assert len(cache) == p  # duplicates sized once
    np.testing.assert_array_equal(first.lam_star[:p], first.lam_star[p:])
    again = size(twice, ttft_target=ttft, itl_target=60.0, cache=cache)
    assert again.evaluations == 0 and cache.hits == p  # counted per unique pair
    np.testing.assert_array_equal(first.lam_star, again.lam_star)
    np.testing.assert_array_equal(first.metrics.itl, again.metrics.itl)
    # same numbers under another model kind are another key
    it = IterationPerf(alpha=20.58, beta=0.41, gamma=164.64, in_tokens=128, out_tokens=1024,
                       batch=16, token_budget=0.0128125 + 8192)
    other = size(it, ttft_target=1000.0, cache=cache)
    assert other.evaluations > 0


def test_iteration_model_sizes_to_its_target() -> None:
    perf = IterationPerf(alpha=[8.0, 8.0], beta=0.02, gamma=2e-5, in_tokens=[512, 2048],
                         out_tokens=[256, 512], batch=[12, 40])
    r = size(perf, ttft_target=2000.0, itl_target=30.0)
    assert np.all(r.status == OK)
    binding = np.maximum(r.metrics.ttft / 2000.0, r.metrics.itl / 30.0)
    at_max = r.lam_star == r.lam_max
    assert np.all(binding <= 1.0)
    assert np.all(at_max | (binding == pytest.approx(1.0, rel=1e-7)))


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 2048), st.integers(32, 2048), st.integers(1, 128),
       st.lists(st.floats(150.0, 2e5), min_size=2, max_size=5),
       st.lists(st.floats(20.0, 200.0), min_size=2, max_size=5))
def test_sized_rate_grows_as_targets_loosen(i: int, k: int, n: int, ttft: list[float],
                                            itl: list[float]) -> None:
    base = DecodePrefillPerf(**GRANITE, in_tokens=i, out_tokens=k, batch=n)
    for name, targets in (("ttft_target", ttft), ("itl_target", itl)):
        t = np.sort(np.asarray(targets))
        r = size(base.take(np.zeros(t.size, np.intp)), **{name: t})
        lam = np.where(r.feasible, r.lam_star, 0.0)
        assert np.all(np.diff(lam) >= -1e-9 * lam[1:]), (name, t, lam)
        assert np.all(np.diff(r.status.astype(int)) <= 0)  # looser is never less feasible
        assert np.all(np.isfinite(r.metrics.ttft)) and np.all(np.isfinite(r.metrics.itl))
        assert np.all(r.metrics.throughput <= r.metrics.rate * (1 + 1e-12))


def test_empty_input() -> None:
    perf = granite().take(np.zeros(0, np.intp))
    r = size(perf, ttft_target=1000.0, cache=SizingCache())
    assert r.lam_star.shape == (0,) and r.metrics.itl.shape == (0,)
