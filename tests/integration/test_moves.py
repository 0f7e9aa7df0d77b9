"""Make-before-break accelerator moves against the loopback API plus a Deployment
controller / scheduler emulator (tests/fakekube/rollout.py).

The invariant, checked every 10 s of cluster time: the pods that are Ready can
serve the load, by the model's largest per-replica rate meeting the SLOs
(lam*, the optimizer's ``rate_per_replica``) on their own accelerator. The
in-place strategy, under Kubernetes' default rolling update, breaks it: that
test shows the check can fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from controlloop.cluster.actuator import KubeActuator
from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.kube import KubeClient
from controlloop.cluster.prom import PrometheusLoadSource, PrometheusSettings
from controlloop.config import load_system
from controlloop.loop.controller import Controller, CycleReport, StaticSpecs
from controlloop.loop.moves import MOVE_ANNOTATION
from controlloop.loop.settings import LABEL_ACCELERATOR, ActuationConfig, ControllerSettings
from controlloop.optimizer import Solution, optimize
from controlloop.specs import SystemSpec
from tests.fakekube import FakeKubeServer
from tests.fakekube.rollout import ClusterEmulator
from tests.helpers.cluster import CONFIG, managed_labels
from tests.helpers.faults import FakeProm, without_tuning

pytestmark = pytest.mark.integration

NS, NAME, MODEL, CLS = "llm", "srv", "llama3_8b", "Premium"
SYSTEM = without_tuning(load_system(CONFIG))  # FakeProm latencies: nothing to learn
TICK_S, CYCLE_S = 10.0, 60.0




@pytest.fixture
def kube(fake_kube: FakeKubeServer) -> Iterator[KubeClient]:
    client = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=2.0)
    yield client
    client.close()


def placement_of(dep: dict[str, Any]) -> tuple[str, str, int]:
    """The accelerator a Deployment's pod template selects, its type and cards per pod."""
    selector = ((dep["spec"].get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    for acc in SYSTEM.accelerators:
        perf = SYSTEM.perf(MODEL, acc.name)
        if acc.node_selector and perf is not None and acc.node_selector == selector:
            return acc.name, acc.type, perf.acc_count * acc.multiplicity
    raise AssertionError(f"no accelerator for nodeSelector {selector}")


class Steering:
    """The optimizer, restricted to ``allowed`` accelerators with ``expensive`` ones x100,
    so a test decides where the server should go; keeps the last solution's lam*."""

    def __init__(self, allowed: list[str], expensive: tuple[str, ...] = ()) -> None:
        self.allowed, self.expensive = allowed, expensive
        self.rate: dict[str, float] = {}  # accelerator -> lam* (req/s per replica)
        self.demand_rps = 0.0

    def __call__(self, system: SystemSpec, **kw: Any) -> Solution:
        accelerators = [
            a.model_copy(update={"cost": a.cost * 100}) if a.name in self.expensive else a
            for a in system.accelerators
        ]
        servers = [s.model_copy(update={"allowed_accelerators": list(self.allowed)})
                   for s in system.servers]
        solution = optimize(system.model_copy(update={"accelerators": accelerators,
                                                      "servers": servers}), **kw)
        for cand in solution.candidates.get(NAME, []):
            self.rate[cand.accelerator] = cand.rate_per_replica
        self.demand_rps = servers[0].current_alloc.load.arrival_rate / 60.0 if servers else 0.0
        return solution


class Harness:
    def __init__(self, fake: FakeKubeServer, kube: KubeClient, prom: FakeProm, *,
                 start: str, replicas: int, steering: Steering, strategy: str = "make-before-break",
                 capacity: dict[str, int] | None = None, deployment_strategy: Any = None,
                 system: SystemSpec = SYSTEM) -> None:
        acc = SYSTEM.accelerator(start)
        assert acc is not None and acc.node_selector
        dep = fake.add_deployment(
            NS,
            NAME,
            labels={**managed_labels(MODEL, CLS, start), "app": NAME},
            replicas=replicas,
            node_selector=acc.node_selector,
            containers=[
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai",
                    "resources": {"limits": {acc.resource: "1"}, "requests": {acc.resource: "1"}},
                }
            ],
        )
        if deployment_strategy is not None:
            dep = fake.get("Deployment", NS, NAME)
            dep["spec"]["strategy"] = deployment_strategy
            fake.store.update(fake_resource("Deployment"), NS, NAME, dep)
        self.fake, self.prom, self.steering, self.system = fake, prom, steering, system
        self.now = 1_000_000.0
        self.cluster = ClusterEmulator(fake, capacity=capacity or SYSTEM.capacity_by_type(),
                                       placement=placement_of)
        self.cluster.now = self.now
        self.cluster.adopt(NS, NAME)
        self.settings = ControllerSettings(
            verify="none", actuation=ActuationConfig(move_strategy=strategy),  # type: ignore[arg-type]
        )
        self.controller = self.new_controller(kube)
        self.min_margin = float("inf")  # smallest (serving capacity - demand), req/s
        self.reports: list[CycleReport] = []

    def new_controller(self, kube: KubeClient) -> Controller:
        source = PrometheusLoadSource(
            PrometheusSettings(url=self.prom.url, timeout_s=2.0, retries=0)
        )
        return Controller(
            specs=StaticSpecs(self.system, self.settings),
            collector=KubeCollector(kube, source, self.settings),
            actuator=KubeActuator(kube, self.settings.actuation, sleep=lambda s: None),
            clock=lambda: self.now, optimize_fn=self.steering,
        )

    def deployment(self) -> dict[str, Any]:
        return self.fake.get("Deployment", NS, NAME)

    def capacity_rps(self) -> float:
        return sum(self.steering.rate[p.accelerator] for p in self.cluster.serving(NS, NAME))

    def run(self, seconds: float, *, check: bool = True) -> None:
        """Cycles every 60 s, the cluster every 10 s; the invariant at every tick."""
        end = self.now + seconds
        while self.now < end:
            self.now += TICK_S
            self.cluster.step(self.now)
            if check and self.steering.rate:
                self.min_margin = min(
                    self.min_margin, self.capacity_rps() - self.steering.demand_rps
                )
                assert self.min_margin >= -1e-9 or not self.strict, self.explain()
            if round(self.now) % round(CYCLE_S) == 0:
                self.reports.append(self.controller.run_cycle())

    strict = True

    def explain(self) -> str:
        pods = [(p.accelerator, p.ready(self.now)) for st in self.cluster.state.values()
                for rs in st.replica_sets for p in rs.pods]
        last = self.reports[-1].servers[0] if self.reports and self.reports[-1].servers else None
        return (f"t={self.now:.0f}: serving {self.capacity_rps():.3f} req/s < demand "
                f"{self.steering.demand_rps:.3f}; pods {pods}; last: "
                f"{last.verdict if last else ''} {last.reason if last else ''}")

    def settle_on_start(self) -> None:
        self.run(6 * CYCLE_S, check=False)
        self.min_margin = float("inf")

    def row(self) -> Any:
        return self.reports[-1].servers[0]


def fake_resource(kind: str) -> Any:
    from tests.fakekube.store import find_resource

    return find_resource(kind)


def replicas_needed(rate: float, demand: float) -> int:
    import math

    return max(1, math.ceil(demand / rate - 1e-9))


MOVES = [
    # (from, to): to fewer, stronger replicas; and to more, weaker ones (R > n_old:
    # Kubernetes first scales the old ReplicaSet up, a scaling event).
    ("L40S", "H100"),
    ("H100", "L40S"),
    ("A100", "L40S"),
]
RPM = 40.0  # llama3_8b Premium: 18 L40S, 3 A100 or 2 H100 replicas


@pytest.mark.parametrize("start,target", MOVES)
def test_make_before_break_move_never_drops_below_the_load(
    start: str, target: str, fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm,
) -> None:
    prom.rpm = RPM
    steering = Steering([start])
    h = Harness(fake_kube, kube, prom, start=start, replicas=1, steering=steering)
    h.settle_on_start()
    n_old = h.deployment()["spec"]["replicas"]
    assert h.row().current_accelerator == start and h.row().verdict in ("unchanged", "scaled")

    steering.allowed, steering.expensive = [start, target], (start,)
    h.run(CYCLE_S)
    dep = h.deployment()
    row = h.row()
    assert row.verdict == "moved", (row.verdict, row.reason)
    record = json.loads(dep["metadata"]["annotations"][MOVE_ANNOTATION])
    n_new = replicas_needed(steering.rate[target], steering.demand_rps)
    m_old = replicas_needed(steering.rate[start], steering.demand_rps)
    assert record["target_replicas"] == n_new
    assert dep["spec"]["replicas"] == record["bridge_replicas"] == max(n_new, min(n_old, m_old))
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    h.run(15 * CYCLE_S)  # rollout (120 s start-up) and the finishing cycle
    dep = h.deployment()
    assert MOVE_ANNOTATION not in (dep["metadata"].get("annotations") or {})
    assert dep["metadata"]["labels"][LABEL_ACCELERATOR] == target
    assert dep["spec"]["replicas"] == n_new
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert {p.accelerator for p in h.cluster.serving(NS, NAME)} == {target}
    assert len(h.cluster.serving(NS, NAME)) == n_new
    held = [r.servers[0].held_reason for r in h.reports[-16:]]
    assert "move-in-progress" in held
    assert h.min_margin >= 0, h.explain()


def test_in_place_move_under_the_default_rolling_update_drops_capacity(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm,
) -> None:
    """The contrast: the same move patched in place loses serving capacity."""
    prom.rpm = RPM
    steering = Steering(["L40S"])
    h = Harness(fake_kube, kube, prom, start="L40S", replicas=1, steering=steering,
                strategy="in-place")
    h.settle_on_start()
    steering.allowed, steering.expensive = ["L40S", "H100"], ("L40S",)
    h.strict = False
    h.run(10 * CYCLE_S)
    assert h.deployment()["metadata"]["labels"][LABEL_ACCELERATOR] == "H100"
    assert h.min_margin < 0, "in place, the old pods go before the new ones serve"


def test_a_move_survives_a_controller_restart(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm,
) -> None:
    prom.rpm = RPM
    steering = Steering(["L40S"])
    h = Harness(fake_kube, kube, prom, start="L40S", replicas=1, steering=steering)
    h.settle_on_start()
    steering.allowed, steering.expensive = ["L40S", "H100"], ("L40S",)
    h.run(CYCLE_S)
    assert h.row().verdict == "moved"
    h.controller = h.new_controller(kube)  # a new leader: no memory of the move
    h.run(CYCLE_S)
    assert h.row().held_reason == "move-in-progress", h.row().reason
    h.run(12 * CYCLE_S)
    dep = h.deployment()
    assert MOVE_ANNOTATION not in (dep["metadata"].get("annotations") or {})
    assert dep["metadata"]["labels"][LABEL_ACCELERATOR] == "H100"
    assert h.min_margin >= 0, h.explain()


def test_a_move_whose_pods_cannot_schedule_is_rolled_back(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm,
) -> None:
    """The specs promise H100 cards the cluster does not have: the new pods stay
    Pending, the placement is backed off and the template goes back, replicas kept."""
    prom.rpm = RPM
    steering = Steering(["L40S"])
    real = {**SYSTEM.capacity_by_type(), "H100": 0}
    h = Harness(fake_kube, kube, prom, start="L40S", replicas=1, steering=steering, capacity=real)
    h.settle_on_start()
    steering.allowed, steering.expensive = ["L40S", "H100"], ("L40S",)
    h.run(CYCLE_S)
    assert h.row().verdict == "moved"
    bridge = h.deployment()["spec"]["replicas"]
    rolled_back = None
    for _ in range(8):
        h.run(CYCLE_S)
        if h.row().verdict == "moved" and "rolling back" in h.row().reason:
            rolled_back = h.deployment()
            break
    assert rolled_back is not None, [r.servers[0].reason for r in h.reports[-8:]]
    assert rolled_back["spec"]["replicas"] == bridge
    assert rolled_back["metadata"]["labels"][LABEL_ACCELERATOR] == "L40S"
    assert json.loads(rolled_back["metadata"]["annotations"][MOVE_ANNOTATION])["rollback"] is True
    h.run(6 * CYCLE_S)
    dep = h.deployment()
    assert MOVE_ANNOTATION not in (dep["metadata"].get("annotations") or {})
    assert {p.accelerator for p in h.cluster.serving(NS, NAME)} == {"L40S"}
    assert h.min_margin >= 0, h.explain()


def test_a_move_that_needs_more_cards_than_are_free_is_deferred(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm,
) -> None:
    """L40S→H100 needs 2 H100 replicas in the plan but 18 during the rollout (the
    bridge count); with 4 H100 cards the move waits and nothing is patched."""
    from controlloop.specs import CapacityEntry, CapacitySpec

    prom.rpm = RPM
    capacity = {**SYSTEM.capacity_by_type(), "H100": 4}
    system = SYSTEM.model_copy(update={"capacity": CapacitySpec(
        count=[CapacityEntry(type=t, count=c) for t, c in sorted(capacity.items())])})
    steering = Steering(["L40S"])
    h = Harness(fake_kube, kube, prom, start="L40S", replicas=1, steering=steering,
                system=system, capacity=capacity)
    h.settle_on_start()
    before = h.deployment()
    fake_kube.clear_requests()
    steering.allowed, steering.expensive = ["L40S", "H100"], ("L40S",)
    h.run(3 * CYCLE_S)
    row = h.row()
    assert row.recommended_accelerator == "H100"
    assert (row.verdict, row.held_reason) == ("held", "move-deferred"), row.reason
    assert "18 replicas' cards of H100 (18) during the rollout, 4 free" in row.reason
    assert fake_kube.requests_for("PATCH", "/deployments/") == []
    after = h.deployment()
    assert after["spec"] == before["spec"]
    assert MOVE_ANNOTATION not in (after["metadata"].get("annotations") or {})


def test_old_pods_waiting_in_a_scaling_event_do_not_roll_back_a_healthy_move(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm,
) -> None:
    """H100→L40S (R > n_old) with no spare H100 cards and a 300 s model start-up:
    Kubernetes first scales the old ReplicaSet to R, and those H100 pods wait
    Unschedulable longer than unschedulableAfterSeconds. They are not the new
    placement's pods: the move must complete, not roll back."""
    prom.rpm = RPM
    steering = Steering(["H100"])
    capacity = {**SYSTEM.capacity_by_type(), "H100": 2}  # what the 2 H100 replicas use
    h = Harness(fake_kube, kube, prom, start="H100", replicas=1, steering=steering,
                capacity=capacity)
    h.cluster.startup_s = 300.0
    h.settle_on_start()
    steering.allowed, steering.expensive = ["H100", "L40S"], ("H100",)
    h.run(CYCLE_S)
    assert h.row().verdict == "moved"
    h.run(4 * CYCLE_S)
    assert h.row().held_reason == "move-in-progress" and h.row().pending_pods >= 16
    h.run(6 * CYCLE_S)
    assert all("rolling back" not in r.servers[0].reason for r in h.reports)
    dep = h.deployment()
    assert MOVE_ANNOTATION not in (dep["metadata"].get("annotations") or {})
    assert {p.accelerator for p in h.cluster.serving(NS, NAME)} == {"L40S"}
    assert h.min_margin >= 0, h.explain()
