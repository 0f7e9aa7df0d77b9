"""Pending-aware capacity: unschedulable pods are charged, stuck placements backed off."""

from __future__ import annotations

from typing import Any

import pytest

from controlloop.loop.pending import PendingTracker
from controlloop.loop.settings import ControllerSettings, PendingConfig
from controlloop.loop.state import ManagedServer
from controlloop.optimizer import optimize
from controlloop.specs import SystemSpec
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import FakeLoadSource, add_server, make_controller, reading

CFG = PendingConfig(unschedulable_after_seconds=120, backoff_seconds=900)


def ms(unschedulable: int, replicas: int = 4) -> ManagedServer:
    return ManagedServer(
        namespace="llm", deployment="granite", name="granite", model="m", service_class="c",
        accelerator="A100", max_batch=8, replicas=replicas, ready_replicas=replicas - unschedulable,
        unschedulable_pods=unschedulable,
    )


def test_tracker_backs_off_after_the_threshold_then_forgives() -> None:
    t = PendingTracker()
    t.observe(ms(2), "A100", 0.0, CFG)
    assert t.cap(ms(2), "A100") is None  # not stuck long enough yet
    t.observe(ms(2), "A100", 119.0, CFG)
    assert t.excluded("llm/granite") == set()
    t.observe(ms(2), "A100", 120.0, CFG)
    assert t.excluded("llm/granite") == {"A100"} and t.cap(ms(2), "A100") == 2
    t.observe(ms(0), "A100", 500.0, CFG)  # pods scheduled: back-off still runs its course
    assert t.cap(ms(0), "A100") == 4
    t.observe(ms(0), "A100", 1020.0, CFG)
    assert t.cap(ms(0), "A100") is None and t.excluded("llm/granite") == set()


def test_tracker_resets_when_pods_schedule_before_the_threshold() -> None:
    t = PendingTracker()
    t.observe(ms(1), "A100", 0.0, CFG)
    t.observe(ms(0), "A100", 100.0, CFG)
    t.observe(ms(1), "A100", 150.0, CFG)
    t.observe(ms(1), "A100", 200.0, CFG)
    assert t.cap(ms(1), "A100") is None  # the clock restarted at 150
    t.forget(set())
    assert t._since == {} and t._until == {}


def _stuck_server(fake: FakeKubeServer, running: int, stuck: int, acc: str = "A100") -> None:
    add_server(fake, "llm", "granite", model="granite_13b", cls="Premium", accelerator=acc,
               replicas=running + stuck, running=running)
    for i in range(stuck):
        fake.add_pod("llm", f"granite-stuck-{i}", {"app": "granite"}, unschedulable=True)


def test_controller_caps_and_excludes_a_stuck_placement(
    fake_kube: FakeKubeServer, kube_client: Any
) -> None:
    # MI300X is where the optimizer wants granite at this load, so it stays there.
    _stuck_server(fake_kube, running=2, stuck=2, acc="MI300X")
    now = [10_000.0]
    seen: list[SystemSpec] = []

    def spy(system: SystemSpec, **kw: Any) -> Any:
        seen.append(system)
        return optimize(system, **kw)

    settings = ControllerSettings().model_copy(update={"pending": CFG})
    controller = make_controller(kube_client, FakeLoadSource({"granite": reading(1200)}),
                                 clock=lambda: now[0], settings=settings)
    controller.optimize_fn = spy
    first = controller.run_cycle().servers[0]
    assert first.verdict == "scaled" and first.desired_accelerator == "MI300X", first.reason
    assert "MI300X" in (seen[-1].servers[0].allowed_accelerators or [])

    now[0] += 150  # still stuck past unschedulableAfterSeconds
    replicas = fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"]
    row = controller.run_cycle().servers[0]
    assert "MI300X" not in (seen[-1].servers[0].allowed_accelerators or [])
    assert row.desired_accelerator == "MI300X"  # (the current one stays a candidate)
    assert row.desired_replicas == replicas - 2, row.reason  # ready + non-stuck
    assert "MI300X backed off (pods unschedulable): capped at" in row.reason

    now[0] += 60  # still backed off: never asks for more there
    row = controller.run_cycle().servers[0]
    assert row.desired_replicas is not None and row.desired_replicas <= replicas - 2


def test_unschedulable_pods_of_a_held_server_count_against_capacity(
    fake_kube: FakeKubeServer, kube_client: Any
) -> None:
    _stuck_server(fake_kube, running=1, stuck=3)  # held: no load reading
    add_server(fake_kube, "llm", "other", model="granite_13b", cls="Premium", replicas=1)
    fake_kube.add_node("n1", labels={"nvidia.com/gpu.product": "A100"},
                       allocatable={"nvidia.com/gpu": "16"})
    seen: list[SystemSpec] = []

    def spy(system: SystemSpec, **kw: Any) -> Any:
        seen.append(system)
        return optimize(system, **kw)

    base = ControllerSettings()
    settings = base.model_copy(
        update={"capacity": base.capacity.model_copy(update={"source": "nodes"})}
    )
    controller = make_controller(kube_client, FakeLoadSource({"other": reading(60)}),
                                 settings=settings)
    controller.optimize_fn = spy
    report = controller.run_cycle()
    held = next(s for s in report.servers if s.server == "granite")
    assert held.verdict == "held"
    system = seen[-1]
    a100 = next(c.count for c in system.capacity.count if c.type == "A100")
    acc = system.accelerator("A100")
    perf = system.perf("granite_13b", "A100")
    assert acc is not None and perf is not None
    assert a100 == 16 - 4 * perf.acc_count * acc.multiplicity  # all 4 replicas, stuck ones too


@pytest.mark.parametrize("stuck", [0])
def test_no_pending_no_cap(stuck: int, fake_kube: FakeKubeServer, kube_client: Any) -> None:
    _stuck_server(fake_kube, running=1, stuck=stuck)
    controller = make_controller(kube_client, FakeLoadSource({"granite": reading(1200)}))
    row = controller.run_cycle().servers[0]
    assert "backed off" not in row.reason
