"""One managed server and its builders, for deciding and moving tests."""

from __future__ import annotations

from typing import Any

from controlloop.loop.state import (
    Action,
    ActionResult,
    ClusterState,
    ManagedServer,
    ObservedLoad,
    Rollout,
)


class OneServer:
    """Collector and Actuator for one Deployment; records what it is asked to do."""

    def __init__(self, ms: ManagedServer) -> None:
        self.ms = ms
        self.applied: list[Action] = []

    def collect(self) -> ClusterState:
        return ClusterState(servers=(self.ms,))

    def apply(self, actions: list[Action]) -> list[ActionResult]:
        self.applied.extend(actions)
        return [ActionResult(a, ok=True, sent=True) for a in actions]


def _server(**kw: Any) -> ManagedServer:
    base: dict[str, Any] = dict(
        namespace="ns", deployment="d", name="srv", model="llama3_8b", service_class="Premium",
        accelerator="H100", max_batch=64, replicas=18, ready_replicas=18,
        running_pods=("d-1",),
        load=ObservedLoad("ok", arrival_rate_rpm=40.0, avg_in_tokens=128, avg_out_tokens=1024),
        rollout=Rollout(replicas=18, generation=2, observed_generation=2, status_replicas=20,
                        updated_replicas=18, available_replicas=18),
    )
    base.update(kw)
    return ManagedServer(**base)
