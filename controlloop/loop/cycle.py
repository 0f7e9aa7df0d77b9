"""What one control cycle reports, and where its static specs come from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from controlloop.loop.settings import ControllerSettings
from controlloop.specs import SystemSpec

Outcome = Literal["ok", "partial", "failed"]

Verdict = Literal["scaled", "moved", "unchanged", "held", "skipped", "error"]
"""What happened to a server this cycle."""

HeldReason = Literal[
    "",  # not held
    "autoscaler",  # an HPA or ScaledObject targets the Deployment
    "external-change",  # someone else changed replicas: respected for ownership.holdSeconds
    "changed-externally",  # our patch met someone else's change (409)
    "unknown-load",  # metrics missing, stale or unreadable: never act on them
    "unknown-model",
    "unknown-class",
    "unknown-accelerator",
    "bad-label",  # a label's number is beyond its physical bound (controlloop.bounds)
    "capacity-unknown",  # node capacity could not be read
    "not-optimized",  # the optimizer returned no decision for it
    "unallocated",  # the optimizer could not fit it: keep current
    "no-node-selector",  # the chosen accelerator cannot be placed
    "move-in-progress",
    "move-deferred",  # the move's bridge needs cards that are not free
    "move-rate-limited",
    "move-stalled",
    "bad-move-annotation",
]
"""Why a server is held: a short code for metrics, Events and alerts."""

VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
HELD_REASONS: tuple[HeldReason, ...] = tuple(r for r in get_args(HeldReason) if r)


@dataclass
class ServerReport:
    """One server in one cycle: inputs, decision and why, what was sent."""

    server: str
    namespace: str
    deployment: str
    model: str
    service_class: str
    current_accelerator: str
    current_replicas: int
    ready_replicas: int
    pending_pods: int
    load: dict[str, Any]
    verdict: Verdict = "unchanged"
    held_reason: HeldReason = ""
    reason: str = ""
    recommended_accelerator: str = ""
    recommended_replicas: int | None = None
    desired_accelerator: str = ""
    desired_replicas: int | None = None
    batch: int | None = None
    predicted_itl_ms: float | None = None
    predicted_ttft_ms: float | None = None
    slo_itl_ms: float | None = None
    slo_ttft_ms: float | None = None
    cost: float | None = None
    decision_status: str = ""
    patch: dict[str, Any] | None = None
    sent: bool = False
    error: str = ""
    error_kind: str = ""
    # surge fast path (loop/surge.py): why the server panics ("" when not); panic_kind is
    # set when a panic condition was seen this cycle (capacity | waiting | kv-cache)
    panic: str = ""
    panic_kind: str = ""
    # foresight (loop/forecast.py): the forecaster, its relative mean absolute error so far,
    # and the replica start-up time learned from pod readiness
    forecaster: str = ""
    forecast_error: float | None = None
    startup_seconds: float | None = None
    # [tuning] Predicted (with the values sizing used) vs observed at this cycle's
    # operating point: itlPredMs, ttftPredMs, itlError, ttftError (relative), tuned.
    model_error: dict[str, Any] | None = None


@dataclass
class CycleReport:
    cycle_id: str
    started_at: float
    duration_s: float = 0.0
    outcome: Outcome = "ok"
    servers: list[ServerReport] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    solver: str = ""
    solver_status: str = ""
    solver_message: str = ""
    total_cost: float = 0.0
    durations: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    trigger: str = "regular"  # regular | surge (run at once by the surge check)
    tuning: dict[str, Any] = field(default_factory=dict)  # mode and per-pair estimates
    actuation_mode: str = "patch"  # metrics: replicas are published, never patched

    def count(self, verdict: Verdict) -> int:
        return sum(1 for s in self.servers if s.verdict == verdict)

    def summary(self) -> str:
        return (
            f"cycle {self.cycle_id} {self.outcome}: {len(self.servers)} servers, "
            f"{self.count('scaled')} scaled, {self.count('moved')} moved, "
            f"{self.count('held')} held, {self.count('unchanged')} unchanged, "
            f"{len(self.skipped)} skipped, {sum(self.error_kinds.values())} errors; "
            f"cost {self.total_cost:.2f}¢/h; {self.duration_s * 1000:.0f} ms"
            + (" (dry-run)" if self.dry_run else "")
            + (" (surge)" if self.trigger == "surge" else "")
        )

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class SpecSource:
    """The current static specs; the daemon's implementation re-reads changed files."""

    def current(self) -> tuple[SystemSpec, ControllerSettings]:
        raise NotImplementedError


class StaticSpecs(SpecSource):
    def __init__(self, system: SystemSpec, settings: ControllerSettings) -> None:
        self.system = system
        self.settings = settings

    def current(self) -> tuple[SystemSpec, ControllerSettings]:
        return self.system, self.settings
