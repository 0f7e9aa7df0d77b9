"""Builders for the objects tests put into the fake API server."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def deployment(ns: str, name: str, *, labels: dict[str, str] | None = None, replicas: int = 1,
               containers: list[Obj] | None = None, node_selector: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None,
               pod_labels: dict[str, str] | None = None) -> Obj:
    labels = dict(labels) if labels is not None else {"app": name}
    pod_labels = dict(pod_labels) if pod_labels is not None else {**labels, "app": name}
    pod_spec: Obj = {"containers": containers or [{
        "name": "vllm", "image": "vllm/vllm-openai:v0.6.0",
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "4"}},
    }]}
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    meta: Obj = {"name": name, "namespace": ns, "labels": labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": pod_labels["app"]}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def deployment_status(replicas: int, *, ready: int | None = None, available: int | None = None,
                      updated: int | None = None, observed_generation: int = 1) -> Obj:
    ready = replicas if ready is None else ready
    return {
        "observedGeneration": observed_generation,
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready if available is None else available,
        "updatedReplicas": replicas if updated is None else updated,
    }


def pod(ns: str, name: str, *, labels: dict[str, str] | None = None, phase: str = "Running",
        ready: bool = True, node_name: str | None = None, unschedulable: bool = False,
        message: str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        owner: Obj | None = None, containers: list[Obj] | None = None) -> Obj:
    """A Pod; ``unschedulable`` makes it Pending with PodScheduled=False/Unschedulable."""
    if unschedulable:
        phase, ready, node_name = "Pending", False, None
    scheduled: Obj = {"type": "PodScheduled", "status": "True"}
    if unschedulable:
        scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": message}
    conditions = [scheduled, {"type": "Ready", "status": "True" if ready else "False"}]
    spec: Obj = {"containers": containers or [{"name": "vllm", "image": "vllm/vllm-openai"}]}
    if node_name:
        spec["nodeName"] = node_name
    meta: Obj = {"name": name, "namespace": ns, "labels": dict(labels or {})}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {"phase": phase, "conditions": conditions}}


def node(name: str, *, labels: dict[str, str] | None = None,
         allocatable: dict[str, str] | None = None, unschedulable: bool = False,
         taints: list[Obj] | None = None) -> Obj:
    alloc = dict(allocatable or {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"})
    spec: Obj = {}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels or {})}, "spec": spec,
            "status": {"allocatable": alloc, "capacity": dict(alloc),
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def hpa(ns: str, name: str, *, target: str, target_kind: str = "Deployment",
        min_replicas: int = 1, max_replicas: int = 10, metrics: list[Obj] | None = None) -> Obj:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": target_kind,
                                        "name": target},
                     "minReplicas": min_replicas, "maxReplicas": max_replicas,
                     "metrics": metrics or [{"type": "Resource", "resource": {
                         "name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": 80}}}]}}


def scaled_object(ns: str, name: str, *, target: str, min_replicas: int = 0,
                  max_replicas: int = 10, triggers: list[Obj] | None = None) -> Obj:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scaleTargetRef": {"name": target}, "minReplicaCount": min_replicas,
                     "maxReplicaCount": max_replicas,
                     "triggers": triggers or [{"type": "prometheus", "metadata": {
                         "serverAddress": "http://prometheus:9090", "threshold": "10",
                         "query": "sum(vllm:num_requests_waiting)"}}]}}
