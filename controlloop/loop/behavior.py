"""Replica stabilisation in HPA's vocabulary (pure; time is passed in).

Per server we keep the recent recommendations and scale events:

* tolerance: a recommendation within ``tolerance`` of current keeps current;
* stabilisation: scale up to the *lowest* recommendation of the scale-up
  window, down to the *highest* of the scale-down window (default 300 s), so
  one low sample after a burst does not shed replicas;
* policies: at most ``value`` pods / percent per ``periodSeconds``,
  ``selectPolicy`` Max (most permissive), Min, or Disabled;
* min/max replicas last.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from controlloop.loop.settings import BehaviorSpec, ScalingRules

HISTORY_SECONDS = 3600.0  # the longest window we keep


@dataclass
class ServerHistory:
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    events: deque[tuple[float, int]] = field(default_factory=deque)  # (time, delta)
    last_move: float | None = None
    stabilized: bool = False  # stabilize() has run for this server in this process
    # (first seen, replicas then) when we started without history: see stabilize().
    unknown_before: tuple[float, int] | None = None

    def trim(self, now: float) -> None:
        while self.recommendations and self.recommendations[0][0] < now - HISTORY_SECONDS:
            self.recommendations.popleft()
        while self.events and self.events[0][0] < now - HISTORY_SECONDS:
            self.events.popleft()


@dataclass(frozen=True)
class Stabilized:
    replicas: int
    reason: str  # "" when the recommendation passed unchanged


class Stabilizer:
    def __init__(self) -> None:
        self.history: dict[str, ServerHistory] = {}

    def _get(self, key: str) -> ServerHistory:
        return self.history.setdefault(key, ServerHistory())

    def reset(self, key: str) -> None:
        """Forget recommendations (after an accelerator move: replica counts are not comparable)."""
        hist = self._get(key)
        hist.recommendations.clear()
        hist.events.clear()
        hist.unknown_before = None

    def forget(self, live: set[str]) -> None:
        """Drop the history of servers that no longer exist."""
        for key in [k for k in self.history if k not in live]:
            del self.history[key]

    def record_scale(self, key: str, now: float, delta: int) -> None:
        if delta:
            self._get(key).events.append((now, delta))

    def record_move(self, key: str, now: float) -> None:
        self._get(key).last_move = now

    def note_move(self, key: str, at: float) -> None:
        """A move recorded on the Deployment (e.g. before a restart): at least this recent."""
        hist = self._get(key)
        if hist.last_move is None or at > hist.last_move:
            hist.last_move = at

    def move_allowed(self, key: str, now: float, behavior: BehaviorSpec) -> tuple[bool, str]:
        last = self._get(key).last_move
        interval = behavior.accelerator_change_min_interval_seconds
        if last is not None and now - last < interval:
            return False, (
                f"last accelerator change {now - last:.0f}s ago, minimum interval {interval:.0f}s"
            )
        return True, ""

    def stabilize(
        self, key: str, *, now: float, current: int, recommended: int, behavior: BehaviorSpec
    ) -> Stabilized:
        hist = self._get(key)
        if not hist.stabilized and hist.last_move is None:
            # No history (a restart, a new leader, a new server): the replicas running now
            # stand in for the scale-down window's earlier recommendations, so the first
            # scale-down waits a full window instead of acting on one sample. (After a
            # move, the bridge count is not such a recommendation.)
            hist.unknown_before = (now, current)
        hist.stabilized = True
        hist.trim(now)
        reasons: list[str] = []
        rec = recommended
        if current > 0 and rec != current and abs(rec - current) <= behavior.tolerance * current:
            reasons.append(f"within tolerance {behavior.tolerance:g} of {current}")
            rec = current
        hist.recommendations.append((now, rec))

        up_window = _window(behavior.scale_up, 0)
        down_window = _window(behavior.scale_down, 300)
        up_candidates = [r for t, r in hist.recommendations if t >= now - up_window]
        down_candidates = [r for t, r in hist.recommendations if t >= now - down_window]
        if hist.unknown_before is not None and hist.unknown_before[0] > now - down_window:
            down_candidates.append(hist.unknown_before[1])
        target = current
        if rec > current:
            target = max(current, min(up_candidates))
            if target < rec:
                reasons.append(f"scale-up stabilisation {up_window:.0f}s holds at {target}")
        elif rec < current:
            target = min(current, max(down_candidates))
            if target > rec:
                reasons.append(f"scale-down stabilisation {down_window:.0f}s holds at {target}")

        if target > current:
            limit = _policy_limit(behavior.scale_up, hist, now, current, up=True)
            if limit is not None and target > limit:
                reasons.append(f"scale-up policy allows {limit} now")
                target = max(current, limit)
        elif target < current:
            limit = _policy_limit(behavior.scale_down, hist, now, current, up=False)
            if limit is not None and target < limit:
                reasons.append(f"scale-down policy allows {limit} now")
                target = min(current, limit)

        # minReplicas holds while there is load; scaleToZero lets an idle or unallocated
        # server (recommendation 0) go to zero, like KEDA's idleReplicaCount.
        floor = 0 if behavior.scale_to_zero and recommended == 0 else max(1, behavior.min_replicas)
        if target < floor:
            reasons.append(f"minReplicas {floor}")
            target = floor
        if behavior.max_replicas is not None and target > behavior.max_replicas:
            reasons.append(f"maxReplicas {behavior.max_replicas}")
            target = behavior.max_replicas
        return Stabilized(target, "; ".join(reasons))


def _window(rules: ScalingRules, default: int) -> float:
    value = rules.stabilization_window_seconds
    return float(default if value is None else value)


def _policy_limit(
    rules: ScalingRules, hist: ServerHistory, now: float, current: int, *, up: bool
) -> int | None:
    """The most (up) or fewest (down) replicas the policies allow now; None = unlimited."""
    if rules.select_policy == "Disabled":
        return current
    if not rules.policies:
        return None
    limits = []
    for policy in rules.policies:
        moved = sum(
            d for t, d in hist.events if t >= now - policy.period_seconds and (d > 0) == up
        )
        base = current - moved  # replicas at the start of the period
        if policy.type == "Pods":
            limits.append(base + policy.value if up else base - policy.value)
        else:
            change = max(base, 1) * policy.value / 100.0
            limits.append(math.ceil(base + change) if up else max(0, math.floor(base - change)))
    if up:
        return max(limits) if rules.select_policy == "Max" else min(limits)
    return min(limits) if rules.select_policy == "Max" else max(limits)
