"""Make-before-break accelerator moves (docs/actuation.md).

A move of a server from accelerator X (``n_old`` replicas) to Y (``n_new``)
is one patch of its own Deployment: the new placement, a rolling-update
strategy with ``maxUnavailable: 0``, and a *bridge* replica count

    R = max(n_new, m_X)   where m_X = replicas X needs for the load now (<= n_old).

Why R: every pod of X carries at least L/m_X >= L/R and every pod of Y at
least L/n_new >= L/R of the load L. With ``maxUnavailable: 0`` the Deployment
controller removes a ready old pod only while more than R pods are available,
so from then on any R available pods, whatever their mix, carry the load;
before that, no ready old pod is removed at all. Once the rollout is complete
(all R pods on Y and available) the next cycle restores the Deployment's own
strategy and scales R down to what Y needs. The move is recorded in an
annotation on the Deployment, so it survives a controller restart or a new
leader.

Pure functions and a record type; the controller decides, the actuator patches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from controlloop.settings import MOVE_ANNOTATION  # noqa: F401 - re-exported

# The Deployment strategy during a move: never fewer available pods than replicas.
MOVE_STRATEGY: dict[str, Any] = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "100%"},
}
# Kubernetes' default, restored when the Deployment had no explicit strategy.
DEFAULT_STRATEGY: dict[str, Any] = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
}


@dataclass(frozen=True)
class MoveRecord:
    """A move in progress, as stored in the ``controlloop.io/move`` annotation."""

    from_accelerator: str
    to_accelerator: str
    from_replicas: int
    bridge_replicas: int  # R: the Deployment's replicas during the rollout
    target_replicas: int  # what the new accelerator needs; applied after the rollout
    started_at: float
    original_strategy: dict[str, Any] | None = None  # restored after the rollout
    from_batch: int = 0
    rollback: bool = False  # this is the way back from a stalled move

    def to_annotation(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_annotation(cls, text: str) -> MoveRecord:
        """Parse the annotation; ValueError with what is wrong."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        try:
            record = cls(
                from_accelerator=str(raw["from_accelerator"]),
                to_accelerator=str(raw["to_accelerator"]),
                from_replicas=int(raw["from_replicas"]),
                bridge_replicas=int(raw["bridge_replicas"]),
                target_replicas=int(raw["target_replicas"]),
                started_at=float(raw["started_at"]),
                original_strategy=raw.get("original_strategy"),
                from_batch=int(raw.get("from_batch", 0)),
                rollback=bool(raw.get("rollback", False)),
            )
        except KeyError as exc:
            raise ValueError(f"missing field {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad field value: {exc}") from None
        if record.original_strategy is not None and not isinstance(record.original_strategy, dict):
            raise ValueError("original_strategy is not an object")
        return record


def bridge_replicas(*, target_replicas: int, current_replicas: int, needed_on_current: int | None) -> int:
    """R = max(n_new, m_X); m_X is capped by the replicas serving now.

    ``needed_on_current`` is None when the current accelerator cannot be sized
    for the load (e.g. it no longer meets the SLO): then every current replica
    counts, since the running ones are all the capacity there is.
    """
    m_current = current_replicas if needed_on_current is None else min(current_replicas, needed_on_current)
    return max(target_replicas, m_current)
