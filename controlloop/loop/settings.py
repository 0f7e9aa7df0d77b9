"""Daemon settings: ``controller.yaml`` in the config directory (all optional).

Units are in the field names (``…Seconds``) or docstrings. Command-line flags
and ``CONTROLLOOP_*`` variables override the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from controlloop.config import ConfigError, Section, read_document, validate_section
from controlloop.specs import NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Spec

CONTROLLER_FILES = ("controller.yaml", "controller.yml")

MANAGED_LABEL = "inferno.server.managed"
LABEL_NAME = "inferno.server.name"
LABEL_MODEL = "inferno.server.model"
LABEL_CLASS = "inferno.server.class"
LABEL_ACCELERATOR = "inferno.server.allocation.accelerator"
LABEL_MAX_BATCH = "inferno.server.allocation.maxbatchsize"
LABEL_LOAD_RPM = "inferno.server.load.rpm"
LABEL_LOAD_IN = "inferno.server.load.intokens"
LABEL_LOAD_OUT = "inferno.server.load.outtokens"
ANNOTATION_PREFIX = "controlloop.io/"
# Written by the controller: a make-before-break move in progress (controlloop/loop/moves.py).
MOVE_ANNOTATION = ANNOTATION_PREFIX + "move"
# Honoured by the ReplicaSet controller: on a scale-down, lower-cost pods go first.
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


class PrometheusConfig(Spec):
    """Where the load comes from. Query templates override the vLLM defaults by name
    (arrival_rpm, avg_in_tokens, avg_out_tokens, ttft_ms, itl_ms, running, waiting,
    freshness, running_by_pod, kv_cache_usage); placeholders ``$namespace``, ``$pods``,
    ``$window``, ``$model``.
    ``groupedQueries`` override the templates that read all pods in one query per
    quantity (requests, prompt_tokens, generation_tokens, ttft_sum, ttft_count, itl_sum,
    itl_count, running, waiting, freshness; placeholders ``$namespaces``, ``$window``;
    grouped ``by (namespace, pod)``); see controlloop.cluster.prom.GroupedQueries."""

    url: str = "http://localhost:9090"
    bearer_token_file: str | None = Field(None, alias="bearerTokenFile")
    ca_file: str | None = Field(None, alias="caFile")
    insecure: bool = False
    timeout_seconds: PositiveFloat = Field(5.0, alias="timeoutSeconds")
    retries: NonNegInt = 1
    window: str = "1m"
    staleness_seconds: PositiveFloat = Field(60.0, alias="stalenessSeconds")
    queries: dict[str, str] = {}
    grouped_queries: dict[str, str] | None = Field(None, alias="groupedQueries")


class ScalingPolicy(Spec):
    """At most ``value`` pods (type Pods) or percent of current (type Percent) per period."""

    type: Literal["Pods", "Percent"]
    value: PositiveInt
    period_seconds: PositiveInt = Field(alias="periodSeconds")


class ScalingRules(Spec):
    """HPA vocabulary: act on the most conservative recommendation in the window."""

    stabilization_window_seconds: NonNegInt | None = Field(
        None, alias="stabilizationWindowSeconds"
    )
    select_policy: Literal["Max", "Min", "Disabled"] = Field("Max", alias="selectPolicy")
    policies: list[ScalingPolicy] = []


class PanicConfig(Spec):
    """The surge fast path (Knative KPA's panic mode, docs/configuration.md).

    Every ``checkSeconds`` between cycles a cheap check reads each server's
    arrivals, waiting requests and KV-cache usage; a server about to miss its SLO
    (any threshold crossed) triggers a cycle at once. From then on, for
    ``windowSeconds`` after its last panic condition, the server may scale up but
    never down.
    """

    enabled: bool = True
    check_seconds: PositiveFloat = Field(10.0, alias="checkSeconds")
    window_seconds: NonNegFloat = Field(60.0, alias="windowSeconds")
    # no surge cycle sooner than this after any cycle (the new pods are on their way)
    min_interval_seconds: NonNegFloat = Field(20.0, alias="minIntervalSeconds")
    # arrivals > this x (ready replicas x the SLO rate of one replica, from the last cycle);
    # above 1: a short window of Poisson arrivals at capacity often reads 10-20 % high
    capacity_threshold: PositiveFloat = Field(1.2, alias="capacityThreshold")
    # waiting requests per ready replica at or above this (a queue the SLO cannot absorb)
    waiting_per_replica: PositiveFloat = Field(4.0, alias="waitingPerReplica")
    # KV-cache usage (0..1, the fullest pod) at or above this; where vLLM exports it
    kv_cache_usage: Annotated[float, Field(gt=0, le=1)] = Field(0.95, alias="kvCacheUsage")
    # while panicking, size to drain the queue this fast (backlogDrainSeconds otherwise)
    backlog_drain_seconds: PositiveFloat = Field(150.0, alias="backlogDrainSeconds")


class BehaviorSpec(Spec):
    """Scaling behaviour; every field may be overridden per server (config or annotation)."""

    scale_up: ScalingRules = Field(
        ScalingRules(
            stabilization_window_seconds=0,
            policies=[
                ScalingPolicy(type="Percent", value=100, period_seconds=15),
                ScalingPolicy(type="Pods", value=4, period_seconds=15),
            ],
        ),
        alias="scaleUp",
    )
    scale_down: ScalingRules = Field(
        ScalingRules(
            stabilization_window_seconds=300,
            policies=[ScalingPolicy(type="Percent", value=100, period_seconds=15)],
        ),
        alias="scaleDown",
    )
    # Relative dead-band: |desired - current| / current <= tolerance keeps current.
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.1
    min_replicas: NonNegInt = Field(1, alias="minReplicas")
    max_replicas: PositiveInt | None = Field(None, alias="maxReplicas")
    # Idle (no arrivals, nothing queued) or unallocated servers may go to 0, whatever
    # minReplicas (which holds while there is load). Without it, never below 1.
    scale_to_zero: bool = Field(False, alias="scaleToZero")
    # Minimum time between two accelerator changes of one server.
    accelerator_change_min_interval_seconds: NonNegFloat = Field(
        600, alias="acceleratorChangeMinIntervalSeconds"
    )
    panic: PanicConfig = PanicConfig()
    # Which forecaster sizes a rising load (loop/forecast.py): trend | kalman | auto (the
    # one with the lower forecast error on this server so far)
    forecaster: Literal["trend", "kalman", "auto"] = "kalman"


class BehaviorOverride(Spec):
    """Per-server overrides: only the fields given replace the global ones."""

    scale_up: ScalingRules | None = Field(None, alias="scaleUp")
    scale_down: ScalingRules | None = Field(None, alias="scaleDown")
    tolerance: Annotated[float, Field(ge=0, lt=1)] | None = None
    min_replicas: NonNegInt | None = Field(None, alias="minReplicas")
    max_replicas: PositiveInt | None = Field(None, alias="maxReplicas")
    scale_to_zero: bool | None = Field(None, alias="scaleToZero")
    accelerator_change_min_interval_seconds: NonNegFloat | None = Field(
        None, alias="acceleratorChangeMinIntervalSeconds"
    )
    panic: PanicConfig | None = None
    forecaster: Literal["trend", "kalman", "auto"] | None = None


class CapacityConfig(Spec):
    """``static``: capacity.yaml. ``nodes``: allocatable GPUs on Nodes, counted per
    accelerator type by the value of ``nodeLabel`` (mapped through ``typeByLabel``
    when the label values are not our type names)."""

    source: Literal["static", "nodes"] = "static"
    node_label: str = Field("nvidia.com/gpu.product", alias="nodeLabel")
    type_by_label: dict[str, str] = Field({}, alias="typeByLabel")
    resources: list[str] = ["nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi", "ibm.com/aiu"]


class ActuationConfig(Spec):
    retries: NonNegInt = 3  # on 5xx and timeouts, with exponential backoff
    backoff_seconds: NonNegFloat = Field(0.5, alias="backoffSeconds")
    conflict_retries: NonNegInt = Field(3, alias="conflictRetries")
    # Container that serves the model (gets the GPU resources); default: the one
    # already requesting a GPU resource, else the first.
    serving_container: str | None = Field(None, alias="servingContainer")
    emit_events: bool = Field(True, alias="emitEvents")
    # Move accelerators make-before-break (the Deployment rolls with maxUnavailable 0 at a
    # bridge count, docs/actuation.md) or in place (one patch, the Deployment's strategy).
    move_strategy: Literal["make-before-break", "in-place"] = Field(
        "make-before-break", alias="moveStrategy"
    )
    # Patches and Events of a cycle go out on this many threads, at most `qps` requests
    # per second after a burst of `burst` (client-side, like client-go's QPS/Burst): a
    # cycle scaling 300 Deployments does not wait for 600 round trips one after another.
    concurrency: PositiveInt = 8
    qps: PositiveFloat = 50.0
    burst: PositiveInt = 100
    # patch: we set replicas (and move accelerators) ourselves; metrics: we never write a
    # Deployment, we publish the desired replicas (controlloop_target_replicas) for an HPA or
    # ScaledObject to follow, and keep every server on its accelerator (docs/actuation.md).
    mode: Literal["patch", "metrics"] = "patch"
    # Before a scale-down, set controller.kubernetes.io/pod-deletion-cost on the running
    # pods (their running requests) so the ReplicaSet removes the least-loaded first.
    pod_deletion_cost: bool = Field(True, alias="podDeletionCost")


class OwnershipConfig(Spec):
    # After someone else changed replicas, leave the server alone this long.
    hold_seconds: NonNegFloat = Field(600, alias="holdSeconds")
    respect_autoscalers: bool = Field(True, alias="respectAutoscalers")


class LeaderElectionConfig(Spec):
    enabled: bool = False
    lease_name: str = Field("controlloop-leader", alias="leaseName")
    namespace: str = "controlloop-system"
    lease_duration_seconds: PositiveFloat = Field(15, alias="leaseDurationSeconds")
    renew_deadline_seconds: PositiveFloat = Field(10, alias="renewDeadlineSeconds")
    retry_period_seconds: PositiveFloat = Field(2, alias="retryPeriodSeconds")


class PendingConfig(Spec):
    # A placement whose pods stay unschedulable this long is backed off.
    unschedulable_after_seconds: NonNegFloat = Field(120, alias="unschedulableAfterSeconds")
    backoff_seconds: NonNegFloat = Field(900, alias="backoffSeconds")


class ForecastConfig(Spec):
    """Scale-up lead for a rising load (controlloop/loop/forecast.py)."""

    # Size for the load this far ahead when it rises: about one replica start-up plus
    # one interval. 0 disables.
    lead_seconds: NonNegFloat = Field(180, alias="leadSeconds")
    window_seconds: PositiveFloat = Field(300, alias="windowSeconds")  # slope fitted over
    # lead <= this x the rate: bounds the overshoot when a step looks like a slope
    max_increase: NonNegFloat = Field(0.5, alias="maxIncrease")
    # Size for start-up (learned from pod readiness) + one interval ahead once a start-up
    # has been seen; leadSeconds until then.
    learn_startup: bool = Field(True, alias="learnStartup")
    # kalman forecaster: the load's own relative noise, and how fast its slope may change
    # (standard deviation, x the level per minute, per minute)
    noise: NonNegFloat = 0.05
    slope_noise: PositiveFloat = Field(0.1, alias="slopeNoise")


class WatchConfig(Spec):
    """Deployments and pods kept by watches between cycles (controlloop/cluster/watchcache.py):
    a cycle then lists nothing, where it lists 4 + one per further 500 objects without."""

    enabled: bool = False
    # the server ends each watch after this long and it is re-opened; a copy not heard
    # from within it + 30 s is not used (the cycle lists instead)
    timeout_seconds: PositiveFloat = Field(60, alias="timeoutSeconds", le=3600)
    # every copy is listed again this often, whatever its watch said
    resync_seconds: PositiveFloat = Field(600, alias="resyncSeconds", le=86400)


class ControllerSettings(Spec):
    interval_seconds: PositiveFloat = Field(60, alias="intervalSeconds")
    namespaces: list[str] = []  # empty: all namespaces
    label_selector: str = Field(f"{MANAGED_LABEL}=true", alias="labelSelector")
    default_class: str = Field("Free", alias="defaultClass")
    prometheus: PrometheusConfig = PrometheusConfig()
    behavior: BehaviorSpec = BehaviorSpec()
    servers: dict[str, BehaviorOverride] = {}  # per server name
    capacity: CapacityConfig = CapacityConfig()
    actuation: ActuationConfig = ActuationConfig()
    ownership: OwnershipConfig = OwnershipConfig()
    pending: PendingConfig = PendingConfig()
    leader_election: LeaderElectionConfig = Field(LeaderElectionConfig(), alias="leaderElection")
    # Check each chosen allocation in token-level simulation and add replicas where it
    # misses (docs/fidelity.md: 0 SLO misses at +0.1..1.2 % cost on the samples).
    verify: Literal["none", "simulate"] = "simulate"
    # Wall-clock seconds a cycle may spend verifying; what is not verified by then keeps
    # its model-sized allocation and is named in the cycle's solver message. Results are
    # reused across cycles (loads quantised up to a 2 % grid), so a stable fleet re-checks
    # little. 0: no limit.
    verify_budget_seconds: NonNegFloat = Field(3.0, alias="verifyBudgetSeconds")
    # Queued requests (vllm:num_requests_waiting) are added to the demand as a rate that
    # drains them within this many seconds, so a backlog built during a replica start-up
    # is worked off instead of lingering at the new arrival rate. 0 disables.
    backlog_drain_seconds: NonNegFloat = Field(300, alias="backlogDrainSeconds")
    forecast: ForecastConfig = ForecastConfig()
    watch: WatchConfig = WatchConfig()


class ControllerFile(Spec):
    controller: ControllerSettings = ControllerSettings()


CONTROLLER_SECTION = Section("controller", ControllerFile, CONTROLLER_FILES, False)


def controller_file(directory: Path) -> Path | None:
    found = [directory / name for name in CONTROLLER_FILES if (directory / name).is_file()]
    if len(found) > 1:
        raise ConfigError([f"{directory}: both {' and '.join(p.name for p in found)} define "
                           "the controller settings; keep one"])
    return found[0] if found else None


def load_controller_settings(directory: Path) -> ControllerSettings:
    """``controller.yaml`` of a config directory; defaults when absent."""
    path = controller_file(directory) if directory.is_dir() else None
    if path is None:
        return ControllerSettings()
    raw: Any = read_document(path)
    spec, problems = validate_section(CONTROLLER_SECTION, raw, where=str(path))
    if problems or spec is None:
        raise ConfigError(problems)
    assert isinstance(spec, ControllerFile)
    return spec.controller


def effective_behavior(
    settings: ControllerSettings, override: BehaviorOverride | None
) -> BehaviorSpec:
    if override is None:
        return settings.behavior
    # attributes, not model_dump(): nested models (panic) stay models
    update = {
        k: getattr(override, k) for k in type(override).model_fields
        if getattr(override, k) is not None
    }
    return settings.behavior.model_copy(update=update)
