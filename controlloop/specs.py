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

from controlloop import bounds as B

DEFAULT_CLASS = "Free"
LOWEST_PRIORITY = 100
HIGHEST_PRIORITY = 1

# Every number has a physical bound (see controlloop.bounds for the reasons); NaN and
# infinities are refused by the models' config (allow_inf_nan=False).
PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, max_length=B.MAX_NAME)]
Batch = Annotated[int, Field(gt=0, le=B.MAX_BATCH)]
Tokens = Annotated[float, Field(ge=0, le=B.MAX_TOKENS)]
PositiveTokens = Annotated[int, Field(gt=0, le=B.MAX_TOKENS)]
Units = Annotated[int, Field(gt=0, le=B.MAX_UNITS)]
Replicas = Annotated[int, Field(ge=0, le=B.MAX_REPLICAS)]
Cost = Annotated[float, Field(ge=0, le=B.MAX_COST)]
Physical = Annotated[float, Field(ge=0, le=B.MAX_PHYSICAL)]
PerfMs = Annotated[float, Field(ge=0, le=B.MAX_PERF_MS)]
Alpha = Annotated[float, Field(ge=B.MIN_ALPHA_MS, le=B.MAX_PERF_MS)]
LatencyMs = Annotated[float, Field(ge=0, le=B.MAX_LATENCY_MS)]


class Spec(BaseModel):
    """Base of every spec: unknown keys are rejected (the loader adds "did you mean")."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        frozen=True,
        str_strip_whitespace=True,
        strict=False,
        allow_inf_nan=False,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The reference JSON shape (aliases, no ``None`` fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- accelerators -----------------------------------------------------------


class PowerSpec(Spec):
    idle: Physical = 0
    full: Physical = 0
    mid_power: Physical = Field(0, alias="midPower")
    mid_util: Annotated[float, Field(ge=0, le=1)] = Field(0, alias="midUtil")


class AcceleratorSpec(Spec):
    """One allocatable unit, e.g. ``2xA100`` = 2 cards of type ``A100``."""

    name: Name
    type: Name
    multiplicity: Units = 1
    mem_size: Physical = Field(0, alias="memSize")
    mem_bw: Physical = Field(0, alias="memBW")
    power: PowerSpec = PowerSpec()
    cost: Cost
    # Placement on Kubernetes: the pod template's nodeSelector for this
    # accelerator and the extended resource its cards are requested as.
    # (values are label values: at most 63 characters; keys are checked by Kubernetes)
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        None, alias="nodeSelector"
    )
    resource: Name = "nvidia.com/gpu"


class CapacityEntry(Spec):
    type: Name
    count: Annotated[int, Field(ge=0, le=B.MAX_CARDS)]


class CapacitySpec(Spec):
    count: list[CapacityEntry] = []

    def by_type(self) -> dict[str, int]:
        return {entry.type: entry.count for entry in self.count}


class AcceleratorData(Spec):
    accelerators: list[AcceleratorSpec]


# --- model perf data ----------------------------------------------------------


class DecodeParms(Spec):
    """Decode time of one token with ``n`` in the batch: ``alpha + beta*n`` (ms)."""

    alpha: Alpha
    beta: PerfMs


class PrefillParms(Spec):
    """Prefill time of a request with ``k`` input tokens, batch ``n``: \
``gamma + delta*k*n`` (ms)."""

    gamma: PerfMs
    delta: PerfMs


class PerfParms(Spec):
    """Iteration-time model (docs/model-spec.md section 8): ``alpha`` fixed overhead (ms),
    ``beta`` per token computed, ``gamma`` per token of KV cache read (ms)."""

    alpha: Alpha
    beta: PerfMs
    gamma: PerfMs


class ModelPerfSpec(Spec):
    """Performance of model ``name`` on accelerator ``acc``."""

    name: Name
    acc: Name
    acc_count: Units = Field(1, alias="accCount")
    max_batch_size: Batch = Field(alias="maxBatchSize")
    at_tokens: PositiveTokens = Field(alias="atTokens")
    decode_parms: DecodeParms | None = Field(None, alias="decodeParms")
    prefill_parms: PrefillParms | None = Field(None, alias="prefillParms")
    perf_parms: PerfParms | None = Field(None, alias="perfParms")
    # Per-iteration token budget of the iteration-time model (vLLM's
    # max_num_batched_tokens).
    max_num_batched_tokens: PositiveTokens = Field(8192, alias="maxNumBatchedTokens")
    # Ours [tuning]: scale of the chain's queue wait in TTFT (1 = MODEL.md as written); the
    # online tuner learns it per pair, since the chain's wait (memoryless service) is not a
    # real batch's (docs/fidelity.md).
    wait_scale: PositiveFloat = Field(1.0, alias="waitScale")


class ModelData(Spec):
    models: list[ModelPerfSpec]


# --- service classes ------------------------------------------------------------


class ModelTarget(Spec):
    """SLO targets of one model in a class; 0 means "no target"."""

    model: Name
    slo_itl: LatencyMs = Field(0, alias="slo-itl")
    slo_ttft: LatencyMs = Field(0, alias="slo-ttft")
    slo_tps: Annotated[float, Field(ge=0, le=B.MAX_TPS)] = Field(0, alias="slo-tps")


class ServiceClassSpec(Spec):
    name: Name
    # 1 is the highest priority; the loader maps missing/out-of-range to 100.
    priority: Annotated[int, Field(ge=HIGHEST_PRIORITY, le=LOWEST_PRIORITY)] = LOWEST_PRIORITY
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

    arrival_rate: Annotated[float, Field(ge=0, le=B.MAX_ARRIVAL_RPM)] = Field(
        0, alias="arrivalRate"
    )
    avg_in_tokens: Tokens = Field(0, alias="avgInTokens")
    avg_out_tokens: Tokens = Field(0, alias="avgOutTokens")

    @field_validator("avg_out_tokens")
    @classmethod
    def _at_least_one_token(cls, value: float) -> float:
        # every request generates at least one token; 0 means "no load"
        if 0 < value < 1:
            raise ValueError("must be 0 (no load) or >= 1 token")
        return value


class AllocationSpec(Spec):
    """An allocation as the reference format carries it (current or desired)."""

    accelerator: Annotated[str, Field(max_length=B.MAX_NAME)] = ""
    num_replicas: Replicas = Field(0, alias="numReplicas")
    max_batch: Annotated[int, Field(ge=0, le=B.MAX_BATCH)] = Field(0, alias="maxBatch")
    cost: Annotated[float, Field(ge=0, le=B.MAX_COST * B.MAX_REPLICAS)] = 0
    itl_average: LatencyMs = Field(0, alias="itlAverage")
    ttft_average: LatencyMs = Field(0, alias="ttftAverage")
    load: LoadSpec = LoadSpec()


class ServerSpec(Spec):
    """One inference server: a (service class, model) pair = one Deployment."""

    name: Name
    service_class: Annotated[str, Field(max_length=B.MAX_NAME)] = Field(
        DEFAULT_CLASS, alias="class"
    )
    model: Name
    keep_accelerator: bool = Field(False, alias="keepAccelerator")
    min_num_replicas: Replicas = Field(0, alias="minNumReplicas")
    # 0 = derive the batch size from the perf data.
    max_batch_size: Annotated[int, Field(ge=0, le=B.MAX_BATCH)] = Field(0, alias="maxBatchSize")
    current_alloc: AllocationSpec = Field(AllocationSpec(), alias="currentAlloc")
    desired_alloc: AllocationSpec | None = Field(None, alias="desiredAlloc")
    # Ours: restrict the accelerators this server may be placed on (None = any).
    # The controller uses it to keep servers off accelerators it cannot place on.
    allowed_accelerators: list[Name] | None = Field(None, alias="allowedAccelerators")

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
    time_limit: Annotated[float, Field(gt=0, le=B.MAX_TIME_LIMIT_S)] = Field(
        10.0, alias="timeLimit"
    )
    mip_gap: Annotated[float, Field(ge=0, lt=1)] = Field(1e-4, alias="mipGap")
    # Service-time model: "decode-prefill" (docs/model-spec.md section 2) or "iteration"
    # (section 8).
    service_model: Literal["decode-prefill", "iteration"] = Field(
        "decode-prefill", alias="serviceModel"
    )
    # Post-solve check of each chosen allocation: "none" or "simulate" (token-level).
    verify: Literal["none", "simulate"] = "none"
    # [fidelity] Cap each candidate's lam* at the largest per-replica rate meeting the
    # targets in token-level simulation ("calibrated"); learned rates are cached in
    # memory and, if set, in the JSON file calibrationCache.
    margin: Literal["none", "calibrated"] = "none"
    # ITL/TTFT reported for a best-effort (saturated) allocation: "sized" = at the
    # per-replica rate the candidate was sized to (the reference's figures, near the
    # targets); "offered" = at the load the fewer replicas actually get (honest: a
    # saturated server's TTFT, often far above its target).
    saturated_latency: Literal["sized", "offered"] = Field("sized", alias="saturatedLatency")
    calibration_cache: Annotated[str, Field(max_length=4096)] | None = Field(
        None, alias="calibrationCache"
    )
    # [tuning] Online estimate of each (model, accelerator)'s perf parameters from the
    # observed ITL/TTFT (controlloop/tuning): "apply" sizes with them once warmed up,
    # "observe" only reports them and the model error, "off" neither.
    tuning: Literal["off", "observe", "apply"] = "apply"
    # [fidelity] TTFT's prefill term (decode-prefill model): "batch" = MODEL.md section 2,
    # gamma + delta*I*n*; "joiner" = the joining iteration of section 7, gamma + delta*I
    # (continuous batching prefills only the joiners; docs/fidelity.md "TTFT on the demo").
    ttft_prefill: Literal["batch", "joiner"] = Field("batch", alias="ttftPrefill")

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
