"""How the MILP's stages find plans and prove them, beyond a plain HiGHS solve (see
:mod:`controlloop.optimizer.milp` for the stages and ``docs/optimizer.md`` for figures):
the LP-guided dive and the neighbourhood MILP, the per-type packing bound
(:mod:`controlloop.optimizer.milp_dw`) with its Lagrangian cut and variable fixing, and
the MILP restricted to some candidates that several of them solve."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import highspy
import numpy as np

from controlloop.optimizer.milp_dw import BoundResult, Stage, fixings, stage_bound
from controlloop.optimizer.milp_model import MilpModel

DIVE_ROUNDS_SHARE = 0.3  # part of the dive's budget for its fixing rounds (rest: small MILP)
# the packing bound (milp_dw) runs on problems up to this size (27 servers: ~210; 100:
# ~800, where it does not converge in its time)
PACKING_MAX_CANDIDATES = 500
# ...and with at most this many card counts programmed per pricing round (the sum over
# candidates of their type's cards + 1: 10,000-40,000 on those problems); beyond, a round takes
# too long (and memory grows with the cards)
PACKING_MAX_WORK = 250_000
NEIGHBOURHOOD_GAP = 0.005  # the restricted MILP stops within this gap of its own bound
NEIGHBOURHOOD_HEURISTICS = 0.3  # HiGHS mip_heuristic_effort there (default 0.05)
HEURISTICS = 0.05  # HiGHS' default mip_heuristic_effort, restored afterwards

log = logging.getLogger("controlloop.optimizer.milp")


class PlanSearch:
    """The search methods of the MILP's stages (a mixin of ``milp._Stages``, whose state
    they share: the model, the HiGHS object and the levels fixed so far)."""

    m: MilpModel
    h: Any
    mip_gap: float
    fixed: list[tuple[np.ndarray, float]]
    packings: list[tuple[Stage, BoundResult]]  # the level stages' converged bounds
    # what those bounds rule out for the later level stages, and the undo of each
    level_ranges: dict[int, tuple[int, int]]
    level_undo: list[Callable[[], None]]
    lp_point: np.ndarray | None  # the last dive's first LP solution

    def _stage(self, text: str) -> None:
        raise NotImplementedError

    def _meets_levels(
        self, point: np.ndarray, relaxed: Sequence[tuple[int, float, np.ndarray]] = ()
    ) -> bool:
        raise NotImplementedError

    def _neighbourhood(
        self, objective: np.ndarray, start: np.ndarray, budget: float, label: str
    ) -> np.ndarray | None:
        """Solve the MILP restricted to the candidates that ``start`` or the LP relaxation
        use (per server), warm-started from ``start``, in ``budget`` seconds: a small
        problem in which HiGHS finds the LP's cheaper choices quickly. None without a
        plan."""
        m, h = self.m, self.h
        t0 = time.perf_counter()
        if budget < 0.1:
            return None
        h.changeColsCost(m.n_var, np.arange(m.n_var, dtype=np.int32), objective)
        point = None
        note = "no LP"
        try:
            h.setOptionValue("solve_relaxation", True)
            h.setOptionValue("time_limit", h.getRunTime() + 0.5 * budget)
            h.run()
            h.setOptionValue("solve_relaxation", False)
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                return None
            sol = np.asarray(h.getSolution().col_value)
            keep = (sol[: m.n_c] > 1e-7) | (sol[m.iy] > 1e-7) | (start[: m.n_c] > 0)
            # as in RINS, fix the replicas on which the start and the LP agree
            xs = start[: m.n_c]
            agree = (np.abs(sol[: m.n_c] - xs) < 1e-6) & (xs > 0)
            note = (f"LP {float(objective @ sol):.8g}, {int(keep.sum())} candidates, "
                    f"{int(agree.sum())} fixed")
            h.setOptionValue("mip_heuristic_effort", NEIGHBOURHOOD_HEURISTICS)
            point = self._restricted(
                objective, start, keep, agree, t0 + budget, max(self.mip_gap, NEIGHBOURHOOD_GAP)
            )
        finally:
            h.setOptionValue("solve_relaxation", False)
            h.setOptionValue("mip_heuristic_effort", HEURISTICS)
            found = "no plan" if point is None else f"plan {float(objective @ point):.8g}"
            self._stage(f"{label} neighbourhood: {note}, {found} ({time.perf_counter() - t0:.2f}s)")
        return point

    def _packing_bound(
        self, objective: np.ndarray, stage: Stage, start: np.ndarray, budget: float, label: str,
        relaxed: Sequence[tuple[int, float, np.ndarray]] = (),
    ) -> tuple[np.ndarray, BoundResult] | None:
        """The per-type packing bound of a stage (:mod:`milp_dw`; small problems only): the
        best plan of its integer master or of the MILP on the packings its LP uses, and
        the bound. Its Lagrangian cut, valid for every plan, stays in the model."""
        m, h = self.m, self.h
        # each pricing round programmes every candidate over its type's cards
        work = int(np.sum(m.caps[m.t_rows] + 1.0)) if m.capacity is not None else 0
        if m.n_c > PACKING_MAX_CANDIDATES or work > PACKING_MAX_WORK or budget < 0.05:
            return None
        t0 = time.perf_counter()
        extra = [] if self.lp_point is None or stage.level is None else [self.lp_point]
        got = stage_bound(m, stage, start, t0 + budget, target=float(objective @ start),
                          mip_gap=self.mip_gap, extra=extra)
        if got is None:
            return None
        if got.converged:
            self.packings.append((stage, got))
        best = start
        if got.plan is not None and got.plan_value < float(objective @ best) - 1e-9 and \
                self._meets_levels(got.plan, relaxed):
            best = got.plan
        if got.cut is not None:
            slack = 1e-6 * max(1.0, abs(got.cut_rhs))
            h.addRow(got.cut_rhs - slack, np.inf, m.n_var, np.arange(m.n_var, dtype=np.int32),
                     got.cut)
        value = float(objective @ best)
        # unconverged, the master's packings say little about where the optimum lies
        if got.converged and got.support is not None and \
                value - got.bound > self.mip_gap * max(1.0, abs(value)):
            keep = got.support | (best[: m.n_c] > 0)
            found = self._restricted(objective, best, keep, np.zeros(m.n_c, bool),
                                     t0 + 2 * budget, self.mip_gap)
            if found is not None and float(objective @ found) < value - 1e-9 and \
                    self._meets_levels(found, relaxed):
                best = found
        self._stage(
            f"{label} packings: bound {abs(got.bound):.8g}, {got.rounds} rounds, "
            f"{got.columns} columns{'' if got.converged else ' (unconverged)'}, "
            f"plan {abs(float(objective @ best)):.8g} ({time.perf_counter() - t0:.2f}s)"
        )
        return best, got

    def _ranges(
        self, relax: Sequence[tuple[int, float, np.ndarray]]
    ) -> tuple[dict[int, tuple[int, int]], np.ndarray]:
        """Replica ranges per candidate that the level stages' packing bounds allow for
        the plans keeping every level at its ``relax`` value (min-cost's), and the servers
        they show served (``fixings``)."""
        if not self.packings:
            return {}, np.zeros(0, np.int64)
        low = {id(mem): lb for _, lb, mem in relax}
        ranges: dict[int, tuple[int, int]] = {}
        served: list[np.ndarray] = []
        for stage, got in self.packings:
            assert stage.level is not None
            fixed = next(lb for mem, lb in self.fixed if mem is stage.level)
            level = low.get(id(stage.level), fixed)
            relaxed = [(mem, low.get(id(mem), lb)) for mem, lb in stage.levels]
            more, forced = fixings(self.m, stage, got, -level, relaxed)
            served.append(forced)
            for k, (lo, hi) in more.items():
                before = ranges.get(k, (lo, hi))
                ranges[k] = (max(lo, before[0]), min(hi, before[1]))
        return ranges, np.unique(np.concatenate(served))

    def _fix(
        self, fixed: tuple[dict[int, tuple[int, int]], np.ndarray], rows: bool = False
    ) -> Callable[[], None]:
        """Bound the replicas of each candidate by its range (a range ending at full
        service leaves the upper bound: more replicas serve no more); with ``rows``, also
        ``x >= lo y`` and every server shown served on some candidate (rows stay: for the
        last stage). Returns the undo of the bounds."""
        m, h = self.m, self.h
        ranges, served = fixed
        lp = h.getLp()
        lower, upper = np.asarray(lp.col_lower_).copy(), np.asarray(lp.col_upper_).copy()
        new = upper.copy()
        for k, (_, hi) in ranges.items():
            if hi <= 0:
                new[m.ix[k]] = new[m.iy[k]] = 0.0
            elif hi < m.full_need[k] and m.split:
                new[m.ix[k]] = min(new[m.ix[k]], float(hi))
        changed = np.flatnonzero(new < upper).astype(np.int32)
        h.changeColsBounds(len(changed), changed, np.minimum(lower[changed], new[changed]),
                           new[changed])
        if rows:
            for k, (lo, hi) in ranges.items():
                if lo > 1 and hi > 0:
                    h.addRow(0.0, np.inf, 2, np.array([m.ix[k], m.iy[k]], np.int32),
                             np.array([1.0, -float(lo)]))
            for s in served.tolist():
                ys = m.iy[m.owner == s].astype(np.int32)
                h.addRow(1.0, np.inf, len(ys), ys, np.ones(len(ys)))
        log.debug("MILP: the packing bounds fix %d columns, %d servers served",
                  len(changed), len(served))

        def restore() -> None:
            h.changeColsBounds(len(changed), changed, lower[changed], upper[changed])

        return restore

    def _stage_spec(
        self, members: np.ndarray | None, lower: np.ndarray,
        relaxed: Sequence[tuple[int, float, np.ndarray]] = (),
    ) -> Stage:
        """The stage maximising ``members``' service (None: min-cost) for :mod:`milp_dw`:
        the levels fixed so far (their ``relaxed`` bounds if given), ``lower`` excluded."""
        low = {id(mem): lb for _, lb, mem in relaxed}
        full = [mem for mem, lb in self.fixed if lb >= len(mem) - 1e-9]
        return Stage(
            level=members, full=np.concatenate(full) if full else np.zeros(0, np.int64),
            levels=[(mem, low.get(id(mem), lb)) for mem, lb in self.fixed
                    if lb < len(mem) - 1e-9],
            excluded=lower, ranges={} if relaxed else dict(self.level_ranges),
        )

    def _carry(self, members: np.ndarray) -> None:
        """Once the level of ``members`` is fixed, fix out for the later level stages (which
        keep it) what its packing bound rules out at that level; undone before min-cost,
        which keeps the levels only up to mipGap."""
        if not self.packings or self.packings[-1][0].level is not members:
            return
        stage, got = self.packings[-1]
        level = next(lb for mem, lb in self.fixed if mem is members)
        ranges, served = fixings(self.m, stage, got, -level)
        for k, (lo, hi) in ranges.items():
            before = self.level_ranges.get(k, (lo, hi))
            self.level_ranges[k] = (max(lo, before[0]), min(hi, before[1]))
        self.level_undo.append(self._fix((ranges, np.zeros(0, np.int64))))

    def _uncarry(self) -> None:
        for undo in reversed(self.level_undo):
            undo()
        self.level_undo.clear()
        self.level_ranges.clear()

    def _settles(self, objective: np.ndarray, start: np.ndarray, seconds: float) -> bool:
        """Whether HiGHS proves the stage from ``start`` within ``seconds`` (then it needs
        no packing bound; the stage's own solve re-finds the optimum at once)."""
        m, h = self.m, self.h
        if seconds <= 0:
            return False
        all_cols = np.arange(m.n_var, dtype=np.int32)
        h.changeColsCost(m.n_var, all_cols, objective)
        h.setOptionValue("time_limit", seconds)
        h.setOptionValue("mip_rel_gap", self.mip_gap)
        h.setSolution(m.n_var, all_cols, start)
        h.run()
        return bool(h.getModelStatus() == highspy.HighsModelStatus.kOptimal)

    def _restricted(
        self, objective: np.ndarray, start: np.ndarray, keep: np.ndarray, fix: np.ndarray,
        stop: float, gap: float,
    ) -> np.ndarray | None:
        """The MILP with only the candidates ``keep`` open and those in ``fix`` fixed at
        ``start``'s replicas, warm-started from ``start``, until ``stop`` or within ``gap``
        of its bound; its plan, or None. Bounds are restored afterwards."""
        m, h = self.m, self.h
        lp = h.getLp()
        col_lo, col_up = np.asarray(lp.col_lower_), np.asarray(lp.col_upper_)
        all_cols = np.arange(m.n_var, dtype=np.int32)
        drop = ~keep
        closed = np.concatenate([m.ix[drop], m.iy[drop]]).astype(np.int32)
        fixed = np.concatenate([m.ix[fix], m.iy[fix]]).astype(np.int32)
        xs = start[: m.n_c]
        try:
            h.changeColsBounds(len(closed), closed, np.zeros(len(closed)), np.zeros(len(closed)))
            values = np.concatenate([xs[fix], np.ones(int(fix.sum()))])
            h.changeColsBounds(len(fixed), fixed, values, values)
            h.changeColsCost(m.n_var, all_cols, objective)
            h.setOptionValue("time_limit", max(0.1, stop - time.perf_counter()))
            h.setOptionValue("mip_rel_gap", gap)
            h.setSolution(m.n_var, all_cols, start)
            h.run()
            if h.getInfo().primal_solution_status != 2:
                return None
            return m.complete(np.asarray(h.getSolution().col_value)[: m.n_c])
        finally:
            cols = np.concatenate([closed, fixed])
            h.changeColsBounds(len(cols), cols, col_lo[cols], col_up[cols])

    def _dive(
        self, objective: np.ndarray, budget: float, label: str, measure: np.ndarray | None = None
    ) -> np.ndarray | None:
        """LP-guided dive: solve the LP relaxation, fix the accelerator of the servers the LP
        splits over several candidates (the half with the clearest choice, largest ``y``,
        first; a fixing that makes the LP infeasible is halved, then skipped), re-solve and
        repeat until no server is split or ``budget`` is nearly spent; then keep each server
        on the candidates its LP solution uses and solve that small MILP (replica counts
        only). Returns the plan, or None. Bounds are restored afterwards; the first LP
        solution is kept in ``lp_point``. The message reports values of ``measure``
        (default ``objective``), in absolute value."""
        m, h = self.m, self.h
        self.lp_point = None
        t0 = time.perf_counter()
        stop = t0 + budget
        if budget < 0.05 or m.n_c == 0:
            return None
        lp = h.getLp()
        col_lo, col_up = np.asarray(lp.col_lower_), np.asarray(lp.col_upper_)
        changed: list[np.ndarray] = []
        all_cols = np.arange(m.n_var, dtype=np.int32)
        h.changeColsCost(m.n_var, all_cols, objective)

        def close(cols: np.ndarray) -> None:
            h.changeColsBounds(len(cols), cols, np.zeros(len(cols)), np.zeros(len(cols)))

        def relaxation() -> np.ndarray | None:
            # the LP clock of a Highs object runs on across calls: limit relative to it
            h.setOptionValue("time_limit", h.getRunTime() + max(0.05, stop - time.perf_counter()))
            h.run()
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                return None
            return np.asarray(h.getSolution().col_value)

        point = None
        rounds = 0
        h.setOptionValue("solve_relaxation", True)
        try:
            sol = relaxation()
            if sol is None:
                return None
            self.lp_point = sol
            skip = np.zeros(m.n_s, bool)
            ks = np.arange(m.n_c)
            while True:
                act = (sol[: m.n_c] > 1e-7) | (sol[m.iy] > 1e-7)
                cnt = np.bincount(m.owner, weights=act, minlength=m.n_s)
                multi = np.flatnonzero((cnt > 1) & ~skip)
                if len(multi) == 0 or time.perf_counter() > t0 + DIVE_ROUNDS_SHARE * budget:
                    break
                key = np.where(act, sol[m.iy], -1.0)
                order_k = np.lexsort((-key, m.owner))  # per server, largest y first
                first = np.searchsorted(m.owner[order_k], np.arange(m.n_s))
                best = order_k[np.minimum(first, m.n_c - 1)]
                order = multi[np.argsort(-key[best[multi]], kind="stable")]
                take = order[: max(1, len(order) // 2)]
                while True:
                    sel = np.isin(m.owner, take) & (ks != best[m.owner])
                    cols = np.concatenate([m.ix[sel], m.iy[sel]]).astype(np.int32)
                    close(cols)
                    rounds += 1
                    got = relaxation()
                    if got is not None:
                        changed.append(cols)
                        sol = got
                        break
                    h.changeColsBounds(len(cols), cols, col_lo[cols], col_up[cols])
                    if len(take) == 1 or time.perf_counter() > stop:
                        skip[take] = True
                        break
                    take = take[: len(take) // 2]
            # the small MILP: every server on the candidate its LP solution uses (a server
            # still split keeps all its candidates; one the LP leaves out gets none)
            act = (sol[: m.n_c] > 1e-7) | (sol[m.iy] > 1e-7)
            cnt = np.bincount(m.owner, weights=act, minlength=m.n_s)
            drop = ~act & (cnt[m.owner] <= 1)
            cols = np.concatenate([m.ix[drop], m.iy[drop]]).astype(np.int32)
            close(cols)
            changed.append(cols)
            h.setOptionValue("solve_relaxation", False)
            h.setOptionValue("time_limit", max(0.5, stop - time.perf_counter()))
            h.setOptionValue("mip_rel_gap", self.mip_gap)
            h.run()
            if h.getInfo().primal_solution_status == 2:
                point = self.m.complete(np.asarray(h.getSolution().col_value)[: m.n_c])
        finally:
            h.setOptionValue("solve_relaxation", False)
            for cols in reversed(changed):
                h.changeColsBounds(len(cols), cols, col_lo[cols], col_up[cols])
            shown = objective if measure is None else measure
            lp_value = "-" if self.lp_point is None else f"{abs(float(shown @ self.lp_point)):.8g}"
            found = "no plan" if point is None else f"plan {abs(float(shown @ point)):.8g}"
            self._stage(
                f"{label} dive: LP {lp_value}, {rounds} rounds, {found}"
                f" ({time.perf_counter() - t0:.2f}s)"
            )
        return point
