"""The surge fast path: Knative KPA's panic mode for SLO-sized servers (pure; time passed in).

Between cycles a cheap check looks at each server's *signal* -- arrival rate,
waiting and running requests, KV-cache usage, ready replicas -- against what
its ready replicas can serve within the SLO (``rate_per_replica`` of the last
cycle's sizing: the largest per-replica rate that meets the SLOs). A server
about to miss its SLO is *panicking*: the controller runs a cycle at once, and
for ``windowSeconds`` after its last panic condition the server may scale up
but not down (as KPA never scales down in panic, to avoid churn on a burst).
"""

from __future__ import annotations

from dataclasses import dataclass

from controlloop.loop.settings import PanicConfig
from controlloop.loop.state import ManagedServer


@dataclass(frozen=True)
class SurgeSignal:
    """What the cheap check reads of one server (``None``: not known)."""

    ready: int
    accelerator: str = ""
    rate_rpm: float | None = None  # recent arrivals
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None


@dataclass(frozen=True)
class Panic:
    kind: str  # capacity | waiting | kv-cache: a label for metrics
    why: str


def panic_condition(
    signal: SurgeSignal, rate_per_replica_rpm: float | None, cfg: PanicConfig
) -> Panic | None:
    """Why the server is about to miss its SLO (None when it is not, or not known)."""
    if not cfg.enabled:
        return None
    ready = max(signal.ready, 0)
    if rate_per_replica_rpm and signal.rate_rpm is not None:
        capacity = ready * rate_per_replica_rpm
        if signal.rate_rpm > cfg.capacity_threshold * capacity:
            return Panic("capacity", (
                f"arrivals {signal.rate_rpm:.0f} req/min > {cfg.capacity_threshold:g} x the SLO "
                f"capacity of {ready} ready replica(s) ({capacity:.0f} req/min)"))
    if signal.waiting is not None and signal.waiting >= cfg.waiting_per_replica * max(ready, 1):
        return Panic("waiting", (
            f"{signal.waiting:.0f} requests waiting >= {cfg.waiting_per_replica:g} per ready "
            f"replica ({ready})"))
    if signal.kv_cache_usage is not None and signal.kv_cache_usage >= cfg.kv_cache_usage:
        return Panic("kv-cache", (
            f"KV cache {signal.kv_cache_usage:.0%} full >= {cfg.kv_cache_usage:.0%}"))
    return None


def signal_of(ms: ManagedServer) -> SurgeSignal | None:
    """The signal in a server's collected load (None when the load is unknown)."""
    load = ms.load
    if not load.known or load.source == "labels":
        return None
    return SurgeSignal(
        ready=ms.ready_replicas, accelerator=ms.accelerator, rate_rpm=load.arrival_rate_rpm,
        waiting=load.waiting, running=load.running, kv_cache_usage=load.kv_cache_usage,
    )


class PanicState:
    """Per server: until when it panics, and why (the last panic condition)."""

    def __init__(self) -> None:
        self._until: dict[str, tuple[float, str]] = {}

    def enter(self, key: str, now: float, why: str, window_s: float) -> None:
        """A panic condition now: no scale-down until ``window_s`` after it."""
        self._until[key] = (now + window_s, why)

    def active(self, key: str, now: float) -> tuple[float, str] | None:
        """(until, why) while ``key`` panics, else None."""
        got = self._until.get(key)
        if got is None or now >= got[0]:
            return None
        return got

    def panicking(self, now: float) -> list[str]:
        return sorted(k for k, (until, _) in self._until.items() if now < until)

    def forget(self, live: set[str]) -> None:
        for key in [k for k in self._until if k not in live]:
            del self._until[key]
