"""Per-Deployment behaviour overrides from ``controlloop.io/*`` annotations.

Precedence, most specific first: Deployment annotations, then the
``servers:`` entry of controller.yaml, then the global ``behavior``.

Annotations are written by people with ``kubectl annotate``: a garbage value
is ignored with a logged reason (once per Deployment and value, not every
cycle) and never fails a cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from controlloop.bounds import MAX_REPLICAS as MAX_REPLICAS_BOUND
from controlloop.loop.settings import (
    ANNOTATION_PREFIX,
    MOVE_ANNOTATION,
    BehaviorSpec,
    ControllerSettings,
    effective_behavior,
)
from controlloop.loop.state import ManagedServer

log = logging.getLogger(__name__)

MIN_REPLICAS = ANNOTATION_PREFIX + "min-replicas"
MAX_REPLICAS = ANNOTATION_PREFIX + "max-replicas"
SCALE_DOWN_WINDOW = ANNOTATION_PREFIX + "scale-down-stabilization-seconds"
SCALE_UP_WINDOW = ANNOTATION_PREFIX + "scale-up-stabilization-seconds"
TOLERANCE = ANNOTATION_PREFIX + "tolerance"
SCALE_TO_ZERO = ANNOTATION_PREFIX + "scale-to-zero"
MOVE_INTERVAL = ANNOTATION_PREFIX + "accelerator-change-min-interval-seconds"

# Written by the controller itself, not a behaviour override.
OWN_ANNOTATIONS = {MOVE_ANNOTATION}

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _count(text: str, *, minimum: int) -> int:
    if len(text) > 20:  # int() of a huge digit string is slow and no count is that long
        raise ValueError("not a replica count")
    value = int(text.strip())  # "2.5" and "abc" raise ValueError
    if value < minimum:
        raise ValueError(f"must be >= {minimum}")
    if value > MAX_REPLICAS_BOUND:  # [bounds] Deployment.spec.replicas is an int32
        raise ValueError(f"must be <= {MAX_REPLICAS_BOUND}")
    return value


_MAX_SECONDS = 366 * 86400.0  # [bounds] a window or interval longer than a year never applies


def _seconds(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value) or value < 0 or value > _MAX_SECONDS:
        raise ValueError(f"must be a finite number of seconds in 0..{_MAX_SECONDS:.0f}")
    return value


def _tolerance(text: str) -> float:
    value = float(text.strip())
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError("must be in [0, 1)")
    return value


def _flag(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("must be true or false")


# annotation -> (field of BehaviorSpec, parser); windows land inside the ScalingRules.
_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    MIN_REPLICAS: ("min_replicas", lambda t: _count(t, minimum=0)),
    MAX_REPLICAS: ("max_replicas", lambda t: _count(t, minimum=1)),
    SCALE_DOWN_WINDOW: ("scale_down", lambda t: int(_seconds(t))),
    SCALE_UP_WINDOW: ("scale_up", lambda t: int(_seconds(t))),
    TOLERANCE: ("tolerance", _tolerance),
    SCALE_TO_ZERO: ("scale_to_zero", _flag),
    MOVE_INTERVAL: ("accelerator_change_min_interval_seconds", _seconds),
}


def parse_annotations(annotations: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """``({annotation: parsed value}, [problems])``; unknown ``controlloop.io/`` keys are
    reported too (a typo should not silently do nothing)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, raw in sorted(annotations.items()):
        if not key.startswith(ANNOTATION_PREFIX) or key in OWN_ANNOTATIONS:
            continue
        entry = _PARSERS.get(key)
        if entry is None:
            problems.append(f"{key}: unknown annotation, ignored")
            continue
        try:
            values[key] = entry[1](str(raw))
        except ValueError as exc:
            problems.append(f"{key}={raw!r}: {exc}; ignored")
    return values, problems


def apply_annotations(
    base: BehaviorSpec, annotations: dict[str, str]
) -> tuple[BehaviorSpec, list[str]]:
    """``base`` with the valid annotation overrides applied, and what was ignored."""
    values, problems = parse_annotations(annotations)
    update: dict[str, Any] = {}
    for key, value in values.items():
        name = _PARSERS[key][0]
        if name in ("scale_up", "scale_down"):
            rules = getattr(base, name)
            update[name] = rules.model_copy(update={"stabilization_window_seconds": value})
        else:
            update[name] = value
    lo = update.get("min_replicas", base.min_replicas)
    hi = update.get("max_replicas", base.max_replicas)
    if hi is not None and lo > hi:
        # Contradiction: drop what the annotations brought in, keep the configured bounds.
        for key, name in ((MIN_REPLICAS, "min_replicas"), (MAX_REPLICAS, "max_replicas")):
            if name in update:
                problems.append(f"{key}={annotations[key]!r}: minReplicas {lo} > maxReplicas "
                                f"{hi}; ignored")
                del update[name]
    return (base.model_copy(update=update) if update else base), problems


class BehaviorResolver:
    """The effective behaviour of one server: annotations over ``servers:`` over globals."""

    def __init__(self) -> None:
        self._reported: set[tuple[str, str]] = set()

    def __call__(self, settings: ControllerSettings, ms: ManagedServer) -> BehaviorSpec:
        base = effective_behavior(settings, settings.servers.get(ms.name))
        behavior, problems = apply_annotations(base, ms.annotations)
        if len(self._reported) > 10_000:  # bound memory if annotations churn
            self._reported.clear()
        for problem in problems:
            if (ms.key, problem) not in self._reported:
                self._reported.add((ms.key, problem))
                log.warning("%s: annotation %s", ms.key, problem, extra={"server": ms.name})
        return behavior
