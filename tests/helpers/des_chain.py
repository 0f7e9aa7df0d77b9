"""A small discrete-event simulation of one replica as a birth-death process.

Independent of :mod:`controlloop.model.queue`: Poisson arrivals at ``lam``;
with ``n`` requests in the replica, ``min(n, N)`` are in service and the
replica completes one at total rate ``mu(n) = m / (a + b*m)``, ``m = min(n, N)``
(exponential service, state-dependent).  At most ``N + Q`` requests are held;
arrivals beyond are lost.  Waits are measured per request (FIFO queue), the
rest as time averages, with batch means for the standard errors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    mean: float
    stderr: float


@dataclass(frozen=True)
class SimResult:
    in_system: Estimate  # L, time average
    in_service: Estimate  # B, time average
    blocking: Estimate  # share of arrivals lost
    throughput: Estimate  # completions per ms
    wait: Estimate  # mean queue wait of admitted requests, ms


def simulate(a: float, b: float, batch: int, queue: int, lam: float, *, seed: int,
             events: int = 200_000, batches: int = 20) -> SimResult:
    rng = np.random.default_rng(seed)
    capacity = batch + queue
    n, now = 0, 0.0
    waiting: deque[float] = deque()  # arrival times of queued requests
    per_batch = events // batches
    sums = np.zeros((batches, 6))  # time, area L, area B, arrivals, lost, completions
    waits: list[list[float]] = [[] for _ in range(batches)]
    uniforms = rng.random(events)
    for e in range(events):
        k = e // per_batch
        if k >= batches:
            break
        m = min(n, batch)
        mu = m / (a + b * m) if m else 0.0
        total = lam + mu
        dt = rng.exponential(1 / total)
        sums[k, 0] += dt
        sums[k, 1] += n * dt
        sums[k, 2] += m * dt
        now += dt
        if uniforms[e] * total < lam:  # arrival
            sums[k, 3] += 1
            if n == capacity:
                sums[k, 4] += 1
            else:
                n += 1
                if n > batch:
                    waiting.append(now)
                else:
                    waits[k].append(0.0)
        else:  # completion; the head of the queue (if any) starts service
            n -= 1
            sums[k, 5] += 1
            if waiting:
                waits[k].append(now - waiting.popleft())
    t = sums[:, 0]
    per = {
        "in_system": sums[:, 1] / t,
        "in_service": sums[:, 2] / t,
        "blocking": sums[:, 4] / np.maximum(sums[:, 3], 1),
        "throughput": sums[:, 5] / t,
        "wait": np.array([np.mean(w) if w else 0.0 for w in waits]),
    }
    drop = max(1, batches // 10)  # first batches are warm-up
    return SimResult(**{k: Estimate(float(v[drop:].mean()),
                                    float(v[drop:].std(ddof=1) / np.sqrt(v[drop:].size)))
                        for k, v in per.items()})
