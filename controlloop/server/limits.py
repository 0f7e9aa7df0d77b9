"""Resource limits of the REST API: body size, sizing work, time, concurrency.

A request over a limit is refused with a clear error (413 body too large, 422 too
much work, 503 over time or too busy) and never slows the server for others: the
optimizations run in worker threads, at most ``max_concurrent`` at once, and the
event loop keeps answering (``/healthz``, small requests) meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from controlloop.optimizer.work import sizing_work
from controlloop.server.errors import DEFAULT_MAX_BODY_BYTES, ApiError
from controlloop.specs import SystemSpec

T = TypeVar("T")

# Measured (benchmarks/bench_limits.py, docs/benchmarks.md): the large sample (567 pairs)
# sizes in 0.05 s; at the defaults (~20,000 pairs, or ~10M chain states) one optimize
# takes ~2.5 s and ~300 MiB peak RSS; an 8 MiB body of 100k servers parses in ~5 s.
DEFAULT_MAX_PAIRS = 20_000
DEFAULT_MAX_STATES = 10_000_000
DEFAULT_REQUEST_SECONDS = 30.0
DEFAULT_MAX_CONCURRENT = 2


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # 8 MiB: ~100x the large sample
    max_pairs: int = DEFAULT_MAX_PAIRS  # (server, accelerator) pairs per optimization
    max_states: int = DEFAULT_MAX_STATES  # sum of batch+1 over the pairs
    request_seconds: float = DEFAULT_REQUEST_SECONDS  # wall time of one request
    max_concurrent: int = DEFAULT_MAX_CONCURRENT  # optimizations running at once

    def check_work(self, system: SystemSpec) -> None:
        """422 when ``system`` asks for more sizing than one request may."""
        why = sizing_work(system).too_large(max_pairs=self.max_pairs, max_states=self.max_states)
        if why is not None:
            raise ApiError(422, "request too large", [why])


class Slots:
    """At most ``n`` optimizations at once; a slot frees when its thread ends, so work
    abandoned at the time limit still counts until it is really done."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._sem: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # created in the server's loop, on first use
            self._sem = asyncio.Semaphore(self.n)
        return self._sem

    async def run(self, fn: Callable[[], T], *, seconds: float) -> T:
        """``fn()`` in a worker thread; 503 when no slot frees or it runs past ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        sem = self._semaphore()
        try:
            await asyncio.wait_for(sem.acquire(), timeout=seconds)
        except TimeoutError:
            raise ApiError(
                503, f"server busy: {self.n} optimizations running for over {seconds:g}s; "
                "retry later",
            ) from None
        future = loop.run_in_executor(None, fn)
        future.add_done_callback(lambda _: sem.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=deadline - loop.time())
        except TimeoutError:
            future.add_done_callback(_swallow)  # its result (or error) is nobody's now
            raise ApiError(
                503, f"the optimization did not finish within the {seconds:g}s request time "
                "limit; send a smaller system or a lower timeLimit",
            ) from None


def _swallow(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
