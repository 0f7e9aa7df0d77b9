"""Scale-up lead: a least-squares slope of the arrival rate, only when it stands out."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from controlloop.loop.forecast import LoadTrend, lead_rpm
from controlloop.loop.settings import ControllerSettings, ForecastConfig
from controlloop.loop.state import ObservedLoad
from tests.helpers.moves import OneServer, _server

CFG = ForecastConfig(max_increase=1.0)  # lead 180 s, window 300 s, at most +100 %


def trend_of(rates: list[float], dt: float = 60.0) -> tuple[LoadTrend, float]:
    trend = LoadTrend()
    t = 0.0
    for rate in rates:
        t += dt
        trend.observe("k", t, rate, CFG.window_seconds)
    return trend, t


def test_a_linear_ramp_gives_its_slope_and_the_lead_it_implies() -> None:
    trend, now = trend_of([1000, 1100, 1200, 1300, 1400, 1500])  # +100 req/min per minute
    slope = trend.slope_rpm_per_s("k", now, CFG.window_seconds)
    assert slope == pytest.approx(100 / 60)
    assert lead_rpm(slope, 1500, CFG) == pytest.approx(300)  # 180 s ahead


def test_the_lead_is_capped_at_max_increase_of_the_rate() -> None:
    trend, now = trend_of([100, 400, 700, 1000])
    slope = trend.slope_rpm_per_s("k", now, CFG.window_seconds)
    assert lead_rpm(slope, 1000, CFG) == pytest.approx(900)  # 5 req/min per s x 180 s
    assert lead_rpm(slope, 1000, CFG.model_copy(update={"max_increase": 0.5})) == pytest.approx(500)


@pytest.mark.parametrize("rates", [
    [1500, 1400, 1300, 1200],  # falling
    [1000, 1000, 1000, 1000],  # flat
])
def test_no_lead_unless_the_load_rises(rates: list[float]) -> None:
    trend, now = trend_of(rates)
    assert lead_rpm(trend.slope_rpm_per_s("k", now, CFG.window_seconds), rates[-1], CFG) == 0.0


def test_too_little_history_gives_no_slope() -> None:
    trend, now = trend_of([1000, 2000])
    assert trend.slope_rpm_per_s("k", now, CFG.window_seconds) is None
    trend, now = trend_of([1000, 1500, 2000], dt=10.0)  # 20 s of a 300 s window
    assert trend.slope_rpm_per_s("k", now, CFG.window_seconds) is None
    assert lead_rpm(None, 2000, CFG) == 0.0


def test_noise_on_a_flat_load_rarely_looks_like_a_trend() -> None:
    """5 % Poisson-like noise around 2,400 req/min: a lead in few windows, and small."""
    rng = random.Random(7)
    leads = []
    for _ in range(400):
        trend, now = trend_of([2400 * (1 + rng.gauss(0, 0.05)) for _ in range(6)])
        leads.append(lead_rpm(trend.slope_rpm_per_s("k", now, CFG.window_seconds), 2400, CFG))
    with_lead = [x for x in leads if x > 0]
    assert len(with_lead) / len(leads) < 0.15
    assert sum(leads) / len(leads) < 0.02 * 2400  # under 2 % extra demand on average


def test_old_samples_leave_the_window_and_gone_servers_are_forgotten() -> None:
    trend, now = trend_of([100, 100, 100, 100, 100, 100, 100, 1000, 1100, 1200, 1300, 1400, 1500])
    slope = trend.slope_rpm_per_s("k", now, CFG.window_seconds)
    assert slope == pytest.approx(100 / 60)  # the flat start is out of the window
    trend.forget({"other"})
    assert trend.slope_rpm_per_s("k", now, CFG.window_seconds) is None


def _controller_on_ramp(
    lead_seconds: float, *, forecaster: str = "trend", learn: bool = False
) -> tuple[list[Any], OneServer]:
    from controlloop.config import load_system
    from controlloop.loop.controller import Controller, StaticSpecs
    from tests.helpers.cluster import CONFIG

    now = [0.0]
    fake = OneServer(_server(accelerator="H100", replicas=1, rollout=None))
    settings = ControllerSettings.model_validate({
        "verify": "none", "behavior": {"forecaster": forecaster},
        "forecast": {"leadSeconds": lead_seconds, "learnStartup": learn, "maxIncrease": 1.0},
    })
    controller = Controller(specs=StaticSpecs(load_system(CONFIG), settings), collector=fake,
                            actuator=fake, clock=lambda: now[0])
    rows = []
    for i in range(6):
        now[0] += 60.0
        rpm = 20.0 + 10.0 * i
        fake.ms = replace(fake.ms, load=ObservedLoad(
            "ok", arrival_rate_rpm=rpm, avg_in_tokens=128, avg_out_tokens=1024))
        (row,) = controller.run_cycle().servers
        rows.append(row)
        if fake.applied:
            fake.ms = replace(fake.ms, replicas=fake.applied[-1].replicas)
    return rows, fake


def test_the_controller_sizes_a_rising_load_ahead_and_says_why() -> None:
    ahead, _ = _controller_on_ramp(180)
    now_only, _ = _controller_on_ramp(0)
    assert ("load rising (trend forecast, its error so far" in ahead[-1].reason
            and "sized for 30 req/min more, 180s ahead (leadSeconds)" in ahead[-1].reason)
    assert all("load rising" not in r.reason for r in now_only)
    assert ahead[-1].recommended_replicas > now_only[-1].recommended_replicas
