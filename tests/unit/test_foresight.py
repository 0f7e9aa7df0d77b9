"""Forecasters (trend, kalman) judged by their own error, and the learned start-up."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from controlloop.demo.cluster import EmulatedCluster
from controlloop.loop.controller import Controller, StaticSpecs
from controlloop.loop.forecast import Foresight, KalmanForecaster, StartupTracker, TrendForecaster
from controlloop.loop.settings import ControllerSettings, ForecastConfig
from controlloop.specs import SystemSpec
from tests.helpers.systems import one_scaling_server

SERVER = "Premium-llama_7b"
ACC = "MI300X"


@cache
def _system() -> SystemSpec:
    return one_scaling_server(SERVER, ACC)  # only ACC has a nodeSelector: never moves


def _feed(fc: KalmanForecaster | TrendForecaster, times: np.ndarray, rates: np.ndarray) -> None:
    for t, r in zip(times, rates, strict=True):
        fc.observe("k", float(t), float(r))


def test_kalman_finds_the_slope_of_a_ramp_sampled_irregularly() -> None:
    rng = np.random.default_rng(4)
    times = np.cumsum(rng.uniform(10, 60, size=60))  # cycles and surge checks mixed
    rates = 300.0 + 0.5 * times  # +30 req/min per minute
    fc = KalmanForecaster(noise=0.0)
    _feed(fc, times, rates)
    assert fc.slope("k") == pytest.approx(0.5, rel=0.02)
    now = float(times[-1])
    assert fc.predict("k", now, 180) == pytest.approx(300 + 0.5 * (now + 180), rel=0.01)
    err = fc.error("k")
    assert err is not None and err < 0.01  # a straight line is forecast almost exactly


def test_kalman_on_flat_noisy_load_has_no_slope_and_its_error_is_the_noise() -> None:
    rng = np.random.default_rng(5)
    times = np.arange(1, 200) * 60.0
    rates = 600.0 * (1 + 0.05 * rng.standard_normal(times.size))
    fc = KalmanForecaster()
    leads = []
    for t, r in zip(times, rates, strict=True):
        fc.observe("k", float(t), float(r))
        leads.append((fc.slope("k") or 0.0) * 180 / 600)  # relative lead 180 s ahead
    tail = np.array(leads[20:])
    assert abs(tail.mean()) < 0.01  # no bias
    # jitter of the lead: ~9 % of the load at slopeNoise 0.1 (half of it adds demand: the
    # price of following a ramp within a few cycles, docs/demo.md)
    assert np.abs(tail).mean() < 0.12
    err = fc.error("k")
    # mean |N(0, 0.05)| = 0.04, plus the filter's own estimation error; an EWMA of the
    # last few samples scatters around that
    assert err is not None and 0.02 < err < 0.1


def test_after_a_step_the_trend_lags_and_the_kalman_adapts() -> None:
    times = np.arange(1, 31) * 60.0
    rates = np.where(times < 900, 400.0, 400.0 + 2.0 * (times - 900))  # a ramp from t=900
    kal, tr = KalmanForecaster(noise=0.0), TrendForecaster(300)
    _feed(kal, times, rates)
    _feed(tr, times, rates)
    kal_err, tr_err = kal.error("k"), tr.error("k")
    assert kal_err is not None and tr_err is not None
    foresight = Foresight()
    for t, r in zip(times, rates, strict=True):
        foresight.observe("k", float(t), float(r), ForecastConfig())
    assert foresight.pick("k", "auto").name == min((kal_err, "kalman"), (tr_err, "trend"))[1]
    assert foresight.pick("k", "trend").name == "trend"


def test_lead_is_never_negative_and_capped() -> None:
    foresight, cfg = Foresight(), ForecastConfig(max_increase=0.5, learn_startup=False)
    for i in range(10):
        foresight.observe("k", 60.0 * i, 1000.0 - 50 * i, cfg)  # falling
    assert foresight.lead("k", "kalman", 540.0, 550.0, cfg, 60).rpm == 0.0
    for i in range(10):
        foresight.observe("u", 60.0 * i, 1000.0 + 500.0 * i, cfg)  # +500 req/min per minute
    lead = foresight.lead("u", "kalman", 540.0, 5500.0, cfg, 60)
    assert lead.horizon_s == cfg.lead_seconds  # no start-up learned: leadSeconds
    assert lead.rpm == pytest.approx(500.0 * 3, rel=0.1)  # 180 s of the slope
    capped = foresight.lead("u", "kalman", 540.0, 1000.0, cfg, 60)
    assert capped.rpm == pytest.approx(0.5 * 1000.0)  # at most maxIncrease x the rate


def test_startup_is_timed_from_the_ask_to_that_many_ready_pods() -> None:
    st = StartupTracker()
    st.scaled_up("k", 100.0, 3)
    st.scaled_up("k", 130.0, 5)  # the outstanding ask is timed first
    st.observe_ready("k", 150.0, 2)
    st.observe_ready("k", 230.0, 3)
    assert st.startup_s("k") == 130.0
    for t0 in (300.0, 600.0):
        st.scaled_up("k", t0, 4)
        st.observe_ready("k", t0 + 110.0, 4)
    assert st.startup_s("k") == 110.0  # median of 130, 110, 110
    st.scaled_up("k", 900.0, 9)
    st.cancel("k")
    st.observe_ready("k", 2000.0, 9)
    assert st.startup_s("k") == 110.0


def test_the_controller_learns_the_emulated_start_up() -> None:
    rate = {"rpm": 100.0}
    cluster = EmulatedCluster(_system(), {}, capacity=None, startup_s=120.0, seed=2,
                              rate_fn=lambda _s, _t: rate["rpm"])
    cluster.place(SERVER, ACC, 1)
    ctl = Controller(specs=StaticSpecs(_system(), ControllerSettings()), collector=cluster,
                     actuator=cluster, clock=cluster.now_s)
    cluster.advance(60)
    ctl.run_cycle()
    rate["rpm"] = 600.0
    for _ in range(30):  # 5 minutes of surge checks, cycles every 60 s
        cluster.advance(10)
        if round(cluster.now_s()) % 60 == 0:
            ctl.run_cycle()
        else:
            ctl.check_surge()
    learned = ctl.foresight.startup.startup_s(f"demo/{cluster.servers[SERVER].deployment}")
    assert learned is not None and 120.0 <= learned <= 130.0  # 10 s check resolution
    (row,) = ctl.run_cycle().servers
    assert row.startup_seconds == learned and row.forecaster == "kalman"
    assert row.forecast_error is not None
