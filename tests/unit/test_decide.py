"""Per-server deciding (controlloop/loop/decide.py), table by table, with no fakes:
a real system, the real optimizer's solution, real behaviour state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controlloop.config import load_system
from controlloop.loop.annotations import BehaviorResolver
from controlloop.loop.behavior import Stabilizer
from controlloop.loop.cycle import ServerReport
from controlloop.loop.decide import CycleContext, decide, demand_rpm, sizing_request
from controlloop.loop.forecast import Foresight
from controlloop.loop.pending import PendingTracker
from controlloop.loop.settings import ControllerSettings
from controlloop.loop.state import ManagedServer, ObservedLoad
from controlloop.optimizer import DecisionStatus, optimize
from controlloop.optimizer.solution import ServerDecision

CONFIG = Path(__file__).resolve().parents[2] / "config"
SYSTEM = load_system(CONFIG)
NOW = 10_000.0


def server(**kw: Any) -> ManagedServer:
    base: dict[str, Any] = dict(
        namespace="ns", deployment="d", name="srv", model="llama3_8b", service_class="Premium",
        accelerator="H100", max_batch=64, replicas=4, ready_replicas=4,
        load=ObservedLoad("ok", arrival_rate_rpm=600.0, avg_in_tokens=128, avg_out_tokens=512),
    )
    base.update(kw)
    return ManagedServer(**base)


def context(settings: ControllerSettings | None = None, **kw: Any) -> CycleContext:
    return CycleContext(system=SYSTEM, settings=settings or ControllerSettings(), now=NOW,
                        behavior_for=BehaviorResolver(), stabilizer=Stabilizer(),
                        pending=PendingTracker(), **kw)


def solved(ctx: CycleContext, ms: ManagedServer) -> tuple[CycleContext, ServerDecision]:
    capacity = SYSTEM.capacity_by_type()
    request, notes = sizing_request(ctx, [ms], capacity, Foresight())
    solution = optimize(request)
    return replace(ctx, solution=solution, notes=notes), solution.decisions[ms.name]


def row_for(ms: ManagedServer) -> ServerReport:
    return ServerReport(server=ms.name, namespace=ms.namespace, deployment=ms.deployment,
                        model=ms.model, service_class=ms.service_class,
                        current_accelerator=ms.accelerator, current_replicas=ms.replicas,
                        ready_replicas=ms.ready_replicas, pending_pods=0, load={})


def with_history(ctx: CycleContext, ms: ManagedServer) -> CycleContext:
    """A server the controller has seen for a full window at its current count."""
    behavior = ctx.behavior(ms)
    for t in range(0, 700, 60):
        ctx.stabilizer.stabilize(ms.key, now=NOW - 700 + t, current=ms.replicas,
                                 recommended=ms.replicas, behavior=behavior)
    return ctx


# (case, decision override, expected verdict, expected action replicas or None, reason part)
TABLE = [
    ("scale up on the same accelerator", dict(replicas=7), "unchanged", 7, ""),
    ("a big scale-up is limited by the scale-up policy (100% or 4 pods per 15 s)",
     dict(replicas=20), "unchanged", 8, "scale-up policy allows 8"),
    ("nothing to change", dict(replicas=4), "unchanged", None, ""),
    ("unallocated is held, current kept",
     dict(status=DecisionStatus.UNALLOCATED, accelerator="", replicas=0), "held", None,
     "unallocated"),
]


@pytest.mark.parametrize(("case", "override", "verdict", "replicas", "why"), TABLE,
                         ids=[t[0] for t in TABLE])
def test_decision_table(case: str, override: dict[str, Any], verdict: str,
                        replicas: int | None, why: str) -> None:
    ms = server()
    ctx, decision = solved(with_history(context(), ms), ms)
    decision = replace(decision, **{"accelerator": "H100", "batch": ms.max_batch, **override})
    row = row_for(ms)
    action = decide(ctx, row, ms, decision)
    assert row.verdict == verdict, (case, row.reason)
    assert (action.replicas if action else None) == replicas, (case, row.reason)
    assert why in row.reason, row.reason


def test_an_accelerator_without_node_selector_cannot_be_placed() -> None:
    bare = SYSTEM.model_copy(update={"accelerators": [
        a.model_copy(update={"node_selector": {}}) if a.name == "AIU2" else a
        for a in SYSTEM.accelerators]})
    ms = server()
    ctx, decision = solved(with_history(context(), ms), ms)
    ctx = replace(ctx, system=bare)
    row = row_for(ms)
    action = decide(ctx, row, ms, replace(decision, accelerator="AIU2", replicas=2))
    assert action is None and row.verdict == "held" and row.held_reason == "no-node-selector"


def test_first_scale_down_after_a_restart_waits_a_window() -> None:
    """No history (restart, new leader): the scale-down is held back by the window."""
    ms = server(replicas=10, ready_replicas=10)
    ctx, decision = solved(context(), ms)
    decision = replace(decision, accelerator="H100", replicas=3, batch=ms.max_batch)
    row = row_for(ms)
    action = decide(ctx, row, ms, decision)
    assert action is None and row.verdict == "unchanged" and row.desired_replicas == 10
    assert "window" in row.reason or "stabil" in row.reason, row.reason


def test_scale_down_after_a_quiet_window_goes_through() -> None:
    ms = server(replicas=10, ready_replicas=10)
    ctx = context()
    behavior = ctx.behavior(ms)
    for t in range(0, 700, 60):  # the last window recommended 3 all along
        ctx.stabilizer.stabilize(ms.key, now=NOW - 700 + t, current=10, recommended=3,
                                 behavior=behavior)
    ctx, decision = solved(ctx, ms)
    decision = replace(decision, accelerator="H100", replicas=3, batch=ms.max_batch)
    action = decide(ctx, row_for(ms), ms, decision)
    assert action is not None and action.replicas == 3


@pytest.mark.parametrize("strategy", ["in-place", "make-before-break"])
def test_a_move_gets_a_placement_with_the_new_node_selector(strategy: str) -> None:
    ms = server(accelerator="L40S", replicas=4)
    settings = ControllerSettings.model_validate({"actuation": {"moveStrategy": strategy}})
    ctx, decision = solved(with_history(context(settings), ms), ms)
    decision = replace(decision, status=DecisionStatus.MEETS_SLO, accelerator="H100",
                       replicas=2, batch=64)
    row = row_for(ms)
    action = decide(ctx, row, ms, decision)
    assert action is not None and action.placement is not None
    assert action.placement.accelerator == "H100"
    assert action.placement.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert action.placement.count == SYSTEM.cards_per_replica("llama3_8b", "H100")
    if strategy == "make-before-break":  # bridge: never fewer pods than the load needs now
        assert action.replicas >= 2 and action.annotations
    else:
        assert action.replicas == 2


def test_a_recent_move_keeps_the_server_where_it_is() -> None:
    """Accelerator changes are rate-limited: the optimizer is asked to size it in place."""
    ms = server(accelerator="L40S")
    ctx = with_history(context(), ms)
    ctx.stabilizer.record_move(ms.key, NOW - 30)
    request, notes = sizing_request(ctx, [ms], SYSTEM.capacity_by_type(), Foresight())
    assert request.servers[0].allowed_accelerators == ["L40S"]
    assert any("paused" in n for n in notes[ms.key])


def test_a_backed_off_placement_is_left_out_of_the_request() -> None:
    ms = server(accelerator="L40S", unschedulable_pods=2,
                unschedulable_by_accelerator={"L40S": 2}, pending_pods=2)
    settings = ControllerSettings.model_validate(
        {"pending": {"unschedulableAfterSeconds": 60}})
    ctx = context(settings)
    ctx.pending.observe(ms, "L40S", NOW - 600, settings.pending, None)
    ctx.pending.observe(ms, "L40S", NOW, settings.pending, None)
    request, notes = sizing_request(ctx, [ms], SYSTEM.capacity_by_type(), Foresight())
    assert "L40S" not in request.servers[0].allowed_accelerators
    assert any("backed off" in n for n in notes[ms.key])


@pytest.mark.parametrize(("rate", "waiting", "drain", "expected"), [
    (600.0, 0, 60.0, 600.0),
    (600.0, 30, 60.0, 630.0),  # 30 queued drained within 60 s: +30 req/min
    (600.0, 30, 0.0, 600.0),  # draining off
    (0.0, 30, 60.0, 0.0),  # no arrivals: the queue alone does not size a server up
])
def test_demand_adds_the_backlog_drain_rate(rate: float, waiting: int, drain: float,
                                            expected: float) -> None:
    load = ObservedLoad("ok", arrival_rate_rpm=rate, waiting=waiting)
    assert demand_rpm(load, drain) == pytest.approx(expected)
