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
from dataclasses import asdict, dataclass, replace
from typing import Any

from controlloop.loop.settings import MOVE_ANNOTATION
from controlloop.loop.state import Action, ManagedServer, Placement, Rollout

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


def bridge_replicas(
    *, target_replicas: int, current_replicas: int, needed_on_current: int | None
) -> int:
    """R = max(n_new, m_X); m_X is capped by the replicas serving now.

    ``needed_on_current`` is None when the current accelerator cannot be sized
    for the load (e.g. it no longer meets the SLO): then every current replica
    counts, since the running ones are all the capacity there is.
    """
    m_current = (
        current_replicas
        if needed_on_current is None
        else min(current_replicas, needed_on_current)
    )
    return max(target_replicas, m_current)


# --- the actions of a move (pure: the controller decides when) --------------------------------


def start_move(
    action: Action,
    ms: ManagedServer,
    *,
    needed_on_current: int | None,
    now: float,
    original_strategy: dict[str, Any] | None,
) -> Action:
    """An in-place move ``action`` (target placement and replicas) made make-before-break."""
    assert action.placement is not None
    current = action.from_placement.accelerator if action.from_placement else ms.accelerator
    bridge = bridge_replicas(
        target_replicas=action.replicas, current_replicas=ms.replicas,
        needed_on_current=needed_on_current,
    )
    record = MoveRecord(
        from_accelerator=current, to_accelerator=action.placement.accelerator,
        from_replicas=ms.replicas, bridge_replicas=bridge, target_replicas=action.replicas,
        started_at=now, original_strategy=original_strategy, from_batch=ms.max_batch,
    )
    where = current or "an unknown placement"
    if ms.replicas == 0:
        needed = "nothing running now"
    elif needed_on_current is None:
        needed = f"all {ms.replicas} running on {where}"
    elif needed_on_current > ms.replicas:
        needed = f"the {ms.replicas} running on {current} ({needed_on_current} needed there)"
    else:
        needed = f"{needed_on_current} to keep on {current}"
    why = (
        f"{action.reason}; make-before-break: {_replicas(bridge)} during the rollout "
        f"(the larger of {action.replicas} on {record.to_accelerator} and {needed}), "
        f"then {action.replicas}"
    )
    return replace(
        action, replicas=bridge, reason=why, strategy=MOVE_STRATEGY,
        annotations={MOVE_ANNOTATION: record.to_annotation()}, move_phase="start",
    )


def finish_move(
    action: Action | None, ms: ManagedServer, record: MoveRecord, reason: str
) -> Action:
    """The rollout is complete: restore the strategy, drop the record, and apply this
    cycle's decision (``action``; None when it changes nothing else)."""
    done = (f"move {record.from_accelerator}→{record.to_accelerator} complete; "
            "restoring the Deployment's strategy")
    base = action or Action(
        namespace=ms.namespace, deployment=ms.deployment, server=ms.name,
        replicas=ms.replicas, from_replicas=ms.replicas, reason=reason,
        resource_version=ms.resource_version,
    )
    return replace(
        base, reason=f"{done}; {base.reason}", move_phase="finish",
        strategy=record.original_strategy or DEFAULT_STRATEGY,
        annotations={MOVE_ANNOTATION: None},
    )


def roll_back(
    ms: ManagedServer, record: MoveRecord, *, back_to: Placement, leaving: Placement | None,
    now: float,
) -> Action:
    """The new pods cannot schedule: the template goes back, replicas unchanged.

    The count stays at the bridge count, so no pod that serves now is removed
    before an old-placement pod replaces it (maxUnavailable 0).
    """
    back = MoveRecord(
        from_accelerator=record.to_accelerator, to_accelerator=record.from_accelerator,
        from_replicas=ms.replicas, bridge_replicas=ms.replicas,
        target_replicas=record.from_replicas, started_at=now,
        original_strategy=record.original_strategy, from_batch=ms.max_batch, rollback=True,
    )
    why = (f"move {record.from_accelerator}→{record.to_accelerator} stalled (pods unschedulable "
           f"on {record.to_accelerator}): rolling back, keeping {ms.replicas} replicas meanwhile")
    return Action(
        namespace=ms.namespace, deployment=ms.deployment, server=ms.name,
        replicas=ms.replicas, from_replicas=ms.replicas, placement=back_to,
        from_placement=leaving, reason=why, resource_version=ms.resource_version,
        strategy=MOVE_STRATEGY, annotations={MOVE_ANNOTATION: back.to_annotation()},
        move_phase="rollback",
    )


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def progress(record: MoveRecord, rollout: Rollout | None) -> str:
    what = "moving back" if record.rollback else "moving"
    status = rollout.describe() if rollout else "rollout status unknown"
    source = record.from_accelerator or "an unknown placement"
    return f"{what} {source}→{record.to_accelerator} make-before-break: {status}"
