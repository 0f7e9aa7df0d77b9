"""A per-type Dantzig-Wolfe bound for the MILP's stages (one accelerator per server).

The MILP's LP relaxation lets a server spread over several types and its replicas over
fractions of cards: on the 27-server scenarios its bound was 2-3 servers above a level
stage's optimum, and HiGHS spent 1-2 s per stage closing that. Here each type's part of
a plan is one column: a *packing*, i.e. which servers the type hosts and with how many
replicas, within its cards. The master LP chooses a convex combination of packings per
type, each server in at most one of them, meeting the fixed levels; only the choice
between packings is relaxed, so the bound is far tighter (equal to a level stage's optimum
on those scenarios). Columns are priced by a dynamic programme over the cards of one type
(a multiple-choice knapsack; each server's value is linear in its replicas up to full
service, so one pass is a sliding-window minimum, O(cards) per candidate).

The integer master over the columns generated (at most one packing per type) is a plan,
often the optimum: with the bound it closes a stage without HiGHS.

The bound is valid at any duals (Lagrangian): ``sum_s alpha_s + sum_s beta_s + sum_l
gamma_l lb_l + sum_t V_t``, with ``V_t`` the least pricing value of type ``t`` (each type
takes at most one packing, the empty one valued 0). The same terms give a cut that holds
for every plan (:class:`BoundResult`) and the variable fixing of :func:`fixings`. See
:func:`stage_bound`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np

from controlloop.optimizer.milp_model import MilpModel

# a column must improve the master by this much (reduced cost) to enter
PRICE_TOLERANCE = 1e-9
# column-generation rounds at most (each prices every type once or twice)
MAX_ROUNDS = 200
# types with more cards get no variable fixing (its min-plus joins take cards squared)
FIXING_MAX_CARDS = 1024
# weight of the best bound's duals in the duals priced (Wentges smoothing)
SMOOTHING = 0.5
# the master LP is solved by interior point without crossover: its duals are central, not
# a vertex's, and the degenerate master's vertex duals jump about (27-server scenarios:
# 17-38 rounds instead of 37-73). Once no column prices out the bound is the Lagrangian at
# those duals, about the master's value (which is a bound only at exactly optimal duals)
MASTER_SOLVER = "ipm"


@dataclass(frozen=True)
class Stage:
    """One stage of the lexicographic MILP, in the terms of :class:`MilpModel`.

    ``level`` holds the servers whose served fractions are maximised (None: minimise cost);
    ``full`` must be served fully; ``levels`` are (servers, lower bound on their summed
    served fraction); ``excluded`` get no replicas; ``ranges`` bound some candidates'
    replicas (``(lo, hi)`` as :func:`fixings` gives them)."""

    level: np.ndarray | None
    full: np.ndarray
    levels: list[tuple[np.ndarray, float]] = field(default_factory=list)
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass
class BoundResult:
    bound: float  # a lower bound on the stage's objective (minimised)
    plan: np.ndarray | None  # the best plan of the integer master (a model point), if any
    plan_value: float  # its objective (inf without a plan)
    rounds: int
    columns: int
    converged: bool  # no column with a negative reduced cost was left
    # candidates in the packings the master LP uses last (where a plan is likely found)
    support: np.ndarray | None = None
    # the Lagrangian cut of the bound's duals, valid for every plan: cut @ point >= cut_rhs
    cut: np.ndarray | None = None
    cut_rhs: float = -np.inf
    # the bound's duals: per server alpha and phi, per level row gamma
    duals: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # what fixings() computes once per bound (its stage's _Pricing.excess, all types)
    excess: dict[int, tuple[np.ndarray, np.ndarray]] | None = None


def stage_objective(m: MilpModel, stage: Stage) -> np.ndarray:
    """The stage's objective over the model's columns (minimised)."""
    if stage.level is None:
        return m.cost.copy()
    objective = np.zeros(m.n_var)
    objective[m.i_f[stage.level]] = -1.0
    return objective


class _Pricing:
    """The stage's per-candidate data, and the pricing programme per type."""

    def __init__(self, m: MilpModel, stage: Stage) -> None:
        self.m = m
        n_s = m.n_s
        scope = np.ones(n_s, bool)
        scope[stage.excluded] = False
        self.scope = scope
        self.in_level = np.zeros(n_s, bool)
        if stage.level is not None:
            self.in_level[stage.level] = True
        self.cost_x = m.cost[m.ix] if stage.level is None else np.zeros(m.n_c)
        self.cost_y = m.cost[m.iy] if stage.level is None else np.zeros(m.n_c)
        need, up = m.full_need, m.upper
        if m.split:
            # replicas 1..need-1 serve w x; need replicas (if they fit) serve 1
            linear = np.minimum(need - 1.0, up).astype(np.int64)
            full_x = np.where(need <= up, need, 0.0).astype(np.int64)
        else:  # all or nothing: x = upper, serving fully or not at all
            linear = np.zeros(m.n_c, np.int64)
            full_x = np.where(m.weight * up >= 1.0 - 1e-9, up, 0.0).astype(np.int64)
        least = np.ones(m.n_c, np.int64)
        keep = scope[m.owner]
        for k, (lo, hi) in stage.ranges.items():
            if hi <= 0:
                keep[k] = False
                continue
            least[k] = max(1, lo)
            if hi < full_x[k] or lo > full_x[k]:
                full_x[k] = 0
            linear[k] = min(linear[k], hi)
        self.linear, self.full_x = linear, full_x
        self.units = m.units.astype(np.int64)
        self.caps = m.caps.astype(np.int64)
        self.split = m.split
        # (units, least and most linear replicas, full-service replicas, cost/replica,
        # fixed, weight)
        self.item = list(zip(
            self.units.tolist(), least.tolist(), linear.tolist(), full_x.tolist(),
            self.cost_x.tolist(), self.cost_y.tolist(), m.weight.tolist(), strict=True,
        ))
        self.by_type: list[list[tuple[int, list[int]]]] = []
        for t in range(len(m.types)):
            per: dict[int, list[int]] = {}
            for k in np.flatnonzero((m.t_rows == t) & keep).tolist():
                per.setdefault(int(m.owner[k]), []).append(k)
            self.by_type.append(sorted(per.items()))

    def served(self, k: int, x: int) -> float:
        _, _, _, xf, _, _, w = self.item[k]
        if x <= 0:
            return 0.0
        if x >= xf > 0:
            return 1.0
        return min(1.0, w * x) if self.split else 0.0

    def value(self, packing: list[tuple[int, int]], alpha: np.ndarray, phi: np.ndarray) -> float:
        """The pricing value of ``packing`` at the duals ``alpha``, ``phi``."""
        total = 0.0
        for k, x in packing:
            s = int(self.m.owner[k])
            _, _, _, _, cx, cy, _ = self.item[k]
            total += cx * x + cy - alpha[s] - phi[s] * self.served(k, x)
        return total

    def price(
        self, t: int, alpha: list[float], phi: list[float]
    ) -> tuple[float, list[tuple[int, int]]]:
        """The packing of type ``t`` with the least value (its reduced cost before the
        convexity dual): per item ``cost_x x + cost_y - alpha_s - phi_s f_s(x)``; a dynamic
        programme over at most ``c`` cards, ``c = 0..cap``, one server at a time."""
        cap = int(self.caps[t])
        items = self.by_type[t]
        dp = np.zeros(cap + 1)
        tables = [dp]
        for s, ks in items:
            dp = self._step(dp, ks, alpha[s], phi[s])
            tables.append(dp)
        packing: list[tuple[int, int]] = []
        left = cap
        for i in range(len(items), 0, -1):
            s, ks = items[i - 1]
            cur, prev = tables[i], tables[i - 1]
            if cur is prev or cur[left] >= prev[left] - 1e-12:
                continue
            best = (np.inf, -1, 0)
            for k in ks:
                u = self.item[k][0]
                for x, v in self._options(k, alpha[s], phi[s], left):
                    total = prev[left - u * x] + v
                    if total < best[0]:
                        best = (total, k, x)
            _, k, x = best
            packing.append((k, x))
            left -= self.item[k][0] * x
        return float(dp[cap]), packing

    def _step(self, dp: np.ndarray, ks: list[int], alpha: float, phi: float) -> np.ndarray:
        """``dp`` with one more server, on one of its candidates ``ks`` or none."""
        new = dp
        for k in ks:
            got = self._convolve(dp, k, alpha, phi)
            if got is not None:
                new = np.minimum(new, got)
        return new

    def excess(
        self, t: int, alpha: list[float], phi: list[float]
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per candidate of type ``t``, its replica counts ``x`` that fit and, for each, how
        much the best packing holding ``x`` replicas of it is valued above the least
        packing: the best of the other servers' within the cards left (a forward and a
        backward programme, joined by a min-plus convolution) plus the value of ``x``."""
        cap = int(self.caps[t])
        if cap > FIXING_MAX_CARDS:  # the joins cost cards squared: no fixing on this type
            return {}
        items = self.by_type[t]
        forward = [np.zeros(cap + 1)]
        for s, ks in items:
            forward.append(self._step(forward[-1], ks, alpha[s], phi[s]))
        backward = [np.zeros(cap + 1)]
        for s, ks in reversed(items):
            backward.append(self._step(backward[-1], ks, alpha[s], phi[s]))
        backward.reverse()  # backward[i]: servers i.. of the type
        least = float(forward[-1][cap])
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i, (s, ks) in enumerate(items):
            others = _min_plus(forward[i], backward[i + 1])
            for k in ks:
                u = self.item[k][0]
                fits = self._options(k, alpha[s], phi[s], cap)
                xs = np.array([x for x, _ in fits], np.int64)
                values = np.array([v for _, v in fits])
                out[k] = (xs, others[cap - u * xs] + values - least if len(xs) else values)
        return out

    def _options(self, k: int, alpha: float, phi: float, left: int) -> list[tuple[int, float]]:
        """(replicas, value) of candidate ``k`` within ``left`` cards (for backtracking)."""
        u, lo, big_x, xf, cx, cy, w = self.item[k]
        a, b = cx - phi * w, cy - alpha
        out = [(x, a * x + b) for x in range(lo, min(big_x, left // u) + 1)]
        if 0 < xf and xf * u <= left:
            out.append((xf, cx * xf + b - phi))
        return out

    def _convolve(self, dp: np.ndarray, k: int, alpha: float, phi: float) -> np.ndarray | None:
        """``min_x dp[c - u x] + value(x)`` for every card count ``c`` (inf when none); None
        when no use of the candidate has a negative value (it cannot improve ``dp``, which
        never increases with the cards)."""
        u, lo, big_x, xf, cx, cy, w = self.item[k]
        n = len(dp)
        a, b = cx - phi * w, cy - alpha
        full_value = cx * xf + b - phi
        linear = big_x >= lo and n > u * lo
        best = (a * lo + b if a >= 0 else a * big_x + b) if linear else np.inf
        shift = xf * u
        if 0 < xf and shift < n:
            best = min(best, full_value)
        if best >= -PRICE_TOLERANCE:
            return None
        if linear:
            length = -(-n // u)
            if length * u == n:
                seq = dp.reshape(length, u)  # row i, column r: cards i u + r
            else:
                padded = np.full(length * u, np.inf)
                padded[:n] = dp
                seq = padded.reshape(length, u)
            # window[i] = min over j in [i-(X-lo), i] of dp[j] + a (i - j)
            if a >= 0:  # dp never increases with the cards: j = i is best
                window = seq
            else:
                j = np.arange(length, dtype=np.float64)[:, None]
                h = seq - a * j
                width = min(big_x - lo + 1, length)
                if width >= length:
                    trailing = np.minimum.accumulate(h, axis=0)
                else:
                    trailing = _trailing_min(h, width)
                window = trailing + a * j
            # x in lo..X: min of dp[(i - x) u + r] + a x + b = window[i - lo] + a lo + b
            val = np.empty((length, u))
            val[:lo] = np.inf
            val[lo:] = window[: length - lo] + (a * lo + b)
            out = val.ravel()[:n]
        else:
            out = np.full(n, np.inf)
        if 0 < xf and shift < n:
            np.minimum(out[shift:], dp[: n - shift] + full_value, out=out[shift:])
        return out


def _min_plus(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``min over i of first[i] + second[c - i]`` for every ``c`` (equal lengths)."""
    n = len(first)
    padded = np.concatenate([np.full(n - 1, np.inf), second])
    window = np.lib.stride_tricks.sliding_window_view(padded, n)  # row c: second[c-n+1..c]
    return np.min(window + first[::-1][None, :], axis=1)


def _trailing_min(h: np.ndarray, width: int) -> np.ndarray:
    """``min(h[i - width + 1 .. i])`` down axis 0 (van Herk / Gil-Werman: prefix and
    suffix minima within blocks of ``width`` rows, two per window)."""
    length, cols = h.shape
    blocks = -(-(length + width - 1) // width)
    padded = np.full((blocks * width, cols), np.inf)
    padded[width - 1: width - 1 + length] = h  # row i + width - 1 holds h[i]
    grid = padded.reshape(blocks, width, cols)
    prefix = np.minimum.accumulate(grid, axis=1).reshape(-1, cols)
    suffix = np.minimum.accumulate(grid[:, ::-1], axis=1)[:, ::-1].reshape(-1, cols)
    # the window of output i is padded rows i .. i + width - 1
    return np.minimum(suffix[:length], prefix[width - 1: width - 1 + length])


def stage_bound(
    m: MilpModel,
    stage: Stage,
    start: np.ndarray,
    deadline: float,
    *,
    target: float | None = None,
    mip_gap: float = 1e-4,
    extra: Sequence[np.ndarray] = (),
) -> BoundResult | None:
    """Column generation for ``stage``, from the packings of the feasible plan ``start``
    (and those of the points ``extra``, e.g. an LP solution rounded down).

    Stops when no column improves the master, when the bound comes within ``mip_gap`` of
    ``target`` (an incumbent's objective: nothing left to prove), or at ``deadline``.
    Then solves the integer master over the columns generated. None when the stage is not
    one this bound covers (no capacity, heterogeneous servers) or the master is
    infeasible from ``start``."""
    if m.capacity is None or m.heterogeneous or m.n_c == 0:
        return None
    pricing = _Pricing(m, stage)
    scope_servers = np.flatnonzero(pricing.scope)
    n_s = m.n_s
    # rows: one per server in scope (<= 1), full servers (f >= 1), levels (>= lb), types
    full_rows = {int(s): i for i, s in enumerate(stage.full.tolist())}
    n_full = len(full_rows)
    n_levels = len(stage.levels)
    n_types = len(m.types)
    row_of_level = np.full(n_s, -1, np.int64)
    for i, (members, _) in enumerate(stage.levels):
        row_of_level[members] = i
    n_rows = n_s + n_full + n_levels + n_types
    lower = np.concatenate([
        np.full(n_s, -np.inf), np.ones(n_full),
        np.array([lb for _, lb in stage.levels]), np.full(n_types, -np.inf),
    ])
    upper = np.concatenate([
        np.where(pricing.scope, 1.0, 0.0), np.full(n_full, np.inf),
        np.full(n_levels, np.inf), np.ones(n_types),
    ])
    objective = stage_objective(m, stage)
    h = _master(n_rows, lower, upper)
    columns: list[tuple[int, list[tuple[int, int]]]] = []
    seen: set[tuple[int, tuple[tuple[int, int], ...]]] = set()

    def add(t: int, packing: list[tuple[int, int]]) -> bool:
        key = (t, tuple(sorted(packing)))
        if not packing or key in seen:
            return False
        seen.add(key)
        rows: dict[int, float] = {n_s + n_full + n_levels + t: 1.0}
        value = 0.0
        for k, x in packing:
            s = int(m.owner[k])
            f = pricing.served(k, x)
            value += objective[m.ix[k]] * x + objective[m.iy[k]] + objective[m.i_f[s]] * f
            rows[s] = 1.0
            if s in full_rows and f > 0:
                rows[n_s + full_rows[s]] = f
            if row_of_level[s] >= 0 and f > 0:
                r = n_s + n_full + int(row_of_level[s])
                rows[r] = rows.get(r, 0.0) + f
        idx = np.fromiter(rows.keys(), np.int32)
        val = np.fromiter(rows.values(), np.float64)
        h.addCol(value, 0.0, np.inf, len(idx), idx, val)
        columns.append((t, packing))
        return True

    n_start = -1  # the columns of start's packings: the first ones
    for point in [start, *extra]:
        x0 = np.minimum(np.floor(point[: m.n_c] + 1e-9), m.upper).astype(np.int64)
        for t in range(n_types):
            per: dict[int, tuple[int, int]] = {}  # one candidate per server: the most replicas
            for k in np.flatnonzero((m.t_rows == t) & (x0 > 0)).tolist():
                s = int(m.owner[k])
                if pricing.scope[s] and (s not in per or x0[k] > per[s][1]):
                    per[s] = (k, int(x0[k]))
            add(t, list(per.values()))
        n_start = len(columns) if n_start < 0 else n_start
    lb_levels = np.array([lb for _, lb in stage.levels])
    has_level = row_of_level >= 0

    def duals_of(dual: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        alpha = np.zeros(n_s)
        alpha[scope_servers] = np.minimum(0.0, dual[scope_servers])
        beta = np.maximum(0.0, dual[n_s: n_s + n_full])
        gamma = np.maximum(0.0, dual[n_s + n_full: n_s + n_full + n_levels])
        mu = np.minimum(0.0, dual[n_s + n_full + n_levels:])
        return alpha, beta, gamma, mu

    def phi_of(beta: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        phi = pricing.in_level.astype(np.float64)
        phi[stage.full] += beta
        phi[has_level] += gamma[row_of_level[has_level]]
        return phi

    bound = -np.inf
    cut: np.ndarray | None = None
    cut_rhs = -np.inf
    rounds = 0
    converged = False
    h.setOptionValue("solver", MASTER_SOLVER)
    centre: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # duals of the best bound
    duals: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    while rounds < MAX_ROUNDS and time.perf_counter() < deadline:
        rounds += 1
        if columns:
            h.run()
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                return None
            dual = np.asarray(h.getSolution().row_dual)
        else:  # an empty start: no packing yet, all duals 0
            dual = np.zeros(n_rows)
        alpha_m, beta_m, gamma_m, mu = duals_of(dual)
        # Wentges smoothing: price at a point between the master's duals and the best
        # bound's, which damps the duals' oscillation; on a miss, price at the master's
        for smooth in ((SMOOTHING, 0.0) if centre is not None else (0.0,)):
            if smooth:
                assert centre is not None
                alpha = smooth * centre[0] + (1 - smooth) * alpha_m
                beta = smooth * centre[1] + (1 - smooth) * beta_m
                gamma = smooth * centre[2] + (1 - smooth) * gamma_m
            else:
                alpha, beta, gamma = alpha_m, beta_m, gamma_m
            phi = phi_of(beta, gamma)
            phi_m = phi_of(beta_m, gamma_m)
            alpha_l, phi_l = alpha.tolist(), phi.tolist()
            priced = [pricing.price(t, alpha_l, phi_l) for t in range(n_types)]
            rhs = sum(value for value, _ in priced)
            lagrangian = float(alpha.sum() + beta.sum() + gamma @ lb_levels) + rhs
            if lagrangian > bound:
                bound = lagrangian
                centre = (alpha, beta, gamma)
                duals = (alpha, phi, gamma)
                cut = np.zeros(m.n_var)
                cut[m.ix] = pricing.cost_x
                cut[m.iy] = pricing.cost_y - alpha[m.owner]
                cut[m.i_f] = -phi
                cut_rhs = rhs
            added = 0
            for t, (_, packing) in enumerate(priced):
                if pricing.value(packing, alpha_m, phi_m) - mu[t] < -PRICE_TOLERANCE:
                    added += add(t, packing)
            if added:
                break
        if added == 0:
            converged = True
            break
        if target is not None and target - bound <= mip_gap * max(1.0, abs(target)):
            break
    support = np.zeros(m.n_c, bool)
    if columns:  # a vertex of the master (columns may have been added since its last solve)
        h.setOptionValue("solver", "simplex")
        h.run()
    if columns and h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
        used = np.asarray(h.getSolution().col_value) > 1e-7
        for use, (_, packing) in zip(used, columns, strict=True):
            if use:
                support[[k for k, _ in packing]] = True
    plan, plan_value = _integer_master(h, m, columns, objective, deadline, n_start)
    return BoundResult(
        bound, plan, plan_value, rounds, len(columns), converged, support, cut, cut_rhs, duals
    )


def _master(n_rows: int, lower: np.ndarray, upper: np.ndarray) -> Any:
    h = getattr(highspy, "_Highs", highspy.Highs)()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("run_crossover", "off")
    h.setOptionValue("presolve", "off")  # ~20 % of each small master's solve
    h.addRows(n_rows, lower, upper, 0, np.zeros(n_rows, np.int32), np.zeros(0, np.int32),
              np.zeros(0))
    return h


def _integer_master(
    h: Any, m: MilpModel, columns: list[tuple[int, list[tuple[int, int]]]],
    objective: np.ndarray, deadline: float, n_start: int,
) -> tuple[np.ndarray | None, float]:
    """The best plan made of at most one generated packing per type, from the plan of the
    first ``n_start`` columns."""
    n = len(columns)
    if n == 0:
        return None, np.inf
    h.setOptionValue("solver", "choose")
    h.setOptionValue("presolve", "choose")  # the integer master's presolve pays
    h.changeColsIntegrality(n, np.arange(n, dtype=np.int32), np.ones(n, np.int32))
    h.changeColsBounds(n, np.arange(n, dtype=np.int32), np.zeros(n), np.ones(n))
    h.setOptionValue("time_limit", max(0.05, deadline - time.perf_counter()))
    # start's packings are a plan: an incumbent from the outset
    h.setSolution(n, np.arange(n, dtype=np.int32), (np.arange(n) < n_start).astype(np.float64))
    h.run()
    if h.getInfo().primal_solution_status != 2:
        return None, np.inf
    chosen = np.asarray(h.getSolution().col_value) > 0.5
    x = np.zeros(m.n_c)
    for use, (_, packing) in zip(chosen, columns, strict=True):
        if use:
            for k, count in packing:
                x[k] += count
    point = m.complete(x)
    return point, float(objective @ point)


def fixings(
    m: MilpModel, stage: Stage, result: BoundResult, threshold: float,
    relaxed: list[tuple[np.ndarray, float]] | None = None,
) -> tuple[dict[int, tuple[int, int]], np.ndarray]:
    """Replica ranges ``(lo, hi)`` per candidate outside which no plan has the stage's
    objective at most ``threshold`` (Lagrangian variable fixing; ``(0, 0)``: the
    candidate is never used by such a plan), and the servers every such plan serves.

    For any plan, objective - bound is a sum of non-negative terms at the bound's duals:
    per type, its packing's value less the least one; per server ``alpha_s (Y_s - 1)``
    (``Y_s`` = 1 if served); and the slack of each level row times its dual. So no type's
    packing is valued more than ``threshold - bound`` above the least, and a server with
    ``-alpha_s`` above that is served. ``relaxed`` gives lower levels than the stage's for
    the plans considered (min-cost keeps the levels up to mipGap): their rows' slack may
    then be negative by the difference times the dual. Only candidates in the stage's
    scope get a range. ``result`` is ``stage``'s bound: the programmes, the same at every
    threshold, are kept in it."""
    if result.duals is None:
        return {}, np.zeros(0, np.int64)
    alpha, phi, gamma = result.duals
    slack = threshold - result.bound
    if relaxed is not None:
        for i, ((_, lb), (_, lower)) in enumerate(zip(stage.levels, relaxed, strict=True)):
            slack += float(gamma[i]) * max(0.0, lb - lower)
    slack += 1e-7 * max(1.0, abs(threshold))
    if result.excess is None:  # the same for every threshold: the stages ask several
        pricing = _Pricing(m, stage)
        alpha_l, phi_l = alpha.tolist(), phi.tolist()
        result.excess = {}
        for t in range(len(m.types)):
            result.excess.update(pricing.excess(t, alpha_l, phi_l))
    out: dict[int, tuple[int, int]] = {}
    for k, (xs, excess) in result.excess.items():
        ok = xs[excess <= slack]
        out[k] = (int(ok.min()), int(ok.max())) if len(ok) else (0, 0)
    return out, np.flatnonzero(-alpha > slack)
