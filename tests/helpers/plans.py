"""Independent readings of a plan, for tests that must not trust the optimizer's own figures.

- :func:`recount`: cost, move penalties and served demand per priority recomputed from the
  decisions' accelerator and replicas and the spec's raw fields (docs/model-spec.md section 4),
  not from ``Solution.total_cost`` or ``ServerDecision.served_fraction``.
- :func:`cards_by_type`: cards per accelerator type from replicas x ``cards_per_replica``,
  not from ``usage_by_type``.
- :func:`replicate`: a replica's mean TTFT/ITL from independent replications of
  :func:`controlloop.sim.simulate` (own seeds, own horizon), with standard errors taken across
  replications rather than from the verifier's batch means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controlloop.optimizer.solution import ServerDecision, Solution
from controlloop.sim import ReplicaParams, simulate
from controlloop.specs import LOWEST_PRIORITY, ServerSpec, SystemSpec

MOVE_SHARE = 0.1  # docs/model-spec.md section 4, written out here on purpose


@dataclass(frozen=True)
class Recount:
    cost: float  # cents/h: sum of accelerator cost x accCount x replicas
    objective: float  # cost plus move penalties (what both solvers minimise)
    served: dict[int, float]  # priority -> sum of served fractions (server-equivalents)

    def key(self) -> tuple[float, ...]:
        """Lexicographic order of plans: served per priority (1 first, more is better),
        then the objective (less is better); smaller keys are better plans."""
        return (*(-round(self.served[p], 6) for p in sorted(self.served)),
                round(self.objective, 6))


def demand_of(system: SystemSpec, server: ServerSpec) -> float:
    """Req/s the server must serve: slo-tps / K with a TPS target, else arrivalRate / 60."""
    cls = system.service_class(server.service_class)
    target = cls.target(server.model) if cls else None
    if target is not None and target.slo_tps > 0 and server.load.avg_out_tokens > 0:
        return target.slo_tps / server.load.avg_out_tokens
    if server.load.avg_out_tokens <= 0:
        return 0.0
    return server.load.arrival_rate / 60.0


def _replica_cost(system: SystemSpec, model: str, acc_name: str) -> float:
    acc, perf = system.accelerator(acc_name), system.perf(model, acc_name)
    assert acc is not None and perf is not None, (model, acc_name)
    return acc.cost * perf.acc_count


def recount(system: SystemSpec, solution: Solution) -> Recount:
    """Cost, objective and served fractions of ``solution`` from its decisions and the spec.

    The per-replica rate ``lam*`` comes from the sizing (the candidates both solvers are
    given), looked up by accelerator; everything else is read from the spec.
    """
    assert not system.optimizer.heterogeneous, "one accelerator per server assumed"
    cost = objective = 0.0
    served: dict[int, float] = {}
    for server in system.servers:
        d = solution.decisions[server.name]
        cls = system.service_class(server.service_class)
        priority = cls.priority if cls else LOWEST_PRIORITY
        demand = demand_of(system, server)
        fraction = 0.0
        if d.replicas > 0:
            c = _replica_cost(system, server.model, d.accelerator) * d.replicas
            cur = server.current_alloc
            cur_cost = (_replica_cost(system, server.model, cur.accelerator) * cur.num_replicas
                        if cur.accelerator and system.perf(server.model, cur.accelerator)
                        else cur.cost)
            cost += c
            objective += c
            if d.accelerator != cur.accelerator:
                objective += MOVE_SHARE * (cur_cost + c)
            if demand > 0:
                lam = next(x.rate_per_replica for x in solution.candidates[server.name]
                           if x.accelerator == d.accelerator)
                fraction = min(1.0, d.replicas * lam / demand)
        if demand <= 0:  # zero load: served once minNumReplicas run
            need = server.min_num_replicas
            fraction = 1.0 if d.replicas >= need else d.replicas / need
        served[priority] = served.get(priority, 0.0) + fraction
    return Recount(cost=cost, objective=objective, served=served)


def cards_by_type(system: SystemSpec, solution: Solution) -> dict[str, int]:
    """Cards per accelerator type: replicas x ``SystemSpec.cards_per_replica``, per decision."""
    used: dict[str, int] = {}
    for d in solution.decisions.values():
        if d.replicas <= 0:
            continue
        acc = system.accelerator(d.accelerator)
        assert acc is not None, d.accelerator
        cards = system.cards_per_replica(d.model, d.accelerator)
        assert cards > 0, (d.model, d.accelerator)
        used[acc.type] = used.get(acc.type, 0) + d.replicas * cards
    return used


def over_capacity(system: SystemSpec, solution: Solution) -> dict[str, tuple[int, int]]:
    """Types whose recounted cards exceed the spec's capacity: type -> (used, capacity)."""
    capacity = system.capacity_by_type()
    return {t: (n, capacity.get(t, 0)) for t, n in cards_by_type(system, solution).items()
            if n > capacity.get(t, 0)}


def sim_params(system: SystemSpec, d: ServerDecision) -> ReplicaParams | None:
    """Simulator parameters of a decision, read from the spec (None without decode/prefill
    data); token counts are the load's averages rounded (the simulator takes integers)."""
    perf = system.perf(d.model, d.accelerator)
    assert perf is not None
    if perf.decode_parms is None or perf.prefill_parms is None:
        return None
    return ReplicaParams(
        alpha=perf.decode_parms.alpha, beta=perf.decode_parms.beta,
        gamma=perf.prefill_parms.gamma, delta=perf.prefill_parms.delta,
        batch=d.batch, in_tokens=round(d.load.avg_in_tokens),
        out_tokens=max(1, round(d.load.avg_out_tokens)),
    )


@dataclass(frozen=True)
class Replicated:
    """Means over independent replications and their standard errors (ms; loss fraction)."""

    ttft_ms: float
    ttft_se: float
    itl_ms: float
    itl_se: float
    loss: float
    loss_se: float
    arrivals: int
    ttft_runs: tuple[float, ...]  # each replication's mean TTFT (for sign tests)

    def misses(self, *, ttft: float, itl: float, z: float = 3.0) -> list[str]:
        """Targets (0 = none) missed beyond ``z`` standard errors, and loss beyond the
        verifier's 1e-3 allowance by as much; empty when the SLO holds within sampling error."""
        out = []
        if ttft > 0 and not self.ttft_ms <= ttft + z * self.ttft_se:
            out.append(f"TTFT {self.ttft_ms:.1f} +- {self.ttft_se:.1f} ms > {ttft}")
        if itl > 0 and not self.itl_ms <= itl + z * self.itl_se:
            out.append(f"ITL {self.itl_ms:.2f} +- {self.itl_se:.2f} ms > {itl}")
        if not self.loss <= 1e-3 + z * self.loss_se:
            out.append(f"loss {self.loss:.4f} +- {self.loss_se:.4f}")
        return out


def replicate(params: ReplicaParams, rate_per_s: float, *, requests: int, min_s: float,
              reps: int, seed: int) -> Replicated:
    """``reps`` independent runs (seeds ``seed``, ``seed+1``, ...) of ``max(min_s,
    requests/rate)`` seconds each after a 10 % warm-up."""
    duration_ms = max(min_s, requests / rate_per_s) * 1000.0
    runs = [simulate(params, rate_per_ms=rate_per_s / 1000.0, duration_ms=duration_ms,
                     seed=seed + i) for i in range(reps)]

    def stat(values: list[float]) -> tuple[float, float]:
        a = np.array(values)
        return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))

    ttft, ttft_se = stat([r.ttft_mean_ms for r in runs])
    itl, itl_se = stat([r.itl_mean_ms for r in runs])
    loss, loss_se = stat([r.loss_fraction for r in runs])
    return Replicated(ttft, ttft_se, itl, itl_se, loss, loss_se, sum(r.arrivals for r in runs),
                      tuple(r.ttft_mean_ms for r in runs))
