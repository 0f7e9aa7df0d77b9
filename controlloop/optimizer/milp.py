"""Exact allocation with ``scipy.optimize.milp`` (HiGHS).

Variables per candidate ``c`` = (server ``s``, accelerator ``g``): integer
replicas ``x_c`` in ``[0, need_c]`` and a binary choice ``y_c``; per server a
served fraction ``f_s`` in ``[0, 1]``.

* ``x_c <= need_c * y_c``; with saturation policy ``None`` ``x_c = need_c*y_c``
  (a server is served fully or not at all);
* one accelerator per server unless heterogeneous: ``sum_g y_sg <= 1``;
* capacity per type: ``sum units_c * x_c <= cap_t`` (limited only);
* ``f_s <= sum_c w_c * x_c`` with ``w_c = lam*_c / demand_s`` (``1/need_c``
  at zero load): the fraction of the demand the replicas can carry.

Priorities are lexicographic. First we try to serve everyone fully at minimum
cost; if that is infeasible, we maximise the served fractions of priority 1,
fix that level, then priority 2, and so on, and finally minimise cost with all
levels fixed. The cost objective is ``sum cost_c/need_c * x_c + pen_c * y_c``
with ``pen_c = 0.1 * (cost(current) + cost_c)`` when ``g`` is not the current
accelerator: the same move penalty the greedy solver ranks by.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array, csr_array

from controlloop.optimizer.solution import Candidate

MOVE_PENALTY = 0.1


@dataclass(frozen=True)
class MilpServer:
    name: str
    priority: int
    demand: float  # req/s; 0 at zero load
    current_accelerator: str
    current_cost: float


@dataclass
class MilpResult:
    assigned: dict[str, list[tuple[Candidate, int]]]
    optimal: bool  # every stage proven optimal (within mip_gap)
    gap: float | None
    message: str
    stages: list[str] = field(default_factory=list)
    ok: bool = True  # False when HiGHS failed (time limit with no solution, error)


def move_penalty(cand: Candidate, server: MilpServer) -> float:
    if cand.accelerator == server.current_accelerator:
        return 0.0
    return MOVE_PENALTY * (server.current_cost + cand.cost)


def solve_milp(
    servers: Sequence[MilpServer],
    candidates: Mapping[str, Sequence[Candidate]],
    capacity: Mapping[str, int] | None,
    *,
    heterogeneous: bool,
    allow_partial: bool,
    time_limit: float,
    mip_gap: float,
) -> MilpResult:
    start = time.perf_counter()
    # Fix (optimizer engineer): a heterogeneous server needs part of a candidate's replicas
    # per accelerator; forcing x_c = need_c * y_c made mixing impossible under policy None.
    # There "all or nothing" is kept by a binary served fraction f_s instead.
    split = allow_partial or heterogeneous
    cands: list[Candidate] = []
    owner: list[int] = []
    # Fix (optimizer engineer): drop candidates that cannot fit the capacity of their type
    # and bound x_c by what fits. Otherwise needs like 190,000 L4 replicas enter as big-M
    # bounds and 1e-6 weights, and HiGHS crawls (10-20 s on large-capacity-div4).
    fits = {
        name: [c for c in cs if _max_replicas(c, capacity, split) > 0]
        for name, cs in candidates.items()
    }
    active = [s for s in servers if fits.get(s.name)]
    for i, server in enumerate(active):
        for cand in fits[server.name]:
            cands.append(cand)
            owner.append(i)
    n_c, n_s = len(cands), len(active)
    if n_c == 0:
        return MilpResult({}, True, 0.0, "no candidates")
    owner_arr = np.asarray(owner)
    upper = np.array([_max_replicas(c, capacity, split) for c in cands], np.float64)
    units = np.array([c.units_per_replica for c in cands], np.float64)
    per_replica = np.array([c.cost_per_replica for c in cands], np.float64)
    penalty = np.array([move_penalty(c, active[o]) for c, o in zip(cands, owner, strict=True)])
    weight = np.array(
        [
            c.rate_per_replica / active[o].demand if active[o].demand > 0 else 1.0 / c.replicas
            for c, o in zip(cands, owner, strict=True)
        ]
    )
    # variable layout: x (n_c) | y (n_c) | f (n_s)
    n_var = 2 * n_c + n_s
    ix = np.arange(n_c)
    iy = n_c + ix
    i_f = 2 * n_c + np.arange(n_s)
    rows: list[csr_array] = []
    lo: list[np.ndarray] = []
    hi: list[np.ndarray] = []

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray, n_rows: int, lb: np.ndarray, ub: np.ndarray) -> None:
        rows.append(csr_array(coo_array((v, (r, c)), shape=(n_rows, n_var))))
        lo.append(lb)
        hi.append(ub)

    # link x and y
    link_lb = np.zeros(n_c) if not split else np.full(n_c, -np.inf)
    add(
        np.concatenate([ix, ix]),
        np.concatenate([ix, iy]),
        np.concatenate([np.ones(n_c), -upper]),
        n_c,
        link_lb,
        np.zeros(n_c),
    )
    if not heterogeneous:
        add(owner_arr, iy, np.ones(n_c), n_s, np.zeros(n_s), np.ones(n_s))
    if capacity is not None:
        types = sorted({c.acc_type for c in cands})
        t_index = {t: k for k, t in enumerate(types)}
        t_rows = np.array([t_index[c.acc_type] for c in cands])
        caps = np.array([capacity.get(t, 0) for t in types], np.float64)
        add(t_rows, ix, units, len(types), np.full(len(types), -np.inf), caps)
    # served fraction: f_s - sum w_c x_c <= 0
    add(
        np.concatenate([np.arange(n_s), owner_arr]),
        np.concatenate([i_f, ix]),
        np.concatenate([np.ones(n_s), -weight]),
        n_s,
        np.full(n_s, -np.inf),
        np.zeros(n_s),
    )
    f_integral = np.zeros(n_s) if allow_partial else np.ones(n_s)
    integrality = np.concatenate([np.ones(2 * n_c), f_integral])
    bounds = Bounds(
        np.zeros(n_var), np.concatenate([upper, np.ones(n_c), np.ones(n_s)])
    )
    cost_obj = np.concatenate([per_replica, penalty, np.zeros(n_s)])

    def run(objective: np.ndarray, extra: list[tuple[np.ndarray, float, float]]) -> tuple[object, float]:
        constraints = [LinearConstraint(m, lb, ub) for m, lb, ub in zip(rows, lo, hi, strict=True)]
        for coeffs, lb_v, ub_v in extra:
            constraints.append(LinearConstraint(coeffs.reshape(1, -1), lb_v, ub_v))
        remaining = max(0.05, time_limit - (time.perf_counter() - start))
        res = milp(
            objective,
            constraints=constraints,
            integrality=integrality,
            bounds=bounds,
            options={"time_limit": remaining, "mip_rel_gap": mip_gap, "disp": False},
        )
        return res, remaining

    stages: list[str] = []
    # Stage 0: serve everyone fully at minimum cost.
    all_served = np.zeros(n_var)
    all_served[i_f] = 1.0
    res, _ = run(cost_obj, [(all_served, n_s - 1e-7, np.inf)])
    stages.append(f"serve-all: {_status_word(res)}")
    if getattr(res, "x", None) is not None:
        return _result(res, cands, active, owner, stages, start)
    if getattr(res, "status", None) not in (2,):  # 2 = infeasible; anything else is a failure
        return MilpResult({}, False, None, f"HiGHS: {getattr(res, 'message', '')}", stages, ok=False)

    # Lexicographic: maximise served fraction per priority level, best first.
    fixed: list[tuple[np.ndarray, float, float]] = []
    levels = sorted({s.priority for s in active})
    optimal = True
    for level in levels:
        members = np.array([k for k, s in enumerate(active) if s.priority == level])
        objective = np.zeros(n_var)
        objective[i_f[members]] = -1.0
        res, _ = run(objective, fixed)
        stages.append(f"priority {level}: {_status_word(res)}")
        if getattr(res, "x", None) is None:
            return MilpResult({}, False, None, f"HiGHS at priority {level}: {res.message}", stages, ok=False)  # type: ignore[attr-defined]
        optimal &= res.status == 0  # type: ignore[attr-defined]
        achieved = float(res.x[i_f[members]].sum())  # type: ignore[attr-defined]
        row = np.zeros(n_var)
        row[i_f[members]] = 1.0
        fixed.append((row, achieved - 1e-6 * max(1.0, achieved), np.inf))
    res, _ = run(cost_obj, fixed)
    stages.append(f"min-cost: {_status_word(res)}")
    if getattr(res, "x", None) is None:
        return MilpResult({}, False, None, f"HiGHS at min-cost: {res.message}", stages, ok=False)  # type: ignore[attr-defined]
    out = _result(res, cands, active, owner, stages, start)
    out.optimal &= optimal
    return out


def _max_replicas(cand: Candidate, capacity: Mapping[str, int] | None, partial: bool) -> int:
    """Most replicas of ``cand`` the capacity of its type allows (0: drop the candidate)."""
    if capacity is None:
        return cand.replicas
    fit = capacity.get(cand.acc_type, 0) // max(cand.units_per_replica, 1)
    if fit >= cand.replicas:
        return cand.replicas
    return fit if partial else 0  # without best effort a candidate is all or nothing


def _status_word(res: object) -> str:
    return {0: "optimal", 1: "limit reached", 2: "infeasible", 3: "unbounded"}.get(
        getattr(res, "status", -1), "failed"
    )


def _result(
    res: object,
    cands: list[Candidate],
    active: list[MilpServer],
    owner: list[int],
    stages: list[str],
    start: float,
) -> MilpResult:
    x = np.rint(res.x[: len(cands)]).astype(int)  # type: ignore[attr-defined]
    assigned: dict[str, list[tuple[Candidate, int]]] = {}
    for c, o, n in zip(cands, owner, x, strict=True):
        if n > 0:
            assigned.setdefault(active[o].name, []).append((c, int(n)))
    gap = getattr(res, "mip_gap", None)
    optimal = getattr(res, "status", 1) == 0
    message = "; ".join(stages) + f" ({time.perf_counter() - start:.3f}s)"
    return MilpResult(assigned, optimal, None if gap is None else float(gap), message, stages)
