"""Leader election on a coordination.k8s.io/v1 Lease (the client-go protocol).

Only the leader actuates; followers keep running cycles in observe-only mode
and stay ready, so a take-over needs no restart.

* acquire when the Lease is absent, released (empty holder) or expired;
* expiry is judged on *our* clock: a record is expired when it has not
  changed for ``leaseDurationSeconds`` since we first saw it (as client-go
  does), so skew between the replicas' clocks does not matter;
* the leader renews every ``retryPeriodSeconds``; if no renewal succeeded for
  ``renewDeadlineSeconds`` it stops leading (before the lease can expire for
  the others, given renewDeadline < leaseDuration);
* every write is a PUT carrying the resourceVersion we read: a 409 means
  someone else wrote first, and we lost that round.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from controlloop.cluster.kube_errors import Conflict, KubeError, NotFound
from controlloop.loop.settings import LeaderElectionConfig

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class LeaseClient(Protocol):
    def get_lease(self, ns: str, name: str) -> Obj: ...

    def create_lease(self, ns: str, body: Obj) -> Obj: ...

    def replace_lease(self, ns: str, name: str, body: Obj) -> Obj: ...


def default_identity() -> str:
    host = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"


def micro_time(t: float) -> str:
    """A Kubernetes MicroTime, e.g. ``2026-01-01T00:00:00.000000Z``."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Background lease holder; ``is_leader()`` is cheap and thread-safe.

    ``clock`` gives wall time for the Lease's timestamps, ``monotonic`` the
    local time used for every expiry decision (both injectable for tests).
    """

    def __init__(
        self,
        kube: LeaseClient,
        config: LeaderElectionConfig,
        *,
        on_change: Callable[[bool], Any] | None = None,
        identity: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.renew_deadline_seconds >= config.lease_duration_seconds:
            log.warning("leaderElection: renewDeadlineSeconds should be < leaseDurationSeconds")
        self.kube = kube
        self.config = config
        self.identity = identity or default_identity()
        self.on_change = on_change
        self.clock = clock
        self.monotonic = monotonic
        self._leader = False
        self._last_renew = -float("inf")  # monotonic time of our last successful write
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- public ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()
        log.info("leader election: %s as %s", self._where, self.identity)

    def stop(self, *, release: bool = True) -> None:
        """Stop renewing; ``release`` hands the lease over at once (empty holder)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.retry_period_seconds + 5)
        if release and self.is_leader():
            self._release()
        self._set_leader(False)

    def is_leader(self) -> bool:
        with self._lock:
            # Leading only while the last renewal is fresh: a stalled thread must not
            # leave us acting after the others may have taken over.
            fresh = self.monotonic() - self._last_renew < self.config.renew_deadline_seconds
            return self._leader and fresh

    # --- one round ---------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt; returns whether we lead afterwards. Never raises on API errors."""
        cfg = self.config
        try:
            try:
                lease = self.kube.get_lease(cfg.namespace, cfg.lease_name)
            except NotFound:
                self.kube.create_lease(cfg.namespace, self._body(None))
                return self._won("created the lease")
            spec = lease.get("spec") or {}
            holder = str(spec.get("holderIdentity") or "")
            record = (holder, str(spec.get("renewTime") or ""))
            now = self.monotonic()
            if record != self._observed:
                self._observed, self._observed_at = record, now
            duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration_seconds)
            expired = now - self._observed_at >= duration
            if holder and holder != self.identity and not expired:
                return self._lost(f"held by {holder}")
            self.kube.replace_lease(cfg.namespace, cfg.lease_name, self._body(lease))
            return self._won("renewed" if holder == self.identity else f"took over from {holder!r}")
        except Conflict:
            return self._lost("lost a write race (409)")
        except KubeError as exc:
            log.warning("leader election: %s", exc)
            if self._leader and self.monotonic() - self._last_renew >= cfg.renew_deadline_seconds:
                return self._lost(f"could not renew within {cfg.renew_deadline_seconds:g}s")
            return self.is_leader()

    # --- internals ---------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"lease {self.config.namespace}/{self.config.lease_name}"

    def _body(self, lease: Obj | None) -> Obj:
        now = micro_time(self.clock())
        spec = dict((lease or {}).get("spec") or {})
        mine = spec.get("holderIdentity") == self.identity
        if not mine:
            spec["acquireTime"] = now
            if lease is not None:
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.setdefault("leaseTransitions", 0)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(round(self.config.lease_duration_seconds)) or 1,
            renewTime=now,
        )
        if lease is None:
            meta: Obj = {"name": self.config.lease_name, "namespace": self.config.namespace}
        else:
            meta = dict(lease["metadata"])  # keeps resourceVersion: optimistic concurrency
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": spec}

    def _won(self, how: str) -> bool:
        with self._lock:
            self._last_renew = self.monotonic()
        if not self._leader:
            log.info("leader election: %s; now leading (%s)", how, self._where)
        self._set_leader(True)
        return True

    def _lost(self, why: str) -> bool:
        if self._leader:
            log.warning("leader election: no longer leading: %s", why)
        self._set_leader(False)
        return False

    def _set_leader(self, value: bool) -> None:
        with self._lock:
            changed = value != self._leader
            self._leader = value
        if changed and self.on_change is not None:
            try:
                self.on_change(value)
            except Exception:  # noqa: BLE001 - a metrics hook must not stop the elector
                log.exception("leader election: on_change hook failed")

    def _release(self) -> None:
        cfg = self.config
        try:
            lease = self.kube.get_lease(cfg.namespace, cfg.lease_name)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1,
                                 renewTime=micro_time(self.clock()))
            self.kube.replace_lease(cfg.namespace, cfg.lease_name, lease)
            log.info("leader election: released %s", self._where)
        except KubeError as exc:
            log.warning("leader election: could not release the lease: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception:  # noqa: BLE001 - the elector thread must survive anything
                log.exception("leader election round failed")
            self._stop.wait(self.config.retry_period_seconds)
