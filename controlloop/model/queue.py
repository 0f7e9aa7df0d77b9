"""The birth-death chain of one batching replica (docs/model-spec.md section 2), vectorised.

Every service-time model in this package reduces to a *linear* per-request
service time ``T(n) = a + b*n`` with ``n`` requests in the batch, so the
replica completes requests at ``mu(n) = n / (a + b*n)`` for ``1 <= n <= N``
and at ``mu(N)`` above.  With Poisson arrivals ``lam`` the chain on states
``0..N+Q`` has ``p(j) ∝ u(j)``, where

    log u(j) = j*log(lam) + c(j),   c(j) = sum_{i<=j} log((a + b*i) / i)   (j <= N)
    u(N+k)   = u(N) * r**k,          r = lam / mu(N)                        (k <= Q)

``c`` does not depend on ``lam``: it is computed once per pair (a *layout*)
and every evaluation is then one ``exp`` per state ``j <= N``; the geometric
part above ``N`` has closed forms (in log space, stable near ``r = 1``).
All sums are scaled by ``exp(-s)`` with ``s`` the largest log-weight, so no
chain overflows, whatever ``N``, ``Q`` or the load.

Pairs have very different ``N``.  Rows are sorted by ``N`` and grouped into
buckets padded to the bucket's largest ``N``: dense 2-D blocks keep numpy
fast while the padding (and the per-bucket Python overhead) stays small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

QUEUE_FACTOR = 10  # Q = 10*N (docs/model-spec.md section 2)
LAM_MIN_FACTOR = 0.001  # lam_min = 0.001*mu(1)
LAM_MAX_FACTOR = 0.999  # lam_max = 0.999*mu(N)
# Rates below this fraction of mu(1) are evaluated at it: the metrics are then
# their lam -> 0 limits to ~1e-12 relative, and R = L/X stays defined at lam = 0.
_RATE_FLOOR = 1e-12
_SLAB_STATES = 1 << 18  # chain states (8 bytes each) evaluated at once: 2 MB
# Per-bucket overhead of one evaluation, in "state" units (numpy call cost /
# per-state cost); a bucket is widened while its extra padding costs less.
_BUCKET_OVERHEAD_STATES = 2048


@dataclass(frozen=True)
class ChainParams:
    """Per-pair chain parameters, shape ``(P,)``.

    Attributes
    ----------
    a, b : float64, ms
        Service time of one request with ``n`` in the batch is ``a + b*n``.
    batch : int64
        Batch size ``N >= 1``.
    queue : int64 or None
        Queue room ``Q >= 1``; ``None`` means ``10*N``.
    """

    a: FloatArray
    b: FloatArray
    batch: IntArray
    queue: IntArray | None = None

    def __post_init__(self) -> None:
        queue = QUEUE_FACTOR * np.asarray(self.batch) if self.queue is None else self.queue
        a, b, n, q = np.broadcast_arrays(
            np.asarray(self.a, np.float64), np.asarray(self.b, np.float64),
            np.asarray(self.batch), np.asarray(queue),
        )
        _require(np.isfinite(a) & (a >= 0), "a", "must be finite and >= 0", a)
        _require(np.isfinite(b) & (b >= 0), "b", "must be finite and >= 0", b)
        _require(a + b > 0, "a + b", "must be > 0", a + b)
        _require(n >= 1, "batch", "must be >= 1", n)
        _require(q >= 1, "queue", "must be >= 1", q)
        for name, value in (("a", a), ("b", b), ("batch", n), ("queue", q)):
            dtype = np.float64 if name in ("a", "b") else np.int64
            object.__setattr__(self, name, np.ascontiguousarray(value, dtype).reshape(-1))

    @property
    def size(self) -> int:
        return int(self.a.shape[0])

    @property
    def room(self) -> IntArray:
        """``Q`` per pair (``queue`` after defaulting)."""
        assert self.queue is not None  # set by __post_init__
        return self.queue

    def service_rate(self, n: ArrayLike) -> FloatArray:
        """``mu(n) = n / (a + b*n)`` for ``n`` clamped to ``[1, N]`` (req/ms)."""
        n = np.clip(np.asarray(n, np.float64), 1, self.batch)
        return np.asarray(n / (self.a + self.b * n), np.float64)


def _require(ok: NDArray[np.bool_], name: str, rule: str, value: NDArray[np.generic]) -> None:
    if not np.all(ok):
        i = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"{name}[{i}]: {rule}, got {value.reshape(-1)[i]!r}")


@dataclass(frozen=True)
class ChainStats:
    """Stationary figures of the chain, one entry per pair (times in ms, rates in req/ms).

    ``in_system`` is ``L``, ``in_service`` is ``B``, ``blocking`` is ``p(N+Q)``,
    ``throughput`` is ``X = lam*(1 - p(N+Q))``; ``response = L/X``,
    ``service = B/X`` and ``wait = (L - B)/X`` (computed directly, no cancellation).
    """

    rate: FloatArray
    p0: FloatArray
    in_system: FloatArray
    in_service: FloatArray
    blocking: FloatArray
    throughput: FloatArray
    response: FloatArray
    service: FloatArray
    wait: FloatArray
    rho: FloatArray


def rate_range(params: ChainParams) -> tuple[FloatArray, FloatArray]:
    """Stable rate range ``(0.001*mu(1), 0.999*mu(N))`` in req/ms."""
    lam_min = LAM_MIN_FACTOR / (params.a + params.b)
    lam_max = LAM_MAX_FACTOR * params.batch / (params.a + params.b * params.batch)
    return lam_min, lam_max


def evaluate_chain(params: ChainParams, rate: ArrayLike) -> ChainStats:
    """Stationary figures of the chain for each pair at arrival rate ``rate`` (req/ms)."""
    layout = ChainLayout.build(params)
    rate = np.broadcast_to(np.asarray(rate, np.float64), (params.size,))
    stats = layout.evaluate(rate[layout.rows])
    inverse = np.empty_like(layout.rows)
    inverse[layout.rows] = np.arange(layout.rows.size)
    return take_stats(stats, inverse)


def take_stats(stats: ChainStats, index: NDArray[np.intp] | IntArray) -> ChainStats:
    """The rows ``index`` of ``stats``."""
    return ChainStats(**{k: v[index] for k, v in vars(stats).items()})


def log_geometric_sum(x: FloatArray, n: ArrayLike) -> FloatArray:
    """``log(sum_{k<n} exp(k*x))`` for ``n >= 0``, stable for any ``x`` (-inf when n = 0).

    With ``a = |x|`` it is ``max(x, 0) (n-1) + log(1 - e^(-n a)) - log(1 - e^(-a))`` on
    both sides of 0 (one pair of ``expm1`` per element), and ``log(n)`` at ``x = 0``."""
    x = np.asarray(x, np.float64)
    n = np.asarray(n, np.float64)
    a = np.abs(x)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = np.maximum(x, 0.0) * (n - 1) + np.log(-np.expm1(-n * a)) - np.log(-np.expm1(-a))
    out = np.asarray(out, np.float64)
    zero = a == 0
    if zero.any():
        with np.errstate(divide="ignore"):
            out[zero] = np.log(np.broadcast_to(n, out.shape)[zero])
    return out


def geometric_mean_index(x: FloatArray, n: ArrayLike) -> FloatArray:
    """Mean of ``k`` in ``0..n-1`` under weights ``exp(k*x)``, stable for any ``x``.

    It is ``d/dx log_geometric_sum = (f(n*x) - f(x)) / x`` with
    ``f(y) = y / (1 - exp(-y))``; near ``x = 0`` that difference cancels, so a
    series is used there: ``(n-1)/2 + (n^2-1) x/12 - (n^4-1) x^3/720``.
    """
    x = np.asarray(x, np.float64)
    n = np.asarray(n, np.float64)
    nx = n * x
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        # f(0) is 0/0 here: only where |n x| is small, which the series replaces
        out = np.asarray((nx / -np.expm1(-nx) - x / -np.expm1(-x)) / x, np.float64)
    small = np.abs(nx) < 1e-2
    if small.any():
        xs = np.broadcast_to(x, out.shape)[small]
        ns = np.broadcast_to(n, out.shape)[small]
        n2 = ns * ns
        out[small] = (ns - 1) / 2 + (n2 - 1) * xs / 12 - (n2 * n2 - 1) * (xs * xs * xs) / 720
    return out


@dataclass(frozen=True)
class _Bucket:
    start: int
    stop: int
    logc: FloatArray  # (rows, width): c(j) for j <= N, -inf in the padding
    j: FloatArray  # (width,) = 0..width-1


@dataclass(frozen=True)
class ChainLayout:
    """Pairs sorted by ``N`` with ``c(j)`` precomputed in padded buckets.

    ``rows[i]`` is the caller's index of row ``i``.  Build once per set of
    pairs; :meth:`evaluate` then costs one ``exp`` per state ``j <= N``.
    """

    rows: IntArray
    a: FloatArray
    b: FloatArray
    n: FloatArray
    q: FloatArray
    log_mu_n: FloatArray
    c_n: FloatArray
    c_flat: FloatArray  # all buckets' logc, raveled back to back
    offset: IntArray  # row start in c_flat
    buckets: tuple[_Bucket, ...]

    @property
    def states(self) -> int:
        """Number of head states ``j <= N`` one evaluation touches (padding included)."""
        return int(self.c_flat.size)

    @classmethod
    def build(cls, params: ChainParams) -> ChainLayout:
        order = np.argsort(params.batch, kind="stable")
        n_sorted = params.batch[order]
        a, b = params.a[order], params.b[order]
        edges = _bucket_edges(n_sorted)
        spans = list(zip(edges[:-1], edges[1:], strict=True))
        c_flat, blocks = _flat_blocks([(stop - start, int(n_sorted[stop - 1]) + 1)
                                       for start, stop in spans])
        for (start, stop), logc in zip(spans, blocks, strict=True):
            width = logc.shape[1]
            head = logc[:, 1:]  # log c(j) = sum_{i<=j} log(a/i + b), written in place
            with np.errstate(divide="ignore"):  # a = 0: log(b) is fine, a/i = 0
                np.divide(a[start:stop, None], np.arange(1, width, dtype=np.float64),
                          out=head)
                head += b[start:stop, None]
                np.log(head, out=head)
            np.cumsum(head, axis=1, out=head)
            logc[:, 0] = 0.0
            logc[np.arange(width)[None, :] > n_sorted[start:stop, None]] = -np.inf
        return cls._assemble(order, a, b, n_sorted, params.room[order], edges, c_flat, blocks)

    @classmethod
    def _assemble(
        cls, rows: IntArray, a: FloatArray, b: FloatArray, n: IntArray, q: IntArray,
        edges: list[int], c_flat: FloatArray, blocks: list[FloatArray],
    ) -> ChainLayout:
        """The layout over ``c_flat``, whose ``blocks`` (views into it) are the buckets."""
        widths = np.repeat([blk.shape[1] for blk in blocks], np.diff(edges)).astype(np.int64)
        offset = np.cumsum(widths) - widths
        buckets = [_Bucket(start, stop, blk, np.arange(blk.shape[1], dtype=np.float64))
                   for start, stop, blk in zip(edges[:-1], edges[1:], blocks, strict=True)]
        nf = n.astype(np.float64)
        return cls(
            rows=rows, a=a, b=b, n=nf, q=q.astype(np.float64),
            log_mu_n=np.log(nf / (a + b * nf)), c_n=c_flat[offset + n],
            c_flat=c_flat, offset=offset, buckets=tuple(buckets),
        )

    def select(self, keep: NDArray[np.bool_]) -> ChainLayout:
        """The rows where ``keep`` is true, in the same order (buckets copied, not rebuilt)."""
        counts = np.concatenate([[0], np.cumsum(keep)])
        edges, kept = [0], []
        for bucket in self.buckets:
            mask = keep[bucket.start:bucket.stop]
            if mask.any():
                kept.append((bucket.logc, mask))
                edges.append(int(counts[bucket.stop]))
        c_flat, blocks = _flat_blocks([(int(m.sum()), lc.shape[1]) for lc, m in kept])
        for (logc, mask), out in zip(kept, blocks, strict=True):
            np.compress(mask, logc, axis=0, out=out)
        return self._assemble(
            self.rows[keep], self.a[keep], self.b[keep], self.n[keep].astype(np.int64),
            self.q[keep].astype(np.int64), edges, c_flat, blocks,
        )

    def evaluate(self, rate: FloatArray) -> ChainStats:
        """Chain figures at ``rate`` (req/ms, one per row of this layout, rows order)."""
        lam = np.maximum(rate, _RATE_FLOOR / (self.a + self.b))
        loglam = np.log(lam)
        x = loglam - self.log_mu_n  # log r, r = lam / mu(N)
        log_u_n = self.n * loglam + self.c_n
        log_last = log_u_n + self.q * x  # state N+Q
        # j*log(lam) + c(j) is concave in j (its steps log(lam*(a/j + b)) fall), so
        # its maximum is where lam*(a/j + b) crosses 1: no per-state max is needed.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            peak = np.floor(np.clip(self.a * lam / (1 - self.b * lam), 0, self.n))
        peak = np.where(self.b * lam >= 1, self.n, peak)
        log_peak = peak * loglam + self.c_flat[self.offset + peak.astype(np.int64)]
        shift = np.maximum(log_peak, log_last)
        z0, z1 = self._head_sums(loglam, shift)  # sum u(j), sum j*u(j) over j <= N
        below_last = np.exp(log_u_n + x + log_geometric_sum(x, self.q - 1) - shift)
        last = np.exp(log_last - shift)
        return _stats_from_sums(
            rate, lam, self.n, z0, z1, below_last, last,
            mean_k=1 + geometric_mean_index(x, self.q),
            p0_scaled=np.exp(-shift),
        )

    def _head_sums(self, loglam: FloatArray, shift: FloatArray) -> tuple[FloatArray, FloatArray]:
        z0 = np.empty_like(loglam)
        z1 = np.empty_like(loglam)
        for bk in self.buckets:
            # A bounded slab of rows at a time: a whole bucket's states are tens of MB
            # at fleet scale, and the slab is as fast (numpy's per-call cost is tiny).
            step = max(1, _SLAB_STATES // bk.j.size)
            for lo in range(bk.start, bk.stop, step):
                hi = min(lo + step, bk.stop)
                w = np.multiply.outer(loglam[lo:hi], bk.j)
                w += bk.logc[lo - bk.start:hi - bk.start]
                w -= shift[lo:hi, None]
                np.exp(w, out=w)
                z0[lo:hi] = w.sum(axis=1)
                z1[lo:hi] = w @ bk.j
        return z0, z1


def _stats_from_sums(
    rate: FloatArray, lam: FloatArray, n: FloatArray, z0: FloatArray, z1: FloatArray,
    below_last: FloatArray, last: FloatArray, *, mean_k: FloatArray, p0_scaled: FloatArray,
) -> ChainStats:
    # All sums share one scale exp(-shift), which cancels in every ratio.
    tail = below_last + last  # states N+1..N+Q
    total = z0 + tail
    open_share = (z0 + below_last) / total  # 1 - p(N+Q), summed, so no cancellation
    head1 = z1 / total
    tail_p = tail / total
    in_system = head1 + tail_p * (n + mean_k)
    in_service = head1 + tail_p * n
    queued = tail_p * mean_k  # L - B
    flow = lam * open_share  # evaluation rate (floored) for the ratios below
    return ChainStats(
        rate=rate,
        p0=p0_scaled / total,
        in_system=in_system,
        in_service=in_service,
        blocking=last / total,
        throughput=rate * open_share,
        response=in_system / flow,
        service=in_service / flow,
        wait=queued / flow,
        rho=np.clip(in_service / n, 0.0, 1.0),
    )


def _flat_blocks(shapes: list[tuple[int, int]]) -> tuple[FloatArray, list[FloatArray]]:
    """One array for all the buckets and a view of it per bucket, so that a layout is
    written in place: blocks built apart and then concatenated held the chain twice (some
    60 MB each in a 3,000-server fleet's sizing)."""
    c_flat = np.empty(sum(rows * width for rows, width in shapes))
    views, base = [], 0
    for rows, width in shapes:
        views.append(c_flat[base:base + rows * width].reshape(rows, width))
        base += rows * width
    return c_flat, views


def _bucket_edges(n_sorted: IntArray) -> list[int]:
    """Row boundaries of the buckets: a bucket grows while its padding is cheap."""
    if n_sorted.size == 0:
        return [0]
    values, counts = np.unique(n_sorted, return_counts=True)
    edges, rows_in, width, pos = [0], 0, int(values[0]), 0
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if rows_in and rows_in * (value - width) > _BUCKET_OVERHEAD_STATES:
            edges.append(pos)
            rows_in = 0
        rows_in += count
        width = value
        pos += count
    edges.append(int(n_sorted.size))
    return edges


def state_probabilities(a: float, b: float, batch: int, rate: float, *, queue: int | None = None
                        ) -> FloatArray:
    """Full distribution ``p(0..N+Q)`` of one pair (log space); for tests and plots."""
    q = QUEUE_FACTOR * batch if queue is None else queue
    j = np.arange(1, batch + q + 1, dtype=np.float64)
    served = np.minimum(j, batch)
    log_ratio = np.log(rate) + np.log(a + b * served) - np.log(served)  # log(lam/mu(j))
    logp = np.concatenate([[0.0], np.cumsum(log_ratio)])
    p = np.exp(logp - logp.max())
    return np.asarray(p / p.sum(), np.float64)
