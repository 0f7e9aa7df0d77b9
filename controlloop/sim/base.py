"""Shared bookkeeping of the replica engines: offered arrivals, counters, close."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from controlloop.sim.params import ReplicaParams, ReplicaStats, Unserved

# A request: (arrival_ms, origin_ms, in_tokens, out_tokens). Plain tuples keep
# the event loop cheap; origin differs from arrival only for re-routed requests.
Request = tuple[float, float, int, int]


class ReplicaEngine(Protocol):
    """What the emulated cluster needs from a simulated replica."""

    params: ReplicaParams

    @property
    def now_ms(self) -> float: ...

    @property
    def queue_len(self) -> int: ...

    @property
    def in_service(self) -> int: ...

    @property
    def is_idle(self) -> bool: ...

    def offer(
        self,
        arrival_ms: ArrayLike,
        *,
        in_tokens: ArrayLike | None = None,
        out_tokens: ArrayLike | None = None,
        origin_ms: ArrayLike | None = None,
    ) -> None: ...

    def advance(self, until_ms: float) -> None: ...

    def drain_stats(self) -> ReplicaStats: ...

    def close(self, *, drop_in_flight: bool = False) -> Unserved: ...


class EngineBase:
    """Arrival intake, window counters and ``close`` shared by both engines.

    Subclasses implement ``advance`` and ``in_service``/``_drop_batch``; they
    update the counter attributes (``_lost``, ``_ttft`` ...) directly, which
    keeps the hot loop free of method calls.
    """

    def __init__(self, params: ReplicaParams, *, start_ms: float = 0.0) -> None:
        self.params = params
        self._now = float(start_ms)
        self._pending: deque[Request] = deque()
        self._queue: deque[Request] = deque()
        self._closed = False
        self._area_t = self._now
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._window_start = self._now
        self._arrivals = 0
        self._lost = 0
        self._completed = 0
        self._ttft: list[float] = []
        self._wait: list[float] = []
        self._sojourn = 0.0
        self._decode_tokens = 0
        self._decode_time = 0.0
        self._busy = 0.0
        self._service_area = 0.0
        self._system_area = 0.0

    # -- state ---------------------------------------------------------------
    @property
    def now_ms(self) -> float:
        """Time up to which the replica has been advanced."""
        return self._now

    @property
    def queue_len(self) -> int:
        return len(self._queue)

    @property
    def in_service(self) -> int:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def is_idle(self) -> bool:
        """No request running, waiting or offered for later."""
        return self.in_service == 0 and not self._queue and not self._pending

    # -- input ---------------------------------------------------------------
    def offer(
        self,
        arrival_ms: ArrayLike,
        *,
        in_tokens: ArrayLike | None = None,
        out_tokens: ArrayLike | None = None,
        origin_ms: ArrayLike | None = None,
    ) -> None:
        """Schedule arrivals at ``arrival_ms`` (each ``>= now_ms``).

        Sizes default to the params' ``I`` and ``K``; ``origin_ms`` (default:
        the arrival time) is when the request entered the system, from which
        TTFT, wait and sojourn are measured.
        """
        times = np.asarray(arrival_ms, dtype=np.float64).ravel()
        if times.size == 0:
            return
        if self._closed:
            raise RuntimeError("offer: the replica is closed")
        if not np.all(np.isfinite(times)):
            raise ValueError("arrival_ms: must be finite")
        if times.min() < self._now:
            raise ValueError(f"arrival_ms: must be >= now_ms={self._now}, got {times.min()}")
        ins = self._sizes(in_tokens, times.size, self.params.in_tokens, "in_tokens", 0)
        outs = self._sizes(out_tokens, times.size, self.params.out_tokens, "out_tokens", 1)
        origins = times if origin_ms is None else np.asarray(origin_ms, np.float64).ravel()
        if origins.shape != times.shape:
            raise ValueError("origin_ms: must have one entry per arrival")
        order = np.argsort(times, kind="stable")
        new = list(
            zip(
                times[order].tolist(),
                origins[order].tolist(),
                ins[order].tolist(),
                outs[order].tolist(),
                strict=True,
            )
        )
        if self._pending and new[0][0] < self._pending[-1][0]:
            merged = sorted([*self._pending, *new], key=lambda r: r[0])
            self._pending = deque(merged)
        else:
            self._pending.extend(new)

    @staticmethod
    def _sizes(
        values: ArrayLike | None, count: int, default: int, name: str, least: int
    ) -> np.ndarray:
        if values is None:
            return np.full(count, default, dtype=np.int64)
        arr = np.asarray(values).ravel()
        if arr.shape != (count,):
            raise ValueError(f"{name}: must have one entry per arrival ({count}), got {arr.size}")
        if arr.size and (arr.min() < least or not np.all(arr == np.round(arr))):
            raise ValueError(f"{name}: must be integers >= {least}")
        return arr.astype(np.int64)

    # -- output --------------------------------------------------------------
    def _integrate(self, t: float) -> None:
        """Accumulate the time integrals up to ``t`` (state constant since ``_area_t``)."""
        dt = t - self._area_t
        if dt > 0.0:
            n = self.in_service
            if n:
                self._busy += dt
                self._service_area += n * dt
            self._system_area += (n + len(self._queue)) * dt
            self._area_t = t

    def drain_stats(self) -> ReplicaStats:
        """Counters since the previous drain (or construction), then reset them."""
        self._integrate(self._now)
        stats = ReplicaStats(
            start_ms=self._window_start,
            end_ms=self._now,
            arrivals=self._arrivals,
            lost=self._lost,
            completed=self._completed,
            ttft_ms=np.asarray(self._ttft, dtype=np.float64),
            wait_ms=np.asarray(self._wait, dtype=np.float64),
            sojourn_ms_sum=self._sojourn,
            decode_tokens=self._decode_tokens,
            decode_time_ms=self._decode_time,
            busy_ms=self._busy,
            in_service_area=self._service_area,
            in_system_area=self._system_area,
            queue_len=len(self._queue),
            in_service=self.in_service,
        )
        self._reset_counters()
        return stats

    def close(self, *, drop_in_flight: bool = False) -> Unserved:
        """Stop accepting arrivals; hand back the queued and not-yet-arrived requests.

        In-flight requests keep running (advance until ``is_idle``) unless
        ``drop_in_flight``, which removes them and reports their count.
        """
        self._integrate(self._now)
        self._closed = True
        reqs: Sequence[Request] = [*self._queue, *self._pending]
        self._queue.clear()
        self._pending.clear()
        dropped = self._drop_batch() if drop_in_flight else 0
        return Unserved(
            arrival_ms=np.array([r[0] for r in reqs], dtype=np.float64),
            origin_ms=np.array([r[1] for r in reqs], dtype=np.float64),
            in_tokens=np.array([r[2] for r in reqs], dtype=np.int64),
            out_tokens=np.array([r[3] for r in reqs], dtype=np.int64),
            dropped_in_flight=dropped,
        )

    def _drop_batch(self) -> int:
        raise NotImplementedError

    def run_until(
        self,
        until_ms: float,
        arrival_ms: ArrayLike = (),
        *,
        in_tokens: ArrayLike | None = None,
        out_tokens: ArrayLike | None = None,
    ) -> ReplicaStats:
        """Offer arrivals, advance to ``until_ms`` and drain the counters."""
        self.offer(arrival_ms, in_tokens=in_tokens, out_tokens=out_tokens)
        self.advance(until_ms)
        return self.drain_stats()

    def advance(self, until_ms: float) -> None:
        raise NotImplementedError
