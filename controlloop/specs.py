"""Typed static specs: accelerators, capacity, model perf data, service classes,
servers, optimizer options, and the whole system.

Field names follow the reference JSON format (camelCase, ``slo-itl`` …); the
loader in :mod:`controlloop.config` matches them case-insensitively before
these models see the data, so ``AvgInTokens`` and ``milpsolver`` are accepted.

Units: times in milliseconds, arrival rates in requests per minute, costs in
cents per hour (per accelerator unit), memory in GB and bandwidth in GB/s.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CLASS = "Free"
LOWEST_PRIORITY = 100
HIGHEST_PRIORITY = 1

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class Spec(BaseModel):
    """Base of every spec: unknown keys are rejected (the loader adds "did you mean")."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        frozen=True,
        str_strip_whitespace=True,
        strict=False,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The reference JSON shape (aliases, no ``None`` fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- accelerators -----------------------------------------------------------


class PowerSpec(Spec):
    idle: NonNegFloat = 0
    full: NonNegFloat = 0
    mid_power: NonNegFloat = Field(0, alias="midPower")
    mid_util: Annotated[float, Field(ge=0, le=1)] = Field(0, alias="midUtil")


class AcceleratorSpec(Spec):
    """One allocatable unit, e.g. ``2xA100`` = 2 cards of type ``A100``."""

    name: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1)]
    multiplicity: PositiveInt = 1
    mem_size: NonNegFloat = Field(0, alias="memSize")
    mem_bw: NonNegFloat = Field(0, alias="memBW")
    power: PowerSpec = PowerSpec()
    cost: NonNegFloat
    # Placement on Kubernetes: the pod template's nodeSelector for this
    # accelerator and the extended resource its cards are requested as.
    node_selector: dict[str, str] | None = Field(None, alias="nodeSelector")
    resource: str = "nvidia.com/gpu"


class CapacityEntry(Spec):
    type: Annotated[str, Field(min_length=1)]
    count: NonNegInt


class CapacitySpec(Spec):
    count: list[CapacityEntry] = []

    def by_type(self) -> dict[str, int]:
        return {entry.type: entry.count for entry in self.count}


class AcceleratorData(Spec):
    accelerators: list[AcceleratorSpec]


# --- model perf data ----------------------------------------------------------


class DecodeParms(Spec):
    """Decode time of one token with ``n`` in the batch: ``alpha + beta*n`` (ms)."""

    alpha: PositiveFloat
    beta: NonNegFloat


class PrefillParms(Spec):
    """Prefill time of a request with ``k`` input tokens, batch ``n``: ``gamma + delta*k*n`` (ms)."""

    gamma: NonNegFloat
    delta: NonNegFloat


class PerfParms(Spec):
    """Iteration-time model (MODEL.md section 8): ``alpha`` fixed overhead (ms),
    ``beta`` per token computed, ``gamma`` per token of KV cache read (ms)."""

    alpha: PositiveFloat
    beta: NonNegFloat
    gamma: NonNegFloat


class ModelPerfSpec(Spec):
    """Performance of model ``name`` on accelerator ``acc``."""

    name: Annotated[str, Field(min_length=1)]
    acc: Annotated[str, Field(min_length=1)]
    acc_count: PositiveInt = Field(1, alias="accCount")
    max_batch_size: PositiveInt = Field(alias="maxBatchSize")
    at_tokens: PositiveInt = Field(alias="atTokens")
    decode_parms: DecodeParms | None = Field(None, alias="decodeParms")
    prefill_parms: PrefillParms | None = Field(None, alias="prefillParms")
    perf_parms: PerfParms | None = Field(None, alias="perfParms")
    # Per-iteration token budget of the iteration-time model (vLLM's
    # max_num_batched_tokens).
    max_num_batched_tokens: PositiveInt = Field(8192, alias="maxNumBatchedTokens")


class ModelData(Spec):
    models: list[ModelPerfSpec]


# --- service classes ------------------------------------------------------------


class ModelTarget(Spec):
    """SLO targets of one model in a class; 0 means "no target"."""

    model: Annotated[str, Field(min_length=1)]
    slo_itl: NonNegFloat = Field(0, alias="slo-itl")
    slo_ttft: NonNegFloat = Field(0, alias="slo-ttft")
    slo_tps: NonNegFloat = Field(0, alias="slo-tps")


class ServiceClassSpec(Spec):
    name: Annotated[str, Field(min_length=1)]
    # 1 is the highest priority; the loader maps missing/out-of-range to 100.
    priority: int = LOWEST_PRIORITY
    model_targets: list[ModelTarget] = Field([], alias="modelTargets")

    def target(self, model: str) -> ModelTarget | None:
        for target in self.model_targets:
            if target.model == model:
                return target
        return None


class ServiceClassData(Spec):
    service_classes: list[ServiceClassSpec] = Field(alias="serviceClasses")


# --- servers --------------------------------------------------------------------


class LoadSpec(Spec):
    """Offered load: arrival rate (req/min) and average tokens per request."""

    arrival_rate: NonNegFloat = Field(0, alias="arrivalRate")
    avg_in_tokens: NonNegFloat = Field(0, alias="avgInTokens")
    avg_out_tokens: NonNegFloat = Field(0, alias="avgOutTokens")


class AllocationSpec(Spec):
    """An allocation as the reference format carries it (current or desired)."""

    accelerator: str = ""
    num_replicas: NonNegInt = Field(0, alias="numReplicas")
    max_batch: NonNegInt = Field(0, alias="maxBatch")
    cost: NonNegFloat = 0
    itl_average: NonNegFloat = Field(0, alias="itlAverage")
    ttft_average: NonNegFloat = Field(0, alias="ttftAverage")
    load: LoadSpec = LoadSpec()


class ServerSpec(Spec):
    """One inference server: a (service class, model) pair = one Deployment."""

    name: Annotated[str, Field(min_length=1)]
    service_class: str = Field(DEFAULT_CLASS, alias="class")
    model: Annotated[str, Field(min_length=1)]
    keep_accelerator: bool = Field(False, alias="keepAccelerator")
    min_num_replicas: NonNegInt = Field(0, alias="minNumReplicas")
    # 0 = derive the batch size from the perf data.
    max_batch_size: NonNegInt = Field(0, alias="maxBatchSize")
    current_alloc: AllocationSpec = Field(AllocationSpec(), alias="currentAlloc")
    desired_alloc: AllocationSpec | None = Field(None, alias="desiredAlloc")
    # Ours: restrict the accelerators this server may be placed on (None = any).
    # The controller uses it to keep servers off accelerators it cannot place on.
    allowed_accelerators: list[str] | None = Field(None, alias="allowedAccelerators")

    @property
    def load(self) -> LoadSpec:
        return self.current_alloc.load


class ServerData(Spec):
    servers: list[ServerSpec] = []


# --- optimizer --------------------------------------------------------------------


class SaturationPolicy(StrEnum):
    NONE = "None"
    PRIORITY_EXHAUSTIVE = "PriorityExhaustive"
    PRIORITY_ROUND_ROBIN = "PriorityRoundRobin"
    ROUND_ROBIN = "RoundRobin"


class OptimizerSpec(Spec):
    """Optimizer options. The first six are the reference format's; the rest are ours."""

    unlimited: bool = False
    heterogeneous: bool = False
    milp_solver: bool = Field(False, alias="milpSolver")
    use_cplex: bool = Field(False, alias="useCplex")  # accepted for compatibility; HiGHS is used
    delayed_best_effort: bool = Field(False, alias="delayedBestEffort")
    saturation_policy: SaturationPolicy = Field(SaturationPolicy.NONE, alias="saturationPolicy")
    # MILP limits: wall-clock seconds and relative optimality gap.
    time_limit: PositiveFloat = Field(10.0, alias="timeLimit")
    mip_gap: Annotated[float, Field(ge=0, lt=1)] = Field(1e-4, alias="mipGap")
    # Service-time model: "decode-prefill" (MODEL.md section 2) or "iteration" (section 8).
    service_model: Literal["decode-prefill", "iteration"] = Field(
        "decode-prefill", alias="serviceModel"
    )
    # Post-solve check of each chosen allocation: "none" or "simulate" (token-level).
    verify: Literal["none", "simulate"] = "none"
    # [fidelity] Cap each candidate's lam* at the largest per-replica rate meeting the
    # targets in token-level simulation ("calibrated"); learned rates are cached in
    # memory and, if set, in the JSON file calibrationCache.
    margin: Literal["none", "calibrated"] = "none"
    calibration_cache: str | None = Field(None, alias="calibrationCache")

    @field_validator("saturation_policy", mode="before")
    @classmethod
    def _policy_case_insensitive(cls, value: Any) -> Any:
        if isinstance(value, str):
            for policy in SaturationPolicy:
                if policy.value.lower() == value.strip().lower():
                    return policy
            if value.strip() == "":
                return SaturationPolicy.NONE
        return value

    @property
    def solver(self) -> str:
        return "milp" if self.milp_solver else "greedy"


class OptimizerData(Spec):
    optimizer: OptimizerSpec = OptimizerSpec()


# --- the whole system ---------------------------------------------------------------


class SystemSpec(Spec):
    """Everything the optimizer needs. Lookups are by name."""

    accelerators: list[AcceleratorSpec]
    capacity: CapacitySpec = CapacitySpec()
    models: list[ModelPerfSpec]
    service_classes: list[ServiceClassSpec]
    servers: list[ServerSpec] = []
    optimizer: OptimizerSpec = OptimizerSpec()

    def accelerator(self, name: str) -> AcceleratorSpec | None:
        return self.accelerators_by_name().get(name)

    def accelerators_by_name(self) -> dict[str, AcceleratorSpec]:
        return {acc.name: acc for acc in self.accelerators}

    def service_class(self, name: str) -> ServiceClassSpec | None:
        for svc in self.service_classes:
            if svc.name == name:
                return svc
        return None

    def perf(self, model: str, acc: str) -> ModelPerfSpec | None:
        for perf in self.models:
            if perf.name == model and perf.acc == acc:
                return perf
        return None

    def cards_per_replica(self, model: str, acc: str) -> int:
        """Physical cards one replica of ``model`` takes on ``acc`` (0 when unknown):
        the perf entry's accelerator count times the accelerator's multiplicity."""
        accel, perf = self.accelerator(acc), self.perf(model, acc)
        if accel is None or perf is None:
            return 0
        return perf.acc_count * accel.multiplicity

    def cost_per_replica(self, model: str, acc: str) -> float | None:
        """Cents/hour of one replica of ``model`` on ``acc`` (None when unknown)."""
        accel, perf = self.accelerator(acc), self.perf(model, acc)
        if accel is None or perf is None:
            return None
        return accel.cost * perf.acc_count

    def model_names(self) -> list[str]:
        return sorted({perf.name for perf in self.models})

    def capacity_by_type(self) -> dict[str, int]:
        return self.capacity.by_type()

    def to_reference_json(self) -> dict[str, Any]:
        """The ``{"system": {...}}`` document of the reference format."""
        return {
            "system": {
                "acceleratorData": {"accelerators": [a.to_json_dict() for a in self.accelerators]},
                "capacityData": self.capacity.to_json_dict(),
                "modelData": {"models": [m.to_json_dict() for m in self.models]},
                "serviceClassData": {
                    "serviceClasses": [c.to_json_dict() for c in self.service_classes]
                },
                "serverData": {"servers": [s.to_json_dict() for s in self.servers]},
                "optimizerData": {"optimizer": self.optimizer.to_json_dict()},
            }
        }
