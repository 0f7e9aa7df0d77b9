"""Service-time models (docs/model-spec.md sections 2 and 8): hand-checked values and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlloop.model.perf import DecodePrefillPerf, IterationPerf, batch_size
from controlloop.model.sizing import analyze
from tests.helpers.systems import GRANITE, plain_chain

# granite_13b on A100 (small sample): alpha=20.58 beta=0.41 gamma=164.64 delta=0.0128125,
# maxBatchSize=32 at 512 tokens; load I=128, K=1024.




def test_granite_a100_by_hand() -> None:
    # N = max(1, floor(32*512/1024)) = 16
    n = int(batch_size(32, 512, 1024)[0])
    assert n == 16
    # a = gamma + (K-1)*alpha = 164.64 + 1023*20.58 = 21217.98 ms
    # b = delta*I + (K-1)*beta = 0.0128125*128 + 1023*0.41 = 1.64 + 419.43 = 421.07 ms
    perf = DecodePrefillPerf(**GRANITE, in_tokens=128, out_tokens=1024, batch=n)
    chain = perf.chain()
    assert chain.a[0] == pytest.approx(21217.98, rel=1e-12)
    assert chain.b[0] == pytest.approx(421.07, rel=1e-12)
    # mu(16) = 16/(21217.98 + 16*421.07) = 16/27955.10 = 5.72346e-4 req/ms (34.34 req/min)
    lam = 0.5 * 16 / (21217.98 + 16 * 421.07)
    ref = plain_chain(21217.98, 421.07, 16, lam)
    m = analyze(perf, lam)
    # S = 24601.33 ms, W = 17.9045 ms; n* = (S - a)/b = 8.0351
    n_star = (ref["S"] - 21217.98) / 421.07
    assert n_star == pytest.approx(8.0351, abs=1e-4)
    assert m.concurrency[0] == pytest.approx(n_star, rel=1e-9)
    # ITL = alpha + beta*n* = 20.58 + 0.41*8.0351 = 23.8744 ms
    assert m.itl[0] == pytest.approx(20.58 + 0.41 * n_star, rel=1e-12)
    assert m.itl[0] == pytest.approx(23.87440, rel=1e-6)
    # TTFT = W + gamma + delta*I*n* = 17.9045 + 164.64 + 1.64*8.0351 = 195.7221 ms
    assert m.ttft[0] == pytest.approx(ref["W"] + 164.64 + 1.64 * n_star, rel=1e-9)
    assert m.ttft[0] == pytest.approx(195.72212, rel=1e-6)
    assert m.wait[0] == pytest.approx(ref["W"], rel=1e-8)
    assert m.throughput[0] == pytest.approx(ref["X"], rel=1e-12)
    assert m.rho[0] == pytest.approx(ref["B"] / 16, rel=1e-9)


def test_batch_size_rule() -> None:
    got = batch_size([32, 32, 9, 51], [512, 512, 512, 512], [1024, 100_000, 2048, 128],
                     override=[0, 0, 0, 7])
    assert got.tolist() == [16, 1, 2, 7]


def test_no_input_tokens_means_no_prefill() -> None:
    perf = DecodePrefillPerf(**GRANITE, in_tokens=0, out_tokens=1024, batch=16)
    assert perf.chain().a[0] == pytest.approx(1023 * 20.58)
    assert perf.chain().b[0] == pytest.approx(1023 * 0.41)
    m = analyze(perf, 1e-9)
    assert m.ttft[0] == pytest.approx(0, abs=1e-6)  # TTFT = W, no prefill


def test_flat_service_time_reads_at_the_mean_batch() -> None:
    # b = 0 (beta = 0, no prompt): T is flat, n* is taken as B, the mean in service.
    perf = DecodePrefillPerf(alpha=10.0, beta=0.0, gamma=50.0, delta=0.0, in_tokens=0,
                             out_tokens=101, batch=4)
    m = analyze(perf, 0.002)
    assert m.concurrency[0] == pytest.approx(m.in_service[0])
    assert m.itl[0] == 10.0


def test_invalid_perf_names_the_entry() -> None:
    with pytest.raises(ValueError, match=r"out_tokens\[1\]: must be finite and > 0"):
        DecodePrefillPerf(**GRANITE, in_tokens=1, out_tokens=[5, 0], batch=2)


def brute_chunks(i: float, k: float, budget: float, n: int) -> int:
    m = 1
    while n > math.floor((m + k) * (budget - i / m) / (i + k)):
        m += 1
    return m


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 20000), st.integers(1, 4000), st.integers(64, 16384), st.integers(1, 600))
def test_chunks_match_the_rule(i: int, k: int, budget: int, n: int) -> None:
    perf = IterationPerf(alpha=5.0, beta=0.01, gamma=1e-5, in_tokens=i, out_tokens=k,
                         batch=n, token_budget=budget)
    assert perf.chunks()[0] == brute_chunks(i, k, budget, n)


def test_iteration_model_by_hand() -> None:
    alpha, beta, gamma, i, k, n = 8.0, 0.02, 2e-5, 512.0, 256.0, 12
    perf = IterationPerf(alpha=alpha, beta=beta, gamma=gamma, in_tokens=i, out_tokens=k,
                         batch=n)
    # c: fewest m with 12 <= floor((m+256)*(8192 - 512/m)/768): m=1 gives 2720 -> c = 1
    c = 1
    assert perf.chunks()[0] == c
    wp = (beta + gamma * (c + 1) / 2) * i
    wd = beta * k + gamma * k * (i + (k + 1) / 2)
    d = (wp + wd) / (c + k)
    chain = perf.chain()
    assert chain.a[0] == pytest.approx((c + k) * alpha)
    assert chain.b[0] == pytest.approx((c + k) * d)
    lam = 0.7 * n / ((c + k) * (alpha + n * d))
    ref = plain_chain((c + k) * alpha, (c + k) * d, n, lam)
    m = analyze(perf, lam)
    prefill = c * (alpha + (ref["B"] - 1) * d) + wp
    itl = (ref["S"] - prefill) / k
    assert m.itl[0] == pytest.approx(itl, rel=1e-9)
    assert m.ttft[0] == pytest.approx(ref["W"] + prefill + itl, rel=1e-9)


decode_perf = st.fixed_dictionaries({
    "alpha": st.floats(0.1, 300), "beta": st.floats(0, 10), "gamma": st.floats(0, 3000),
    "delta": st.floats(0, 0.2), "in_tokens": st.integers(0, 4000),
    "out_tokens": st.integers(2, 4000), "batch": st.integers(1, 300),  # K >= 2: T(n) > 0
})
# Section 8 reads prefill at the mean number in service B; with N = 1 (or N = 2 and
# K = 2) S hardly grows while B does, so its ITL = (S - prefill(B))/K dips slightly
# (see test_iteration_itl_with_one_slot).  The property holds from N >= 2, K >= 8.
iteration_perf = st.fixed_dictionaries({
    "alpha": st.floats(0.1, 50), "beta": st.floats(0, 0.1), "gamma": st.floats(0, 1e-3),
    "in_tokens": st.integers(0, 8000), "out_tokens": st.integers(8, 4000),
    "batch": st.integers(2, 300),
})


def test_iteration_itl_with_one_slot() -> None:
    # N = 1: S = T(1) at every rate; prefill c*(alpha + (B-1)*d) + wp rises with B, so
    # the spec's ITL = (S - prefill)/K falls a little while TTFT still rises.
    perf = IterationPerf(alpha=1.0, beta=0.0625, gamma=0.0, in_tokens=0, out_tokens=1,
                         batch=1).take(np.zeros(2, np.intp))
    m = analyze(perf, np.array([0.3, 0.6]) / 2.0625)
    assert m.service[0] == pytest.approx(m.service[1]) == pytest.approx(2.0625)
    assert m.itl[1] < m.itl[0] and m.ttft[1] > m.ttft[0]


@settings(max_examples=60, deadline=None)
@given(st.one_of(decode_perf.map(lambda d: DecodePrefillPerf(**d)),
                 iteration_perf.map(lambda d: IterationPerf(**d))),
       st.lists(st.floats(1e-4, 1.2), min_size=2, max_size=6))
def test_latencies_never_fall_as_load_rises(perf: DecodePrefillPerf | IterationPerf,
                                            loads: list[float]) -> None:
    chain = perf.chain()
    mu_n = chain.service_rate(chain.batch)[0]
    lam = np.sort(np.asarray(loads)) * mu_n
    rows = perf.take(np.zeros(lam.size, np.intp))
    m = analyze(rows, lam)
    for name in ("itl", "ttft", "wait"):
        v = getattr(m, name)
        assert np.all(np.isfinite(v)), name
        assert np.all(np.diff(v) >= -1e-9 * np.abs(v[1:]) - 1e-9), (name, v)
    assert np.all(m.throughput <= lam * (1 + 1e-12))
