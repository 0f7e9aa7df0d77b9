"""Exact allocation with HiGHS (through ``highspy``), warm-started from a greedy plan.

Variables per candidate ``c`` = (server ``s``, accelerator ``g``): integer
replicas ``x_c`` in ``[0, u_c]`` (``u_c`` = need, or what fits the capacity of
its type) and a binary choice ``y_c``; per server a served fraction ``f_s`` in
``[0, 1]``.

* ``x_c <= u_c * y_c``; with saturation policy ``None`` ``x_c = need_c*y_c``
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

Speed (a 1,000-server fleet within the 10 s default limit):

* every stage gets a MIP start: the greedy plan for the first one, then the
  previous stage's solution (lower priority levels filled in from the greedy
  plan where capacity is left), so HiGHS always holds an incumbent and a stage
  that reaches its time share still yields a feasible plan;
* each stage gets a share of the remaining time (``remaining / stages left``);
* a level whose start already serves every server fully is fixed without a
  solve (its optimum, one per server, is reached); so is serve-all when the
  start serves everyone;
* serve-all is first checked on its LP relaxation (an infeasible relaxation
  skips the MIP);
* in the stage of level ``p``, servers of lower priority are fixed at zero
  (they only use capacity); dominated candidates are dropped beforehand;
* a level stage first runs an LP-guided dive (``milp_search.PlanSearch._dive``: fix the
  accelerators of the servers the LP relaxation splits, re-solve, then a small MILP over
  the replica counts); its plan starts HiGHS, or ends the stage when within
  ``LEVEL_ACCEPT_GAP`` of the LP bound;
* on small problems a level stage then computes the per-type packing bound
  (``PlanSearch._packing_bound``, :mod:`milp_dw`): its plan (or that of the MILP on the
  packings it uses) ends the stage when within ``mip_gap`` of the bound; else HiGHS
  proves the stage with the bound's Lagrangian cut added and the candidates fixed out
  that no plan as good as the start uses. Min-cost gets the fixings of every level
  stage bounded (for the plans keeping the levels);
* min-cost first solves a neighbourhood MILP (``PlanSearch._neighbourhood``: only the
  candidates the plan so far or the cost LP use, agreeing replica counts fixed), whose
  plan starts the full min-cost solve.

The message ends with ``gaps: service levels X, cost at those levels Y``: how far the
served fractions could still rise against their bounds, and the final plan's cost gap
at those levels.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

import highspy
import numpy as np

from controlloop.optimizer.greedy import solve_greedy, solve_unlimited
from controlloop.optimizer.milp_dw import BoundResult, Stage, fixings
from controlloop.optimizer.milp_model import (  # re-exported
    MilpModel,
    MilpResult,
    MilpServer,
    MilpStatus,
    Plan,
    max_replicas,
    prune_dominated,
)
from controlloop.optimizer.milp_search import PlanSearch
from controlloop.optimizer.solution import Candidate
from controlloop.specs import SaturationPolicy

# relative tolerance by which a fixed priority level may be undercut in later stages
LEVEL_TOLERANCE = 1e-6
# LP-guided heuristics (see milp_search: the dive, the neighbourhood, the packing bound)
DIVE_SHARE = 0.8  # part of a level stage's time share the dive may use
TIE_BREAK = 0.01  # the dive's cost tie-break is worth at most this many served servers
# a dive plan this close to the LP bound ends its level stage: HiGHS, given the rest of the
# share, mostly refines its bound there; the time goes to min-cost instead
LEVEL_ACCEPT_GAP = 0.0025
# part of a level stage's time share for the packing bound (as much again for the MILP on
# the packings it uses)
PACKING_SHARE = 0.25
# ...unless HiGHS settles the stage within this trial (the 9-server scenarios: 0.01-0.02 s,
# where the bound took 0.05-0.1 s; 2026-12-04: 4-12 ms), tried on problems up to this many
# candidates only (the 27-server stages, ~210, never settled in it: 0.02-0.05 s lost each)
PACKING_TRIAL = 0.02
PACKING_TRIAL_MAX_CANDIDATES = 100
NEIGHBOURHOOD_SHARE = 0.4  # part of the min-cost time for the neighbourhood MILP

log = logging.getLogger(__name__)


def solve_milp(
    servers: Sequence[MilpServer],
    candidates: Mapping[str, Sequence[Candidate]],
    capacity: Mapping[str, int] | None,
    *,
    heterogeneous: bool,
    allow_partial: bool,
    time_limit: float,
    mip_gap: float,
    start: Plan | None = None,
) -> MilpResult:
    """Lexicographic MILP; ``start`` is a feasible plan to warm-start from (greedy's;
    computed here when not given)."""
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    # Fix (optimizer engineer): a heterogeneous server needs part of a candidate's replicas
    # per accelerator; forcing x_c = need_c * y_c made mixing impossible under policy None.
    # There "all or nothing" is kept by a binary served fraction f_s instead.
    split = allow_partial or heterogeneous
    by_name = {s.name: s for s in servers}
    # Fix (optimizer engineer): drop candidates that cannot fit the capacity of their type
    # and bound x_c by what fits. Otherwise needs like 190,000 L4 replicas enter as big-M
    # bounds and 1e-6 weights, and HiGHS crawls (10-20 s on large-capacity-div4).
    fits: dict[str, list[Candidate]] = {}
    substitute: dict[tuple[str, str], Candidate] = {}
    for name, cs in candidates.items():
        if name not in by_name:
            continue
        kept = [c for c in cs if max_replicas(c, capacity, split) > 0]
        fits[name], dropped = prune_dominated(kept, by_name[name], capacity, split)
        substitute.update({(name, c.accelerator): a for c, a in dropped.items()})
    active = [s for s in servers if fits.get(s.name)]
    model = MilpModel(active, fits, capacity, split, heterogeneous, allow_partial)
    if model.n_c == 0:
        return MilpResult({}, MilpStatus.OPTIMAL, 0.0, "no candidates")
    if start is None:
        start = _greedy_start(active, fits, capacity, allow_partial)
    greedy = model.start_vector(start, substitute)
    # a second start: every level in turn packed into the fewest free cards
    packed = model.complete(np.zeros(model.n_c))
    for level in sorted(set(model.priority.tolist())):
        packed = model.fill_efficient(packed, np.flatnonzero(model.priority == level))
    x0 = packed if model.better(packed, greedy) else greedy
    return _Stages(model, x0, greedy, deadline, mip_gap, t0).solve()


class _Stages(PlanSearch):
    """Serve-all, then one stage per priority level, then min-cost; each warm-started."""

    def __init__(
        self, model: MilpModel, start: np.ndarray, greedy: np.ndarray, deadline: float,
        mip_gap: float, t0: float,
    ) -> None:
        self.m = model
        self.start = start  # the better (level by level) of greedy's and a packed plan
        self.greedy = greedy
        self.deadline = deadline
        self.mip_gap = mip_gap
        self.t0 = t0
        self.h = model.highs()
        self.stages: list[str] = []
        self.gaps: list[float] = []
        self.optimal = True
        self.fixed: list[tuple[np.ndarray, float]] = []  # (members, lower bound) per level
        self.lp_point: np.ndarray | None = None  # the last dive's first LP solution
        self.cost_gap: float | None = None
        self.level_gaps: list[float] = []
        self.packings: list[tuple[Stage, BoundResult]] = []  # the level stages' bounds
        self.level_ranges: dict[int, tuple[int, int]] = {}
        self.level_undo: list[Callable[[], None]] = []

    def _stage(self, text: str) -> None:
        """Record a stage for the message, and show progress: a MILP may run for timeLimit."""
        self.stages.append(text)
        log.info("MILP %s [%.1fs]", text, time.perf_counter() - self.t0)

    def solve(self) -> MilpResult:
        m, h = self.m, self.h
        levels = sorted(set(m.priority.tolist()))
        n_stages = len(levels) + 2
        # Stage 0: serve everyone fully at minimum cost.
        if m.level_value(self.start, np.arange(m.n_s)) >= m.n_s - 1e-9:
            h.changeRowBounds(m.serve_all_row, m.n_s - 1e-7, np.inf)
            point = self._run(m.cost, self.start, "serve-all", 1)
            return self._result(self.start if point is None else point)
        if self._lp_feasible_serve_all():
            h.changeRowBounds(m.serve_all_row, m.n_s - 1e-7, np.inf)
            point = self._run(m.cost, None, "serve-all", n_stages)
            h.changeRowBounds(m.serve_all_row, -np.inf, np.inf)
            if point is not None:
                return self._result(point)
            if self.stages[-1].startswith("serve-all: failed"):
                return self._failed("serve-all")
        else:
            self._stage("serve-all: infeasible (LP relaxation)")
        n_stages -= 1

        # Lexicographic: maximise served fraction per priority level, best first.
        point = self.start
        tied = True  # whether the plan so far serves each level as much as greedy's
        relax: list[tuple[int, float, np.ndarray]] = []
        for i, level in enumerate(levels):
            members = np.flatnonzero(m.priority == level)
            lower = np.flatnonzero(m.priority > level)
            # start: the previous stage's plan with this level filled in from the greedy
            # plan where capacity is left, or the greedy plan itself when it still meets
            # the fixed levels and serves this level more
            keep = ~np.isin(m.owner, np.concatenate([members, lower]))
            kept = m.complete(np.where(keep, point[: m.n_c], 0.0))
            base = m.fill_efficient(m.fill(kept, self.start, members), members)
            other = m.fill_efficient(kept, members)
            if m.level_value(other, members) > m.level_value(base, members):
                base = other
            greedy = m.complete(np.where(np.isin(m.owner, lower), 0.0, self.start[: m.n_c]))
            if m.level_value(greedy, members) > m.level_value(base, members) + 1e-9 and \
                    self._meets_levels(greedy):
                base = greedy
            self._bound_servers(lower, fix=True)
            if m.level_value(base, members) >= len(members) - 1e-9:
                self._stage(f"priority {level}: all served by the start")
                point = base
            else:
                objective = np.zeros(m.n_var)
                objective[m.i_f[members]] = -1.0
                start_value = m.level_value(base, members)
                share = (self.deadline - time.perf_counter()) / max(1, n_stages - i)
                # the dive breaks ties by cost, worth at most TIE_BREAK of a server: for any
                # plan z, f(z) <= f(lp) + eps (cost(z) - cost(lp)), which bounds the level
                eps = TIE_BREAK / max(1.0, m.cost_scale)
                dived = self._dive(
                    objective + eps * m.cost,
                    DIVE_SHARE * share,
                    f"priority {level}",
                    measure=objective,
                )
                bound = None
                if self.lp_point is not None:
                    lp_cost = float(m.cost @ self.lp_point)
                    bound = float(objective @ self.lp_point) - eps * max(
                        0.0, m.cost_scale - lp_cost
                    )
                if dived is not None and self._meets_levels(dived) and \
                        m.level_value(dived, members) > start_value + 1e-9:
                    base = dived
                name = (f"priority {level} (start {start_value:.6g}, dive "
                        f"{m.level_value(base, members):.6g} of {len(members)})")
                accept = LEVEL_ACCEPT_GAP if dived is not None else -1.0
                spec = self._stage_spec(members, lower)
                packed = None
                trial = PACKING_TRIAL if m.n_c <= PACKING_TRIAL_MAX_CANDIDATES else 0.0
                if not self._settles(objective, base, trial):
                    packed = self._packing_bound(
                        objective, spec, base, PACKING_SHARE * share, f"priority {level}"
                    )
                if packed is not None:
                    base, result = packed
                    bound = result.bound if bound is None else max(bound, result.bound)
                    if result.converged:  # a proof, not a kept plan, for problems this small
                        accept = self.mip_gap
                    name = name[:-1] + f", packings {m.level_value(base, members):.6g})"
                if bound is not None and -bound - m.level_value(base, members) <= accept * max(
                    1.0, -bound
                ):
                    self._note_gap(name, float(objective @ base), bound,
                                   "LP bound" if packed is None else "packing bound")
                    got: np.ndarray | None = base
                else:
                    # only plans at least as good as the start matter here: fix the rest out
                    restore = self._fix(
                        fixings(m, spec, packed[1], float(objective @ base))
                        if packed is not None else ({}, np.zeros(0, np.int64))
                    )
                    got = self._run(objective, base, name, n_stages - i, bound=bound)
                    restore()
                if got is None:
                    return self._failed(f"priority {level}")
                point = m.complete(got[: m.n_c])
            self._bound_servers(lower, fix=False)
            achieved = m.level_value(point, members)
            if achieved >= len(members) - 1e-9:
                self._fix_served(members)
                self.fixed.append((members, float(len(members))))
                self._carry(members)
                tied = tied and m.level_value(self.greedy, members) >= len(members) - 1e-6
                continue
            lb = achieved - LEVEL_TOLERANCE * max(1.0, achieved)
            h.addRow(
                lb, np.inf, len(members), m.i_f[members].astype(np.int32), np.ones(len(members))
            )
            self.fixed.append((members, lb))
            self._carry(members)
            # min-cost may give up mip_gap of this level (it is only known to that), but
            # not fall below greedy's plan while the plans are tied on the levels above
            relaxed = achieved - max(LEVEL_TOLERANCE, self.mip_gap) * max(1.0, achieved)
            g_value = m.level_value(self.greedy, members)
            if tied:
                relaxed = max(relaxed, min(lb, g_value + 1e-5))
                tied = abs(achieved - g_value) <= 1e-6
            relax.append((h.getNumRow() - 1, relaxed, members))
        for row, relaxed, members in relax:
            h.changeRowBounds(row, relaxed, np.inf)
            point = self._trim(point, members, relaxed)
        name = f"min-cost (start {float(m.cost @ point):.8g}"
        budget = NEIGHBOURHOOD_SHARE * (self.deadline - time.perf_counter())
        # the level stages' bounds rule out candidates no plan keeping the levels uses
        self._uncarry()
        if self.packings:
            self._fix(self._ranges(relax), rows=True)
            # on the small problems bounded, HiGHS's restarts took 90 % of min-cost
            h.setOptionValue("mip_allow_restart", False)
        better = self._neighbourhood(m.cost, point, budget, "min-cost")
        if better is not None and self._meets_levels(better, relax) and \
                float(m.cost @ better) < float(m.cost @ point) - 1e-9:
            point = better
            name += f", neighbourhood {float(m.cost @ point):.8g}"
        final = self._run(m.cost, point, name + ")", 1, cost_stage=True)
        if final is None:
            return self._failed("min-cost")
        return self._result(final)

    # --- helpers ---

    def _fix_served(self, servers: np.ndarray) -> None:
        """Fix ``f_s = 1``; with one accelerator per server its candidate then needs at least
        ``full_need`` replicas (``x_c >= full_need_c y_c``), which tightens the LP."""
        m, h = self.m, self.h
        cols = m.i_f[servers].astype(np.int32)
        m.col_lower[cols] = 1.0
        h.changeColsBounds(len(cols), cols, m.col_lower[cols], m.col_upper[cols])
        if m.heterogeneous:
            return
        sel = np.flatnonzero(np.isin(m.owner, servers))
        short = sel[m.full_need[sel] > m.upper[sel]]  # cannot serve fully: never chosen
        if len(short):
            ys = m.iy[short].astype(np.int32)
            m.col_upper[ys] = 0.0
            h.changeColsBounds(len(ys), ys, m.col_lower[ys], m.col_upper[ys])
        sel = sel[m.full_need[sel] <= m.upper[sel]]
        n = len(sel)
        starts = (2 * np.arange(n)).astype(np.int32)
        index = np.column_stack([m.ix[sel], m.iy[sel]]).ravel().astype(np.int32)
        value = np.column_stack([np.ones(n), -m.full_need[sel]]).ravel()
        h.addRows(n, np.zeros(n), np.full(n, np.inf), 2 * n, starts, index, value)

    def _note_gap(self, name: str, value: float, bound: float, source: str) -> None:
        """Record a stage decided without HiGHS: objective ``value`` against ``bound``."""
        gap = max(0.0, value - bound) / max(1.0, abs(value))
        self.gaps.append(gap)
        self.level_gaps.append(gap)
        if gap > self.mip_gap:
            self.optimal = False
        self._stage(f"{name}: kept, gap {gap:.2%} to the {source}")

    def _trim(self, point: np.ndarray, members: np.ndarray, lower: float) -> np.ndarray:
        """Drop the partial allocations of ``members`` that serve least per cent, while the
        level stays above ``lower``: a cheaper start for min-cost (the level stages, blind
        to cost, give idle cards to servers they serve a millionth of)."""
        m = self.m
        x = point[: m.n_c].copy()
        f = point[m.i_f]
        cost = np.bincount(
            m.owner, weights=m.cost[: m.n_c] * x + m.cost[m.iy] * (x > 0), minlength=m.n_s
        )
        partial = [s for s in members if 0 < f[s] < 1 - 1e-9 and cost[s] > 0]
        partial.sort(key=lambda s: (f[s] / cost[s], s))
        slack = m.level_value(point, members) - lower - 1e-7
        for s in partial:
            if f[s] > slack:
                break
            x[m.owner == s] = 0.0
            slack -= f[s]
        return m.complete(x)

    def _meets_levels(
        self, point: np.ndarray, relaxed: Sequence[tuple[int, float, np.ndarray]] = ()
    ) -> bool:
        """Whether ``point`` keeps the fixed levels (or their ``relaxed`` bounds) and the
        capacity."""
        m = self.m
        low = {id(mem): lb for _, lb, mem in relaxed}
        if not all(
            m.level_value(point, mem) >= low.get(id(mem), lb) - 1e-9 for mem, lb in self.fixed
        ):
            return False
        if m.capacity is None:
            return True
        used = np.bincount(m.t_rows, weights=m.units * point[: m.n_c], minlength=len(m.types))
        return bool(np.all(used <= m.caps + 1e-6))

    def _bound_servers(self, servers: np.ndarray, *, fix: bool) -> None:
        """Fix all columns of ``servers`` at 0, or restore their bounds."""
        m = self.m
        if len(servers) == 0:
            return
        sel = np.flatnonzero(np.isin(m.owner, servers))
        cols = np.concatenate([m.ix[sel], m.iy[sel], m.i_f[servers]]).astype(np.int32)
        ub = np.zeros(len(cols)) if fix else m.col_upper[cols]
        lb = np.zeros(len(cols)) if fix else m.col_lower[cols]
        self.h.changeColsBounds(len(cols), cols, lb, ub)

    def _lp_feasible_serve_all(self) -> bool:
        h, m = self.h, self.m
        h.changeRowBounds(m.serve_all_row, m.n_s - 1e-7, np.inf)
        h.setOptionValue("solve_relaxation", True)
        h.setOptionValue("time_limit", max(0.05, self.deadline - time.perf_counter()))
        h.changeColsCost(m.n_var, np.arange(m.n_var, dtype=np.int32), np.zeros(m.n_var))
        h.run()
        status = h.getModelStatus()
        h.setOptionValue("solve_relaxation", False)
        h.changeRowBounds(m.serve_all_row, -np.inf, np.inf)
        return status != highspy.HighsModelStatus.kInfeasible

    def _run(
        self, objective: np.ndarray, start: np.ndarray | None, name: str, stages_left: int,
        share: float = 1.0, *, cost_stage: bool = False, bound: float | None = None,
    ) -> np.ndarray | None:
        """Solve with ``objective`` in ``share`` of this stage's part of the remaining time
        (remaining / stages left); None without a solution."""
        h, m = self.h, self.m
        t = time.perf_counter()
        remaining = self.deadline - t
        share = max(0.05, share * remaining / max(1, stages_left))
        h.changeColsCost(m.n_var, np.arange(m.n_var, dtype=np.int32), objective)
        h.setOptionValue("time_limit", share)
        h.setOptionValue("mip_rel_gap", self.mip_gap)
        if start is not None:
            h.setSolution(m.n_var, np.arange(m.n_var, dtype=np.int32), start)
        h.run()
        status = h.getModelStatus()
        info = h.getInfo()
        has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
        gap = float(info.mip_gap) if has_solution and math.isfinite(info.mip_gap) else None
        if gap is not None and bound is not None:  # a bound known before (LP relaxation)
            value = float(info.objective_function_value)
            gap = min(gap, max(0.0, value - bound) / max(1.0, abs(value)))
            if gap <= self.mip_gap:
                status = highspy.HighsModelStatus.kOptimal
        word = {
            highspy.HighsModelStatus.kOptimal: "optimal",
            highspy.HighsModelStatus.kInfeasible: "infeasible",
            highspy.HighsModelStatus.kTimeLimit: "time share reached",
        }.get(status, f"failed ({h.modelStatusToString(status)})")
        detail = (
            f" gap {gap:.2%}"
            if gap is not None and status != highspy.HighsModelStatus.kOptimal
            else ""
        )
        self._stage(f"{name}: {word}{detail} ({time.perf_counter() - t:.2f}s)")
        if status == highspy.HighsModelStatus.kInfeasible or not has_solution:
            return None
        if status != highspy.HighsModelStatus.kOptimal:
            self.optimal = False
        if gap is not None:
            self.gaps.append(gap)
            if cost_stage:
                self.cost_gap = gap
            else:
                self.level_gaps.append(gap)
        return np.asarray(h.getSolution().col_value)

    def _failed(self, stage: str) -> MilpResult:
        return MilpResult({}, MilpStatus.FAILED, None,
                          f"HiGHS at {stage}: " + "; ".join(self.stages), self.stages)

    def _result(self, point: np.ndarray) -> MilpResult:
        gap = max(self.gaps) if self.gaps else 0.0
        parts = []
        if self.level_gaps:
            parts.append(f"service levels {max(self.level_gaps):.2%}")
        if self.cost_gap is not None:
            parts.append(f"cost at those levels {self.cost_gap:.2%}")
        gaps = f"; gaps: {', '.join(parts)}" if len(parts) > 1 else ""
        message = "; ".join(self.stages) + gaps + f"; total {time.perf_counter() - self.t0:.3f}s"
        status = MilpStatus.OPTIMAL if self.optimal else MilpStatus.FEASIBLE
        return MilpResult(self.m.assigned(point), status, gap, message, self.stages)


def _greedy_start(
    active: list[MilpServer],
    fits: Mapping[str, list[Candidate]],
    capacity: Mapping[str, int] | None,
    allow_partial: bool,
) -> dict[str, list[tuple[Candidate, int]]]:
    cands = {s.name: fits[s.name] for s in active}
    if capacity is None:
        result = solve_unlimited(cands)
    else:
        result = solve_greedy(
            cands,
            {s.name: s.priority for s in active},
            capacity,
            policy=SaturationPolicy.ROUND_ROBIN if allow_partial else SaturationPolicy.NONE,
            delayed_best_effort=False,
        )
    return {name: [(a.candidate, a.replicas)] for name, a in result.assigned.items()}
