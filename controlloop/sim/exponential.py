"""Check engine: the replica with exponential service (docs/model-spec.md section 6).

With ``n`` requests in service the replica completes one at total rate
``mu(n) = n / (a + b*n)``, ``a = gamma + (K-1)*alpha``,
``b = delta*I + (K-1)*beta``, ``n`` capped at ``N``; FIFO admission and room
for ``N + Q``. This is exactly the birth-death chain of section 2, so its
long-run ``L``, throughput, blocking and wait must match the chain to
sampling error. Per-request sizes are ignored (the chain has one ``I, K``);
there are no tokens, so TTFT and ITL are not reported.
"""

from __future__ import annotations

import math

import numpy as np

from controlloop.sim.base import EngineBase, Request
from controlloop.sim.params import ReplicaParams

_BLOCK = 4096  # random numbers drawn per numpy call


class ExponentialReplicaSimulator(EngineBase):
    """Stateful engine with state-dependent exponential service, advanced piecewise."""

    def __init__(self, params: ReplicaParams, *, seed: int = 0, start_ms: float = 0.0) -> None:
        super().__init__(params, start_ms=start_ms)
        self._rng = np.random.default_rng(seed)
        self._exp: list[float] = []
        self._uni: list[float] = []
        self._service: list[float] = []  # origins of the requests in service
        self._next_done = math.inf
        self._mu = [params.service_rate(n) for n in range(params.batch + 1)]

    @property
    def in_service(self) -> int:
        return len(self._service)

    def advance(self, until_ms: float) -> None:
        """Process every event at or before ``until_ms``."""
        if until_ms < self._now:
            raise ValueError(f"until_ms: must be >= now_ms={self._now}, got {until_ms}")
        pend = self._pending
        while True:
            a = pend[0][0] if pend else math.inf
            d = self._next_done
            if a <= d:
                if a > until_ms:
                    break
                self._arrive(pend.popleft())
            else:
                if d > until_ms:
                    break
                self._depart(d)
        self._integrate(until_ms)
        self._now = until_ms

    def _arrive(self, req: Request) -> None:
        t = req[0]
        self._integrate(t)
        self._arrivals += 1
        service = self._service
        if len(service) + len(self._queue) >= self.params.capacity:
            self._lost += 1
        elif len(service) < self.params.batch:
            service.append(req[1])
            self._wait.append(t - req[1])
            self._schedule(t)
        else:
            self._queue.append(req)

    def _depart(self, t: float) -> None:
        self._integrate(t)
        service = self._service
        # Memoryless service: the one leaving is uniform among those in service.
        if not self._uni:
            self._uni = self._rng.random(_BLOCK).tolist()
        i = int(self._uni.pop() * len(service))
        origin = service[i]
        service[i] = service[-1]
        service.pop()
        self._completed += 1
        self._sojourn += t - origin
        if self._queue:
            origin = self._queue.popleft()[1]
            service.append(origin)
            self._wait.append(t - origin)
        self._schedule(t)

    def _schedule(self, t: float) -> None:
        """Draw the next completion from ``t`` (valid after any change: memoryless)."""
        n = len(self._service)
        if n == 0:
            self._next_done = math.inf
            return
        if not self._exp:
            self._exp = self._rng.standard_exponential(_BLOCK).tolist()
        self._next_done = t + self._exp.pop() / self._mu[n]

    def _drop_batch(self) -> int:
        dropped = len(self._service)
        self._service.clear()
        self._next_done = math.inf
        return dropped
