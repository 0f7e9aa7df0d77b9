"""Result types of the optimizer: candidates, per-server decisions, the solution."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from controlloop.specs import LoadSpec


class DecisionStatus(StrEnum):
    """How a server's allocation relates to what its load needs."""

    MEETS_SLO = "meets-slo"  # enough replicas for the load at the SLOs
    SATURATED = "saturated"  # fewer replicas than needed (best effort)
    ZERO_LOAD = "zero-load"  # no load: minNumReplicas (possibly none)
    UNALLOCATED = "unallocated"  # nothing given


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"  # proven optimal (MILP) or trivially so (unlimited)
    FEASIBLE = "feasible"  # a plan that serves everyone, not proven optimal (greedy, MILP gap)
    PARTIAL = "partial"  # some servers saturated or unallocated
    FALLBACK = "fallback"  # MILP could not beat greedy; greedy's plan returned
    INFEASIBLE = "infeasible"  # nothing could be allocated


# Not frozen (treat as immutable; dataclasses.replace makes changed copies): a frozen
# dataclass sets each field through object.__setattr__, which made building the 55,000
# candidates of a 3,000-server fleet take 0.15-0.3 s, 3x a plain slotted class.
# unsafe_hash keeps the field hash the MILP's dict keys rely on.
@dataclass(slots=True, unsafe_hash=True)
class Candidate:
    """Accelerator ``accelerator`` sized for server ``server`` at its full load."""

    server: str
    accelerator: str
    acc_type: str
    batch: int
    replicas: int  # needed for the whole demand (at least minNumReplicas)
    cost: float  # cents/hour for ``replicas``
    value: float  # transition penalty from the current allocation (ranks candidates)
    units_per_replica: int  # cards of ``acc_type`` one replica takes
    rate_per_replica: float  # lam*: largest per-replica rate meeting the SLOs, req/s
    itl_ms: float  # predicted at demand/replicas per replica
    ttft_ms: float
    rho: float
    limited_by: str  # which target bounds lam*: "ttft", "itl", "tps", "stability", "zero-load"

    @property
    def cost_per_replica(self) -> float:
        return self.cost / self.replicas if self.replicas else 0.0

    @property
    def cards(self) -> int:
        return self.replicas * self.units_per_replica


@dataclass(frozen=True, slots=True)
class Rejected:
    """An accelerator that cannot serve a server, and why."""

    server: str
    accelerator: str
    reason: str


@dataclass(frozen=True, slots=True)
class Change:
    from_accelerator: str
    to_accelerator: str
    from_replicas: int
    to_replicas: int
    cost_delta: float

    @property
    def kind(self) -> str:
        if self.from_accelerator != self.to_accelerator and self.from_accelerator:
            return "move"
        if self.to_replicas > self.from_replicas:
            return "scale-up"
        if self.to_replicas < self.from_replicas:
            return "scale-down"
        return "none"


@dataclass(frozen=True, slots=True)
class ServerDecision:
    server: str
    service_class: str
    model: str
    priority: int
    status: DecisionStatus
    accelerator: str  # "" when unallocated (or zero load with no replicas)
    replicas: int
    needed_replicas: int  # replicas the chosen accelerator needs for the whole demand
    batch: int
    cost: float
    itl_ms: float | None
    ttft_ms: float | None
    rho: float | None
    rate_per_replica: float  # lam* on the chosen accelerator, req/s (0 if none)
    demand: float  # req/s the server must serve
    served_fraction: float  # min(1, replicas*lam*/demand); 1 at zero load
    slo_itl_ms: float
    slo_ttft_ms: float
    slo_tps: float
    load: LoadSpec
    change: Change
    reason: str  # why this accelerator, why these replicas (or why nothing)

    @property
    def meets_slo(self) -> bool:
        return self.status in (DecisionStatus.MEETS_SLO, DecisionStatus.ZERO_LOAD)


@dataclass(frozen=True, slots=True)
class TypeUsage:
    acc_type: str
    cards_used: int
    capacity: int | None  # None when unlimited
    cost: float


@dataclass
class Solution:
    solver: str  # "greedy", "milp", "unlimited"
    status: SolveStatus
    message: str
    decisions: dict[str, ServerDecision]
    usage_by_type: dict[str, TypeUsage]
    total_cost: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # verify: simulate with a time budget: servers whose allocation it could not check
    unverified: tuple[str, ...] = ()
    gap: float | None = None  # MILP relative gap; 0 when proven optimal
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)
    rejected: dict[str, list[Rejected]] = field(default_factory=dict)

    @property
    def unallocated(self) -> dict[str, str]:
        return {
            name: d.reason
            for name, d in self.decisions.items()
            if d.status is DecisionStatus.UNALLOCATED
        }

    @property
    def saturated(self) -> dict[str, ServerDecision]:
        return {
            name: d for name, d in self.decisions.items() if d.status is DecisionStatus.SATURATED
        }

    def served_by_priority(self) -> dict[int, float]:
        """Sum of served fractions per priority (server-equivalents), for comparing plans."""
        out: dict[int, float] = {}
        for d in self.decisions.values():
            out[d.priority] = out.get(d.priority, 0.0) + d.served_fraction
        return out

    def to_json(self) -> dict[str, Any]:
        """A superset of the reference allocation-solution JSON (``allocations``)."""
        allocations = {}
        for name in sorted(self.decisions):
            d = self.decisions[name]
            if d.status is DecisionStatus.UNALLOCATED:
                continue
            allocations[name] = {
                "accelerator": d.accelerator,
                "numReplicas": d.replicas,
                "maxBatch": d.batch,
                "cost": round(d.cost, 6),
                "itlAverage": _round(d.itl_ms),
                "ttftAverage": _round(d.ttft_ms),
                "rho": _round(d.rho),
                "load": {
                    "arrivalRate": d.load.arrival_rate,
                    "avgInTokens": d.load.avg_in_tokens,
                    "avgOutTokens": d.load.avg_out_tokens,
                },
                "status": d.status.value,
                "neededReplicas": d.needed_replicas,
                "servedFraction": round(d.served_fraction, 6),
                "ratePerReplica": round(d.rate_per_replica, 9),
                "change": {
                    "kind": d.change.kind,
                    "fromAccelerator": d.change.from_accelerator,
                    "toAccelerator": d.change.to_accelerator,
                    "fromReplicas": d.change.from_replicas,
                    "toReplicas": d.change.to_replicas,
                    "costDelta": round(d.change.cost_delta, 6),
                },
                "reason": d.reason,
            }
        return {
            "allocations": allocations,
            "totalCost": round(self.total_cost, 6),
            "unallocated": [
                {"server": name, "reason": reason}
                for name, reason in sorted(self.unallocated.items())
            ],
            "saturated": sorted(self.saturated),
            "usageByType": {
                t: {
                    "cardsUsed": u.cards_used,
                    "capacity": u.capacity,
                    "cost": round(u.cost, 6),
                }
                for t, u in sorted(self.usage_by_type.items())
            },
            "solver": self.solver,
            "status": self.status.value,
            "message": self.message,
            "gap": self.gap,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
