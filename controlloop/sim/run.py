"""One-shot simulations: a replica at a constant Poisson rate, and many of them."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from controlloop.sim.base import EngineBase
from controlloop.sim.exponential import ExponentialReplicaSimulator
from controlloop.sim.params import ReplicaParams, ReplicaStats
from controlloop.sim.replica import ReplicaSimulator

Service = Literal["token", "exponential"]


@dataclass(frozen=True, kw_only=True)
class SimResult:
    """Steady-state estimates over the measured window (after warm-up).

    TTFT/wait samples are requests whose first token/admission fell in the
    window; requests still waiting at the end are not in them, which biases
    TTFT low under overload (look at ``loss_fraction`` and ``queue_len_end``).
    """

    ttft_mean_ms: float
    ttft_p95_ms: float
    itl_mean_ms: float
    throughput_per_ms: float
    loss_fraction: float
    wait_mean_ms: float
    in_service_mean: float
    """Time-average batch size."""
    in_system_mean: float
    """Time-average batch plus queue (``L``)."""
    utilization: float
    """``in_service_mean / N``."""
    completed: int
    arrivals: int
    lost: int
    queue_len_end: int
    duration_ms: float

    @property
    def throughput_per_s(self) -> float:
        return self.throughput_per_ms * 1000.0

    @classmethod
    def from_stats(cls, stats: ReplicaStats, *, batch: int) -> SimResult:
        dur = stats.duration_ms
        nan = float("nan")
        ttft = stats.ttft_ms
        return cls(
            ttft_mean_ms=float(ttft.mean()) if ttft.size else nan,
            ttft_p95_ms=float(np.percentile(ttft, 95)) if ttft.size else nan,
            itl_mean_ms=stats.itl_mean_ms,
            throughput_per_ms=stats.completed / dur if dur > 0 else nan,
            loss_fraction=stats.lost / stats.arrivals if stats.arrivals else 0.0,
            wait_mean_ms=float(stats.wait_ms.mean()) if stats.wait_ms.size else nan,
            in_service_mean=stats.in_service_area / dur if dur > 0 else nan,
            in_system_mean=stats.in_system_area / dur if dur > 0 else nan,
            utilization=stats.in_service_area / dur / batch if dur > 0 else nan,
            completed=stats.completed,
            arrivals=stats.arrivals,
            lost=stats.lost,
            queue_len_end=stats.queue_len,
            duration_ms=dur,
        )


@dataclass(frozen=True, kw_only=True)
class SimCase:
    """One replica configuration at one constant rate, for ``simulate_many``."""

    params: ReplicaParams
    rate_per_ms: float
    duration_ms: float
    warmup_ms: float | None = None
    seed: int = 0
    service: Service = "token"


def poisson_arrivals(
    rng: np.random.Generator, *, rate_per_ms: float, start_ms: float, end_ms: float
) -> np.ndarray:
    """Sorted Poisson arrival times on ``[start_ms, end_ms)``.

    Drawn as a Poisson count of uniform points (one vectorised call, no loop).
    """
    if rate_per_ms < 0 or not np.isfinite(rate_per_ms):
        raise ValueError(f"rate_per_ms: must be finite and >= 0, got {rate_per_ms}")
    span = end_ms - start_ms
    if span <= 0 or rate_per_ms == 0:
        return np.empty(0)
    count = rng.poisson(rate_per_ms * span)
    return np.sort(rng.uniform(start_ms, end_ms, count))


def simulate(
    params: ReplicaParams,
    *,
    rate_per_ms: float,
    duration_ms: float,
    warmup_ms: float | None = None,
    seed: int = 0,
    service: Service = "token",
) -> SimResult:
    """Simulate one replica at Poisson ``rate_per_ms`` and summarise the window.

    The run covers ``warmup_ms + duration_ms``; counters from the warm-up
    (default ``0.1 * duration_ms``) are discarded. Deterministic for a seed.
    """
    if duration_ms <= 0:
        raise ValueError(f"duration_ms: must be > 0, got {duration_ms}")
    warm = 0.1 * duration_ms if warmup_ms is None else warmup_ms
    if warm < 0:
        raise ValueError(f"warmup_ms: must be >= 0, got {warm}")
    if service not in ("token", "exponential"):
        raise ValueError(f"service: must be 'token' or 'exponential', got {service!r}")
    rng = np.random.default_rng(seed)
    end = warm + duration_ms
    # Arrivals first, so both services see the same stream for a seed.
    arrivals = poisson_arrivals(rng, rate_per_ms=rate_per_ms, start_ms=0.0, end_ms=end)
    engine: EngineBase
    if service == "token":
        engine = ReplicaSimulator(params)
    else:
        engine = ExponentialReplicaSimulator(params, seed=int(rng.integers(2**63)))
    engine.offer(arrivals)
    engine.advance(warm)
    engine.drain_stats()
    engine.advance(end)
    return SimResult.from_stats(engine.drain_stats(), batch=params.batch)


def simulate_replica(
    *,
    alpha: float,
    beta: float,
    gamma: float,
    delta: float,
    batch: int,
    in_tokens: int,
    out_tokens: int,
    rate_per_ms: float,
    duration_ms: float,
    warmup_ms: float | None = None,
    queue: int | None = None,
    seed: int = 0,
    service: Service = "token",
) -> SimResult:
    """Keyword form of :func:`simulate` (see :class:`ReplicaParams` for units)."""
    params = ReplicaParams(
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        delta=delta,
        batch=batch,
        in_tokens=in_tokens,
        out_tokens=out_tokens,
        queue=queue,
    )
    return simulate(
        params,
        rate_per_ms=rate_per_ms,
        duration_ms=duration_ms,
        warmup_ms=warmup_ms,
        seed=seed,
        service=service,
    )


def _run_case(case: SimCase) -> SimResult:
    return simulate(
        case.params,
        rate_per_ms=case.rate_per_ms,
        duration_ms=case.duration_ms,
        warmup_ms=case.warmup_ms,
        seed=case.seed,
        service=case.service,
    )


POOL_THRESHOLD = 64
"""Cases from which ``simulate_many(workers=None)`` uses a process pool."""


def simulate_many(cases: Sequence[SimCase], *, workers: int | None = None) -> list[SimResult]:
    """Simulate each case; results in input order, identical for any ``workers``.

    ``workers=None`` loops below ``POOL_THRESHOLD`` cases (a replica-hour takes
    milliseconds, less than starting a worker) and otherwise uses one process
    per CPU; ``workers=1`` always loops. Workers are spawned, not forked, so
    this is safe from a threaded daemon.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    if workers is None:
        workers = (os.cpu_count() or 1) if len(cases) >= POOL_THRESHOLD else 1
    if workers == 1 or len(cases) < 2:
        return [_run_case(c) for c in cases]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(cases)), mp_context=ctx) as pool:
        chunk = max(1, len(cases) // (4 * workers))
        return list(pool.map(_run_case, cases, chunksize=chunk))
