"""The MILP's model: its types, the constraint matrix and column data shared by every
stage, and the candidate preprocessing (see :mod:`controlloop.optimizer.milp` for the
formulation and the stages)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import highspy
import numpy as np

from controlloop.optimizer.candidates import move_penalty as penalty_of_move
from controlloop.optimizer.solution import Candidate


@dataclass(frozen=True)
class MilpServer:
    name: str
    priority: int
    demand: float  # req/s; 0 at zero load
    current_accelerator: str
    current_cost: float


class MilpStatus(StrEnum):
    OPTIMAL = "optimal"  # every stage proven optimal (within mip_gap)
    FEASIBLE = "feasible"  # a plan, some stage stopped at its time share with a gap
    FAILED = "failed"  # HiGHS gave no plan (time limit with no solution, error)


@dataclass
class MilpResult:
    assigned: dict[str, list[tuple[Candidate, int]]]
    status: MilpStatus
    gap: float | None
    message: str
    stages: list[str] = field(default_factory=list)


Plan = Mapping[str, Sequence[tuple[Candidate, int]]]

# HiGHS heuristics switched off in every stage (see MilpModel.highs)
SUB_MIP_HEURISTICS = ("feasibility_jump", "rins", "rens", "root_reduced_cost")


def move_penalty(cand: Candidate, server: MilpServer) -> float:
    if cand.accelerator == server.current_accelerator:
        return 0.0
    return penalty_of_move(server.current_cost, cand.cost)


@dataclass(frozen=True)
class RowMatrix:
    """A constraint matrix in compressed rows, as HiGHS takes it. Built here rather than
    with scipy.sparse, whose import was 0.07-0.14 s of every MILP run as a process."""

    indptr: np.ndarray  # int32, one per row and one more
    indices: np.ndarray  # int32 column of each entry
    data: np.ndarray  # float64
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return len(self.data)

    @classmethod
    def from_triplets(
        cls, parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n_rows: int, n_cols: int
    ) -> RowMatrix:
        """Rows, columns and values (duplicates summed, zeros kept out)."""
        rows = np.concatenate([r for r, _, _ in parts]).astype(np.int64)
        cols = np.concatenate([c for _, c, _ in parts]).astype(np.int64)
        vals = np.concatenate([v for _, _, v in parts]).astype(np.float64)
        key = rows * n_cols + cols
        unique, inverse = np.unique(key, return_inverse=True)
        summed = np.bincount(inverse, weights=vals, minlength=len(unique))
        keep = summed != 0.0
        unique, summed = unique[keep], summed[keep]
        r, c = np.divmod(unique, n_cols)
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
        return cls(indptr.astype(np.int32), c.astype(np.int32), summed, (n_rows, n_cols))

    def toarray(self) -> np.ndarray:
        out = np.zeros(self.shape)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        np.add.at(out, (rows, self.indices), self.data)
        return out


class MilpModel:
    """The constraint matrix and column data, shared by all stages (layout x | y | f)."""

    def __init__(
        self,
        active: list[MilpServer],
        fits: Mapping[str, list[Candidate]],
        capacity: Mapping[str, int] | None,
        split: bool,
        heterogeneous: bool,
        allow_partial: bool,
    ) -> None:
        self.active = active
        self.split = split
        self.allow_partial = allow_partial
        self.capacity = capacity
        cands: list[Candidate] = []
        owner: list[int] = []
        for i, server in enumerate(active):
            for cand in fits[server.name]:
                cands.append(cand)
                owner.append(i)
        self.cands, self.owner = cands, np.asarray(owner, np.int64)
        n_c, n_s = len(cands), len(active)
        self.n_c, self.n_s = n_c, n_s
        self.index = {
            (active[o].name, c.accelerator): k
            for k, (c, o) in enumerate(zip(cands, owner, strict=True))
        }
        if n_c == 0:
            return
        self.upper = np.array([max_replicas(c, capacity, split) for c in cands], np.float64)
        self.units = np.array([c.units_per_replica for c in cands], np.float64)
        per_replica = np.array([c.cost_per_replica for c in cands], np.float64)
        penalty = np.array([move_penalty(c, active[o]) for c, o in zip(cands, owner, strict=True)])
        self.weight = np.array(
            [service_weight(c, active[o]) for c, o in zip(cands, owner, strict=True)]
        )
        self.priority = np.array([s.priority for s in active], np.int64)
        n_var = 2 * n_c + n_s
        self.n_var = n_var
        ix = np.arange(n_c)
        self.ix, self.iy, self.i_f = ix, n_c + ix, 2 * n_c + np.arange(n_s)
        triplets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        lo: list[np.ndarray] = []
        hi: list[np.ndarray] = []
        n_rows_so_far = 0

        def add(
            r: np.ndarray, c: np.ndarray, v: np.ndarray, n_rows: int, lb: np.ndarray, ub: np.ndarray
        ) -> None:
            nonlocal n_rows_so_far
            triplets.append((np.asarray(r) + n_rows_so_far, np.asarray(c), np.asarray(v, float)))
            n_rows_so_far += n_rows
            lo.append(lb)
            hi.append(ub)

        # link x and y
        link_lb = np.zeros(n_c) if not split else np.full(n_c, -np.inf)
        add(np.concatenate([ix, ix]), np.concatenate([ix, self.iy]),
            np.concatenate([np.ones(n_c), -self.upper]), n_c, link_lb, np.zeros(n_c))
        if not heterogeneous:
            add(self.owner, self.iy, np.ones(n_c), n_s, np.zeros(n_s), np.ones(n_s))
        self.types: list[str] = []
        if capacity is not None:
            self.types = sorted({c.acc_type for c in cands})
            t_index = {t: k for k, t in enumerate(self.types)}
            self.t_rows = np.array([t_index[c.acc_type] for c in cands])
            self.caps = np.array([capacity.get(t, 0) for t in self.types], np.float64)
            add(
                self.t_rows, ix, self.units, len(self.types),
                np.full(len(self.types), -np.inf), self.caps,
            )
        # served fraction: f_s - sum w_c x_c <= 0
        add(np.concatenate([np.arange(n_s), self.owner]), np.concatenate([self.i_f, ix]),
            np.concatenate([np.ones(n_s), -self.weight]), n_s, np.full(n_s, -np.inf), np.zeros(n_s))
        # cut: f_s <= sum_c min(1, w_c u_c) y_c (implied for integer points, tightens the LP)
        add(np.concatenate([np.arange(n_s), self.owner]), np.concatenate([self.i_f, self.iy]),
            np.concatenate([np.ones(n_s), -np.minimum(1.0, self.weight * self.upper)]), n_s,
            np.full(n_s, -np.inf), np.zeros(n_s))
        # cut: the concave envelope of min(1, w x) over integer x, per candidate. With
        # n = full_need and r = 1 - w (n-1), the replicas x in [0, n] serve at most
        # r x + (n-1)(w-r) y (exact at x = n-1 and x = n): in the LP a server then needs
        # n f replicas, not f/w, to be served f (the LP bound was 1.5 % loose at 1,000).
        # replicas a candidate needs to serve its server fully (f_s = 1)
        self.full_need = full_need = np.ceil(1.0 / self.weight * (1.0 - 1e-9))
        env = full_need <= self.upper
        r = 1.0 - self.weight * (full_need - 1.0)
        cx = np.where(env, r, self.weight)
        cy = np.where(env, (full_need - 1.0) * (self.weight - r), 0.0)
        add(np.concatenate([np.arange(n_s), self.owner, self.owner]),
            np.concatenate([self.i_f, ix, self.iy]),
            np.concatenate([np.ones(n_s), -cx, -cy]), n_s, np.full(n_s, -np.inf), np.zeros(n_s))
        # serve-all row (active in the serve-all stage only)
        add(np.zeros(n_s, np.int64), self.i_f, np.ones(n_s), 1, np.array([-np.inf]),
            np.array([np.inf]))
        matrix = RowMatrix.from_triplets(triplets, n_rows_so_far, n_var)
        self.row_lower = np.concatenate(lo)
        self.row_upper = np.concatenate(hi)
        self.serve_all_row = matrix.shape[0] - 1
        self.matrix = matrix
        f_integral = np.zeros(n_s) if allow_partial else np.ones(n_s)
        self.integrality = np.concatenate([np.ones(2 * n_c), f_integral]).astype(np.int32)
        self.col_lower = np.zeros(n_var)
        self.col_upper = np.concatenate([self.upper, np.ones(n_c), np.ones(n_s)])
        self.cost = np.concatenate([per_replica, penalty, np.zeros(n_s)])
        self.heterogeneous = heterogeneous
        # the most a plan can cost (every server on its dearest candidate, all replicas)
        self.cost_scale = float(np.bincount(
            self.owner, weights=per_replica * self.upper + penalty, minlength=n_s).sum())

    def highs(self) -> Any:
        # highspy._Highs is the plain solver: highspy.Highs prints a banner on stdout when
        # built, which would corrupt `optimize --format json`. Fall back if it ever goes.
        h = getattr(highspy, "_Highs", highspy.Highs)()
        h.setOptionValue("output_flag", False)
        # Every stage starts from a plan of our own (greedy's, the dive's, the
        # neighbourhood's), so HiGHS's sub-MIP heuristics mostly re-find it: on the
        # 27-server scenarios they took 40-60 % of each solve (benchmarks.md, "MILP on
        # small problems").
        for heuristic in SUB_MIP_HEURISTICS:
            h.setOptionValue(f"mip_heuristic_run_{heuristic}", False)
        m = self.matrix
        h.passModel(
            self.n_var, m.shape[0], m.nnz, 2, 1, 0.0,  # rowwise, minimise, no offset
            self.cost, self.col_lower, self.col_upper, self.row_lower, self.row_upper,
            m.indptr, m.indices, m.data,
            self.integrality,
        )
        return h

    # --- solutions ---

    def start_vector(
        self, plan: Plan, substitute: Mapping[tuple[str, str], Candidate]
    ) -> np.ndarray:
        """``plan`` as a point of the model (replicas clipped to the bounds)."""
        x = np.zeros(self.n_c)
        for server in self.active:
            for cand, n in plan.get(server.name, ()):
                key = (server.name, cand.accelerator)
                while key not in self.index and key in substitute:  # dropped as dominated
                    kept = substitute[key]
                    n = substitute_replicas(
                        kept, cand, n, server, max_replicas(kept, self.capacity, self.split)
                    )
                    cand, key = kept, (server.name, kept.accelerator)
                k = self.index.get(key)
                if k is None or n <= 0:
                    continue
                x[k] = self.upper[k] if not self.split else min(float(n), self.upper[k])
        return self.complete(x)

    def complete(self, x: np.ndarray) -> np.ndarray:
        """The full point (x, y, f) for replicas ``x``: y = [x > 0], f as large as allowed."""
        x = np.rint(x)
        y = (x > 0).astype(np.float64)
        carried = np.bincount(self.owner, weights=self.weight * x, minlength=self.n_s)
        if self.allow_partial:
            f = np.minimum(1.0, carried)
        else:
            f = (carried >= 1.0 - 1e-9).astype(np.float64)
        return np.concatenate([x, y, f])

    def better(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether plan ``a`` serves more than ``b``, priority level by level."""
        for level in sorted(set(self.priority.tolist())):
            members = np.flatnonzero(self.priority == level)
            va, vb = self.level_value(a, members), self.level_value(b, members)
            if abs(va - vb) > 1e-9:
                return va > vb
        return False

    def level_value(self, point: np.ndarray, members: np.ndarray) -> float:
        return float(point[self.i_f[members]].sum())

    def fill(self, point: np.ndarray, plan_point: np.ndarray, servers: np.ndarray) -> np.ndarray:
        """Add ``plan_point``'s replicas of ``servers`` to ``point`` where capacity is left."""
        x = point[: self.n_c].copy()
        free = None
        if self.capacity is not None:
            free = self.caps - np.bincount(
                self.t_rows, weights=self.units * x, minlength=len(self.types)
            )
        wanted = np.isin(self.owner, servers) & (plan_point[: self.n_c] > 0)
        placed = np.bincount(self.owner, weights=x, minlength=self.n_s) > 0
        for k in np.flatnonzero(wanted):
            if placed[self.owner[k]]:
                continue
            n = plan_point[k]
            if free is not None:
                t = self.t_rows[k]
                fit = math.floor(free[t] / self.units[k] + 1e-9)
                if fit < n:
                    if not self.split or fit <= 0:
                        continue
                    n = fit
                free[t] -= n * self.units[k]
            x[k] = n
            placed[self.owner[k]] = True
        return self.complete(x)

    def fill_efficient(self, point: np.ndarray, servers: np.ndarray) -> np.ndarray:
        """Give ``servers`` without replicas in ``point`` some in the capacity left: first
        full service, servers needing the smallest share of the free cards first, each on
        the candidate taking the smallest share; then (best effort) the largest fraction
        that still fits."""
        x = point[: self.n_c].copy()
        if self.capacity is None:
            free = np.full(1, np.inf)
            t_rows = np.zeros(self.n_c, np.int64)
        else:
            free = self.caps - np.bincount(
                self.t_rows, weights=self.units * x, minlength=len(self.types)
            )
            t_rows = self.t_rows
        placed = np.bincount(self.owner, weights=x, minlength=self.n_s) > 0
        todo = [s for s in servers if not placed[s]]
        if not todo:
            return point
        first = np.searchsorted(self.owner, np.arange(self.n_s))
        last = np.searchsorted(self.owner, np.arange(self.n_s), side="right")
        cards = self.full_need * self.units
        full_ok = self.full_need <= self.upper

        def share(k: np.ndarray) -> np.ndarray:
            f = free[t_rows[k]]
            return np.where(
                full_ok[k] & (cards[k] <= f + 1e-9), cards[k] / np.maximum(f, 1e-9), np.inf
            )

        order = sorted(
            todo, key=lambda s: (float(share(np.arange(int(first[s]), int(last[s]))).min()), s)
        )
        left = []
        for s in order:
            ks = np.arange(int(first[s]), int(last[s]))
            sh = share(ks)
            j = int(np.argmin(sh))
            if not np.isfinite(sh[j]):
                left.append(s)
                continue
            k = ks[j]
            x[k] = self.full_need[k]
            free[t_rows[k]] -= cards[k]
        if self.split:
            for s in left:
                ks = np.arange(int(first[s]), int(last[s]))
                fit = np.minimum(np.floor(free[t_rows[ks]] / self.units[ks] + 1e-9), self.upper[ks])
                served = self.weight[ks] * fit
                j = int(np.argmax(served))
                if served[j] <= 0:
                    continue
                k = ks[j]
                x[k] = fit[j]
                free[t_rows[k]] -= fit[j] * self.units[k]
        return self.complete(x)

    def assigned(self, point: np.ndarray) -> dict[str, list[tuple[Candidate, int]]]:
        x = np.rint(point[: self.n_c]).astype(int)
        out: dict[str, list[tuple[Candidate, int]]] = {}
        for c, o, n in zip(self.cands, self.owner, x, strict=True):
            if n > 0:
                out.setdefault(self.active[o].name, []).append((c, int(n)))
        return out


# --- stages --------------------------------------------------------------------------------


# --- preprocessing -------------------------------------------------------------------------


def max_replicas(cand: Candidate, capacity: Mapping[str, int] | None, partial: bool) -> int:
    """Most replicas of ``cand`` the capacity of its type allows (0: drop the candidate)."""
    if capacity is None:
        return cand.replicas
    fit = capacity.get(cand.acc_type, 0) // max(cand.units_per_replica, 1)
    if fit >= cand.replicas:
        return cand.replicas
    return fit if partial else 0  # without best effort a candidate is all or nothing


def service_weight(cand: Candidate, server: MilpServer) -> float:
    """The share of ``server``'s demand one replica of ``cand`` carries (``1/need`` at
    zero load)."""
    if server.demand > 0:
        return cand.rate_per_replica / server.demand
    return 1.0 / cand.replicas


def substitute_replicas(
    kept: Candidate, dropped: Candidate, n: int, server: MilpServer, upper: int
) -> int:
    """Replicas of ``kept`` that serve at least what ``n`` replicas of ``dropped`` did."""
    served = min(1.0, service_weight(dropped, server) * n)
    return min(upper, max(0, math.ceil(served / service_weight(kept, server) - 1e-9)))


def prune_dominated(
    cands: list[Candidate],
    server: MilpServer,
    capacity: Mapping[str, int] | None = None,
    partial: bool = True,
) -> tuple[list[Candidate], dict[Candidate, Candidate]]:
    """Drop candidates another candidate of the same card type beats at every size.

    ``a`` dominates ``b`` (same type) when every use of ``b`` the model allows, ``x_b``
    replicas for ``x_b`` in ``1..u_b`` (only ``u_b`` without best effort), can be replaced
    by replicas of ``a`` (at most ``u_a``) that serve at least ``min(1, w_b x_b)`` of the
    demand on no more cards, for no more cost and move penalty. Each priority stage
    maximises served fractions and min-cost minimises cost under the same capacity rows,
    so some optimum never uses ``b``. Comparing cards rather than replicas is what drops
    e.g. a 2-card candidate with the same per-card rate and price as a 1-card one: it
    wastes more cards when rounding up (about half of the large sample's candidates).
    Candidates of different types are never compared. Returns the kept ones (in order)
    and, for each dropped one, the candidate that replaces it
    (see :func:`substitute_replicas`).
    """
    if len(cands) < 2:
        return cands, {}
    upper = [max_replicas(c, capacity, partial) for c in cands]
    weight = [service_weight(c, server) for c in cands]
    penalty = [move_penalty(c, server) for c in cands]

    def dominates(i: int, j: int) -> bool:
        a, b = cands[i], cands[j]
        ua, ub = upper[i], upper[j]
        if ua <= 0 or ub <= 0:  # a candidate that fits nowhere is the caller's to drop
            return False
        if not partial:  # all or nothing: x = u y
            xb = np.array([float(ub)])
            xa = np.array([float(ua)])
            if min(1.0, weight[i] * ua) < min(1.0, weight[j] * ub) - 1e-12:
                return False
        else:
            # the fewest replicas of a serving what x_b replicas of b serve
            xb = np.arange(1.0, ub + 1.0)
            xa = np.ceil(np.minimum(1.0, weight[j] * xb) / weight[i] - 1e-9)
            if xa[-1] > ua:
                return False
        if np.any(xa * a.units_per_replica > xb * b.units_per_replica):
            return False
        cost_a = xa * a.cost_per_replica + penalty[i]
        cost_b = xb * b.cost_per_replica + penalty[j]
        return bool(np.all(cost_a <= cost_b + 1e-9))

    dropped: dict[Candidate, Candidate] = {}
    for j, b in enumerate(cands):
        for i, a in enumerate(cands):
            if i == j or a.acc_type != b.acc_type or a in dropped:
                continue
            if dominates(i, j) and (
                not dominates(j, i) or (a.value, a.accelerator) < (b.value, b.accelerator)
            ):
                dropped[b] = a
                break
    return [c for c in cands if c not in dropped], dropped
