"""Service-time models of one replica: perf parameters + token mix -> chain and metrics.

Both models give a linear service time ``T(n) = a + b*n`` (see
:mod:`controlloop.model.queue`) and derive ITL and TTFT from the chain's
figures.  All attributes are float64 arrays of shape ``(P,)`` (ms, tokens),
``batch`` is int64; scalars broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from controlloop.bounds import MAX_BATCH
from controlloop.model.queue import ChainParams, ChainStats, FloatArray, IntArray

DEFAULT_TOKEN_BUDGET = 8192  # tokens per iteration (docs/model-spec.md section 8)


@dataclass(frozen=True)
class ReplicaMetrics:
    """Predicted figures of one replica (ms, req/ms; shape ``(P,)``).

    ``concurrency`` is the effective batch the latencies are read at: ``n*``
    for :class:`DecodePrefillPerf`, the mean number in service for
    :class:`IterationPerf`.
    """

    rate: FloatArray
    itl: FloatArray
    ttft: FloatArray
    wait: FloatArray
    service: FloatArray
    response: FloatArray
    concurrency: FloatArray
    in_service: FloatArray
    rho: FloatArray
    throughput: FloatArray
    blocking: FloatArray

    def take(self, index: NDArray[np.intp] | IntArray) -> ReplicaMetrics:
        return ReplicaMetrics(**{k: v[index] for k, v in vars(self).items()})


class PerfModel(Protocol):
    """What sizing needs from a service-time model."""

    @property
    def size(self) -> int: ...

    def chain(self) -> ChainParams: ...

    def metrics(self, stats: ChainStats) -> ReplicaMetrics: ...

    def take(self, index: NDArray[np.intp] | IntArray) -> Self: ...

    def key_columns(self) -> FloatArray: ...


def batch_size(max_batch: ArrayLike, at_tokens: ArrayLike, out_tokens: ArrayLike, *,
               override: ArrayLike | None = None) -> IntArray:
    """``N``: the override where set (> 0), else ``max(1, floor(maxBatchSize*atTokens/K))``,
    at most :data:`~controlloop.bounds.MAX_BATCH` (a short ``K`` would otherwise derive a
    batch no engine runs, and a chain of ``11*N`` states; clamped before the int cast)."""
    k = np.maximum(np.asarray(out_tokens, np.float64), 1)  # K = 0 is zero load, sized elsewhere
    derived = np.maximum(1, np.floor(np.asarray(max_batch, np.float64)
                                     * np.asarray(at_tokens, np.float64) / k))
    if override is not None:
        over = np.asarray(override, np.float64)
        derived = np.where(over > 0, over, derived)
    derived = np.clip(np.nan_to_num(derived, nan=1.0), 1, MAX_BATCH)
    return np.asarray(derived, np.int64).reshape(-1)


class _ArrayFields:
    """Coerce, broadcast and validate the array fields of a frozen dataclass."""

    batch: IntArray
    _int_fields: tuple[str, ...] = ("batch",)
    _positive: tuple[str, ...] = ()

    def _normalise(self) -> None:
        names = self._names()
        values = np.broadcast_arrays(*(np.asarray(getattr(self, k)) for k in names))
        for name, value in zip(names, values, strict=True):
            dtype = np.int64 if name in self._int_fields else np.float64
            arr = np.ascontiguousarray(value, dtype).reshape(-1)
            bad = ~np.isfinite(arr) | (arr < 0) | ((arr <= 0) & (name in self._positive))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                rule = "> 0" if name in self._positive else ">= 0"
                raise ValueError(f"{name}[{i}]: must be finite and {rule}, got {arr[i]!r}")
            object.__setattr__(self, name, arr)

    @property
    def size(self) -> int:
        return int(self.batch.shape[0])

    def _names(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def take(self, index: NDArray[np.intp] | IntArray) -> Self:
        return type(self)(**{k: getattr(self, k)[index] for k in self._names()})

    def key_columns(self) -> FloatArray:
        """All inputs as float64 columns ``(P, F)``: the sizing cache key."""
        return np.column_stack([getattr(self, k) for k in self._names()]).astype(np.float64)


@dataclass(frozen=True)
class DecodePrefillPerf(_ArrayFields):
    """docs/model-spec.md section 2: decode ``alpha + beta*n`` per token, prefill
    ``gamma + delta*I*n``.

    ``T(n) = prefill(n) + (K-1)*decode(n)``, so ``a = gamma + (K-1)*alpha``
    and ``b = delta*I + (K-1)*beta`` (prefill is zero, ``gamma`` included,
    when ``I = 0``).  From the chain's service time ``S`` the effective batch
    is ``n* = (S - a)/b`` clamped to ``[0, N]`` (``B``, the mean number in
    service, when ``b = 0``: then ``T`` is flat and any ``n`` solves it);
    ``ITL = alpha + beta*n*`` and ``TTFT = W + prefill(n*)``; ``wait_scale``
    multiplies ``W`` in TTFT (1 unless tuning learnt otherwise: the chain's wait
    assumes memoryless service, a real batch's is nearly deterministic).
    """

    alpha: FloatArray
    beta: FloatArray
    gamma: FloatArray
    delta: FloatArray
    in_tokens: FloatArray
    out_tokens: FloatArray
    batch: IntArray
    # [tuning] Scale of the chain's queue wait in TTFT, learnt online (1 = the chain).
    wait_scale: FloatArray = 1.0  # type: ignore[assignment]
    # Share of the batch in TTFT's prefill: ``gamma + delta*I*(1 + s*(n* - 1))``; 1 is
    # MODEL.md section 2 (``gamma + delta*I*n*``), 0 one joiner's prefill (section 7).
    prefill_share: FloatArray = 1.0  # type: ignore[assignment]

    _positive = ("out_tokens", "batch", "wait_scale")

    def __post_init__(self) -> None:
        self._normalise()

    def _prefill_on(self) -> FloatArray:
        return np.asarray(self.in_tokens > 0, np.float64)

    def chain(self) -> ChainParams:
        on = self._prefill_on()
        decodes = self.out_tokens - 1
        return ChainParams(
            a=on * self.gamma + decodes * self.alpha,
            b=on * self.delta * self.in_tokens + decodes * self.beta,
            batch=self.batch,
        )

    def metrics(self, stats: ChainStats) -> ReplicaMetrics:
        on = self._prefill_on()
        decodes = self.out_tokens - 1
        a = on * self.gamma + decodes * self.alpha
        b = on * self.delta * self.in_tokens + decodes * self.beta
        with np.errstate(divide="ignore", invalid="ignore"):
            n_star = np.where(b > 0, (stats.service - a) / b, stats.in_service)
        n_star = np.clip(n_star, 0, self.batch)
        return _metrics(
            stats,
            itl=self.alpha + self.beta * n_star,
            ttft=self.wait_scale * stats.wait + on * (
                self.gamma + self.delta * self.in_tokens * (1 + self.prefill_share * (n_star - 1))),
            concurrency=n_star,
        )


@dataclass(frozen=True)
class IterationPerf(_ArrayFields):
    """docs/model-spec.md section 8: iteration time ``alpha + beta*tokens + gamma*KV tokens read``.

    A prompt is prefilled in ``c`` chunks, the fewest ``m >= 1`` with
    ``N <= floor((m + K)*(M - I/m)/(I + K))``: the chunk count is evaluated at
    the batch size ``N`` (the largest batch the replica runs), so ``c`` and the
    chain stay fixed while the load varies.  Then
    ``wp = (beta + gamma*(c+1)/2)*I``, ``wd = beta*K + gamma*K*(I + (K+1)/2)``,
    ``d = (wp + wd)/(c + K)`` and ``tau(B) = (c+K)*(alpha + B*d)``: ``a = (c+K)*alpha``,
    ``b = (c+K)*d``.  Metrics at the chain's mean number in service ``B``:
    prefill ``c*(alpha + (B-1)*d) + wp``, ``ITL = (S - prefill)/K`` and
    ``TTFT = W + prefill + ITL``.  ``wait_scale`` multiplies ``W`` in TTFT
    (1 unless tuning learnt otherwise, :mod:`controlloop.tuning`).
    """

    alpha: FloatArray
    beta: FloatArray
    gamma: FloatArray
    in_tokens: FloatArray
    out_tokens: FloatArray
    batch: IntArray
    token_budget: FloatArray = DEFAULT_TOKEN_BUDGET  # type: ignore[assignment]
    wait_scale: FloatArray = 1.0  # type: ignore[assignment]  # [tuning] as DecodePrefillPerf

    _positive = ("out_tokens", "batch", "token_budget", "wait_scale")

    def __post_init__(self) -> None:
        self._normalise()

    def chunks(self) -> FloatArray:
        """``c``: fewest ``m >= 1`` with ``N <= floor((m+K)*(M - I/m)/(I+K))``.

        ``(m+K)*(M - I/m)`` increases with ``m``, so ``c`` is the ceiling of the
        positive root of ``M m^2 + (M K - I - N(I+K)) m - K I = 0``, then
        corrected by one step either way against the exact rule (float safety).
        """
        i, k, m_budget, n = self.in_tokens, self.out_tokens, self.token_budget, self.batch
        lin = m_budget * k - i - n * (i + k)
        root = (-lin + np.sqrt(lin * lin + 4 * m_budget * k * i)) / (2 * m_budget)
        c = np.maximum(1.0, np.ceil(root))

        def fits(m: FloatArray) -> NDArray[np.bool_]:
            return np.asarray(n <= np.floor((m + k) * (m_budget - i / m) / (i + k)))

        c = np.where(fits(c), c, c + 1)
        prev = np.maximum(c - 1, 1.0)
        return np.asarray(np.where((c > 1) & fits(prev), prev, c), np.float64)

    def _work(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        c = self.chunks()
        i, k = self.in_tokens, self.out_tokens
        wp = (self.beta + self.gamma * (c + 1) / 2) * i
        wd = self.beta * k + self.gamma * k * (i + (k + 1) / 2)
        return c, wp, (wp + wd) / (c + k)

    def chain(self) -> ChainParams:
        c, _, d = self._work()
        steps = c + self.out_tokens
        return ChainParams(a=steps * self.alpha, b=steps * d, batch=self.batch)

    def metrics(self, stats: ChainStats) -> ReplicaMetrics:
        c, wp, d = self._work()
        mean_batch = stats.in_service
        prefill = c * (self.alpha + (mean_batch - 1) * d) + wp
        itl = (stats.service - prefill) / self.out_tokens
        ttft = self.wait_scale * stats.wait + prefill + itl
        return _metrics(stats, itl=itl, ttft=ttft, concurrency=mean_batch)


def _metrics(stats: ChainStats, *, itl: FloatArray, ttft: FloatArray,
             concurrency: FloatArray) -> ReplicaMetrics:
    return ReplicaMetrics(
        rate=stats.rate, itl=itl, ttft=ttft, wait=stats.wait, service=stats.service,
        response=stats.response, concurrency=concurrency, in_service=stats.in_service,
        rho=stats.rho, throughput=stats.throughput, blocking=stats.blocking,
    )
