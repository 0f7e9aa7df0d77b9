"""Solver dispatch and turning a solver's assignment into a :class:`Solution`.

Shared by :func:`controlloop.optimizer.api.optimize` and by the verifier, which
re-solves after repairing candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlloop.model.perf import DecodePrefillPerf, IterationPerf, PerfModel
from controlloop.model.sizing import analyze
from controlloop.optimizer.candidates import (
    MS_PER_S,
    CandidateSet,
    ServerContext,
    move_penalty,
)
from controlloop.optimizer.greedy import Assignment, GreedyResult, solve_greedy, solve_unlimited
from controlloop.optimizer.solution import (
    Candidate,
    Change,
    DecisionStatus,
    ServerDecision,
    Solution,
    SolveStatus,
    TypeUsage,
)
from controlloop.specs import OptimizerSpec, SaturationPolicy, SystemSpec


def solve(system: SystemSpec, cset: CandidateSet, options: OptimizerSpec) -> Solution:
    priorities = {name: ctx.priority for name, ctx in cset.servers.items()}
    capacity = system.capacity_by_type()
    if options.unlimited and not (options.milp_solver and options.heterogeneous):
        result = solve_unlimited(cset.candidates)
        return build_solution(system, cset, result.assigned, result.unallocated, "unlimited",
                              options, status=SolveStatus.OPTIMAL, message="each server at its "
                              "lowest-value candidate (unlimited capacity)")
    greedy = solve_greedy(
        cset.candidates,
        priorities,
        capacity,
        policy=options.saturation_policy,
        delayed_best_effort=options.delayed_best_effort,
    )
    greedy_solution = build_solution(
        system, cset, greedy.assigned, greedy.unallocated, "greedy", options,
        message=_greedy_message(greedy, options),
    )
    if not options.milp_solver:
        return greedy_solution
    # The MILP warm-starts from exactly the plan its result is compared against.
    start = {name: [(a.candidate, a.replicas)] for name, a in greedy.assigned.items()}
    return _solve_milp(system, cset, options, greedy_solution, start)


def _greedy_message(result: GreedyResult, options: OptimizerSpec) -> str:
    short = len(result.unallocated)
    best_effort = sum(1 for a in result.assigned.values() if a.how.startswith("best-effort"))
    return (
        f"greedy, saturation policy {options.saturation_policy.value}: "
        f"{len(result.assigned) - best_effort} served fully, {best_effort} best effort, "
        f"{short} unallocated"
    )


def _solve_milp(
    system: SystemSpec,
    cset: CandidateSet,
    options: OptimizerSpec,
    greedy: Solution,
    start: dict[str, list[tuple[Candidate, int]]],
) -> Solution:
    # Imported here: scipy.sparse and highspy cost ~0.1 s of start-up that greedy runs
    # (the default, and every `optimize` of the CLI without --solver milp) never use.
    from controlloop.optimizer.milp import MilpServer, MilpStatus, solve_milp

    servers = [
        MilpServer(
            name=name,
            priority=ctx.priority,
            demand=ctx.demand,
            current_accelerator=ctx.current_accelerator,
            current_cost=ctx.current_cost,
        )
        for name, ctx in sorted(cset.servers.items())
    ]
    result = solve_milp(
        servers,
        cset.candidates,
        None if options.unlimited else system.capacity_by_type(),
        heterogeneous=options.heterogeneous,
        allow_partial=options.saturation_policy is not SaturationPolicy.NONE,
        time_limit=options.time_limit,
        mip_gap=options.mip_gap,
        start=start,
    )
    if result.status is MilpStatus.FAILED:
        greedy.status = SolveStatus.FALLBACK
        greedy.message = f"MILP failed ({result.message}); returning greedy's plan"
        return greedy
    assigned: dict[str, Assignment | list[tuple[Candidate, int]]] = {}
    for name, parts in result.assigned.items():
        assigned[name] = parts
    solution = build_solution(
        system, cset, assigned, {}, "milp", options, gap=result.gap, message=result.message
    )
    if result.status is MilpStatus.OPTIMAL and solution.status is SolveStatus.FEASIBLE:
        solution.status = SolveStatus.OPTIMAL
    if compare_plans(solution, greedy) > 0:
        greedy.status = SolveStatus.FALLBACK
        greedy.message = (
            f"MILP's plan ({result.message}) is not better than greedy's within the time "
            "limit; returning greedy's plan"
        )
        greedy.gap = result.gap
        return greedy
    return solution


def plan_objective(solution: Solution) -> float:
    """Cost plus move penalties: what both solvers minimise."""
    total = 0.0
    for d in solution.decisions.values():
        total += d.cost
        if d.accelerator and d.accelerator != d.change.from_accelerator:
            from_cost = d.cost - d.change.cost_delta  # the current allocation's cost
            total += move_penalty(from_cost, d.cost)
    return total


def compare_plans(a: Solution, b: Solution) -> int:
    """< 0 when ``a`` is better: more demand served (priority by priority), then cheaper."""
    served_a, served_b = a.served_by_priority(), b.served_by_priority()
    for level in sorted(set(served_a) | set(served_b)):
        diff = served_a.get(level, 0.0) - served_b.get(level, 0.0)
        if abs(diff) > 1e-6:
            return -1 if diff > 0 else 1
    cost_a, cost_b = plan_objective(a), plan_objective(b)
    if abs(cost_a - cost_b) <= 1e-6 * max(1.0, abs(cost_b)):
        return 0
    return -1 if cost_a < cost_b else 1


# --- turning assignments into decisions ------------------------------------------------------


def build_solution(
    system: SystemSpec,
    cset: CandidateSet,
    assigned: dict[str, Any],
    unallocated: dict[str, str],
    solver: str,
    options: OptimizerSpec,
    *,
    status: SolveStatus | None = None,
    message: str = "",
    gap: float | None = None,
) -> Solution:
    decisions: dict[str, ServerDecision] = {}
    partial_rows: list[tuple[str, Candidate, int]] = []
    for name in cset.servers:
        parts = _parts(assigned.get(name))
        if parts and any(n < c.replicas for c, n in parts) and len(parts) == 1:
            partial_rows.append((name, parts[0][0], parts[0][1]))
    # The reference reports a best-effort allocation at the rate it was sized to;
    # "offered" re-predicts it at the higher per-replica load it really gets.
    repredicted = (
        _repredict(system, cset, partial_rows, options.service_model)
        if options.saturated_latency == "offered" else {}
    )

    for name, ctx in cset.servers.items():
        parts = _parts(assigned.get(name))
        decisions[name] = _decision(
            ctx,
            cset,
            parts,
            unallocated.get(name) or cset.no_candidate_reason.get(name, ""),
            repredicted.get(name),
        )
    usage: dict[str, TypeUsage] = {}
    capacity = system.capacity_by_type()
    types = sorted({acc.type for acc in system.accelerators})
    cards = dict.fromkeys(types, 0)
    costs = dict.fromkeys(types, 0.0)
    accs = system.accelerators_by_name()
    for name in decisions:
        for cand, n in _parts(assigned.get(name)):
            acc_type = accs[cand.accelerator].type
            cards[acc_type] += n * cand.units_per_replica
            costs[acc_type] += cand.cost_per_replica * n
    for t in types:
        usage[t] = TypeUsage(
            t, cards[t], None if options.unlimited else capacity.get(t, 0), costs[t]
        )
    total = sum(d.cost for d in decisions.values())
    if status is None:
        short = any(
            d.status in (DecisionStatus.SATURATED, DecisionStatus.UNALLOCATED)
            for d in decisions.values()
        )
        status = SolveStatus.PARTIAL if short else SolveStatus.FEASIBLE
        if decisions and all(d.status is DecisionStatus.UNALLOCATED for d in decisions.values()):
            status = SolveStatus.INFEASIBLE
    return Solution(
        solver=solver,
        status=status,
        message=message,
        decisions=dict(sorted(decisions.items())),
        usage_by_type=usage,
        total_cost=total,
        gap=gap,
        candidates=cset.candidates,
        rejected=cset.rejected,
    )


def _parts(value: Any) -> list[tuple[Candidate, int]]:
    if value is None:
        return []
    if isinstance(value, Assignment):
        return [(value.candidate, value.replicas)]
    return list(value)


def _repredict(
    system: SystemSpec,
    cset: CandidateSet,
    rows: list[tuple[str, Candidate, int]],
    service_model: str,
) -> dict[str, tuple[float, float, float]]:
    """ITL, TTFT and rho of best-effort allocations at their (higher) per-replica load."""
    if not rows:
        return {}
    perfs = []
    for name, cand, _ in rows:
        server = cset.servers[name].spec
        spec = system.perf(server.model, cand.accelerator)
        assert spec is not None
        perfs.append((server, spec, cand))
    model: PerfModel
    if service_model == "iteration":
        model = IterationPerf(
            alpha=np.array([p.perf_parms.alpha for _, p, _ in perfs]),  # type: ignore[union-attr]
            beta=np.array([p.perf_parms.beta for _, p, _ in perfs]),  # type: ignore[union-attr]
            gamma=np.array([p.perf_parms.gamma for _, p, _ in perfs]),  # type: ignore[union-attr]
            in_tokens=np.array([s.load.avg_in_tokens for s, _, _ in perfs]),
            out_tokens=np.array([s.load.avg_out_tokens for s, _, _ in perfs]),
            batch=np.array([c.batch for _, _, c in perfs]),
            token_budget=np.array([p.max_num_batched_tokens for _, p, _ in perfs], np.float64),
            wait_scale=np.array([p.wait_scale for _, p, _ in perfs], np.float64),
        )
    else:
        model = DecodePrefillPerf(
            alpha=np.array([p.decode_parms.alpha for _, p, _ in perfs]),  # type: ignore[union-attr]
            beta=np.array([p.decode_parms.beta for _, p, _ in perfs]),  # type: ignore[union-attr]
            gamma=np.array([p.prefill_parms.gamma for _, p, _ in perfs]),  # type: ignore[union-attr]
            delta=np.array([p.prefill_parms.delta for _, p, _ in perfs]),  # type: ignore[union-attr]
            in_tokens=np.array([s.load.avg_in_tokens for s, _, _ in perfs]),
            out_tokens=np.array([s.load.avg_out_tokens for s, _, _ in perfs]),
            batch=np.array([c.batch for _, _, c in perfs]),
            wait_scale=np.array([p.wait_scale for _, p, _ in perfs], np.float64),
            prefill_share=np.full(len(perfs), 0.0 if system.optimizer.ttft_prefill == "joiner"
                                  else 1.0),
        )
    rates = np.array(
        [cset.servers[name].demand / n / MS_PER_S for name, _, n in rows], np.float64
    )
    metrics = analyze(model, rates)
    return {
        name: (float(metrics.itl[i]), float(metrics.ttft[i]), float(metrics.rho[i]))
        for i, (name, _, _) in enumerate(rows)
    }


def _decision(
    ctx: ServerContext,
    cset: CandidateSet,
    parts: list[tuple[Candidate, int]],
    why_not: str,
    repredicted: tuple[float, float, float] | None,
) -> ServerDecision:
    spec = ctx.spec
    target = ctx.target
    slo = (
        (target.slo_itl, target.slo_ttft, target.slo_tps) if target is not None else (0.0, 0.0, 0.0)
    )
    cands = cset.candidates.get(spec.name, [])
    if not parts:
        zero = ctx.zero_load and (spec.min_num_replicas == 0 or not cands) and target is not None
        status = DecisionStatus.ZERO_LOAD if zero and not cands else DecisionStatus.UNALLOCATED
        if status is DecisionStatus.ZERO_LOAD:
            reason = "zero load and minNumReplicas 0: no replicas"
        else:
            reason = why_not or "not allocated"
        return ServerDecision(
            server=spec.name, service_class=spec.service_class, model=spec.model,
            priority=ctx.priority, status=status, accelerator="", replicas=0,
            needed_replicas=0, batch=0, cost=0.0, itl_ms=None, ttft_ms=None, rho=None,
            rate_per_replica=0.0, demand=ctx.demand,
            served_fraction=1.0 if status is DecisionStatus.ZERO_LOAD else 0.0,
            slo_itl_ms=slo[0], slo_ttft_ms=slo[1], slo_tps=slo[2], load=spec.load,
            change=Change(ctx.current_accelerator, "", ctx.current_replicas, 0, -ctx.current_cost),
            reason=reason,
        )
    main, main_n = max(parts, key=lambda p: (p[1], p[0].accelerator))
    replicas = sum(n for _, n in parts)
    cost = sum(c.cost_per_replica * n for c, n in parts)
    capacity_rate = sum(c.rate_per_replica * n for c, n in parts)
    if ctx.zero_load:
        served = 1.0 if replicas >= main.replicas else replicas / max(main.replicas, 1)
    else:
        served = min(1.0, capacity_rate / ctx.demand) if ctx.demand > 0 else 1.0
    full = all(n >= c.replicas for c, n in parts) or served >= 1.0 - 1e-12
    # never meets-slo without the capacity for the demand (e.g. replicas rounded from
    # an overflowing ratio): the served fraction decides
    full = full and (ctx.zero_load or served >= 1.0 - 1e-6)
    if len(parts) == 1 and not full and repredicted is not None:
        itl, ttft, rho = repredicted
    else:
        itl, ttft, rho = main.itl_ms, main.ttft_ms, main.rho
    if ctx.zero_load:
        status = DecisionStatus.ZERO_LOAD if full else DecisionStatus.SATURATED
    else:
        status = DecisionStatus.MEETS_SLO if full else DecisionStatus.SATURATED
    reason = _explain(ctx, cands, parts, main, replicas, full, why_not)
    return ServerDecision(
        server=spec.name, service_class=spec.service_class, model=spec.model,
        priority=ctx.priority, status=status, accelerator=main.accelerator, replicas=replicas,
        needed_replicas=main.replicas if len(parts) == 1 else replicas, batch=main.batch,
        cost=cost, itl_ms=itl, ttft_ms=ttft, rho=rho,
        rate_per_replica=main.rate_per_replica, demand=ctx.demand, served_fraction=served,
        slo_itl_ms=slo[0], slo_ttft_ms=slo[1], slo_tps=slo[2], load=spec.load,
        change=Change(
            ctx.current_accelerator, main.accelerator, ctx.current_replicas, replicas,
            cost - ctx.current_cost,
        ),
        reason=reason,
    )


def _explain(
    ctx: ServerContext,
    cands: list[Candidate],
    parts: list[tuple[Candidate, int]],
    main: Candidate,
    replicas: int,
    full: bool,
    why_not: str,
) -> str:
    """Why this accelerator, why these replicas: one sentence for the log."""
    if len(parts) > 1:
        mix = " + ".join(f"{n}x{c.accelerator}" for c, n in parts)
        return f"mixed placement {mix} (heterogeneous MILP)"
    rank = next((i for i, c in enumerate(cands) if c.accelerator == main.accelerator), 0)
    # value: cost change plus move penalty, cents/h (docs/model-spec.md section 4); lower is better.
    if rank == 0:
        alt = f", next best {cands[1].accelerator} {cands[1].value:.4g}" if len(cands) > 1 else ""
        why_acc = (
            f"{main.accelerator}: best of {len(cands)} feasible by value (cost change + move "
            f"penalty, ¢/h) {main.value:.4g}{alt}"
        )
    else:
        why_acc = (
            f"{main.accelerator}: choice {rank + 1} of {len(cands)} by value (cost change + "
            f"move penalty, ¢/h) {main.value:.4g}; better ones did not fit"
        )
    if ctx.zero_load:
        why_n = f"zero load: minNumReplicas {ctx.spec.min_num_replicas}"
    else:
        bound = {"ttft": "TTFT", "itl": "ITL", "tps": "TPS", "stability": "stability"}.get(
            main.limited_by, main.limited_by
        )
        why_n = (
            f"{main.replicas} replica{'s' if main.replicas != 1 else ''} = "
            f"ceil({ctx.demand:.4g} req/s / {main.rate_per_replica:.4g} req/s per replica, "
            f"{bound}-bound)"
        )
        if main.replicas == ctx.spec.min_num_replicas and ctx.spec.min_num_replicas > 1:
            why_n += f", minNumReplicas {ctx.spec.min_num_replicas}"
    if not full:
        why_n = f"best effort: {replicas} of {why_n}" + (f" [{why_not}]" if why_not else "")
    return f"{why_acc}; {why_n}"
