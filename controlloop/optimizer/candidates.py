"""Candidate allocations per server (docs/model-spec.md section 4), sized in one vectorised call."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from controlloop.bounds import MAX_REPLICAS
from controlloop.model.perf import DecodePrefillPerf, IterationPerf, PerfModel, batch_size
from controlloop.model.sizing import SizingCache, analyze, size
from controlloop.optimizer.solution import Candidate, Rejected
from controlloop.specs import (
    LOWEST_PRIORITY,
    AcceleratorSpec,
    ModelPerfSpec,
    ModelTarget,
    ServerSpec,
    ServiceClassSpec,
    SystemSpec,
)

MOVE_PENALTY_FACTOR = 0.1
MS_PER_S = 1000.0


@dataclass(frozen=True)
class ServerContext:
    """What the solvers and the report need to know of a server besides its candidates."""

    spec: ServerSpec
    priority: int
    target: ModelTarget | None
    demand: float  # req/s to serve: arrivalRate/60, or slo-tps/K with a TPS target
    zero_load: bool
    current_accelerator: str
    current_replicas: int
    current_cost: float


@dataclass
class CandidateSet:
    servers: dict[str, ServerContext]
    candidates: dict[str, list[Candidate]]  # sorted best (lowest value) first
    rejected: dict[str, list[Rejected]] = field(default_factory=dict)
    no_candidate_reason: dict[str, str] = field(default_factory=dict)
    evaluations: int = 0


@dataclass
class _Row:
    server: ServerSpec
    acc: AcceleratorSpec
    perf: ModelPerfSpec
    context: ServerContext


def transition_value(
    *, cur_acc: str, cur_replicas: int, cur_cost: float, acc: str, replicas: int, cost: float
) -> float:
    """The transition penalty of section 4 from the current allocation to a candidate."""
    if acc == cur_acc:
        return 0.0 if replicas == cur_replicas else cost - cur_cost
    return move_penalty(cur_cost, cost) + cost - cur_cost


def move_penalty(from_cost: float, to_cost: float) -> float:
    """What changing accelerator costs on top of the cost change (section 4): a share of
    both allocations' costs, so a move must save more than it disturbs."""
    return MOVE_PENALTY_FACTOR * (from_cost + to_cost)


def _context(
    server: ServerSpec,
    classes: dict[str, ServiceClassSpec],
    accs: dict[str, AcceleratorSpec],
    perfs: dict[tuple[str, str], ModelPerfSpec],
) -> ServerContext:
    cls = classes.get(server.service_class)
    target = cls.target(server.model) if cls else None
    load = server.current_alloc.load
    zero = load.arrival_rate <= 0 or load.avg_out_tokens <= 0
    if target is not None and target.slo_tps > 0 and load.avg_out_tokens > 0:
        demand = target.slo_tps / load.avg_out_tokens
        zero = False
    else:
        demand = 0.0 if zero else load.arrival_rate / 60.0
    cur = server.current_alloc
    cur_cost = cur.cost
    acc = accs.get(cur.accelerator) if cur.accelerator else None
    perf = perfs.get((server.model, cur.accelerator)) if cur.accelerator else None
    if acc is not None and perf is not None:
        cur_cost = acc.cost * perf.acc_count * cur.num_replicas
    return ServerContext(
        spec=server,
        priority=cls.priority if cls else LOWEST_PRIORITY,
        target=target,
        demand=demand,
        zero_load=zero,
        current_accelerator=cur.accelerator,
        current_replicas=cur.num_replicas,
        current_cost=cur_cost,
    )


def _has_params(perf: ModelPerfSpec, service_model: str) -> bool:
    if service_model == "iteration":
        return perf.perf_parms is not None
    return perf.decode_parms is not None and perf.prefill_parms is not None


def build_candidates(
    system: SystemSpec,
    *,
    service_model: str | None = None,
    cache: SizingCache | None = None,
) -> CandidateSet:
    """Size every (server, accelerator) pair and turn the feasible ones into candidates."""
    service_model = service_model or system.optimizer.service_model
    accs = system.accelerators_by_name()
    # First match wins, as in SystemSpec.service_class / SystemSpec.perf.
    classes: dict[str, ServiceClassSpec] = {}
    for cls in system.service_classes:
        classes.setdefault(cls.name, cls)
    perf_specs: dict[tuple[str, str], ModelPerfSpec] = {}
    perf_by_model: dict[str, list[int]] = {}
    for p, perf in enumerate(system.models):
        perf_specs.setdefault((perf.name, perf.acc), perf)
        perf_by_model.setdefault(perf.name, []).append(p)
    no_params = f"no parameters for the {service_model} model"
    by_model: dict[str, tuple[list[int], list[str]]] = {}
    for model, indices in perf_by_model.items():
        indices.sort(key=lambda p: system.models[p].acc)  # stable: ties keep file order
        known = [p for p in indices if system.models[p].acc in accs]
        by_model[model] = (
            [p for p in known if _has_params(system.models[p], service_model)],
            [system.models[p].acc for p in known
             if not _has_params(system.models[p], service_model)],
        )

    result = CandidateSet(servers={}, candidates={})
    contexts: list[ServerContext] = []
    row_server: list[int] = []  # rows to size: index into contexts ...
    row_perf: list[int] = []  # ... and into system.models
    zero_rows: list[_Row] = []
    for server in system.servers:
        ctx = _context(server, classes, accs, perf_specs)
        result.servers[server.name] = ctx
        result.candidates[server.name] = []
        rejected = result.rejected.setdefault(server.name, [])
        if ctx.target is None:
            result.no_candidate_reason[server.name] = (
                f"class '{server.service_class}' has no SLO target for model '{server.model}'"
            )
            continue
        if ctx.zero_load and server.min_num_replicas == 0:
            continue  # no replicas, no accelerator: decided in the report
        s = len(contexts)
        contexts.append(ctx)
        if not ctx.zero_load and not server.keep_accelerator and (
            server.allowed_accelerators is None
        ):
            # The common case, per model: every perf spec with parameters is a row.
            usable, unusable = by_model.get(server.model, ((), ()))
            row_perf.extend(usable)
            row_server.extend([s] * len(usable))
            rejected.extend(Rejected(server.name, acc, no_params) for acc in unusable)
            continue
        for p in perf_by_model.get(server.model, []):
            perf = system.models[p]
            acc = accs.get(perf.acc)
            if acc is None:
                continue
            if server.keep_accelerator and ctx.current_accelerator and (
                perf.acc != ctx.current_accelerator
            ):
                rejected.append(Rejected(server.name, perf.acc, "keepAccelerator is set"))
                continue
            allowed = server.allowed_accelerators
            if (
                allowed is not None
                and perf.acc not in allowed
                and perf.acc != ctx.current_accelerator
            ):
                rejected.append(
                    Rejected(server.name, perf.acc, "not an allowed accelerator for this server")
                )
                continue
            if not _has_params(perf, service_model):
                rejected.append(Rejected(server.name, perf.acc, no_params))
                continue
            if ctx.zero_load:
                zero_rows.append(_Row(server, acc, perf, ctx))
            else:
                row_server.append(s)
                row_perf.append(p)

    if row_server:
        share = 0.0 if system.optimizer.ttft_prefill == "joiner" else 1.0
        _size_rows(system, contexts, row_server, row_perf, result, service_model, cache, share)
    for row in zero_rows:
        result.candidates[row.server.name].append(_zero_load_candidate(row))
    for name in dict.fromkeys(row.server.name for row in zero_rows):  # sized rows come sorted
        # ties in value go to the accelerator name in reverse order, as in the reference
        cands = result.candidates[name]
        cands.sort(key=lambda c: c.accelerator, reverse=True)
        cands.sort(key=lambda c: c.value)

    for name, cands in result.candidates.items():
        if not cands and name not in result.no_candidate_reason:
            ctx = result.servers[name]
            if ctx.zero_load and ctx.spec.min_num_replicas == 0:
                continue
            reasons = "; ".join(f"{r.accelerator}: {r.reason}" for r in result.rejected[name])
            result.no_candidate_reason[name] = (
                f"no feasible accelerator ({reasons})" if reasons
                else f"no perf data for model '{ctx.spec.model}'"
            )
    return result


def _perf_table(
    system: SystemSpec, service_model: str
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Per perf spec (index into ``system.models``): its numbers, accelerator name and type.

    Perf specs without the service model's parameters get zeros; they are never sized.
    """
    accs = system.accelerators_by_name()
    cols: dict[str, list[float]] = {
        k: [] for k in ("a", "b", "c", "d", "budget", "max_batch", "at_tokens", "acc_count",
                        "acc_cost", "multiplicity", "wait_scale")
    }
    names, types = [], []
    for perf in system.models:
        acc = accs.get(perf.acc)
        if service_model == "iteration":
            pp = perf.perf_parms
            params = (pp.alpha, pp.beta, pp.gamma, 0.0) if pp else (0.0,) * 4
        else:
            dec, pre = perf.decode_parms, perf.prefill_parms
            params = (dec.alpha, dec.beta, pre.gamma, pre.delta) if dec and pre else (0.0,) * 4
        for key, value in zip(("a", "b", "c", "d"), params, strict=True):
            cols[key].append(value)
        cols["budget"].append(perf.max_num_batched_tokens)
        cols["wait_scale"].append(perf.wait_scale)
        cols["max_batch"].append(perf.max_batch_size)
        cols["at_tokens"].append(perf.at_tokens)
        cols["acc_count"].append(perf.acc_count)
        cols["acc_cost"].append(acc.cost if acc else 0.0)
        cols["multiplicity"].append(acc.multiplicity if acc else 1)
        names.append(acc.name if acc else perf.acc)
        types.append(acc.type if acc else "")
    ints = ("budget", "max_batch", "at_tokens", "acc_count", "multiplicity")
    table = {
        k: np.array(v, np.int64 if k in ints else np.float64) for k, v in cols.items()
    }
    return table, names, types


def _size_rows(
    system: SystemSpec,
    contexts: list[ServerContext],
    row_server: list[int],
    row_perf: list[int],
    result: CandidateSet,
    service_model: str,
    cache: SizingCache | None,
    prefill_share: float = 1.0,
) -> None:
    """Size all rows in numpy; rows are (server, perf spec) index pairs.

    Per-server and per-perf numbers are gathered once into arrays and spread to the rows
    by fancy indexing: at 3,000 servers (63,000 rows) reading pydantic attributes per row
    and per-candidate Python arithmetic dominated the optimizer.
    """
    servers = [ctx.spec for ctx in contexts]
    loads = [srv.current_alloc.load for srv in servers]
    targets = [ctx.target for ctx in contexts]
    rs = np.array(row_server, np.intp)
    rp = np.array(row_perf, np.intp)
    table, acc_names, acc_types = _perf_table(system, service_model)

    def per_server(values: list[float], dtype: type = np.float64) -> np.ndarray:
        return np.array(values, dtype)[rs]

    in_tok = per_server([ld.avg_in_tokens for ld in loads])
    out_tok = per_server([ld.avg_out_tokens for ld in loads])
    overrides = per_server([srv.max_batch_size for srv in servers], np.int64)
    batches = batch_size(table["max_batch"][rp], table["at_tokens"][rp], out_tok,
                         override=overrides)
    perf: PerfModel
    if service_model == "iteration":
        perf = IterationPerf(alpha=table["a"][rp], beta=table["b"][rp], gamma=table["c"][rp],
                             in_tokens=in_tok, out_tokens=out_tok, batch=batches,
                             token_budget=table["budget"][rp].astype(np.float64),
                             wait_scale=table["wait_scale"][rp])
    else:
        perf = DecodePrefillPerf(alpha=table["a"][rp], beta=table["b"][rp],
                                 gamma=table["c"][rp], delta=table["d"][rp],
                                 in_tokens=in_tok, out_tokens=out_tok, batch=batches,
                                 wait_scale=table["wait_scale"][rp],
                                 prefill_share=np.full(len(row_perf), prefill_share))
    ttft = per_server([t.slo_ttft for t in targets])  # type: ignore[union-attr]
    itl = per_server([t.slo_itl for t in targets])  # type: ignore[union-attr]
    tps = per_server([t.slo_tps for t in targets])  # type: ignore[union-attr]
    sized = size(perf, ttft_target=ttft, itl_target=itl, tps_target=tps, cache=cache)
    result.evaluations += sized.evaluations

    lam_star_s = sized.lam_star * MS_PER_S  # req/s
    demand = per_server([ctx.demand for ctx in contexts])
    mins = per_server([srv.min_num_replicas for srv in servers], np.int64)
    feasible = sized.feasible & (lam_star_s > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exact = np.where(feasible, demand / np.where(feasible, lam_star_s, 1.0), 0)
    # [bounds] more replicas than a Deployment can have (or an overflowing ratio) is no
    # candidate: checked on the float before any cast to int
    too_many = feasible & ~(exact <= MAX_REPLICAS)
    feasible &= ~too_many
    exact = np.where(feasible, exact, 0.0)
    replicas = np.ceil(exact)
    # ceil of a ratio that is an integer up to rounding noise must not add a replica
    replicas = np.where(np.abs(exact - np.rint(exact)) < 1e-9, np.rint(exact), replicas)
    replicas = np.maximum(replicas, mins).astype(np.int64)
    replicas = np.maximum(replicas, np.where(feasible, 1, 0))
    per_replica_rate = np.where(replicas > 0, demand / np.maximum(replicas, 1), 0) / MS_PER_S
    predicted = analyze(perf, per_replica_rate)

    # Cost and transition value (transition_value, elementwise, same operation order).
    cost = table["acc_cost"][rp] * table["acc_count"][rp] * replicas
    cur_cost = per_server([ctx.current_cost for ctx in contexts])
    cur_replicas = per_server([ctx.current_replicas for ctx in contexts], np.int64)
    acc_index = {name: i for i, name in enumerate(dict.fromkeys(acc_names))}
    row_acc = np.array([acc_index[n] for n in acc_names], np.intp)[rp]
    cur_acc = per_server([acc_index.get(ctx.current_accelerator, -1) for ctx in contexts],
                         np.intp)
    same = row_acc == cur_acc
    value = np.where(
        same,
        np.where(replicas == cur_replicas, 0.0, cost - cur_cost),
        MOVE_PENALTY_FACTOR * (cur_cost + cost) + cost - cur_cost,  # move_penalty, vectorised
    )
    bound = np.array(_limited_by_all(sized, ttft, itl, tps), dtype=object)

    names = [srv.name for srv in servers]
    lists = [result.candidates[name] for name in names]
    for i in np.flatnonzero(~feasible).tolist():
        name = names[row_server[i]]
        p = row_perf[i]
        if too_many[i]:
            result.rejected[name].append(Rejected(
                name, acc_names[p],
                f"needs {demand[i] / lam_star_s[i]:.3g} replicas ({demand[i]:.4g} req/s at "
                f"{lam_star_s[i]:.4g} req/s each), more than a Deployment can have "
                f"({MAX_REPLICAS})"))
            continue
        reason = sized.reason(i, ttft_target=float(ttft[i]), itl_target=float(itl[i]))
        result.rejected[name].append(Rejected(name, acc_names[p], reason or "infeasible"))

    # Feasible rows by server, then value, ties to the accelerator name in reverse order
    # (as the reference: its total on large-capacity-div4, 10049, needs exactly this
    # order); rows of a server come in accelerator-name order, so the tie-break is the
    # reversed row position.
    keep = np.flatnonzero(feasible)
    keep = keep[np.lexsort((-keep, value[keep], rs[keep]))]
    keep_p = rp[keep].tolist()
    units = (table["acc_count"] * table["multiplicity"])[rp[keep]]
    built = map(
        Candidate,
        [names[s] for s in rs[keep].tolist()],
        [acc_names[p] for p in keep_p],
        [acc_types[p] for p in keep_p],
        batches[keep].tolist(),
        replicas[keep].tolist(),
        cost[keep].tolist(),
        value[keep].tolist(),
        units.tolist(),
        lam_star_s[keep].tolist(),
        predicted.itl[keep].tolist(),
        predicted.ttft[keep].tolist(),
        predicted.rho[keep].tolist(),
        bound[keep].tolist(),
    )
    for s, cand in zip(rs[keep].tolist(), built, strict=True):
        lists[s].append(cand)


def _limited_by_all(sized: object, ttft: np.ndarray, itl: np.ndarray, tps: np.ndarray) -> list[str]:
    """``_limited_by`` for every row at once (same rules, same tolerances)."""
    lam = sized.lam_star  # type: ignore[attr-defined]
    lam_max = sized.lam_max  # type: ignore[attr-defined]
    metrics = sized.metrics  # type: ignore[attr-defined]

    def close(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # math.isclose, rel_tol 1e-9
        return np.abs(a - b) <= 1e-9 * np.maximum(np.abs(a), np.abs(b))

    with np.errstate(divide="ignore", invalid="ignore"):
        ttft_ratio = np.where(ttft > 0, metrics.ttft / np.where(ttft > 0, ttft, 1.0), 0.0)
        itl_ratio = np.where(itl > 0, metrics.itl / np.where(itl > 0, itl, 1.0), 0.0)
    label = np.where(ttft_ratio >= itl_ratio, "ttft", "itl").astype(object)
    label = np.where(close(lam, lam_max), "stability", label)
    label = np.where((tps > 0) & close(lam, 0.9 * lam_max), "tps", label)
    return [str(x) for x in label.tolist()]


def _limited_by(sized: object, i: int, ttft: float, itl: float, tps: float) -> str:
    lam = float(sized.lam_star[i])  # type: ignore[attr-defined]
    lam_max = float(sized.lam_max[i])  # type: ignore[attr-defined]
    if tps > 0 and math.isclose(lam, 0.9 * lam_max, rel_tol=1e-9):
        return "tps"
    if math.isclose(lam, lam_max, rel_tol=1e-9):
        return "stability"
    metrics = sized.metrics  # type: ignore[attr-defined]
    ttft_ratio = float(metrics.ttft[i]) / ttft if ttft > 0 else 0.0
    itl_ratio = float(metrics.itl[i]) / itl if itl > 0 else 0.0
    return "ttft" if ttft_ratio >= itl_ratio else "itl"


def _zero_load_candidate(row: _Row) -> Candidate:
    """Zero load: minNumReplicas replicas; ITL alpha+beta and TTFT gamma+delta (section 4)."""
    n = row.server.min_num_replicas
    cost = row.acc.cost * row.perf.acc_count * n
    ctx = row.context
    if row.perf.decode_parms is not None and row.perf.prefill_parms is not None:
        itl = row.perf.decode_parms.alpha + row.perf.decode_parms.beta
        ttft = row.perf.prefill_parms.gamma + row.perf.prefill_parms.delta
    else:
        p = row.perf.perf_parms
        itl = ttft = (p.alpha + p.beta) if p else 0.0
    return Candidate(
        server=row.server.name,
        accelerator=row.acc.name,
        acc_type=row.acc.type,
        batch=row.server.max_batch_size or row.perf.max_batch_size,
        replicas=n,
        cost=cost,
        value=transition_value(
            cur_acc=ctx.current_accelerator,
            cur_replicas=ctx.current_replicas,
            cur_cost=ctx.current_cost,
            acc=row.acc.name,
            replicas=n,
            cost=cost,
        ),
        units_per_replica=row.perf.acc_count * row.acc.multiplicity,
        rate_per_replica=0.0,
        itl_ms=itl,
        ttft_ms=ttft,
        rho=0.0,
        limited_by="zero-load",
    )
