"""SLO sizing of one replica (docs/model-spec.md section 3), vectorised over pairs, with a cache.

For each pair, ``lam*`` is the largest rate in ``[lam_min, lam_max]`` at
which every set target is met (a target of 0 is not set):

- a TTFT or ITL target below the metric at ``lam_min`` is infeasible (a
  status bit, never an exception); above the metric at ``lam_max`` it gives
  ``lam_max``; otherwise the root of ``metric(lam) = target``;
- a TPS target gives ``0.9*lam_max``;
- ``lam*`` is the smallest of these (``lam_max`` when no target is set).

Both latencies grow with ``lam``, so ``lam*`` is the single root of the
increasing ``g(lam) = max_k metric_k(lam)/target_k - 1``: one search per
pair covers all its targets.  The search is a vectorised Anderson-Björck
(a regula falsi that keeps its bracket shrinking from both sides), run in
``log(lam)``; it stops when the bracket is narrower than ``rtol`` relative
and returns the bracket's feasible end, so ``lam*`` always meets its targets.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from controlloop.model.perf import PerfModel, ReplicaMetrics
from controlloop.model.queue import (
    LAM_MAX_FACTOR,
    ChainLayout,
    FloatArray,
    IntArray,
    rate_range,
)

OK = 0
INFEASIBLE_TTFT = 1  # status bits; both may be set
INFEASIBLE_ITL = 2
TPS_FACTOR = 0.9  # a TPS target sizes to 0.9*lam_max
DEFAULT_RTOL = 1e-10  # relative bracket width on lam* at which the search stops
_MAX_ITERATIONS = 100
_COMPACT_BELOW = 0.6  # drop converged rows from the layout below this active share


@dataclass(frozen=True)
class SizingResult:
    """Sized rate per pair (req/ms) and the metrics there.

    ``status`` is ``OK`` or a combination of ``INFEASIBLE_*`` bits; then
    ``lam_star`` is 0 and ``metrics`` are those at ``lam_min``.
    ``ttft_floor``/``itl_floor`` are the metrics at ``lam_min`` (the best the
    pair can do), used in :meth:`reason`.  ``evaluations`` and ``states``
    count chain evaluations and head states touched (zero on cache hits).
    """

    lam_star: FloatArray
    lam_min: FloatArray
    lam_max: FloatArray
    status: NDArray[np.int8]
    ttft_floor: FloatArray
    itl_floor: FloatArray
    metrics: ReplicaMetrics
    evaluations: int = 0
    states: int = 0

    @property
    def feasible(self) -> NDArray[np.bool_]:
        return np.asarray(self.status == OK)

    def reason(self, i: int, *, ttft_target: float = 0.0, itl_target: float = 0.0) -> str:
        """Why pair ``i`` is infeasible ("" when it is not)."""
        parts = []
        if self.status[i] & INFEASIBLE_TTFT:
            parts.append(f"TTFT target {ttft_target:g} ms is below the "
                         f"{self.ttft_floor[i]:.6g} ms reached at the lowest rate")
        if self.status[i] & INFEASIBLE_ITL:
            parts.append(f"ITL target {itl_target:g} ms is below the "
                         f"{self.itl_floor[i]:.6g} ms reached at the lowest rate")
        return "; ".join(parts)


def analyze(perf: PerfModel, rate: ArrayLike) -> ReplicaMetrics:
    """Metrics of each pair at arrival rate ``rate`` (req/ms)."""
    layout = ChainLayout.build(perf.chain())
    rate = np.broadcast_to(np.asarray(rate, np.float64), (perf.size,))
    metrics = perf.take(layout.rows).metrics(layout.evaluate(rate[layout.rows]))
    inverse = np.empty_like(layout.rows)
    inverse[layout.rows] = np.arange(layout.rows.size)
    return metrics.take(inverse)


def size(
    perf: PerfModel,
    *,
    ttft_target: ArrayLike = 0.0,
    itl_target: ArrayLike = 0.0,
    tps_target: ArrayLike = 0.0,
    cache: SizingCache | None = None,
    rtol: float = DEFAULT_RTOL,
) -> SizingResult:
    """Size every pair of ``perf`` to its targets (ms; TPS in any unit, only > 0 matters).

    Identical pairs are sized once; with a ``cache`` pairs sized before are
    not sized again.  Never raises for an infeasible target: see ``status``.
    """
    shape = (perf.size,)
    targets = np.column_stack([
        np.broadcast_to(np.asarray(t, np.float64), shape)
        for t in (ttft_target, itl_target, tps_target)
    ])
    kind = float(zlib.crc32(type(perf).__name__.encode()))  # models share column counts
    keys = np.column_stack(
        [perf.key_columns(), targets, np.full(shape, rtol), np.full(shape, kind)])
    hashes = _row_hash(keys)
    uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    # A 64-bit hash collision is astronomically unlikely; if it happens, size all rows.
    if not np.array_equal(keys, keys[first][inverse]):
        first, inverse, uniq = np.arange(shape[0]), np.arange(shape[0]), hashes
    table = np.empty((first.size, _RESULT_COLUMNS))
    todo = np.ones(first.size, bool)
    if cache is not None:
        todo = ~cache.lookup(uniq, keys[first], out=table)
    evaluations = states = 0
    if todo.any():
        rows = first[todo]
        search = _Search(perf.take(rows), targets[rows], rtol)
        table[todo] = search.run()
        evaluations, states = search.evaluations, search.states
        if cache is not None:
            cache.store(uniq[todo], keys[rows], table[todo])
    return _result_from_table(table[inverse], evaluations, states)


# Result table columns: lam_star, lam_min, lam_max, status, ttft_floor, itl_floor, metrics...
_METRIC_NAMES = tuple(ReplicaMetrics.__dataclass_fields__)
_RESULT_COLUMNS = 6 + len(_METRIC_NAMES)


def _result_from_table(table: FloatArray, evaluations: int, states: int) -> SizingResult:
    metrics = ReplicaMetrics(**{k: table[:, 6 + i] for i, k in enumerate(_METRIC_NAMES)})
    return SizingResult(
        lam_star=table[:, 0], lam_min=table[:, 1], lam_max=table[:, 2],
        status=table[:, 3].astype(np.int8), ttft_floor=table[:, 4], itl_floor=table[:, 5],
        metrics=metrics, evaluations=evaluations, states=states,
    )


class _Search:
    """One sizing run over unique pairs; works in the layout's (sorted by N) row order."""

    def __init__(self, perf: PerfModel, targets: FloatArray, rtol: float) -> None:
        self.full_layout = ChainLayout.build(perf.chain())
        order = self.full_layout.rows
        self.order = order
        self.perf = perf.take(order)
        self.targets = targets[order]
        self.rtol = rtol
        lam_min, lam_max = rate_range(perf.chain())
        self.lam_min, self.lam_max = lam_min[order], lam_max[order]
        self.evaluations = 0
        self.states = 0

    def _metrics(self, layout: ChainLayout, perf: PerfModel, lam: FloatArray) -> ReplicaMetrics:
        self.evaluations += 1
        self.states += layout.states
        return perf.metrics(layout.evaluate(lam))

    def _excess(self, m: ReplicaMetrics, idx: IntArray) -> FloatArray:
        """``g = max_k metric_k/target_k - 1`` over set targets (``-1`` when none is set)."""
        ttft, itl = self.targets[idx, 0], self.targets[idx, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            g_ttft = np.where(ttft > 0, m.ttft / ttft - 1, -1.0)
            g_itl = np.where(itl > 0, m.itl / itl - 1, -1.0)
        return np.asarray(np.maximum(g_ttft, g_itl), np.float64)

    def run(self) -> FloatArray:
        p = self.order.size
        status = np.zeros(p, np.int8)
        ttft_floor = np.zeros(p)
        itl_floor = np.zeros(p)
        lam_star = self.lam_max.copy()
        targeted = (self.targets[:, 0] > 0) | (self.targets[:, 1] > 0)
        idx = np.flatnonzero(targeted)
        if idx.size:
            layout = self.full_layout.select(targeted)
            perf = self.perf.take(idx)
            low = self._metrics(layout, perf, self.lam_min[idx])
            ttft_floor[idx], itl_floor[idx] = low.ttft, low.itl
            bad_ttft = (self.targets[idx, 0] > 0) & (low.ttft > self.targets[idx, 0])
            bad_itl = (self.targets[idx, 1] > 0) & (low.itl > self.targets[idx, 1])
            status[idx] = bad_ttft * INFEASIBLE_TTFT + bad_itl * INFEASIBLE_ITL
            ok = status[idx] == OK
            g_low = self._excess(low, idx)[ok]
            idx, layout, perf = idx[ok], layout.select(ok), perf.take(np.flatnonzero(ok))
            if idx.size:
                g_high = self._excess(self._metrics(layout, perf, self.lam_max[idx]), idx)
                inside = g_high > 0  # else the targets hold at lam_max
                lam_star[idx[inside]] = self._root(
                    layout.select(inside), perf.take(np.flatnonzero(inside)), idx[inside],
                    g_low[inside], g_high[inside],
                )
        tps = self.targets[:, 2] > 0
        lam_star = np.where(tps, np.minimum(lam_star, TPS_FACTOR * self.lam_max), lam_star)
        lam_star = np.where(status == OK, lam_star, 0.0)
        final = self._metrics(self.full_layout, self.perf, np.maximum(lam_star, self.lam_min))
        columns: list[FloatArray] = [lam_star, self.lam_min, self.lam_max,
                                     status.astype(np.float64), ttft_floor, itl_floor]
        columns += [getattr(final, k) for k in _METRIC_NAMES]
        table = np.empty((p, _RESULT_COLUMNS))
        table[self.order] = np.column_stack(columns)
        return table

    def _root(self, layout: ChainLayout, perf: PerfModel, idx: IntArray,
              g_lo: FloatArray, g_hi: FloatArray) -> FloatArray:
        """Safeguarded secant (Dekker) on ``h(v) = log(1 + g)``, ``v = -log(1 - lam/mu(N))``.

        Queueing delay grows like ``1/(mu(N) - lam)``, i.e. like ``exp(v)``, so
        ``h`` is close to piecewise linear in ``v`` and secant steps through the
        last two iterates converge superlinearly.  The bracket ``[lo, hi]``
        (``h(lo) <= 0 < h(hi)``) is kept and guards the steps (see :func:`_step`);
        a step shorter than the tolerance is stretched to it, so the bracket closes.
        """
        mu_n = self.lam_max[idx] / LAM_MAX_FACTOR
        lo = -np.log1p(-self.lam_min[idx] / mu_n)
        hi = -np.log1p(-self.lam_max[idx] / mu_n)
        h_lo, h_hi = _shape(g_lo), _shape(g_hi)
        # last two iterates (x1 the latest): start from the end nearer the root
        near_hi = np.abs(h_hi) < np.abs(h_lo)
        x1, h1 = np.where(near_hi, hi, lo), np.where(near_hi, h_hi, h_lo)
        x0, h0 = np.where(near_hi, lo, hi), np.where(near_hi, h_lo, h_hi)
        step1 = step2 = np.full(idx.size, np.inf)  # lengths of the last two steps
        result = np.empty(idx.size)
        pos: IntArray = np.arange(idx.size, dtype=np.int64)  # rows of `result` still searched
        for _ in range(_MAX_ITERATIONS):
            # |d lam / lam| = dv * (1 - x)/x with x = lam/mu(N) = 1 - exp(-v)
            tol = self.rtol * np.expm1(lo)
            done = hi - lo <= tol
            if done.any():
                result[pos[done]] = -mu_n[done] * np.expm1(-lo[done])
                keep = ~done
                if not keep.any():
                    break
                if keep.mean() < _COMPACT_BELOW:
                    layout, perf = layout.select(keep), perf.take(np.flatnonzero(keep))
                    lo, hi, h_lo, h_hi, x0, h0, x1, h1, step1, step2, mu_n, tol = (
                        v[keep] for v in
                        (lo, hi, h_lo, h_hi, x0, h0, x1, h1, step1, step2, mu_n, tol))
                    idx, pos = idx[keep], pos[keep]
                else:  # converged rows ride along until the next compaction
                    hi = np.where(done, lo, hi)
            v = _step(lo, hi, x0, h0, x1, h1, tol, longest=0.5 * step2)
            step2, step1 = step1, np.abs(v - x1)
            h = _shape(self._excess(self._metrics(layout, perf, -mu_n * np.expm1(-v)), idx))
            left = h <= 0
            lo, h_lo = np.where(left, v, lo), np.where(left, h, h_lo)
            hi, h_hi = np.where(left, np.where(h == 0, v, hi), v), np.where(left, h_hi, h)
            x0, h0, x1, h1 = x1, h1, v, h
        else:
            result[pos] = -mu_n * np.expm1(-lo)
        return result


def _shape(g: FloatArray) -> FloatArray:
    return np.asarray(np.log1p(g), np.float64)


def _step(lo: FloatArray, hi: FloatArray, x0: FloatArray, h0: FloatArray, x1: FloatArray,
          h1: FloatArray, tol: FloatArray, *, longest: FloatArray) -> FloatArray:
    """Next iterate: secant through the last two, else bisection; at least ``tol/2`` long.

    As in Brent's method, a secant step longer than half the step before last
    (not converging fast enough) or leaving the bracket is replaced by bisection.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        v = x1 - h1 * (x1 - x0) / (h1 - h0)
    mid = 0.5 * (lo + hi)
    bad = ~np.isfinite(v) | (v <= lo) | (v >= hi) | (np.abs(v - x1) > longest)
    v = np.where(bad, mid, v)
    # a step shorter than tol/2 from the latest iterate is stretched towards the root
    short = np.abs(v - x1) < 0.5 * tol
    v = np.where(short, x1 + np.where(h1 > 0, -0.5, 0.5) * tol, v)
    return np.asarray(np.clip(v, lo, hi), np.float64)


_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)


def _row_hash(keys: FloatArray) -> NDArray[np.uint64]:
    """64-bit hash of each row's bytes (FNV-style fold with a multiplicative mix)."""
    bits = np.ascontiguousarray(keys).view(np.uint64)
    h = np.full(keys.shape[0], np.uint64(0xCBF29CE484222325))
    for col in range(bits.shape[1]):
        h ^= bits[:, col]
        h *= _HASH_MULT
        h ^= h >> np.uint64(29)
    return h


@dataclass
class SizingCache:
    """Sizing results keyed by a pair's inputs (perf params, token mix, N, targets).

    Keys are hashed rows, kept sorted for a vectorised ``searchsorted`` lookup;
    a hit also compares the full input row, so a hash collision is a miss.
    When more than ``max_entries`` are held the oldest half is dropped.
    """

    max_entries: int = 500_000
    hits: int = 0
    misses: int = 0
    _hashes: NDArray[np.uint64] = field(repr=False, default_factory=lambda: np.zeros(0, np.uint64))
    _keys: FloatArray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    _values: FloatArray = field(repr=False, default_factory=lambda: np.zeros((0, _RESULT_COLUMNS)))
    _age: IntArray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    _clock: int = field(default=0, repr=False)

    def __len__(self) -> int:
        return int(self._hashes.size)

    def clear(self) -> None:
        self._hashes = np.zeros(0, np.uint64)
        self._keys = np.zeros((0, 0))
        self._values = np.zeros((0, _RESULT_COLUMNS))
        self._age = np.zeros(0, np.int64)

    def lookup(self, hashes: NDArray[np.uint64], keys: FloatArray, *,
               out: FloatArray) -> NDArray[np.bool_]:
        """Fill ``out`` rows of the hits; return the hit mask."""
        hit = np.zeros(hashes.size, bool)
        if self._hashes.size and self._keys.shape[1] == keys.shape[1]:
            at = np.minimum(np.searchsorted(self._hashes, hashes), self._hashes.size - 1)
            hit = (self._hashes[at] == hashes) & np.all(self._keys[at] == keys, axis=1)
            out[hit] = self._values[at[hit]]
        self.hits += int(hit.sum())
        self.misses += int(hit.size - hit.sum())
        return hit

    def store(self, hashes: NDArray[np.uint64], keys: FloatArray, values: FloatArray) -> None:
        if self._keys.shape[1] != keys.shape[1]:  # a different perf model kind: start over
            self.clear()
            self._keys = np.zeros((0, keys.shape[1]))
        self._clock += 1
        all_h = np.concatenate([self._hashes, hashes])
        order = np.argsort(all_h, kind="stable")
        self._hashes = all_h[order]
        self._keys = np.concatenate([self._keys, keys])[order]
        self._values = np.concatenate([self._values, values])[order]
        self._age = np.concatenate([self._age, np.full(hashes.size, self._clock)])[order]
        if self._hashes.size > self.max_entries:
            keep = self._age >= np.median(self._age)
            self._hashes, self._keys = self._hashes[keep], self._keys[keep]
            self._values, self._age = self._values[keep], self._age[keep]
