"""Parameters of one simulated replica and the statistics it reports.

Times are in milliseconds, rates in requests per millisecond, sizes in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, kw_only=True)
class ReplicaParams:
    """Performance parameters and sizes of one replica (docs/model-spec.md sections 1-2).

    Attributes
    ----------
    alpha, beta : float
        Decode iteration time with ``n`` in the batch: ``alpha + beta*n`` (ms).
    gamma, delta : float
        Prefill time of ``n_j`` joiners of ``I`` input tokens each:
        ``gamma + delta*I*n_j`` (ms), zero when ``I = 0``.
    batch : int
        ``N``, the most requests in the batch.
    in_tokens, out_tokens : int
        Default ``I`` and ``K`` of a request (per-request sizes may be offered).
    queue : int or None
        ``Q``, the most requests waiting; ``None`` means ``10*N``.
    """

    alpha: float
    beta: float
    gamma: float
    delta: float
    batch: int
    in_tokens: int
    out_tokens: int
    queue: int | None = None

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma", "delta"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be finite and >= 0, got {value}")
        if self.alpha + self.beta <= 0:
            raise ValueError("alpha + beta: must be > 0 (an iteration must take time)")
        if self.batch < 1:
            raise ValueError(f"batch: must be >= 1, got {self.batch}")
        if self.in_tokens < 0:
            raise ValueError(f"in_tokens: must be >= 0, got {self.in_tokens}")
        if self.out_tokens < 1:
            raise ValueError(f"out_tokens: must be >= 1, got {self.out_tokens}")
        if self.queue is not None and self.queue < 0:
            raise ValueError(f"queue: must be >= 0 or None, got {self.queue}")

    @property
    def queue_room(self) -> int:
        """``Q``: waiting room (``10*N`` unless set)."""
        return 10 * self.batch if self.queue is None else self.queue

    @property
    def capacity(self) -> int:
        """``N + Q``: the most requests in the replica."""
        return self.batch + self.queue_room

    @property
    def chain_a(self) -> float:
        """``a = gamma + (K-1)*alpha`` of ``T(n) = a + b*n`` (section 2)."""
        return self.gamma + (self.out_tokens - 1) * self.alpha

    @property
    def chain_b(self) -> float:
        """``b = delta*I + (K-1)*beta`` of ``T(n) = a + b*n`` (section 2)."""
        return self.delta * self.in_tokens + (self.out_tokens - 1) * self.beta

    def service_rate(self, n: int) -> float:
        """Chain completion rate ``mu(n) = n / T(n)``, capped at ``n = N`` (req/ms)."""
        k = min(max(n, 0), self.batch)
        return k / (self.chain_a + self.chain_b * k) if k else 0.0


@dataclass(frozen=True, kw_only=True)
class ReplicaStats:
    """Counters of one replica over the window ``[start_ms, end_ms]``.

    Events are attributed to the window in which they happen: a TTFT when the
    first token is produced, a completion when the last one is, an ITL sample
    when its iteration ends, a loss when the arrival is refused.
    """

    start_ms: float
    end_ms: float
    arrivals: int
    """Arrivals offered whose time fell in the window (accepted + lost)."""
    lost: int
    completed: int
    ttft_ms: FloatArray = field(repr=False)
    """TTFT of each first token produced in the window."""
    wait_ms: FloatArray = field(repr=False)
    """Queue wait of each request that joined the batch in the window."""
    sojourn_ms_sum: float
    """Summed arrival-to-last-token time of the completed requests."""
    decode_tokens: int
    """Non-first tokens produced; the ITL weight."""
    decode_time_ms: float
    """Sum over decode tokens of the length of the iteration that produced them."""
    busy_ms: float
    in_service_area: float
    """Integral of the batch size over the window (request*ms)."""
    in_system_area: float
    """Integral of batch plus queue over the window (request*ms)."""
    queue_len: int
    """Waiting requests at ``end_ms``."""
    in_service: int
    """Requests in the batch at ``end_ms``."""

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms

    @property
    def itl_mean_ms(self) -> float:
        """Token-weighted mean iteration length (NaN without decode tokens)."""
        return self.decode_time_ms / self.decode_tokens if self.decode_tokens else float("nan")

    @property
    def ttft_mean_ms(self) -> float:
        return float(self.ttft_ms.mean()) if self.ttft_ms.size else float("nan")


@dataclass(frozen=True, kw_only=True)
class Unserved:
    """Requests a closed replica hands back (queued, or offered but not yet arrived).

    ``origin_ms`` is when each request entered the system (for TTFT when re-routed).
    """

    arrival_ms: FloatArray
    origin_ms: FloatArray
    in_tokens: IntArray
    out_tokens: IntArray
    dropped_in_flight: int = 0
    """Requests removed from the batch by ``close(drop_in_flight=True)``."""

    def __len__(self) -> int:
        return int(self.arrival_ms.size)
