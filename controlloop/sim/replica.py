"""Token-level simulation of one continuously batching replica (docs/model-spec.md section 7).

Semantics, exactly as specified, with the readings this module commits to:

- Poisson (or any offered) arrivals join a FIFO queue; an arrival that finds
  ``N + Q`` requests in the replica (batch plus queue, the batch counted as it
  is *during* the current iteration) is lost.
- Time advances in iterations. Before an iteration starts, queued requests
  join while the batch has fewer than ``N``. With ``n`` requests in the batch
  (joiners included) an iteration without joiners lasts ``alpha + beta*n``;
  one with ``n_j`` joiners lasts ``max(prefill, alpha + beta*n)`` with
  ``prefill = gamma + delta * (sum of the joiners' input tokens)``, which is
  ``gamma + delta*I*n_j`` for equal sizes and zero when that sum is zero.
- Every running request gets one token per iteration; a joiner's first token
  comes at the end of its joining iteration (TTFT = queue wait + that
  iteration), and it leaves at the end of the iteration giving its ``K``-th.
- ITL is the mean, over non-first tokens, of the length of the iteration
  that produced the token.
- An idle replica starts an iteration at the next arrival; an arrival during
  an iteration waits for it to end. An arrival exactly at an iteration
  boundary is counted against the population of the ending iteration and
  joins at that boundary; arrivals at the same instant as the one that wakes
  an idle replica join its first iteration.

Speed: between events the batch is constant and no one joins, so the engine
plans a *run* of identical iterations up to the next completion and cuts it
short at the first boundary after an arrival that can join. Work is
``O(arrivals + completions)``, not ``O(iterations)``.
"""

from __future__ import annotations

import math
from heapq import heappop, heappush

from controlloop.sim.base import EngineBase, Request
from controlloop.sim.params import ReplicaParams


class ReplicaSimulator(EngineBase):
    """Stateful token-level engine for one replica, advanced piecewise.

    Use ``offer(times)`` to schedule arrivals (times ``>= now_ms``),
    ``advance(until_ms)`` to simulate up to a time and ``drain_stats()`` to
    read and reset the counters. Results do not depend on how the time axis
    is cut into ``advance`` calls (event times are bit-identical; time
    integrals agree to rounding).
    """

    def __init__(self, params: ReplicaParams, *, start_ms: float = 0.0) -> None:
        super().__init__(params, start_ms=start_ms)
        # Heap of (iteration count after which the request is done, origin_ms).
        self._batch: list[tuple[int, float]] = []
        self._iter = 0  # iterations completed so far
        self._active = False  # a run of iterations is in progress
        self._run_start = 0.0
        self._run_len = 0.0
        self._run_m = 0  # planned iterations in the run
        self._run_done = 0  # of which already credited to the counters
        self._run_joiners: list[float] = []  # origins of this iteration's joiners

    @property
    def in_service(self) -> int:
        return len(self._batch)

    @property
    def iterations(self) -> int:
        """Iterations completed (the current run counts once it ends)."""
        return self._iter

    def advance(self, until_ms: float) -> None:
        """Process every event before ``until_ms`` (boundary events at exactly ``until_ms``
        wait for the next call, so arrivals offered at that instant are seen first)."""
        if until_ms < self._now:
            raise ValueError(f"until_ms: must be >= now_ms={self._now}, got {until_ms}")
        pend = self._pending
        batch = self._batch
        room = self.params.batch
        inf = math.inf
        while True:
            a = pend[0][0] if pend else inf
            if self._active:
                end = self._run_start + self._run_m * self._run_len
                if a <= end:
                    if a > until_ms:
                        break
                    self._arrive(pend.popleft())
                    if len(batch) < room:
                        self._cut_run(a)
                    continue
                # An iteration ending exactly at ``until_ms`` ends in the next call,
                # after arrivals at that instant are offered: piecewise runs then
                # match one long run (arrivals at a boundary count against it).
                if end >= until_ms:
                    break
                self._end_run(end)
                self._start_iteration(end)
            else:
                if a >= until_ms:  # same instant may get more arrivals next call
                    break
                # Idle: the first iteration starts at this arrival and, like any
                # boundary, takes everyone arriving at that same instant.
                self._arrive(pend.popleft())
                while pend and pend[0][0] == a:
                    self._arrive(pend.popleft())
                self._start_iteration(a)
        self._credit(self._iterations_by(until_ms))
        self._integrate(until_ms)
        self._now = until_ms

    # -- events ----------------------------------------------------------------
    def _arrive(self, req: Request) -> None:
        self._integrate(req[0])
        self._arrivals += 1
        if len(self._batch) + len(self._queue) >= self.params.capacity:
            self._lost += 1
        else:
            self._queue.append(req)

    def _cut_run(self, a: float) -> None:
        """End the run at the first boundary at or after ``a`` (a joiner is waiting)."""
        s, length = self._run_start, self._run_len
        k = max(1, math.ceil((a - s) / length))
        while s + k * length < a:  # guard the float rounding of ceil
            k += 1
        while k > 1 and s + (k - 1) * length >= a:
            k -= 1
        if k < self._run_m:
            self._run_m = k

    def _end_run(self, end: float) -> None:
        self._credit(self._run_m)
        self._integrate(end)
        self._iter += self._run_m
        self._active = False
        batch = self._batch
        while batch and batch[0][0] <= self._iter:
            origin = heappop(batch)[1]
            self._completed += 1
            self._sojourn += end - origin

    def _start_iteration(self, t: float) -> None:
        """Admit queued requests and plan the next run starting at boundary ``t``."""
        p = self.params
        queue, batch, it = self._queue, self._batch, self._iter
        joiners: list[float] = []
        free = p.batch - len(batch)
        sum_in = 0
        while queue and free > 0:
            _, origin, in_tok, out_tok = queue.popleft()
            heappush(batch, (it + out_tok, origin))
            joiners.append(origin)
            self._wait.append(t - origin)
            sum_in += in_tok
            free -= 1
        n = len(batch)
        if n == 0:
            return
        decode = p.alpha + p.beta * n
        if joiners:
            prefill = p.gamma + p.delta * sum_in if sum_in > 0 else 0.0
            self._run_len = prefill if prefill > decode else decode
            self._run_m = 1
        else:
            self._run_len = decode
            self._run_m = batch[0][0] - it  # iterations until the next completion
        self._run_start = t
        self._run_done = 0
        self._run_joiners = joiners
        self._active = True

    # -- accounting --------------------------------------------------------------
    def _iterations_by(self, t: float) -> int:
        """Iterations of the current run that end at or before ``t``."""
        if not self._active:
            return 0
        s, length, m = self._run_start, self._run_len, self._run_m
        k = min(m, max(0, math.floor((t - s) / length)))
        while k < m and s + (k + 1) * length <= t:
            k += 1
        while k > 0 and s + k * length > t:
            k -= 1
        return k

    def _credit(self, k: int) -> None:
        """Count the tokens of the run's iterations ``_run_done+1 .. k``."""
        done = self._run_done
        if not self._active or k <= done:
            return
        length = self._run_len
        tokens = (k - done) * len(self._batch)
        if done == 0 and self._run_joiners:
            # Joiners' first tokens are TTFT samples, not ITL samples.
            tokens -= len(self._run_joiners)
            first = self._run_start + length
            self._ttft.extend(first - o for o in self._run_joiners)
        self._decode_tokens += tokens
        self._decode_time += tokens * length
        self._run_done = k

    def _drop_batch(self) -> int:
        dropped = len(self._batch)
        self._batch.clear()
        self._active = False
        return dropped
