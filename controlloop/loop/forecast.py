"""Scale-up lead: size for the load a new replica will meet once it serves.

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
