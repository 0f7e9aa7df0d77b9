"""What the fake API server lacks: a Deployment controller, a scheduler and kubelets.

``ClusterEmulator.step(now)`` does, for every Deployment in the fake store, what
kube-controller-manager's deployment controller does (pkg/controller/deployment:
rolling.go, sync.go, recreate.go), followed by the scheduler and kubelet:

* ReplicaSets per pod template (kept here, not served by the fake API);
* a change of ``spec.replicas`` while the template changed and one old
  ReplicaSet is active is a scaling event: that ReplicaSet is scaled first;
* RollingUpdate: the new ReplicaSet grows to ``replicas + maxSurge`` pods in
  total; old ones shrink, first their unhealthy pods, then while more than
  ``replicas - maxUnavailable`` pods are available (surge rounds up,
  unavailable down, both 0 means unavailable 1); Recreate: old to 0 first;
* a ReplicaSet scales down unscheduled, then not-ready, then the newest pods;
* the scheduler binds a pod when its accelerator type has free cards (FIFO);
  a pod is Ready ``startup_s`` after it was bound; a removed pod stops
  serving at once.

Pods and ``Deployment.status`` are written to the fake API, so the real
collector reads them. Tests use ``serving()`` for what actually serves.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from tests.fakekube.server import FakeKubeServer
from tests.fakekube.store import find_resource

Obj = dict[str, Any]


@dataclass
class Pod:
    name: str
    acc_type: str
    accelerator: str
    cards: int
    seq: int
    bound: bool = False
    ready_at: float = math.inf

    def ready(self, now: float) -> bool:
        return self.bound and now >= self.ready_at


@dataclass
class ReplicaSet:
    template_key: str
    accelerator: str  # where its pods go: fixed by its template
    acc_type: str
    cards: int
    replicas: int = 0
    labels: dict[str, str] = field(default_factory=dict)  # its pod template's
    pods: list[Pod] = field(default_factory=list)

    def available(self, now: float) -> int:
        return sum(p.ready(now) for p in self.pods)


@dataclass
class DeploymentState:
    replica_sets: list[ReplicaSet] = field(default_factory=list)  # oldest first
    seen_replicas: int | None = None
    published: dict[str, Obj] = field(default_factory=dict)  # pod name -> status in the API


def _resolve(value: Any, replicas: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        x = replicas * float(value[:-1]) / 100.0
        return math.ceil(x) if round_up else math.floor(x)
    return int(value)


class ClusterEmulator:
    """``accelerator_of(node_selector) -> (accelerator, type, cards per replica)``."""

    def __init__(
        self,
        fake: FakeKubeServer,
        *,
        capacity: dict[str, int],
        placement: Any,
        startup_s: float = 120.0,
        startup_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.fake = fake
        self.capacity = dict(capacity)
        self.placement = placement  # (deployment obj) -> (accelerator, type, cards)
        self.startup_s = startup_s
        self.startup_jitter = startup_jitter  # start-up takes startup_s x U(1, 1 + jitter)
        self.rng = random.Random(seed)
        self.state: dict[str, DeploymentState] = {}
        self._seq = count()
        self.now = 0.0

    # --- what serves --------------------------------------------------------------------

    def serving(self, ns: str, name: str) -> list[Pod]:
        st = self.state.get(f"{ns}/{name}")
        if st is None:
            return []
        return [p for rs in st.replica_sets for p in rs.pods if p.ready(self.now)]

    def used(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for st in self.state.values():
            for rs in st.replica_sets:
                for p in rs.pods:
                    if p.bound:
                        used[p.acc_type] = used.get(p.acc_type, 0) + p.cards
        return used

    # --- adopting what a test created -----------------------------------------------------

    def adopt(self, ns: str, name: str, *, ready: bool = True) -> None:
        """Take over a Deployment: its replicas become pods of one ReplicaSet."""
        dep = self.fake.get("Deployment", ns, name)
        for pod in self.fake.list_objects("Pod", ns):
            if pod["metadata"]["name"].startswith(f"{name}-"):
                self.fake.store.delete(find_resource("Pod"), ns, pod["metadata"]["name"])
        acc, acc_type, cards = self.placement(dep)
        rs = ReplicaSet(
            _template_key(dep),
            acc,
            acc_type,
            cards,
            replicas=int(dep["spec"]["replicas"]),
            labels=_pod_labels(dep),
        )
        for _ in range(rs.replicas):
            pod = self._new_pod(name, acc, acc_type, cards)
            pod.bound, pod.ready_at = True, (self.now if ready else self.now + self.startup_s)
            rs.pods.append(pod)
        self.state[f"{ns}/{name}"] = DeploymentState([rs], rs.replicas)
        self._publish(ns, name, dep)

    # --- the loop ---------------------------------------------------------------------------

    def step(self, now: float) -> None:
        self.now = now
        for key in list(self.state):
            ns, name = key.split("/", 1)
            self._sync(ns, name, self.fake.get("Deployment", ns, name))
        self._schedule()
        for key in list(self.state):
            ns, name = key.split("/", 1)
            dep = self.fake.get("Deployment", ns, name)
            self._sync(ns, name, dep)  # pods that became ready let the rollout go on
            self._publish(ns, name, dep)
        self._schedule()

    def _sync(self, ns: str, name: str, dep: Obj) -> None:
        st = self.state[f"{ns}/{name}"]
        spec = dep["spec"]
        replicas = int(spec.get("replicas", 1))
        key = _template_key(dep)
        new = next((rs for rs in st.replica_sets if rs.template_key == key), None)
        olds = [rs for rs in st.replica_sets if rs is not new]
        if st.seen_replicas != replicas:
            active = [rs for rs in st.replica_sets if rs.replicas > 0]
            if new is None and len(active) == 1:
                active[0].replicas = replicas  # scaling event before the rollout
            elif new is not None and not [rs for rs in olds if rs.replicas > 0]:
                new.replicas = replicas
            elif active:  # proportional scaling: not needed by these tests
                raise AssertionError(
                    f"{name}: replicas changed mid-rollout ({st.seen_replicas}→{replicas})"
                )
            st.seen_replicas = replicas
        if new is None:
            new = ReplicaSet(key, *self.placement(dep), labels=_pod_labels(dep))
            st.replica_sets.append(new)
        strategy = spec.get("strategy") or {"type": "RollingUpdate"}
        if strategy.get("type") == "Recreate":
            if any(rs.pods for rs in olds):
                for rs in olds:
                    rs.replicas = 0
            else:
                new.replicas = replicas
        else:
            ru = strategy.get("rollingUpdate") or {}
            surge = _resolve(ru.get("maxSurge", "25%"), replicas, round_up=True)
            unavailable = _resolve(ru.get("maxUnavailable", "25%"), replicas, round_up=False)
            if surge == 0 and unavailable == 0:
                unavailable = 1
            self._rolling(st, new, olds, replicas, surge, unavailable)
        for rs in st.replica_sets:
            self._reconcile_pods(name, rs)
        st.replica_sets = [rs for rs in st.replica_sets if rs is new or rs.replicas or rs.pods]

    def _rolling(self, st: DeploymentState, new: ReplicaSet, olds: list[ReplicaSet],
                 replicas: int, surge: int, unavailable: int) -> None:
        now = self.now
        if new.replicas > replicas:
            new.replicas = replicas
        elif new.replicas < replicas:
            total = sum(rs.replicas for rs in st.replica_sets)
            up = min(replicas + surge - total, replicas - new.replicas)
            if up > 0:
                new.replicas += up
        if not any(rs.replicas for rs in olds):
            return
        all_pods = sum(rs.replicas for rs in st.replica_sets)
        min_available = replicas - unavailable
        new_unavailable = new.replicas - new.available(now)
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return
        for rs in olds:  # unhealthy old pods go first
            unhealthy = rs.replicas - rs.available(now)
            cut = min(max_scaled_down, max(0, unhealthy))
            rs.replicas -= cut
            max_scaled_down -= cut
            self._reconcile_pods(name="", rs=rs, create=False)
        available = sum(rs.available(now) for rs in st.replica_sets)
        budget = available - min_available
        for rs in olds:
            if budget <= 0:
                break
            cut = min(rs.replicas, budget)
            rs.replicas -= cut
            budget -= cut

    def _reconcile_pods(self, name: str, rs: ReplicaSet, *, create: bool = True) -> None:
        while len(rs.pods) > rs.replicas:
            victim = min(rs.pods, key=lambda p: (p.bound, p.ready(self.now), -p.seq))
            rs.pods.remove(victim)
        while create and len(rs.pods) < rs.replicas:
            rs.pods.append(self._new_pod(name, rs.accelerator, rs.acc_type, rs.cards))

    def _new_pod(self, name: str, acc: str, acc_type: str, cards: int) -> Pod:
        seq = next(self._seq)
        return Pod(f"{name}-{seq:05d}", acc_type, acc, cards, seq)

    def _schedule(self) -> None:
        used = self.used()
        waiting = sorted(
            (
                p
                for st in self.state.values()
                for rs in st.replica_sets
                for p in rs.pods
                if not p.bound
            ),
            key=lambda p: p.seq,
        )
        for p in waiting:
            if used.get(p.acc_type, 0) + p.cards <= self.capacity.get(p.acc_type, 0):
                used[p.acc_type] = used.get(p.acc_type, 0) + p.cards
                jitter = 1.0 + self.startup_jitter * self.rng.random()
                p.bound, p.ready_at = True, self.now + self.startup_s * jitter

    # --- writing back to the fake API --------------------------------------------------------

    def _publish(self, ns: str, name: str, dep: Obj) -> None:
        st = self.state[f"{ns}/{name}"]
        pod_res = find_resource("Pod")
        want: dict[str, Obj] = {}
        labels_of: dict[str, dict[str, str]] = {}
        for rs in st.replica_sets:
            for p in rs.pods:
                want[p.name] = _pod_status(p.bound, p.ready(self.now))
                labels_of[p.name] = rs.labels
        published = st.published
        for pname in [n for n in published if n not in want]:
            self.fake.store.delete(pod_res, ns, pname)
            del published[pname]
        for pname, status in want.items():
            if published.get(pname) == status:
                continue  # unchanged: spare the store a write
            if pname in published:
                self.fake.store.delete(pod_res, ns, pname)
            self.fake.put({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pname, "namespace": ns, "labels": dict(labels_of[pname])},
                "spec": {"containers": [{"name": "vllm"}]},
                "status": status,
            })
            published[pname] = status
        new_key = _template_key(dep)
        new = next((rs for rs in st.replica_sets if rs.template_key == new_key), None)
        all_pods = [p for rs in st.replica_sets for p in rs.pods]
        ready = sum(p.ready(self.now) for p in all_pods)
        self.fake.set_status("Deployment", ns, name, {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(all_pods),
            "updatedReplicas": len(new.pods) if new else 0,
            "readyReplicas": ready,
            "availableReplicas": ready,
        })


def _pod_status(bound: bool, ready: bool) -> Obj:
    if not bound:
        return {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}]}
    return {"phase": "Running", "conditions": [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "True" if ready else "False"}]}


def _template_key(dep: Obj) -> str:
    return json.dumps(dep["spec"].get("template") or {}, sort_keys=True)


def _pod_labels(dep: Obj) -> dict[str, str]:
    return dict(((dep["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {})
