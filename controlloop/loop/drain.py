"""Graceful scale-down: which pods the ReplicaSet should remove first.

Kubernetes removes, among Ready pods, those with the lowest
``controller.kubernetes.io/pod-deletion-cost`` first. Before a scale-down the
controller sets that annotation on every running pod to its running requests
(``vllm:num_requests_running``), so the pods that go are the least loaded and
the fewest generations have to drain (or are lost when the pods do not drain:
docs/actuation.md). A pod without a sample counts as the busiest: unknown load
is never a reason to remove a pod first.
"""

from __future__ import annotations

import math

from controlloop.loop.state import ManagedServer

INT32_MAX = 2**31 - 1


def deletion_costs(ms: ManagedServer) -> dict[str, int]:
    """pod -> deletion cost (its running requests); empty when no pod reports any."""
    known = {p: ms.pod_running[p] for p in ms.running_pods if p in ms.pod_running}
    if not known:
        return {}
    costs = {p: min(INT32_MAX - 1, math.ceil(n)) for p, n in known.items()}
    busiest = max(costs.values()) + 1
    return {p: costs.get(p, busiest) for p in ms.running_pods}


def removed_first(ms: ManagedServer, costs: dict[str, int], n: int) -> list[str]:
    """The ``n`` running pods with the lowest cost (ties by name), for the log."""
    return sorted(costs, key=lambda p: (costs[p], p))[:n] if n > 0 else []
