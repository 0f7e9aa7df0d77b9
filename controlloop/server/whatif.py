"""``POST /whatif``: optimize a system twice, as is and with overrides, and diff the plans."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, model_validator

from controlloop import bounds as B
from controlloop.optimizer.solution import ServerDecision, Solution
from controlloop.server.errors import invalid
from controlloop.server.payloads import merge_options
from controlloop.specs import (
    CapacityEntry,
    CapacitySpec,
    LatencyMs,
    ModelTarget,
    Name,
    OptimizerSpec,
    Spec,
    SystemSpec,
)

Rate = Annotated[float, Field(ge=0, le=B.MAX_ARRIVAL_RPM)]
Factor = Annotated[float, Field(ge=0, le=B.MAX_ARRIVAL_RPM)]  # x a rate >= 1 req/min
Tps = Annotated[float, Field(ge=0, le=B.MAX_TPS)]


class ServerOverride(Spec):
    """Load of one server: scale its arrival rate, or set it (req/min)."""

    load_factor: Factor | None = Field(None, alias="loadFactor")
    arrival_rate: Rate | None = Field(None, alias="arrivalRate")

    @model_validator(mode="after")
    def _one_of(self) -> ServerOverride:
        if self.load_factor is not None and self.arrival_rate is not None:
            raise ValueError("give loadFactor or arrivalRate, not both")
        return self


class SloOverride(Spec):
    """New targets of one (class, model) pair; fields not given are kept."""

    service_class: Name = Field(alias="class")
    model: Name
    slo_itl: LatencyMs | None = Field(None, alias="slo-itl")
    slo_ttft: LatencyMs | None = Field(None, alias="slo-ttft")
    slo_tps: Tps | None = Field(None, alias="slo-tps")


class WhatIfOverrides(Spec):
    load_factor: Factor | None = Field(None, alias="loadFactor")  # all servers
    servers: dict[str, ServerOverride] = {}
    slo: list[SloOverride] = []
    # card deltas per accelerator type, result clamped to 0..MAX_CARDS
    capacity: dict[str, Annotated[int, Field(ge=-B.MAX_CARDS, le=B.MAX_CARDS)]] = {}
    optimizer: OptimizerSpec | None = None  # fields given replace the system's


class WhatIfRequest(Spec):
    system: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None


def apply_overrides(system: SystemSpec, ov: WhatIfOverrides) -> SystemSpec:
    """The system with ``ov`` applied; unknown names are 400 problems under ``overrides``."""
    problems: list[str] = []
    servers = []
    names = {s.name for s in system.servers}
    for name in ov.servers:
        if name not in names:
            problems.append(f"body: overrides.servers.{name}: unknown server {json.dumps(name)}")
    for server in system.servers:
        load = server.load
        one = ov.servers.get(server.name)
        if one is not None and one.arrival_rate is not None:
            rate = one.arrival_rate
        else:
            factor = one.load_factor if one is not None else None
            factor = factor if factor is not None else ov.load_factor
            rate = load.arrival_rate * (factor if factor is not None else 1.0)
            if rate > B.MAX_ARRIVAL_RPM:
                problems.append(
                    f"body: overrides: loadFactor {factor:g} makes server {server.name}'s "
                    f"arrival rate {rate:g} req/min, must be <= {B.MAX_ARRIVAL_RPM:g}"
                )
        alloc = server.current_alloc.model_copy(
            update={"load": load.model_copy(update={"arrival_rate": rate})}
        )
        servers.append(server.model_copy(update={"current_alloc": alloc}))

    classes = {c.name: c for c in system.service_classes}
    for i, slo in enumerate(ov.slo):
        cls = classes.get(slo.service_class)
        if cls is None:
            problems.append(
                f"body: overrides.slo[{i}].class: unknown service class "
                f"{json.dumps(slo.service_class)}"
            )
            continue
        old = cls.target(slo.model)
        given = {
            f: getattr(slo, f)
            for f in ("slo_itl", "slo_ttft", "slo_tps")
            if getattr(slo, f) is not None
        }
        if old is None:
            target = ModelTarget.model_validate({"model": slo.model, **given})
            targets = [*cls.model_targets, target]
        else:
            targets = [t.model_copy(update=given) if t is old else t for t in cls.model_targets]
        classes[cls.name] = cls.model_copy(update={"model_targets": targets})

    capacity = dict(system.capacity_by_type())
    types = {a.type for a in system.accelerators}
    for acc_type, delta in ov.capacity.items():
        if acc_type not in types:
            problems.append(
                f"body: overrides.capacity.{acc_type}: unknown accelerator type "
                f"{json.dumps(acc_type)}"
            )
            continue
        capacity[acc_type] = min(B.MAX_CARDS, max(0, capacity.get(acc_type, 0) + delta))
    if problems:
        raise invalid(problems, "invalid what-if overrides")

    update: dict[str, Any] = {
        "servers": servers,
        "service_classes": [classes[c.name] for c in system.service_classes],
        "capacity": CapacitySpec(
            count=[CapacityEntry(type=t, count=n) for t, n in capacity.items()]
        ),
    }
    if ov.optimizer is not None:
        update["optimizer"] = merge_options(system.optimizer, ov.optimizer)
    return system.model_copy(update=update)


def _side(d: ServerDecision | None) -> dict[str, Any]:
    if d is None:
        return {"accelerator": "", "replicas": 0, "cost": 0.0, "itl": None, "ttft": None}
    return {
        "accelerator": d.accelerator,
        "replicas": d.replicas,
        "cost": round(d.cost, 6),
        "itl": None if d.itl_ms is None else round(d.itl_ms, 6),
        "ttft": None if d.ttft_ms is None else round(d.ttft_ms, 6),
        "status": d.status.value,
    }


def diff(baseline: Solution, whatif: Solution) -> dict[str, Any]:
    """Per server ``{field: {"before", "after"}}`` plus whether anything changed."""
    out: dict[str, Any] = {}
    for name in sorted(set(baseline.decisions) | set(whatif.decisions)):
        before = _side(baseline.decisions.get(name))
        after = _side(whatif.decisions.get(name))
        entry: dict[str, Any] = {
            key: {"before": before.get(key), "after": after.get(key)}
            for key in ("accelerator", "replicas", "cost", "itl", "ttft", "status")
        }
        entry["changed"] = any(
            before.get(k) != after.get(k) for k in ("accelerator", "replicas", "status")
        )
        out[name] = entry
    return out
