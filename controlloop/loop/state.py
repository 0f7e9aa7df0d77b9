"""What a cycle observes (collector output) and what it asks for (actuator input).

Plain frozen dataclasses: the Controller, the real cluster edges and the
emulated cluster of the demo all speak these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

LoadStatus = Literal["ok", "idle", "unknown", "fallback"]


@dataclass(frozen=True)
class ObservedLoad:
    """Load of one server. ``unknown`` means we did not get it: never act on it."""

    status: LoadStatus
    reason: str = ""
    arrival_rate_rpm: float | None = None
    avg_in_tokens: float | None = None
    avg_out_tokens: float | None = None
    itl_ms: float | None = None  # observed
    ttft_ms: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None  # 0..1 of the fullest pod, where exported
    source: str = "prometheus"  # "prometheus" | "labels" | "emulator" | "none"

    @property
    def known(self) -> bool:
        return self.status != "unknown"


@dataclass(frozen=True)
class Rollout:
    """Rollout status of a Deployment (``status`` against ``spec``)."""

    replicas: int  # spec.replicas
    generation: int
    observed_generation: int
    status_replicas: int  # pods of all ReplicaSets (old + new)
    updated_replicas: int  # pods of the current template
    available_replicas: int

    @property
    def complete(self) -> bool:
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas == self.replicas
            and self.status_replicas == self.replicas
            and self.available_replicas >= self.replicas
        )

    @property
    def old_pods(self) -> int:
        return max(0, self.status_replicas - self.updated_replicas)

    def describe(self) -> str:
        def pods(n: int) -> str:
            return "1 pod" if n == 1 else f"{n} pods"

        return (
            f"{self.updated_replicas} of {pods(self.replicas)} created on the new placement, "
            f"{pods(self.available_replicas)} available, {pods(self.old_pods)} of the old one left"
        )


@dataclass(frozen=True)
class ManagedServer:
    """One managed Deployment as observed this cycle."""

    namespace: str
    deployment: str
    name: str  # inferno.server.name, default the Deployment's name
    model: str
    service_class: str
    accelerator: str  # current, from the allocation label ("" when unknown)
    max_batch: int  # from the allocation label (0 when unknown)
    replicas: int  # spec.replicas
    ready_replicas: int
    pending_pods: int = 0  # Pending (any reason)
    unschedulable_pods: int = 0  # Pending with PodScheduled=False/Unschedulable
    # ... by the pods' accelerator label ("" unlabelled); tells a move's new pods apart
    unschedulable_by_accelerator: dict[str, int] = field(default_factory=dict)
    running_pods: tuple[str, ...] = ()
    # vllm:num_requests_running per running pod (pods without a sample are absent)
    pod_running: dict[str, float] = field(default_factory=dict)
    load: ObservedLoad = ObservedLoad("unknown", "not read")
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: str = ""
    generation: int = 0
    autoscaler: str = ""  # "HorizontalPodAutoscaler ns/name" etc. when one targets it
    node_selector: dict[str, str] = field(default_factory=dict)
    rollout: Rollout | None = None  # None when the status was not read
    strategy: dict[str, Any] | None = None  # spec.strategy as found
    # labels whose numbers are beyond their physical bounds (controlloop.bounds): held
    bad_labels: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.deployment}"


@dataclass(frozen=True)
class SkippedDeployment:
    namespace: str
    deployment: str
    reason: str


@dataclass(frozen=True)
class ClusterState:
    servers: tuple[ManagedServer, ...]
    skipped: tuple[SkippedDeployment, ...] = ()
    # Cards per accelerator type counted from Nodes (capacity.source: nodes); None otherwise.
    node_capacity: dict[str, int] | None = None
    errors: tuple[str, ...] = ()  # collection-wide problems (API down, …)
    complete: bool = True  # False when the Deployment list itself failed


@dataclass(frozen=True)
class Placement:
    """Where a replica runs: the accelerator and what the pod template needs for it."""

    accelerator: str
    node_selector: dict[str, str]
    resource: str  # extended resource name, e.g. nvidia.com/gpu
    count: int  # per replica: accCount x multiplicity
    max_batch: int


@dataclass(frozen=True)
class Action:
    """One change to one Deployment; ``placement`` only on an accelerator change."""

    namespace: str
    deployment: str
    server: str
    replicas: int
    from_replicas: int
    placement: Placement | None = None
    from_placement: Placement | None = None
    max_batch: int | None = None  # label update when the batch changes
    reason: str = ""
    resource_version: str = ""  # as observed; a changed object gives a conflict
    # Make-before-break moves (controlloop/loop/moves.py): the Deployment strategy to set
    # and annotations to set (str) or remove (None); phase "start" | "finish" | "rollback".
    strategy: dict[str, Any] | None = None
    annotations: dict[str, str | None] = field(default_factory=dict)
    move_phase: str = ""
    # controller.kubernetes.io/pod-deletion-cost to set on pods before a scale-down, so
    # that the ReplicaSet removes the least-loaded first (docs/actuation.md).
    pod_deletion_cost: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.placement is not None:
            return "move-back" if self.move_phase == "rollback" else "move"
        if self.move_phase == "finish":
            return "finish-move"
        if self.replicas > self.from_replicas:
            return "scale-up"
        if self.replicas < self.from_replicas:
            return "scale-down"
        return "relabel"


@dataclass(frozen=True)
class ActionResult:
    action: Action
    ok: bool
    sent: bool  # False in dry-run or when nothing was sent
    patch: dict[str, object] | None = None
    error: str = ""
    error_kind: str = ""  # not-found, conflict, server-error, timeout, forbidden, …
    attempts: int = 1


class Collector(Protocol):
    def collect(self) -> ClusterState: ...


class Actuator(Protocol):
    def apply(self, actions: list[Action]) -> list[ActionResult]: ...


def placement_for(
    accelerator: str,
    *,
    node_selector: dict[str, str] | None,
    resource: str,
    count: int,
    max_batch: int,
) -> Placement | None:
    """A Placement, or None when the accelerator has no nodeSelector (cannot be moved to)."""
    if not node_selector:
        return None
    return Placement(accelerator, dict(node_selector), resource, count, max_batch)


def describe(action: Action) -> str:
    moved = (
        f", accelerator {action.from_placement.accelerator if action.from_placement else '?'}"
        f"→{action.placement.accelerator}"
        if action.placement is not None
        else ""
    )
    return (
        f"{action.namespace}/{action.deployment} replicas"
        f" {action.from_replicas}→{action.replicas}{moved}"
    )
