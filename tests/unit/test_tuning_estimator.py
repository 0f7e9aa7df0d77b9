"""The online perf estimator against independent truth: the model's own formulas at known
parameters, and the token-level simulator (MODEL.md section 7)."""

from __future__ import annotations

import numpy as np
import pytest

from controlloop.sim import ReplicaParams, ReplicaSimulator, poisson_arrivals
from controlloop.tuning import Observation, OperatingPoint, PerfEstimator, TunerSettings, predict

# llama_13b on G2 (large sample): alpha, beta, gamma, delta, waitScale
PROFILE = np.array([16.78, 0.73, 134.24, 0.0228125, 1.0])
TRUTH_MULT = np.array([1.4, 1.3, 1.5, 1.5, 0.6])
SM = "decode-prefill"


def _points(rng: np.random.Generator, k: int, *, lo: float = 4.0, hi: float = 40.0,
            batch: int = 19) -> list[OperatingPoint]:
    return [OperatingPoint(rate_rpm=float(rng.uniform(lo, hi)), in_tokens=128, out_tokens=1024,
                           batch=batch) for _ in range(k)]


def _synthetic(theta: np.ndarray, points: list[OperatingPoint], rng: np.random.Generator, *,
               noise: tuple[float, float] = (0.03, 0.2)) -> list[Observation]:
    y = predict(SM, theta, points)
    return [Observation(p, itl_ms=float(y[i, 0] * np.exp(rng.normal(0, noise[0]))),
                        ttft_ms=float(y[i, 1] * np.exp(rng.normal(0, noise[1]))))
            for i, p in enumerate(points)]


def test_converges_to_truth_on_the_models_own_formulas() -> None:
    rng = np.random.default_rng(3)
    truth = PROFILE * TRUTH_MULT
    est = PerfEstimator(PROFILE, SM)
    for _ in range(40):
        est.update(_synthetic(truth, _points(rng, 2), rng))
    assert est.warmed_up
    mult = est.applied_multipliers()
    # The decode parameters (ITL) and the prefill's fixed part are identified ...
    assert mult[0] == pytest.approx(1.4, rel=0.06)
    assert mult[1] == pytest.approx(1.3, rel=0.08)
    assert mult[2] == pytest.approx(1.5, rel=0.15)
    # ... and predictions at unseen operating points match the truth's.
    held_out = _points(np.random.default_rng(99), 20, lo=2, hi=45)
    want, got = predict(SM, truth, held_out), est.predict(held_out)
    assert np.max(np.abs(got[:, 0] / want[:, 0] - 1)) < 0.05
    assert np.median(np.abs(got[:, 1] / want[:, 1] - 1)) < 0.1
    # Uncertainty shrank where the data inform (alpha) and not where they cannot (delta:
    # delta*I is 2 % of TTFT's prefill).
    sig = est.sigma()
    assert sig[0] < 0.1 * TunerSettings().prior_sigma + 0.03
    assert sig[3] > 0.8 * TunerSettings().prior_sigma


def test_learns_itl_from_the_token_level_simulator() -> None:
    """Replicas 30 % slower than the profile (decode): the fit predicts the simulator's ITL
    at a held-out rate far better than the profile, whatever the chain's own bias."""
    prof = np.array([10.0, 0.5, 60.0, 0.01, 1.0])
    truth = prof * np.array([1.3, 1.3, 1.3, 1.3, 1.0])
    rng = np.random.default_rng(5)
    params = ReplicaParams(alpha=truth[0], beta=truth[1], gamma=truth[2], delta=truth[3],
                           batch=16, in_tokens=64, out_tokens=128)

    def window(rate_rpm: float, minutes: float) -> tuple[float, float]:
        sim = ReplicaSimulator(params)
        end = minutes * 60_000.0
        sim.offer(poisson_arrivals(rng, rate_per_ms=rate_rpm / 60_000, start_ms=0, end_ms=end))
        sim.advance(end / 5)
        sim.drain_stats()
        sim.advance(end)
        st = sim.drain_stats()
        return st.itl_mean_ms, float(st.ttft_ms.mean())

    est = PerfEstimator(prof, SM)
    for rate in (40, 120, 200, 80, 160, 60, 180, 100, 140, 220):
        itl, ttft = window(rate, 10)
        est.update([Observation(OperatingPoint(rate, 64, 128, 16), itl_ms=itl, ttft_ms=ttft)])
    assert est.warmed_up
    itl, _ = window(170, 30)
    point = [OperatingPoint(170, 64, 128, 16)]
    tuned_err = abs(est.predict(point)[0, 0] / itl - 1)
    profile_err = abs(predict(SM, prof, point)[0, 0] / itl - 1)
    assert profile_err > 0.2
    assert tuned_err < 0.08


def test_outliers_are_rejected_by_the_nis_gate() -> None:
    rng = np.random.default_rng(7)
    truth = PROFILE * TRUTH_MULT
    est = PerfEstimator(PROFILE, SM)
    for _ in range(15):
        est.update(_synthetic(truth, _points(rng, 2), rng))
    before = est.x.copy()
    bad = _synthetic(truth, _points(rng, 1), rng)[0]
    spike = Observation(bad.point, itl_ms=bad.itl_ms * 4, ttft_ms=bad.ttft_ms)  # type: ignore[operator]
    res = est.update([spike])
    assert res.accepted == 0 and res.rejected == 1
    assert res.nis[0] > 20
    np.testing.assert_array_equal(est.x, before)
    # A good observation in the same update is still used.
    good = _synthetic(truth, _points(rng, 1), rng)[0]
    res = est.update([spike, good])
    assert (res.accepted, res.rejected) == (1, 1)


def test_one_operating_point_falls_back_to_the_profile_where_undetermined() -> None:
    rng = np.random.default_rng(11)
    truth = PROFILE * TRUTH_MULT
    point = OperatingPoint(rate_rpm=25.0, in_tokens=128, out_tokens=1024, batch=19)
    est = PerfEstimator(PROFILE, SM)
    assert est.conditioning == "ill-conditioned"
    np.testing.assert_array_equal(est.applied_multipliers(), np.ones(5))  # no data: profile
    for _ in range(30):
        est.update(_synthetic(truth, [point], rng, noise=(0.01, 0.05)))
    assert est.warmed_up
    assert est.conditioning != "ok"  # 2 figures at one point cannot fix 5 parameters
    u = est.determined()
    assert 0 < u.shape[1] < 5
    # Applied = the fit projected on the determined directions: nothing in the others.
    s0 = TunerSettings().prior(5)
    z = np.log(est.applied_multipliers()) / s0
    assert np.allclose(z - u @ (u.T @ z), 0, atol=1e-9)
    # ... and still predicts the observed point.
    got, want = est.predict([point])[0], predict(SM, truth, [point])[0]
    assert got[0] == pytest.approx(want[0], rel=0.03)


def test_not_used_before_warm_up_and_bounded() -> None:
    rng = np.random.default_rng(2)
    truth = PROFILE * np.array([20.0, 1.0, 1.0, 1.0, 1.0])  # beyond the x5 bound
    est = PerfEstimator(PROFILE, SM, TunerSettings(warmup=6))
    for i in range(6):
        est.update(_synthetic(truth, _points(rng, 1), rng))
        if i < 5:
            assert not est.warmed_up
            np.testing.assert_array_equal(est.applied_multipliers(), np.ones(5))
    assert est.multipliers().max() <= 5.0 + 1e-9
    assert est.multipliers().min() >= 0.02 - 1e-12


def test_relearns_after_a_regime_change() -> None:
    rng = np.random.default_rng(4)
    est = PerfEstimator(PROFILE, SM)
    for _ in range(20):
        est.update(_synthetic(PROFILE, _points(rng, 2), rng))
    assert np.allclose(est.applied_multipliers()[:2], 1, atol=0.05)
    slower = PROFILE * np.array([1.8, 1.8, 1.0, 1.0, 1.0])
    for _ in range(25):
        est.update(_synthetic(slower, _points(rng, 2), rng))
    assert est.resets >= 1
    held_out = _points(np.random.default_rng(1), 10)
    got, want = est.predict(held_out), predict(SM, slower, held_out)
    assert np.max(np.abs(got[:, 0] / want[:, 0] - 1)) < 0.05


def test_state_round_trips_and_refuses_another_profile() -> None:
    rng = np.random.default_rng(8)
    est = PerfEstimator(PROFILE, SM)
    for _ in range(8):
        est.update(_synthetic(PROFILE * TRUTH_MULT, _points(rng, 2), rng))
    doc = est.to_dict()
    back = PerfEstimator.from_dict(doc, PROFILE, SM)
    pts = _points(rng, 4)
    np.testing.assert_allclose(back.predict(pts), est.predict(pts), rtol=1e-12)
    assert back.warmed_up == est.warmed_up
    with pytest.raises(ValueError, match="another profile"):
        PerfEstimator.from_dict(doc, PROFILE * 1.1, SM)
    with pytest.raises(ValueError, match="serviceModel"):
        PerfEstimator.from_dict(doc, PROFILE[:4], "iteration")


def test_iteration_model_is_estimated_too() -> None:
    prof = np.array([6.0, 0.02, 0.0005, 1.0])  # alpha, beta, gamma, waitScale
    truth = prof * np.array([1.3, 1.2, 1.0, 1.0])
    rng = np.random.default_rng(9)
    est = PerfEstimator(prof, "iteration")
    for _ in range(30):
        pts = [OperatingPoint(float(rng.uniform(5, 60)), 128, 512, 32) for _ in range(2)]
        y = predict("iteration", truth, pts)
        est.update([Observation(p, itl_ms=float(y[i, 0]), ttft_ms=float(y[i, 1]))
                    for i, p in enumerate(pts)])
    pts = [OperatingPoint(30.0, 128, 512, 32)]
    assert est.predict(pts)[0, 0] == pytest.approx(predict("iteration", truth, pts)[0, 0],
                                                   rel=0.02)


def test_bad_profile_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="need 5 parameters"):
        PerfEstimator(np.array([1.0, 2.0]), SM)
    with pytest.raises(ValueError, match="service_model"):
        PerfEstimator(PROFILE, "nope")
