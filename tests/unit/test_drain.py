"""Graceful scale-down: pod-deletion-cost from running requests, through the Controller.

The Controller runs against the emulated cluster, whose ReplicaSet removes the
lowest pod-deletion-cost first (as kube's does): the pod that goes must be the
least loaded one, read from its per-pod running requests.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from controlloop.demo.cluster import EmulatedCluster, Termination
from controlloop.loop.controller import Controller, StaticSpecs
from controlloop.loop.drain import deletion_costs, removed_first
from controlloop.loop.settings import DELETION_COST, ControllerSettings
from controlloop.loop.state import ManagedServer
from controlloop.specs import SystemSpec
from tests.helpers.systems import one_scaling_server

SERVER = "Premium-llama_7b"
ACC = "MI300X"


def _ms(running: tuple[str, ...], per_pod: dict[str, float]) -> ManagedServer:
    return ManagedServer(namespace="ns", deployment="d", name="s", model="m", service_class="c",
                         accelerator="A", max_batch=8, replicas=len(running),
                         ready_replicas=len(running), running_pods=running, pod_running=per_pod)


def test_costs_are_running_requests_and_unknown_pods_count_as_busiest() -> None:
    ms = _ms(("a", "b", "c", "d"), {"a": 4.0, "b": 0.0, "c": 2.4, "gone": 1.0})
    costs = deletion_costs(ms)
    assert costs == {"a": 4, "b": 0, "c": 3, "d": 5}  # d: no sample -> after every known
    assert removed_first(ms, costs, 2) == ["b", "c"]
    assert deletion_costs(_ms(("a", "b"), {})) == {}  # nothing known: kube's own order


@cache
def _system() -> SystemSpec:
    return one_scaling_server(SERVER, ACC)  # only ACC has a nodeSelector: never moves


def _run(*, deletion_cost: bool) -> tuple[list[str], list[str], dict[str, int], int, str]:
    """3 pods, the newest made busy, load dropping: who is left after the scale-down."""
    rate = {"rpm": 400.0}
    cluster = EmulatedCluster(_system(), {}, capacity=None, startup_s=0.0, seed=7,
                              rate_fn=lambda _s, _t: rate["rpm"], termination=Termination())
    cluster.place(SERVER, ACC, 3)
    settings = ControllerSettings.model_validate({
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}, "tolerance": 0},
        "actuation": {"podDeletionCost": deletion_cost},
        "forecast": {"leadSeconds": 0},
    })
    ctl = Controller(specs=StaticSpecs(_system(), settings), collector=cluster,
                     actuator=cluster, clock=cluster.now_s)
    cluster.advance(60)
    cluster.collect()  # the next window starts here
    rate["rpm"] = 30.0  # one replica is plenty now
    cluster.advance(57)
    reps = cluster.servers[SERVER].replicas
    names = [r.name for r in reps]
    busy = reps[2].sim  # the newest pod gets a burst of long generations
    assert busy is not None
    busy.offer(np.full(6, busy.now_ms))
    cluster.advance(3)  # generations of 1024 tokens still run
    running = {r.name: r.sim.in_service for r in reps if r.sim is not None}
    report = ctl.run_cycle()
    (row,) = report.servers
    kept = [r.name for r in cluster.servers[SERVER].replicas]
    ann = {r.name: int(r.annotations[DELETION_COST])
           for r in cluster.servers[SERVER].replicas if DELETION_COST in r.annotations}
    assert row.verdict == "scaled", row.reason
    assert running[names[2]] > max(running[names[0]], running[names[1]])
    return names, kept, ann, cluster.dropped_total, row.reason


def test_the_least_loaded_pod_goes_first() -> None:
    names, kept, ann, dropped_cost, reason = _run(deletion_cost=True)
    assert names[2] in kept  # the busiest stays, although the newest
    assert set(ann) == set(kept) and ann[names[2]] >= 6
    assert "least-loaded first" in reason and names[0] in reason
    names0, kept0, ann0, dropped_kube, _ = _run(deletion_cost=False)
    assert not ann0 and names0[2] not in kept0  # no annotations: kube removes the newest
    assert len(kept0) == len(kept)
    assert dropped_cost < dropped_kube  # fewer running generations killed
