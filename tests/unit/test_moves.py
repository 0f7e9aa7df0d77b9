"""Make-before-break moves: the bridge count against Kubernetes' rolling update
(tests/fakekube/rollout.py), the move record, patches, and the controller's holds."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlloop.cluster.actuator import build_patch, strategy_patch
from controlloop.loop.controller import Controller, StaticSpecs
from controlloop.loop.moves import (
    DEFAULT_STRATEGY,
    MOVE_ANNOTATION,
    MOVE_STRATEGY,
    MoveRecord,
    bridge_replicas,
)
from controlloop.loop.settings import ActuationConfig, ControllerSettings
from controlloop.loop.state import (
    Action,
    ActionResult,
    ClusterState,
    ManagedServer,
    ObservedLoad,
    Placement,
    Rollout,
)
from tests.fakekube import FakeKubeServer
from tests.fakekube.rollout import ClusterEmulator
from tests.helpers.cluster import CONFIG
from tests.helpers.moves import OneServer, _server

# --- the bridge count against the Deployment controller's rules ----------------------------


def _selector_placement(dep: dict[str, Any]) -> tuple[str, str, int]:
    acc = dep["spec"]["template"]["spec"]["nodeSelector"]["acc"]
    return acc, acc, 1


@settings(max_examples=60, deadline=None)
@given(
    rate_old=st.floats(0.2, 5.0),
    rate_new=st.floats(0.2, 5.0),
    load=st.floats(0.5, 30.0),
    extra_old=st.integers(0, 3),  # over-provisioned before the move
    spare_new=st.integers(0, 6),  # cards of the new type beyond the bridge count
    jitter=st.floats(0.0, 2.0),
    seed=st.integers(0, 1000),
)
def test_bridge_count_keeps_the_load_served_through_any_rollout(
    rate_old: float, rate_new: float, load: float, extra_old: int, spare_new: int,
    jitter: float, seed: int,
) -> None:
    """Any move old→new patched as (new template, R replicas, maxUnavailable 0): at
    every step the Ready pods serve the load, whatever the start-up order; at the end
    R pods of the new type serve."""
    m_old = math.ceil(load / rate_old)
    n_old = m_old + extra_old
    n_new = math.ceil(load / rate_new)
    bridge = bridge_replicas(target_replicas=n_new, current_replicas=n_old, needed_on_current=m_old)
    fake = FakeKubeServer()
    fake.add_deployment("ns", "d", replicas=n_old, node_selector={"acc": "old"})
    cluster = ClusterEmulator(fake, capacity={"old": n_old + bridge, "new": bridge + spare_new},
                              placement=_selector_placement, startup_s=60, startup_jitter=jitter,
                              seed=seed)
    cluster.adopt("ns", "d")
    dep = fake.get("Deployment", "ns", "d")
    dep["spec"]["replicas"] = bridge
    dep["spec"]["template"]["spec"]["nodeSelector"] = {"acc": "new"}
    dep["spec"]["strategy"] = MOVE_STRATEGY
    from tests.fakekube.store import find_resource

    fake.store.update(find_resource("Deployment"), "ns", "d", dep)
    rate = {"old": rate_old, "new": rate_new}
    for t in range(1, 120):
        cluster.step(t * 5.0)
        serving = cluster.serving("ns", "d")
        assert sum(rate[p.accelerator] for p in serving) >= load - 1e-9, (
            t, [(p.accelerator, p.ready(cluster.now)) for p in serving]
        )
    serving = cluster.serving("ns", "d")
    assert [p.accelerator for p in serving] == ["new"] * bridge


def test_bridge_count() -> None:
    # To fewer, stronger replicas: the old pods needed bound it.
    assert bridge_replicas(target_replicas=2, current_replicas=18, needed_on_current=18) == 18
    # Over-provisioned now: only what the load needs on the old type counts.
    assert bridge_replicas(target_replicas=2, current_replicas=10, needed_on_current=6) == 6
    # To more, weaker replicas: the target bounds it.
    assert bridge_replicas(target_replicas=18, current_replicas=2, needed_on_current=2) == 18
    # Under-provisioned or unsized now: every running replica counts.
    assert bridge_replicas(target_replicas=2, current_replicas=4, needed_on_current=9) == 4
    assert bridge_replicas(target_replicas=2, current_replicas=4, needed_on_current=None) == 4


# --- the record -------------------------------------------------------------------------------


def _record(**kw: Any) -> MoveRecord:
    base: dict[str, Any] = dict(from_accelerator="L40S", to_accelerator="H100", from_replicas=18,
                                bridge_replicas=18, target_replicas=2, started_at=1000.0)
    base.update(kw)
    return MoveRecord(**base)


def test_record_round_trips_through_the_annotation() -> None:
    record = _record(original_strategy={"type": "Recreate"}, from_batch=64, rollback=True)
    assert MoveRecord.from_annotation(record.to_annotation()) == record


@pytest.mark.parametrize("text,why", [
    ("{", "not JSON"),
    ("[1]", "not a JSON object"),
    (json.dumps({"from_accelerator": "A"}), "missing field"),
    (json.dumps({**json.loads(_record().to_annotation()), "bridge_replicas": "many"}), "bad field"),
    (
        json.dumps({**json.loads(_record().to_annotation()), "original_strategy": 3}),
        "not an object",
    ),
])
def test_record_errors_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        MoveRecord.from_annotation(text)


def test_rollout_complete_needs_every_pod_new_and_available() -> None:
    done = Rollout(replicas=3, generation=4, observed_generation=4, status_replicas=3,
                   updated_replicas=3, available_replicas=3)
    assert done.complete and done.old_pods == 0
    from dataclasses import replace

    assert not replace(done, observed_generation=3).complete  # not seen the patch yet
    assert not replace(done, status_replicas=5).complete  # old pods left
    assert replace(done, status_replicas=5).old_pods == 2
    assert not replace(done, available_replicas=2).complete
    assert not replace(done, updated_replicas=2).complete


# --- patches ----------------------------------------------------------------------------------


def test_strategy_patch_replaces_the_whole_strategy() -> None:
    assert strategy_patch({"type": "Recreate"}) == {"type": "Recreate", "rollingUpdate": None}
    assert strategy_patch(MOVE_STRATEGY) == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "100%"}}


def test_move_and_finish_patches() -> None:
    placement = Placement("H100", {"gpu": "h100"}, "nvidia.com/gpu", 1, 64)
    start = Action("ns", "d", "srv", replicas=18, from_replicas=18, placement=placement,
                   strategy=MOVE_STRATEGY, annotations={MOVE_ANNOTATION: "{}"}, move_phase="start")
    patch = build_patch(start, None, ActuationConfig())
    assert patch["spec"]["replicas"] == 18
    assert patch["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert patch["metadata"]["annotations"] == {MOVE_ANNOTATION: "{}"}
    assert start.kind == "move"
    finish = Action("ns", "d", "srv", replicas=2, from_replicas=18, strategy=DEFAULT_STRATEGY,
                    annotations={MOVE_ANNOTATION: None}, move_phase="finish")
    patch = build_patch(finish, None, ActuationConfig())
    assert patch["metadata"]["annotations"] == {MOVE_ANNOTATION: None}
    assert patch["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"
    assert finish.kind == "finish-move"


# --- the controller's side --------------------------------------------------------------------






def _controller(ms: ManagedServer, **settings_kw: Any) -> tuple[Controller, OneServer]:
    from controlloop.config import load_system

    fake = OneServer(ms)
    settings = ControllerSettings(verify="none", **settings_kw)
    return Controller(specs=StaticSpecs(load_system(CONFIG), settings), collector=fake,
                      actuator=fake, clock=lambda: 2000.0), fake


def test_a_move_rolling_out_is_held_and_its_cards_stay_counted() -> None:
    ms = _server(annotations={MOVE_ANNOTATION: _record().to_annotation()})
    controller, fake = _controller(ms)
    report = controller.run_cycle()
    (row,) = report.servers
    assert (row.verdict, row.held_reason) == ("held", "move-in-progress")
    assert "moving L40S→H100" in row.reason and "2 pods of the old one left" in row.reason
    assert fake.applied == []
    # The move time from the annotation rate-limits the next move (a restart forgets nothing).
    assert controller.stabilizer.history["ns/d"].last_move == 1000.0


def test_an_unreadable_move_annotation_holds_the_server() -> None:
    controller, fake = _controller(_server(annotations={MOVE_ANNOTATION: "garbage"}))
    (row,) = controller.run_cycle().servers
    assert (row.verdict, row.held_reason) == ("held", "bad-move-annotation")
    assert "controlloop.io/move is unreadable" in row.reason
    assert fake.applied == []


def test_a_rolled_out_move_is_finished() -> None:
    record = _record(to_accelerator="H100", from_accelerator="L40S",
                     original_strategy={"type": "Recreate"})
    ms = _server(annotations={MOVE_ANNOTATION: record.to_annotation()},
                 rollout=Rollout(replicas=18, generation=2, observed_generation=2,
                                 status_replicas=18, updated_replicas=18, available_replicas=18))
    controller, fake = _controller(ms)
    (row,) = controller.run_cycle().servers
    (action,) = fake.applied
    assert action.move_phase == "finish" and action.placement is None
    assert action.annotations == {MOVE_ANNOTATION: None}
    assert action.strategy == {"type": "Recreate"}
    assert action.replicas < 18  # down from the bridge count to what H100 needs
    assert "move L40S→H100 complete" in row.reason


def test_in_place_moves_carry_no_record() -> None:
    ms = _server(accelerator="L40S", replicas=18, annotations={})
    controller, fake = _controller(ms, actuation=ActuationConfig(move_strategy="in-place"))

    def steer(system: Any, **kw: Any) -> Any:
        from controlloop.optimizer import optimize

        accs = [a.model_copy(update={"cost": a.cost * 100}) if a.name == "L40S" else a
                for a in system.accelerators]
        servers = [s.model_copy(update={"allowed_accelerators": ["L40S", "H100"]})
                   for s in system.servers]
        return optimize(system.model_copy(update={"accelerators": accs, "servers": servers}), **kw)

    controller.optimize_fn = steer
    controller.run_cycle()
    (action,) = fake.applied
    assert action.placement is not None and action.placement.accelerator == "H100"
    assert action.annotations == {} and action.strategy is None and not action.move_phase
    assert action.replicas == 2


class Servers:
    """Collector and Actuator for several Deployments."""

    def __init__(self, *servers: ManagedServer) -> None:
        self.servers = servers
        self.applied: list[Action] = []

    def collect(self) -> ClusterState:
        return ClusterState(servers=self.servers)

    def apply(self, actions: list[Action]) -> list[ActionResult]:
        self.applied.extend(actions)
        return [ActionResult(a, ok=True, sent=True) for a in actions]


def test_deferral_gives_way_lowest_priority_first() -> None:
    """Two servers leave 18 L40S replicas for H100; the H100 cards hold one bridge:
    Premium (priority 1) moves, Free (priority 3) waits and reports what it runs."""
    from controlloop.config import load_system
    from controlloop.optimizer import optimize
    from controlloop.specs import CapacityEntry, CapacitySpec

    system = load_system(CONFIG)
    capacity = {**system.capacity_by_type(), "H100": 20}
    system = system.model_copy(update={"capacity": CapacitySpec(
        count=[CapacityEntry(type=t, count=c) for t, c in sorted(capacity.items())])})
    load = ObservedLoad("ok", arrival_rate_rpm=40.0, avg_in_tokens=128, avg_out_tokens=1024)
    prem = _server(deployment="prem", name="prem", accelerator="L40S", load=load, rollout=None)
    free = _server(deployment="free", name="free", service_class="Free", accelerator="L40S",
                   load=load, rollout=None)
    fake = Servers(prem, free)

    def steer(s: Any, **kw: Any) -> Any:
        accs = [a.model_copy(update={"cost": a.cost * 100}) if a.name == "L40S" else a
                for a in s.accelerators]
        servers = [x.model_copy(update={"allowed_accelerators": ["L40S", "H100"]})
                   for x in s.servers]
        return optimize(s.model_copy(update={"accelerators": accs, "servers": servers}), **kw)

    controller = Controller(specs=StaticSpecs(system, ControllerSettings(verify="none")),
                            collector=fake, actuator=fake, clock=lambda: 2000.0, optimize_fn=steer)
    rows = {r.server: r for r in controller.run_cycle().servers}
    assert [(a.server, a.move_phase) for a in fake.applied] == [("prem", "start")]
    assert (rows["free"].verdict, rows["free"].held_reason) == ("held", "move-deferred")
    from controlloop.loop.capacity import current_cost

    assert rows["free"].cost == current_cost(system, free) > 1000  # 18 L40S, not the H100 plan
