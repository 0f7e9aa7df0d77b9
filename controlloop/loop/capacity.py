"""Cards: what a replica takes, what is free for the plan, and fitting actions to it.

Pure functions over the specs and one cycle's observations. Held servers and
the old pods of a move still rolling out keep their cards; a stabilised plan
can still over-commit, so scale-ups are trimmed and moves deferred to fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from controlloop.loop.cycle import ServerReport
from controlloop.loop.moves import MoveRecord
from controlloop.loop.settings import ControllerSettings
from controlloop.loop.state import Action, ClusterState, ManagedServer
from controlloop.specs import SystemSpec


def available_capacity(
    system: SystemSpec,
    settings: ControllerSettings,
    state: ClusterState,
    rows: list[tuple[ServerReport, ManagedServer]],
    moves: Mapping[str, MoveRecord],
) -> tuple[dict[str, int] | None, str]:
    """Cards per type the optimizer may plan with (None, why: unknown this cycle)."""
    if settings.capacity.source == "nodes":
        if state.node_capacity is None:
            return None, "capacity from nodes unknown this cycle: holding all"
        capacity = dict(state.node_capacity)
    else:
        capacity = system.capacity_by_type()
    # Held servers keep what they have: their cards are not available to others,
    # nor are the old-placement pods of a move still rolling out.
    for row, ms in rows:
        if row.verdict not in ("held", "skipped"):
            continue
        held = [(current_accelerator(system, ms), ms.replicas)]
        move = moves.get(ms.key)
        if move is not None and ms.rollout is not None:
            held.append((move.from_accelerator, ms.rollout.old_pods))
        for acc_name, n in held:
            acc_type, per = cards_per_replica(system, ms.model, acc_name)
            if per:
                capacity[acc_type] = max(0, capacity.get(acc_type, 0) - n * per)
    return capacity, ""


def fit_capacity(
    actions: list[tuple[ServerReport, ManagedServer, Action]],
    rows: list[tuple[ServerReport, ManagedServer]],
    system: SystemSpec,
    settings: ControllerSettings,
    state: ClusterState,
    moves: Mapping[str, MoveRecord],
) -> None:
    """Trim scale-ups that would exceed a type's capacity; defer moves that would.

    Stabilisation delays some scale-downs, so the plan the optimizer fitted to
    capacity can over-commit once stabilised. A make-before-break move holds its
    old pods until the new ones serve, and may need more new pods than the plan
    (the bridge count). Lowest priority gives way first; nothing is trimmed below
    its current replicas.
    """
    if settings.capacity.source == "nodes" and state.node_capacity is not None:
        total = dict(state.node_capacity)
    else:
        total = system.capacity_by_type()
    planned = {id(ms): (a.placement.accelerator if a.placement else None, a.replicas)
               for _, ms, a in actions}
    used: dict[str, int] = {}
    units: dict[int, tuple[str, int]] = {}

    def add(ms: ManagedServer, acc_name: str, n: int) -> tuple[str, int]:
        acc_type, per = cards_per_replica(system, ms.model, acc_name)
        if per:
            used[acc_type] = used.get(acc_type, 0) + n * per
        return acc_type, per

    for row, ms in rows:
        current = current_accelerator(system, ms)
        acc_name, n = planned.get(id(ms), (None, ms.replicas))
        acc_type, per = add(ms, acc_name or current, n)
        if per:
            units[id(ms)] = (acc_type, per)
        move = moves.get(ms.key)
        if row.verdict in ("held", "skipped") and move is not None and ms.rollout is not None:
            add(ms, move.from_accelerator, ms.rollout.old_pods)
    for _, ms, action in actions:
        if action.move_phase in ("start", "rollback"):
            add(ms, (action.from_placement.accelerator if action.from_placement else
                     current_accelerator(system, ms)), ms.replicas)

    def priority(ms: ManagedServer) -> int:
        cls = system.service_class(ms.service_class)
        return cls.priority if cls else 100

    order = sorted(
        range(len(actions)), key=lambda i: (-priority(actions[i][1]), actions[i][1].name)
    )
    for i in order:  # lowest priority first
        row, ms, action = actions[i]
        if action.move_phase != "start" or action.placement is None:
            continue
        acc_type, per = cards_per_replica(system, ms.model, action.placement.accelerator)
        over = used.get(acc_type, 0) - total.get(acc_type, 0)
        if not per or over <= 0:
            continue
        # Defer: the server stays where it is (its old cards are already counted).
        used[acc_type] -= action.replicas * per
        free = total.get(acc_type, 0) - used[acc_type]
        row.verdict, row.held_reason = "held", "move-deferred"
        row.reason = (
            f"{row.reason}; deferred: the make-before-break move needs {action.replicas} "
            f"replicas' cards of {acc_type} ({action.replicas * per}) during the rollout, "
            f"{max(0, free)} free; staying on {ms.accelerator or '?'} this cycle"
        )
        row.desired_accelerator, row.desired_replicas = ms.accelerator, ms.replicas
        row.cost = None  # filled with what it runs now
        actions[i] = (row, ms, replace(action, replicas=-1))  # dropped below
    for i in order:
        row, ms, action = actions[i]
        if action.placement is not None or action.replicas <= action.from_replicas:
            continue
        acc_type, per = units.get(id(ms), ("", 0))
        over = used.get(acc_type, 0) - total.get(acc_type, 0)
        if not per or over <= 0:
            continue
        cut = min(action.replicas - action.from_replicas, -(-over // per))
        used[acc_type] -= cut * per
        trimmed = action.replicas - cut
        note = f"capacity of {acc_type} allows {trimmed} now (stabilised scale-downs hold cards)"
        row.desired_replicas, row.reason = trimmed, f"{row.reason}; {note}"
        actions[i] = (row, ms, replace(action, replicas=trimmed, reason=f"{action.reason}; {note}"))
    actions[:] = [
        (row, ms, a) for row, ms, a in actions
        if a.replicas >= 0 and (
            a.placement is not None or a.replicas != a.from_replicas or a.max_batch
            or a.move_phase
        )
    ]
    for row, ms in rows:
        if (
            row.verdict not in ("held", "skipped", "error")
            and row.desired_replicas == ms.replicas
            and (not any(m is ms for _, m, _ in actions))
        ):
            row.verdict = "unchanged"


def cards_per_replica(system: SystemSpec, model: str, accelerator: str) -> tuple[str, int]:
    """(card type, cards per replica) of ``model`` on ``accelerator``; ("", 0) when unknown."""
    acc = system.accelerator(accelerator) if accelerator else None
    cards = system.cards_per_replica(model, accelerator) if acc is not None else 0
    if acc is None or not cards:
        return "", 0
    return acc.type, cards


def infer_accelerator(system: SystemSpec, ms: ManagedServer) -> str | None:
    """The accelerator whose nodeSelector the Deployment's pod template carries (unique match)."""
    if not ms.node_selector:
        return None
    matches = [
        acc.name
        for acc in system.accelerators
        if acc.node_selector
        and all(ms.node_selector.get(k) == v for k, v in acc.node_selector.items())
        and system.perf(ms.model, acc.name) is not None
    ]
    return matches[0] if len(matches) == 1 else None


def current_accelerator(system: SystemSpec, ms: ManagedServer) -> str:
    """The accelerator a server runs on: its label, else the unique accelerator whose
    nodeSelector its pod template carries, else "" (unknown)."""
    return ms.accelerator or infer_accelerator(system, ms) or ""


def current_cost(system: SystemSpec, ms: ManagedServer) -> float | None:
    """Cents/hour of what a server runs now (None when its accelerator is unknown)."""
    per_replica = system.cost_per_replica(ms.model, current_accelerator(system, ms))
    return None if per_replica is None else per_replica * ms.replicas
