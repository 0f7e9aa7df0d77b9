"""Scale-up lead: size for the load a new replica will meet once it serves.

Forecasters (``behavior.forecaster``, per server): ``trend`` (below) or ``kalman``
(a local linear trend Kalman filter); each is judged by its own one-step-ahead
error. The horizon is the replica start-up time learned from pod readiness plus
one interval (``forecast.learnStartup``), else ``leadSeconds``.

A vLLM replica serves minutes after it is asked for (scheduling, image, model
load). Sized on the load of this cycle, a server on a rising load is always
one start-up behind. When the recent arrival rate rises, the controller adds
``slope x leadSeconds`` to the demand it sizes for (a least-squares slope over
``windowSeconds``). A falling or flat load adds nothing, so the lead never
causes a scale-down; the scale-down stabilisation window then sheds any
excess once the rise stops.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from controlloop.loop.settings import ForecastConfig

MIN_SAMPLES = 3
SIGNIFICANCE = 2.0  # |slope| must exceed this many standard errors


class LoadTrend:
    """Recent (time, arrival rate) samples per server."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def observe(self, key: str, now: float, rpm: float, window_s: float) -> None:
        samples = self._samples.setdefault(key, deque())
        if samples and now <= samples[-1][0]:
            return  # same cycle seen twice (e.g. a retried run): keep the first
        samples.append((now, rpm))
        while samples and samples[0][0] < now - window_s:
            samples.popleft()

    def slope_rpm_per_s(self, key: str, now: float, window_s: float) -> float | None:
        """Least-squares slope over the window; None with too few samples."""
        points = [(t, r) for t, r in self._samples.get(key, ()) if t >= now - window_s]
        if len(points) < MIN_SAMPLES or points[-1][0] - points[0][0] < window_s / 2:
            return None
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_r = sum(r for _, r in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points)
        if var <= 0:
            return None
        slope = sum((t - mean_t) * (r - mean_r) for t, r in points) / var
        # Noise is not a trend: keep the slope only when it stands out of the scatter
        # (t-statistic of the least-squares slope).
        sse = sum((r - mean_r - slope * (t - mean_t)) ** 2 for t, r in points)
        stderr = (sse / (n - 2) / var) ** 0.5
        if abs(slope) <= SIGNIFICANCE * stderr:
            return 0.0
        return slope

    def forget(self, live: set[str]) -> None:
        for key in [k for k in self._samples if k not in live]:
            del self._samples[key]


def lead_rpm(slope_rpm_per_s: float | None, rate_rpm: float, cfg: ForecastConfig) -> float:
    """Extra demand for a rising load: slope x lead, at most ``maxIncrease`` x the rate."""
    if slope_rpm_per_s is None or slope_rpm_per_s <= 0 or cfg.lead_seconds <= 0:
        return 0.0
    return min(slope_rpm_per_s * cfg.lead_seconds, cfg.max_increase * rate_rpm)


# --- forecasters behind one interface --------------------------------------------------------
#
# A forecaster sees each server's (time, arrival rate) samples and predicts the rate
# ``horizon`` seconds ahead; it also keeps its own one-step-ahead error (an EWMA of
# |observed - predicted| / observed), which the cycle report and metrics carry, so a
# forecaster is judged by how well it forecast this server.

ERROR_EWMA = 0.2  # weight of the newest error


class Forecaster(Protocol):
    name: str

    def observe(self, key: str, now: float, rpm: float) -> None: ...

    def predict(self, key: str, now: float, horizon_s: float) -> float | None: ...

    def error(self, key: str) -> float | None: ...

    def forget(self, live: set[str]) -> None: ...


class _Errors:
    """One-step-ahead relative errors per server (EWMA)."""

    def __init__(self) -> None:
        self._err: dict[str, float] = {}

    def add(self, key: str, predicted: float | None, observed: float) -> None:
        if predicted is None:
            return
        e = abs(observed - predicted) / max(observed, 1.0)
        old = self._err.get(key)
        self._err[key] = e if old is None else (1 - ERROR_EWMA) * old + ERROR_EWMA * e

    def get(self, key: str) -> float | None:
        return self._err.get(key)

    def forget(self, live: set[str]) -> None:
        for key in [k for k in self._err if k not in live]:
            del self._err[key]


class TrendForecaster:
    """The least-squares slope over ``windowSeconds``, kept only when it stands out of
    the scatter (:class:`LoadTrend`): last rate + slope x horizon."""

    name = "trend"

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.trend = LoadTrend()
        self._errors = _Errors()

    def observe(self, key: str, now: float, rpm: float) -> None:
        samples = self.trend._samples.get(key)
        if samples and now > samples[-1][0]:
            self._errors.add(key, self.predict(key, samples[-1][0], now - samples[-1][0]), rpm)
        self.trend.observe(key, now, rpm, self.window_s)

    def predict(self, key: str, now: float, horizon_s: float) -> float | None:
        samples = self.trend._samples.get(key)
        slope = self.trend.slope_rpm_per_s(key, now, self.window_s)
        if not samples:
            return None
        return max(0.0, samples[-1][1] + (slope or 0.0) * horizon_s)

    def error(self, key: str) -> float | None:
        return self._errors.get(key)

    def forget(self, live: set[str]) -> None:
        self.trend.forget(live)
        self._errors.forget(live)


@dataclass
class _LLT:
    t: float
    x: np.ndarray  # [level (req/min), slope (req/min per s)]
    p: np.ndarray  # 2x2 covariance


class KalmanForecaster:
    """Local linear trend (level + slope) Kalman filter, exact for irregular sampling.

    The state-space model statsmodels' ``UnobservedComponents('local linear trend')``
    fits, with the noise set from first principles instead of a maximum-likelihood
    refit per cycle: the measurement noise of a rate counted over a window is Poisson
    (variance 60 x rate / window, in (req/min)^2) plus the load's own relative noise;
    the slope is a continuous random walk whose standard deviation grows by
    ``slopeNoise`` x level per minute per minute. O(1) per sample, no fitting.
    """

    name = "kalman"

    def __init__(self, *, window_s: float = 60.0, noise: float = 0.05,
                 slope_noise: float = 0.1) -> None:
        self.window_s = window_s
        self.noise = noise
        self.slope_noise = slope_noise
        self._state: dict[str, _LLT] = {}
        self._errors = _Errors()

    def _r(self, rpm: float) -> float:
        return 60.0 * max(rpm, 1.0) / self.window_s + (self.noise * rpm) ** 2

    def observe(self, key: str, now: float, rpm: float) -> None:
        st = self._state.get(key)
        if st is None:
            self._state[key] = _LLT(now, np.array([rpm, 0.0]),
                                    np.diag([self._r(rpm), (0.1 * max(rpm, 1.0) / 60.0) ** 2]))
            return
        dt = now - st.t
        if dt <= 0:
            return  # the same instant seen twice: keep the first
        x, p = self._propagate(st, dt)
        self._errors.add(key, max(0.0, float(x[0])), rpm)
        h = np.array([1.0, 0.0])
        s = float(h @ p @ h) + self._r(rpm)
        k = p @ h / s
        x = x + k * (rpm - float(x[0]))
        p = p - np.outer(k, h) @ p
        self._state[key] = _LLT(now, x, (p + p.T) / 2)

    def _propagate(self, st: _LLT, dt: float) -> tuple[np.ndarray, np.ndarray]:
        f = np.array([[1.0, dt], [0.0, 1.0]])
        # slope std grows slope_noise x level per minute, per minute: q in (rpm/s)^2 per s
        q = (self.slope_noise * max(float(st.x[0]), 1.0) / 60.0) ** 2 / 60.0
        qm = q * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
        return f @ st.x, f @ st.p @ f.T + qm

    def predict(self, key: str, now: float, horizon_s: float) -> float | None:
        st = self._state.get(key)
        if st is None:
            return None
        level, slope = float(st.x[0]), float(st.x[1])
        return max(0.0, level + slope * (now - st.t + horizon_s))

    def slope(self, key: str) -> float | None:
        st = self._state.get(key)
        return None if st is None else float(st.x[1])

    def error(self, key: str) -> float | None:
        return self._errors.get(key)

    def forget(self, live: set[str]) -> None:
        for key in [k for k in self._state if k not in live]:
            del self._state[key]
        self._errors.forget(live)


class StartupTracker:
    """Replica start-up time learned from pod readiness: from a scale-up's patch to the
    moment that many replicas are Ready (the median of the last few, at the resolution
    of the observations: cycles and surge checks)."""

    KEEP = 5

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[float, int]] = {}  # key -> (asked at, replicas)
        self._samples: dict[str, deque[float]] = {}

    def scaled_up(self, key: str, now: float, replicas: int) -> None:
        if key not in self._waiting:  # the oldest outstanding ask is the one to time
            self._waiting[key] = (now, replicas)

    def observe_ready(self, key: str, now: float, ready: int) -> None:
        got = self._waiting.get(key)
        if got is not None and ready >= got[1]:
            self._samples.setdefault(key, deque(maxlen=self.KEEP)).append(now - got[0])
            del self._waiting[key]

    def cancel(self, key: str) -> None:
        """A scale-down or move overtook the ask: it will not become ready as asked."""
        self._waiting.pop(key, None)

    def startup_s(self, key: str) -> float | None:
        samples = self._samples.get(key)
        if not samples:
            return None
        return float(np.median(list(samples)))

    def forget(self, live: set[str]) -> None:
        for table in (self._waiting, self._samples):
            for key in [k for k in table if k not in live]:
                del table[key]  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Lead:
    """Extra demand to size for, and how it was found."""

    rpm: float
    horizon_s: float
    forecaster: str
    error: float | None
    startup_s: float | None
    note: str = ""


class Foresight:
    """Every forecaster sees every server (so each is judged everywhere); the server's
    ``behavior.forecaster`` picks the one that sizes it."""

    def __init__(self, cfg: ForecastConfig | None = None) -> None:
        cfg = cfg or ForecastConfig()
        self.trend = TrendForecaster(cfg.window_seconds)
        self.kalman = KalmanForecaster(noise=cfg.noise, slope_noise=cfg.slope_noise)
        self.startup = StartupTracker()

    def forecasters(self) -> dict[str, Forecaster]:
        return {"trend": self.trend, "kalman": self.kalman}

    def pick(self, key: str, method: str) -> Forecaster:
        """The named forecaster; ``auto``: the one with the lower error on this server so far
        (trend until both have one)."""
        if method != "auto":
            return self.forecasters().get(method, self.trend)
        errors = [(e, f.name) for f in self.forecasters().values()
                  if (e := f.error(key)) is not None]
        if len(errors) < len(self.forecasters()):
            return self.trend
        return self.forecasters()[min(errors)[1]]

    def observe(self, key: str, now: float, rpm: float, cfg: ForecastConfig) -> None:
        self.trend.window_s = cfg.window_seconds
        self.kalman.noise, self.kalman.slope_noise = cfg.noise, cfg.slope_noise
        for f in self.forecasters().values():
            f.observe(key, now, rpm)

    def horizon_s(self, key: str, cfg: ForecastConfig, interval_s: float) -> float:
        """How far ahead to size: the learned start-up plus one interval, else leadSeconds."""
        learned = self.startup.startup_s(key) if cfg.learn_startup else None
        if cfg.lead_seconds <= 0:
            return 0.0
        return cfg.lead_seconds if learned is None else learned + interval_s

    def lead(self, key: str, method: str, now: float, rate_rpm: float, cfg: ForecastConfig,
             interval_s: float) -> Lead:
        """Demand above ``rate_rpm`` expected by the time new replicas serve (never < 0:
        a forecast never causes a scale-down), at most ``maxIncrease`` x the rate."""
        horizon = self.horizon_s(key, cfg, interval_s)
        fc = self.pick(key, method)
        startup = self.startup.startup_s(key)
        base = Lead(0.0, horizon, fc.name, fc.error(key), startup)
        if horizon <= 0:
            return base
        if fc is self.trend:
            slope = self.trend.trend.slope_rpm_per_s(key, now, cfg.window_seconds)
            extra = lead_rpm(slope, rate_rpm, cfg.model_copy(update={"lead_seconds": horizon}))
        else:
            predicted = fc.predict(key, now, horizon)
            extra = 0.0 if predicted is None else min(max(0.0, predicted - rate_rpm),
                                                      cfg.max_increase * rate_rpm)
        if extra <= 0:
            return base
        how = f"start-up {startup:.0f}s learned + interval" if startup is not None and \
            cfg.learn_startup else "leadSeconds"
        err = f", its error so far {fc.error(key):.0%}" if fc.error(key) is not None else ""
        note = (f"load rising ({fc.name} forecast{err}): sized for {extra:.0f} req/min more, "
                f"{horizon:.0f}s ahead ({how})")
        return Lead(extra, horizon, fc.name, fc.error(key), startup, note)

    def forget(self, live: set[str]) -> None:
        for f in self.forecasters().values():
            f.forget(live)
        self.startup.forget(live)
