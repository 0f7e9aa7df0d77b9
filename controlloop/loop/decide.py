"""Per-server deciding, apart from orchestrating (as HPA keeps its replica calculator
apart from the reconciler).

Plain functions over one frozen per-cycle :class:`CycleContext`: what to ask the
optimizer for each server (:func:`sizing_request`), and how its decision becomes
an :class:`Action` under the behaviour rules (:func:`decide`). The controller only
collects, calls these, actuates and records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from controlloop.bounds import MAX_ARRIVAL_RPM
from controlloop.loop.behavior import Stabilizer
from controlloop.loop.capacity import current_accelerator
from controlloop.loop.cycle import ServerReport
from controlloop.loop.forecast import Foresight, Lead
from controlloop.loop.moves import (
    DEFAULT_STRATEGY,
    MOVE_ANNOTATION,
    MoveRecord,
    finish_move,
    start_move,
)
from controlloop.loop.pending import PendingTracker
from controlloop.loop.settings import BehaviorSpec, ControllerSettings
from controlloop.loop.state import Action, ManagedServer, ObservedLoad, Placement, placement_for
from controlloop.optimizer.solution import Candidate, DecisionStatus, ServerDecision, Solution
from controlloop.specs import (
    AllocationSpec,
    CapacityEntry,
    CapacitySpec,
    LoadSpec,
    ServerSpec,
    SystemSpec,
)

BehaviorFor = Callable[[ControllerSettings, ManagedServer], BehaviorSpec]


@dataclass(frozen=True)
class CycleContext:
    """What every per-server decision of one cycle reads.

    ``stabilizer`` and ``pending`` carry history across cycles (HPA's recommendation
    window, unschedulable back-off); deciding consults them, the controller owns them.
    ``notes`` are the sizing notes per server key, appended to its decision's reason.
    """

    system: SystemSpec
    settings: ControllerSettings
    now: float
    behavior_for: BehaviorFor
    stabilizer: Stabilizer
    pending: PendingTracker
    solution: Solution | None = None
    notes: Mapping[str, list[str]] = field(default_factory=dict)
    # servers in panic (loop/surge.py), key -> why: they may scale up, never down
    panic: Mapping[str, str] = field(default_factory=dict)

    def behavior(self, ms: ManagedServer) -> BehaviorSpec:
        return self.behavior_for(self.settings, ms)  # annotations > servers: > globals


# --- what to ask the optimizer -------------------------------------------------------------


def demand_rpm(load: ObservedLoad, drain_seconds: float) -> float:
    """Arrival rate plus the rate that drains the observed queue within ``drain_seconds``."""
    rate = load.arrival_rate_rpm or 0.0
    if drain_seconds > 0 and load.waiting and load.waiting > 0 and rate > 0:
        rate += 60.0 * load.waiting / drain_seconds
    return rate


def sized_demand(
    ctx: CycleContext, ms: ManagedServer, foresight: Foresight, notes: list[str]
) -> tuple[float, Lead]:
    """What to size for: arrivals, the backlog's drain rate, and a rising load's lead."""
    drain = ctx.settings.backlog_drain_seconds
    panic = ctx.behavior(ms).panic
    if ms.key in ctx.panic and drain > 0:
        # in panic the queue is the SLO miss: drain it faster
        drain = min(drain, panic.backlog_drain_seconds)
    demand = demand_rpm(ms.load, drain)
    lead = foresight.lead(ms.key, ctx.behavior(ms).forecaster, ctx.now,
                          ms.load.arrival_rate_rpm or 0.0, ctx.settings.forecast,
                          ctx.settings.interval_seconds)
    if lead.note:
        notes.append(lead.note)
    return demand + lead.rpm, lead


def allowed_accelerators(
    ctx: CycleContext, ms: ManagedServer, movable: list[str], current: str, notes: list[str]
) -> list[str]:
    """Where the optimizer may place a server this cycle."""
    if current and ctx.settings.actuation.mode == "metrics":
        # An autoscaler scales replicas through our series; it cannot change the pod template.
        notes.append(f"metrics mode: sized on {current} (no accelerator moves)")
        return [current]
    # A server moved recently stays put: the optimizer then sizes it on its current
    # accelerator within capacity (not the controller after the fact).
    may_move, why_not = ctx.stabilizer.move_allowed(ms.key, ctx.now, ctx.behavior(ms))
    if current and not may_move:
        notes.append(f"accelerator changes paused ({why_not}): sized on {current}")
        return [current]
    allowed = set(movable) | ({current} if current else set())
    # [pending] leave out backed-off placements, unless nothing would be left.
    excluded = ctx.pending.excluded(ms.key) & allowed
    if excluded and allowed - excluded:
        notes.append(f"{', '.join(sorted(excluded))} backed off (pods unschedulable)")
        return sorted(allowed - excluded)
    return sorted(allowed)


def sizing_request(
    ctx: CycleContext,
    servers: list[ManagedServer],
    capacity: dict[str, int],
    foresight: Foresight,
    leads: dict[str, Lead] | None = None,
) -> tuple[SystemSpec, dict[str, list[str]]]:
    """The system to optimize this cycle (observed loads, free capacity, allowed moves)
    and the notes per server key explaining how it was sized (``leads``: filled with
    each server's forecast lead)."""
    system = ctx.system
    movable = [a.name for a in system.accelerators if a.node_selector]
    specs: list[ServerSpec] = []
    notes: dict[str, list[str]] = {}
    for ms in servers:
        behavior = ctx.behavior(ms)
        load = ms.load
        current = current_accelerator(system, ms)
        own = notes.setdefault(ms.key, [])
        idle = not (load.arrival_rate_rpm or 0) and not (load.waiting or 0)
        min_replicas = 0 if behavior.scale_to_zero and idle else max(1, behavior.min_replicas)
        allowed = allowed_accelerators(ctx, ms, movable, current, own)
        demand, lead = sized_demand(ctx, ms, foresight, own)
        if leads is not None:
            leads[ms.key] = lead
        specs.append(
            ServerSpec(
                name=ms.name,
                model=ms.model,
                keep_accelerator=False,
                min_num_replicas=min_replicas,
                allowed_accelerators=allowed,
                current_alloc=AllocationSpec(
                    accelerator=current,
                    num_replicas=ms.replicas,
                    max_batch=ms.max_batch,
                    load=LoadSpec(
                        # [bounds] backlog and forecast lead may add up past the bound
                        arrival_rate=min(demand, MAX_ARRIVAL_RPM),
                        avg_in_tokens=load.avg_in_tokens or 0.0,
                        avg_out_tokens=load.avg_out_tokens or 0.0,
                    ),
                ),
                service_class=ms.service_class,
            )
        )
    request = system.model_copy(
        update={
            "servers": specs,
            "capacity": CapacitySpec(
                count=[CapacityEntry(type=t, count=c) for t, c in sorted(capacity.items())]
            ),
        }
    )
    return request, notes


# --- from a decision to an action ----------------------------------------------------------


def candidate(solution: Solution, server: str, accelerator: str) -> Candidate | None:
    """The optimizer's candidate for ``server`` on ``accelerator`` (None if it had none)."""
    for cand in solution.candidates.get(server, []):
        if cand.accelerator == accelerator:
            return cand
    return None


def placement(system: SystemSpec, ms: ManagedServer, acc_name: str, batch: int) -> Placement | None:
    """Where a server's pods go on ``acc_name`` (None: no perf data or no such accelerator)."""
    acc = system.accelerator(acc_name)
    cards = system.cards_per_replica(ms.model, acc_name)
    if acc is None or not cards:
        return None
    return placement_for(
        acc.name, node_selector=acc.node_selector, resource=acc.resource,
        count=cards, max_batch=batch,
    )


def decide(
    ctx: CycleContext,
    row: ServerReport,
    ms: ManagedServer,
    decision: ServerDecision,
    finishing: MoveRecord | None = None,
) -> Action | None:
    """The action for one server's decision (None: nothing to change), filling ``row``.

    A change of accelerator becomes a make-before-break move unless moves are in place;
    a finished move is completed (strategy restored, bridge scaled to the target).
    """
    action = decide_target(ctx, row, ms, decision)
    if action is not None and action.placement is not None:
        if ctx.settings.actuation.move_strategy == "make-before-break":
            current = action.from_placement.accelerator if action.from_placement else ms.accelerator
            stay = candidate(_solution(ctx), ms.name, current) if current else None
            needed = None
            if stay is not None:
                # The old placement's pods go no faster than a scale-down there would:
                # the stabilisation window holds them like any other replicas.
                needed = ctx.stabilizer.stabilize(
                    ms.key, now=ctx.now, current=ms.replicas,
                    recommended=min(stay.replicas, ms.replicas), behavior=ctx.behavior(ms),
                ).replicas
            action = start_move(
                action, ms, needed_on_current=needed, now=ctx.now,
                original_strategy=finishing.original_strategy if finishing else ms.strategy,
            )
            row.desired_replicas, row.reason = action.replicas, action.reason
        elif finishing is not None:  # switched to in-place mid-move: tidy up
            action = replace(action, annotations={MOVE_ANNOTATION: None},
                             strategy=finishing.original_strategy or DEFAULT_STRATEGY)
    elif finishing is not None:
        # Rolled out: restore the strategy, drop the record, scale from the bridge
        # count to what the new accelerator needs at this cycle's load.
        action = finish_move(action, ms, finishing, row.reason)
        row.reason = action.reason
    return action


def _solution(ctx: CycleContext) -> Solution:
    if ctx.solution is None:
        raise ValueError("deciding needs the cycle's solution in its context")
    return ctx.solution


def decide_target(
    ctx: CycleContext, row: ServerReport, ms: ManagedServer, decision: ServerDecision
) -> Action | None:
    """Accelerator, replicas and batch for one server under rate limits, stabilisation
    and back-off; the action that gets there, or None when unchanged or held."""
    system, solution, now = ctx.system, _solution(ctx), ctx.now
    behavior = ctx.behavior(ms)
    current_acc = current_accelerator(system, ms)
    row.decision_status = decision.status.value
    row.recommended_accelerator = decision.accelerator
    row.recommended_replicas = decision.replicas
    row.slo_itl_ms, row.slo_ttft_ms = decision.slo_itl_ms, decision.slo_ttft_ms
    if decision.status is DecisionStatus.UNALLOCATED or not decision.accelerator:
        if behavior.scale_to_zero and decision.replicas == 0 and ms.replicas > 0:
            target_acc, target_n, batch = current_acc, 0, ms.max_batch
            why = f"scale to zero allowed: {decision.reason}"
        else:
            row.verdict, row.held_reason = "held", "unallocated"
            row.reason = f"optimizer left it unallocated ({decision.reason}); keeping current"
            _fill_current(row, ms, solution, current_acc)
            return None
    else:
        target_acc, target_n, batch = decision.accelerator, decision.replicas, decision.batch
        why = decision.reason
        for note in ctx.notes.get(ms.key, []):
            why = f"{why}; {note}"
        row.predicted_itl_ms, row.predicted_ttft_ms = decision.itl_ms, decision.ttft_ms
        row.cost = decision.cost

    target_placement: Placement | None = None
    from_placement = placement(system, ms, current_acc, ms.max_batch) if current_acc else None
    if target_acc != current_acc:
        allowed, why_not = ctx.stabilizer.move_allowed(ms.key, now, behavior)
        if current_acc and not allowed:
            stay = candidate(solution, ms.name, current_acc)
            if stay is None:
                row.verdict, row.held_reason = "held", "move-rate-limited"
                row.reason = f"wants {target_acc} but {why_not}; current accelerator infeasible"
                return None
            target_acc, target_n, batch = current_acc, stay.replicas, stay.batch
            why = f"would move to {decision.accelerator} but {why_not}; staying on {current_acc}"
            row.predicted_itl_ms, row.predicted_ttft_ms = stay.itl_ms, stay.ttft_ms
            row.cost = stay.cost_per_replica * stay.replicas
        else:
            target_placement = placement(system, ms, target_acc, batch)
            if target_placement is None:
                row.verdict, row.held_reason = "held", "no-node-selector"
                row.reason = f"{target_acc} has no nodeSelector: cannot place replicas there"
                return None

    if target_placement is None:
        stable = ctx.stabilizer.stabilize(
            ms.key, now=now, current=ms.replicas, recommended=target_n, behavior=behavior
        )
        if stable.reason:
            why = f"{why}; {stable.reason}"
        target_n = stable.replicas
        # a panic blocks a load-driven scale-down; the unschedulable cap below still holds
        panic = ctx.panic.get(ms.key)
        if panic is not None and target_n < ms.replicas:
            why = f"{why}; panic ({panic}): no scale-down, keeping {ms.replicas}"
            target_n = ms.replicas
        cap = ctx.pending.cap(ms, target_acc)  # [pending]
        if cap is not None and target_n > cap:
            why = f"{why}; {target_acc} backed off (pods unschedulable): capped at {cap}"
            target_n = cap
    row.desired_accelerator, row.desired_replicas, row.batch = target_acc, target_n, batch
    row.reason = why
    relabel = batch != ms.max_batch and batch > 0
    if target_placement is None and target_n == ms.replicas and not relabel:
        row.verdict = "unchanged"
        return None
    return Action(
        namespace=ms.namespace,
        deployment=ms.deployment,
        server=ms.name,
        replicas=target_n,
        from_replicas=ms.replicas,
        placement=target_placement,
        from_placement=from_placement,
        max_batch=batch if relabel else None,
        reason=why,
        resource_version=ms.resource_version,
    )


def _fill_current(row: ServerReport, ms: ManagedServer, solution: Solution, acc: str) -> None:
    cand = candidate(solution, ms.name, acc)
    row.desired_accelerator, row.desired_replicas = acc, ms.replicas
    if cand is not None:
        row.cost = cand.cost_per_replica * ms.replicas
