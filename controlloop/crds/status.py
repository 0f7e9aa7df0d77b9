"""The Optimizer's status from a cycle report (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

Obj = dict[str, Any]


def condition(type_: str, status: bool, reason: str, message: str, *, now: str,
              generation: int, previous: Iterable[Mapping[str, Any]] = ()) -> Obj:
    """A condition; ``lastTransitionTime`` moves only when ``status`` flips."""
    value = "True" if status else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime", now) if old and old.get("status") == value else now
    return {"type": type_, "status": value, "reason": reason, "message": message[:1024],
            "lastTransitionTime": since, "observedGeneration": generation}


def _num(value: Any) -> float | None:
    """A finite number or None (JSON has no inf/NaN; the schema allows null)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def optimizer_status(report: Any, *, generation: int, now: str, specs_error: str = "",
                     previous: Iterable[Mapping[str, Any]] = ()) -> Obj:
    """The Optimizer's status for one cycle report (:class:`~controlloop.loop.cycle.CycleReport`):
    the solution per server, totals, and conditions Ready (the cycle produced a solution from
    valid specs) and Degraded (it did so only in part, or the specs are the last good ones)."""
    servers = []
    for s in report.servers:
        replicas = next((r for r in (s.desired_replicas, s.recommended_replicas)
                         if r is not None), s.current_replicas)
        servers.append({
            "name": s.server, "namespace": s.namespace, "deployment": s.deployment,
            "model": s.model, "class": s.service_class,
            "currentAccelerator": s.current_accelerator, "currentReplicas": s.current_replicas,
            "accelerator": s.desired_accelerator or s.recommended_accelerator
            or s.current_accelerator,
            "replicas": max(0, int(replicas)), "batch": s.batch, "cost": _num(s.cost),
            "predictedItlMs": _num(s.predicted_itl_ms),
            "predictedTtftMs": _num(s.predicted_ttft_ms),
            "sloItlMs": _num(s.slo_itl_ms), "sloTtftMs": _num(s.slo_ttft_ms),
            "decision": s.verdict, "reason": s.reason[:1024],
        })
    errors = sum(report.error_kinds.values()) if report.error_kinds else len(report.errors)
    totals = {"servers": len(servers), "replicas": sum(x["replicas"] for x in servers),
              "cost": round(max(0.0, _num(report.total_cost) or 0.0), 4),
              "scaled": report.count("scaled"), "moved": report.count("moved"),
              "held": report.count("held"), "unchanged": report.count("unchanged"),
              "errors": errors}
    previous = list(previous)
    if report.outcome == "failed":
        ready = condition("Ready", False, "CycleFailed",
                          "; ".join(report.errors)[:1024] or "the cycle failed", now=now,
                          generation=generation, previous=previous)
    else:
        ready = condition("Ready", True, "SolutionApplied" if not report.dry_run
                          else "SolutionComputed", report.summary(), now=now,
                          generation=generation, previous=previous)
    if specs_error:
        degraded = condition("Degraded", True, "InvalidSpecs",
                             f"using the last good specs: {specs_error}", now=now,
                             generation=generation, previous=previous)
    elif report.outcome == "partial" or errors:
        degraded = condition("Degraded", True, "PartialCycle",
                             "; ".join(report.errors)[:1024] or "some servers failed", now=now,
                             generation=generation, previous=previous)
    else:
        degraded = condition("Degraded", False, "AsExpected", "", now=now,
                             generation=generation, previous=previous)
    return {"observedGeneration": generation, "lastCycleTime": now, "cycleId": report.cycle_id,
            "outcome": report.outcome, "dryRun": bool(report.dry_run), "solver": report.solver,
            "solverStatus": report.solver_status, "totals": totals, "servers": servers,
            "conditions": [ready, degraded]}


