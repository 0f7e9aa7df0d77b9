"""Pending-aware placement: back off from (server, accelerator) pairs that do not schedule.

Unschedulable pods already count against their type's capacity: capacity is
charged by ``spec.replicas``, which includes them. What this adds: when a
placement keeps pods ``Unschedulable`` for longer than
``pending.unschedulableAfterSeconds`` (the cluster has no room there whatever
the capacity file says), it is backed off for ``pending.backoffSeconds``:

* desired replicas there are capped at the pods that are not stuck
  (``spec.replicas - unschedulable``): asking for more only queues more pods;
* the accelerator leaves the server's allowed accelerators, so the optimizer
  looks elsewhere (moves still need a nodeSelector and the move interval).

State is per process (a restarted controller re-learns within one
``unschedulableAfterSeconds``).
"""

from __future__ import annotations

import logging

from controlloop.loop.settings import PendingConfig
from controlloop.loop.state import ManagedServer

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (namespace/deployment, accelerator)


class PendingTracker:
    def __init__(self) -> None:
        self._since: dict[Pair, float] = {}  # first cycle seen with unschedulable pods
        self._until: dict[Pair, float] = {}  # back-off end
        self.now = 0.0

    def observe(
        self,
        ms: ManagedServer,
        accelerator: str,
        now: float,
        cfg: PendingConfig,
        unschedulable: int | None = None,
    ) -> None:
        """Record this cycle's unschedulable count of ``ms`` on ``accelerator``
        (``unschedulable``: only the pods of that placement, during a move)."""
        self.now = now
        pair = (ms.key, accelerator)
        if not accelerator:
            return
        stuck = ms.unschedulable_pods if unschedulable is None else unschedulable
        if stuck <= 0:
            self._since.pop(pair, None)
            return
        since = self._since.setdefault(pair, now)
        if now - since >= cfg.unschedulable_after_seconds and not self.backed_off(*pair):
            self._until[pair] = now + cfg.backoff_seconds
            log.warning(
                "%s: %d pod(s) unschedulable on %s for %.0fs: backing off that placement "
                "for %.0fs", ms.key, stuck, accelerator, now - since,
                cfg.backoff_seconds, extra={"server": ms.name},
            )

    def backed_off(self, key: str, accelerator: str) -> bool:
        until = self._until.get((key, accelerator))
        if until is None:
            return False
        if self.now >= until:
            del self._until[(key, accelerator)]
            self._since.pop((key, accelerator), None)  # a fresh chance: time it again
            return False
        return True

    def excluded(self, key: str) -> set[str]:
        """Accelerators backed off for this server now."""
        return {acc for k, acc in list(self._until) if k == key and self.backed_off(k, acc)}

    def cap(self, ms: ManagedServer, accelerator: str) -> int | None:
        """Most replicas to ask for on ``accelerator``; None when not backed off."""
        if not self.backed_off(ms.key, accelerator):
            return None
        return max(0, ms.replicas - ms.unschedulable_pods)

    def forget(self, keys: set[str]) -> None:
        """Drop servers that no longer exist (bounded memory)."""
        for table in (self._since, self._until):
            for pair in [p for p in table if p[0] not in keys]:
                del table[pair]
