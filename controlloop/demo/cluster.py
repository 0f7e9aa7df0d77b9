"""An emulated cluster: the Collector and Actuator of the demo, in simulated time.

Each managed server is a Deployment whose replicas are token-level simulated
vLLM replicas (:class:`controlloop.sim.ReplicaSimulator`, docs/model-spec.md section 7).
Life of a replica: ``pending`` (no free cards of its type; it serves nothing)
-> ``starting`` (scheduled, holds its cards, loads the model for
``startup_s``) -> ``serving`` (receives its share of the load). The load
balancer splits arrivals round robin over the serving replicas.

Pod removal follows Kubernetes and vLLM (:class:`Termination`): a removed pod
leaves the endpoints at once and hands its queued requests back (they are
re-routed, as a gateway retries them, or lost when no replica is left); its
running generations go on through the ``preStop`` hook and, when vLLM drains
(``--shutdown-timeout``), after SIGTERM, until the grace period ends; whatever
still runs then is dropped and counted (``dropped``). A terminating pod holds
its cards until it is gone. Scale-down victims are chosen like the ReplicaSet
controller: pending, then not ready, then the lowest
``controller.kubernetes.io/pod-deletion-cost``, then the newest.

Simplifications (on purpose, documented in docs/demo.md): an accelerator move
rolls out like a Deployment with ``maxUnavailable: 0`` whatever the move
strategy -- an old replica is retired only while more replicas serve than the
Deployment asks for; a batch relabel applies to replicas created afterwards;
endpoint removal is instantaneous.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controlloop.cluster.actuator import build_patch
from controlloop.demo.loadscript import LoadProfile
from controlloop.loop.settings import (
    DELETION_COST,
    LABEL_ACCELERATOR,
    LABEL_CLASS,
    LABEL_MAX_BATCH,
    LABEL_MODEL,
    LABEL_NAME,
    MANAGED_LABEL,
    ActuationConfig,
)
from controlloop.loop.state import (
    Action,
    ActionResult,
    ClusterState,
    ManagedServer,
    ObservedLoad,
    Rollout,
)
from controlloop.loop.surge import SurgeSignal
from controlloop.model.perf import batch_size
from controlloop.sim import ReplicaParams, ReplicaSimulator, ReplicaStats, poisson_arrivals
from controlloop.specs import ServerSpec, SystemSpec

SLICE_S = 10.0  # arrivals are drawn per slice at the rate of its midpoint


@dataclass(frozen=True)
class Termination:
    """How a removed pod ends (the Deployment's pod template and vLLM's flags).

    ``pre_stop_s``: the ``preStop`` hook's sleep (running requests go on meanwhile);
    ``drain_s``: vLLM's ``--shutdown-timeout`` (0, vLLM's default: SIGTERM aborts
    the running requests); ``grace_s``: ``terminationGracePeriodSeconds`` (SIGKILL).
    The defaults are Kubernetes' and vLLM's: running requests are dropped at once.
    """

    pre_stop_s: float = 0.0
    drain_s: float = 0.0
    grace_s: float = 30.0

    @property
    def kill_after_s(self) -> float:
        """Seconds after deletion at which whatever still runs is dropped."""
        return min(self.grace_s, self.pre_stop_s + self.drain_s)




@dataclass
class _Terminating:
    """A deleted pod finishing its running requests until ``kill_at``."""

    sim: ReplicaSimulator
    acc_type: str
    cards: int
    kill_at: float
    deleted_at: float


@dataclass
class _Replica:
    name: str
    accelerator: str
    acc_type: str
    cards: int
    batch: int
    seq: int  # creation order: the scheduler is FIFO
    state: str = "pending"  # pending | starting | serving
    ready_at: float = math.inf  # seconds
    sim: ReplicaSimulator | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def deletion_cost(self) -> int:
        """The pod-deletion-cost annotation; 0 when absent or not an int32 (as kube does)."""
        try:
            return int(self.annotations.get(DELETION_COST, "0"))
        except ValueError:
            return 0


@dataclass
class _Window:
    """What the server's replicas did since the last collect()."""

    offered: int = 0
    lost: int = 0  # refused by a full replica, or no replica to take it
    dropped: int = 0  # running when their pod was killed
    completed: int = 0
    ttft_sum: float = 0.0
    ttft_n: int = 0
    wait_sum: float = 0.0
    wait_n: int = 0
    decode_tokens: int = 0
    decode_time: float = 0.0
    service_area: float = 0.0  # request*ms
    system_area: float = 0.0

    def add(self, st: ReplicaStats) -> None:
        self.lost += st.lost
        self.completed += st.completed
        self.ttft_sum += float(st.ttft_ms.sum())
        self.ttft_n += int(st.ttft_ms.size)
        self.wait_sum += float(st.wait_ms.sum())
        self.wait_n += int(st.wait_ms.size)
        self.decode_tokens += st.decode_tokens
        self.decode_time += st.decode_time_ms
        self.service_area += st.in_service_area
        self.system_area += st.in_system_area


@dataclass
class ServerObservation:
    """The last window of one server, richer than ObservedLoad (for the report)."""

    rate_rpm: float = 0.0
    offered: int = 0
    lost: int = 0
    dropped: int = 0  # running generations killed with their pod
    completed: int = 0
    itl_ms: float | None = None
    ttft_ms: float | None = None
    wait_ms: float | None = None
    running: float = 0.0
    waiting: float = 0.0


@dataclass
class _Server:
    spec: ServerSpec
    deployment: str
    profile: LoadProfile
    nominal_rpm: float
    in_tokens: int
    out_tokens: int
    rng: np.random.Generator
    accelerator: str = ""
    max_batch: int = 0
    replicas: list[_Replica] = field(default_factory=list)
    retiring: list[_Replica] = field(default_factory=list)  # old accelerator, still serving
    terminating: list[_Terminating] = field(default_factory=list)  # finishing in-flight
    rr: int = 0
    generation: int = 1
    annotations: dict[str, str] = field(default_factory=dict)
    strategy: dict[str, Any] | None = None
    window: _Window = field(default_factory=_Window)
    window_start: float = 0.0
    probe_offered: int = 0  # arrivals since the last probe (the surge check's short window)
    probe_start: float = 0.0
    last: ServerObservation = field(default_factory=ServerObservation)
    last_load: ObservedLoad = ObservedLoad("unknown", "no window observed yet", source="emulator")

    @property
    def name(self) -> str:
        return self.spec.name

    def serving(self) -> list[_Replica]:
        return [r for r in (*self.replicas, *self.retiring) if r.state == "serving"]

    def sims(self) -> Iterable[ReplicaSimulator]:
        for r in (*self.replicas, *self.retiring):
            if r.sim is not None:
                yield r.sim
        yield from (t.sim for t in self.terminating)


class EmulatedCluster:
    """Managed Deployments of namespace ``namespace``, one per server, in simulated time.

    ``capacity`` is cards per accelerator type (``None``: unlimited, the cloud).
    ``rate_fn`` (tests) replaces the load profiles: ``rate_fn(server, t_s) -> req/min``.
    ``termination``: how removed pods end (default: Kubernetes' and vLLM's defaults).
    """

    def __init__(
        self,
        system: SystemSpec,
        profiles: dict[str, LoadProfile],
        *,
        capacity: dict[str, int] | None,
        startup_s: float = 120.0,
        seed: int = 1,
        namespace: str = "demo",
        rate_fn: Callable[[str, float], float] | None = None,
        truth: Callable[[str, str], dict[str, float]] | None = None,
        termination: Termination | None = None,
    ) -> None:
        self.system = system
        # Multipliers of the replicas' perf parameters per (model, accelerator): servers
        # that differ from the profile the controller reads (scenario ``truth:``).
        self.truth = truth
        self.termination = termination or Termination()
        self.dropped_total = 0  # running requests dropped by pod removals since the start
        self.removed_running = 0  # pods removed while they ran requests
        self.longest_drain_s = 0.0  # deletion to exit, longest seen
        self.capacity = dict(capacity) if capacity is not None else None
        self.startup_s = startup_s
        self.namespace = namespace
        self.rate_fn = rate_fn
        self._t = 0.0
        self._seq = itertools.count()
        self._rv = itertools.count(1)
        seeds = np.random.SeedSequence(seed).spawn(len(system.servers))
        self.servers: dict[str, _Server] = {}
        for spec, ss in zip(system.servers, seeds, strict=True):
            profile = profiles.get(spec.name, LoadProfile(phases=()))
            in_tok = profile.in_tokens if profile.in_tokens is not None else spec.load.avg_in_tokens
            out_tok = (
                profile.out_tokens if profile.out_tokens is not None else spec.load.avg_out_tokens
            )
            self.servers[spec.name] = _Server(
                spec=spec,
                deployment=_dns_name(spec.name),
                profile=profile,
                nominal_rpm=spec.load.arrival_rate,
                in_tokens=max(0, round(in_tok)),
                out_tokens=max(1, round(out_tok)),
                rng=np.random.default_rng(ss),
            )
        self._by_deployment = {s.deployment: s for s in self.servers.values()}

    # --- time -----------------------------------------------------------------------------

    def now_s(self) -> float:
        """Simulated clock (seconds): pass it to the Controller as ``clock``."""
        return self._t

    def scripted_rate(self, server: str, t_s: float) -> float:
        """The load script's noise-free rate (req/min) of ``server`` at ``t_s``."""
        if self.rate_fn is not None:
            return self.rate_fn(server, t_s)
        s = self.servers[server]
        return s.profile.rate_at(t_s, s.nominal_rpm)

    def advance(self, seconds: float) -> None:
        """Run every replica forward by ``seconds``, feeding it Poisson arrivals."""
        end = self._t + seconds
        while self._t < end - 1e-9:
            nxt = min(end, self._t + SLICE_S, self._next_ready(), self._next_kill())
            if nxt <= self._t:  # an event is due now
                nxt = min(end, self._t + SLICE_S)
            gone = False
            for s in self.servers.values():
                self._feed(s, self._t, nxt)
                for sim in s.sims():
                    sim.advance(nxt * 1000.0)
                left = [t for t in s.terminating if not self._finished(s, t, nxt)]
                gone = gone or len(left) < len(s.terminating)
                s.terminating = left
            self._t = nxt
            self._events()
            if gone:
                self._schedule()  # their cards are free now

    def _next_kill(self) -> float:
        times = [t.kill_at for s in self.servers.values() for t in s.terminating]
        return min((k for k in times if k > self._t), default=math.inf)

    def _finished(self, s: _Server, t: _Terminating, now: float) -> bool:
        """A deleted pod that has drained, or is killed now: count its last stats."""
        if not t.sim.is_idle and now >= t.kill_at - 1e-9:
            dropped = t.sim.close(drop_in_flight=True).dropped_in_flight
            s.window.dropped += dropped
            self.dropped_total += dropped
        if not t.sim.is_idle:
            return False
        s.window.add(t.sim.drain_stats())
        self.longest_drain_s = max(self.longest_drain_s, now - t.deleted_at)
        return True

    def _next_ready(self) -> float:
        times = [
            r.ready_at
            for s in self.servers.values()
            for r in s.replicas
            if r.state == "starting" and r.ready_at > self._t
        ]
        return min(times, default=math.inf)

    def _feed(self, s: _Server, t0: float, t1: float) -> None:
        rate = self.scripted_rate(s.name, (t0 + t1) / 2)
        if s.profile.noise > 0 and self.rate_fn is None:
            rate *= max(0.0, 1.0 + s.profile.noise * float(s.rng.standard_normal()))
        arrivals = poisson_arrivals(
            s.rng, rate_per_ms=rate / 60000.0, start_ms=t0 * 1000.0, end_ms=t1 * 1000.0
        )
        if arrivals.size == 0:
            return
        s.window.offered += int(arrivals.size)
        s.probe_offered += int(arrivals.size)
        serving = s.serving()
        if not serving:
            s.window.lost += int(arrivals.size)
            return
        n = len(serving)
        for k, rep in enumerate(serving):
            share = arrivals[(k - s.rr) % n :: n]
            if share.size:
                assert rep.sim is not None
                rep.sim.offer(share)
        s.rr = (s.rr + int(arrivals.size)) % n

    def _events(self) -> None:
        """Replicas whose start-up ended serve; old replicas retire as new ones serve."""
        freed = False
        for s in self.servers.values():
            for r in s.replicas:
                if r.state == "starting" and r.ready_at <= self._t + 1e-9:
                    r.state = "serving"
                    r.sim = ReplicaSimulator(
                        self._params(s, r.accelerator, r.batch), start_ms=self._t * 1000.0
                    )
            # maxUnavailable 0: retire an old replica only while more than spec serve.
            surplus = len(s.serving()) - len(s.replicas)
            if s.retiring and surplus > 0:
                old = sorted(s.retiring, key=lambda r: (r.deletion_cost(), r.seq))[:surplus]
                s.retiring = [r for r in s.retiring if r not in old]
                self._remove(s, old)
                freed = True
        if freed:
            self._schedule()

    # --- replicas ---------------------------------------------------------------------------

    def _params(self, s: _Server, accelerator: str, batch: int) -> ReplicaParams:
        perf = self.system.perf(s.spec.model, accelerator)
        if perf is None or perf.decode_parms is None or perf.prefill_parms is None:
            raise ValueError(f"{s.name}: no decode/prefill perf data for {accelerator}")
        m = self.truth(s.spec.model, accelerator) if self.truth is not None else {}
        return ReplicaParams(
            alpha=perf.decode_parms.alpha * m.get("alpha", 1.0),
            beta=perf.decode_parms.beta * m.get("beta", 1.0),
            gamma=perf.prefill_parms.gamma * m.get("gamma", 1.0),
            delta=perf.prefill_parms.delta * m.get("delta", 1.0),
            batch=batch, in_tokens=s.in_tokens, out_tokens=s.out_tokens,
        )

    def derived_batch(self, server: str, accelerator: str) -> int:
        """The optimizer's batch: the override, else max(1, floor(maxBatchSize*atTokens/K))."""
        s = self.servers[server]
        perf = self.system.perf(s.spec.model, accelerator)
        if perf is None:
            return s.spec.max_batch_size or 1
        return int(batch_size(perf.max_batch_size, perf.at_tokens, s.out_tokens,
                              override=s.spec.max_batch_size or 0)[0])

    def _new_replica(self, s: _Server, accelerator: str, batch: int) -> _Replica:
        acc = self.system.accelerator(accelerator)
        cards = self.system.cards_per_replica(s.spec.model, accelerator)
        if acc is None or not cards:
            raise ValueError(f"{s.name}: cannot run on accelerator '{accelerator}'")
        seq = next(self._seq)
        return _Replica(
            name=f"{s.deployment}-{seq:05d}", accelerator=accelerator, acc_type=acc.type,
            cards=cards, batch=batch, seq=seq,
        )

    def used_cards(self) -> dict[str, int]:
        """Cards held: scheduled replicas and deleted pods still terminating."""
        used: dict[str, int] = {}
        for s in self.servers.values():
            for r in (*s.replicas, *s.retiring):
                if r.state != "pending":
                    used[r.acc_type] = used.get(r.acc_type, 0) + r.cards
            for t in s.terminating:
                used[t.acc_type] = used.get(t.acc_type, 0) + t.cards
        return used

    def _schedule(self, *, ready_now: bool = False) -> None:
        """FIFO scheduler: a pending replica starts when its type has free cards."""
        used = self.used_cards()
        pending = sorted(
            (r for s in self.servers.values() for r in s.replicas if r.state == "pending"),
            key=lambda r: r.seq,
        )
        for r in pending:
            if self.capacity is not None:
                free = self.capacity.get(r.acc_type, 0) - used.get(r.acc_type, 0)
                if free < r.cards:
                    continue
            used[r.acc_type] = used.get(r.acc_type, 0) + r.cards
            r.state = "starting"
            r.ready_at = self._t + (0.0 if ready_now else self.startup_s)
        if ready_now:
            self._events()

    def _remove(self, s: _Server, gone: list[_Replica]) -> None:
        """Delete pods: queued requests are re-routed, running ones end as ``termination`` says."""
        for r in gone:
            if r in s.replicas:
                s.replicas.remove(r)
        for r in gone:
            if r.sim is None:
                continue
            unserved = r.sim.close()
            if r.sim.in_service:
                self.removed_running += 1
            term = _Terminating(r.sim, r.acc_type, r.cards,
                                kill_at=self._t + self.termination.kill_after_s,
                                deleted_at=self._t)
            if not self._finished(s, term, self._t):
                s.terminating.append(term)
            r.sim = None
            r.state = "removed"
            if len(unserved) == 0:
                continue
            serving = s.serving()
            if not serving:
                s.window.lost += len(unserved)
                continue
            for k, rep in enumerate(serving):
                assert rep.sim is not None
                idx = slice(k, None, len(serving))
                rep.sim.offer(
                    np.maximum(unserved.arrival_ms[idx], rep.sim.now_ms),
                    in_tokens=unserved.in_tokens[idx], out_tokens=unserved.out_tokens[idx],
                    origin_ms=unserved.origin_ms[idx],
                )

    def _scale(self, s: _Server, replicas: int) -> None:
        have = len(s.replicas)
        if replicas > have:
            for _ in range(replicas - have):
                s.replicas.append(self._new_replica(s, s.accelerator, s.max_batch))
        elif replicas < have:
            # Like a ReplicaSet (kube's ActivePodsWithRanks): pending first, then not ready,
            # then the lowest pod-deletion-cost, then the newest.
            order = {"pending": 0, "starting": 1, "serving": 2}
            victims = sorted(
                s.replicas, key=lambda r: (order[r.state], r.deletion_cost(), -r.seq)
            )[: have - replicas]
            self._remove(s, victims)

    def place(self, server: str, accelerator: str, replicas: int, batch: int = 0) -> None:
        """Initial state: ``replicas`` already serving on ``accelerator`` (capacity permitting)."""
        s = self.servers[server]
        s.accelerator = accelerator
        s.max_batch = batch or self.derived_batch(server, accelerator)
        for _ in range(replicas):
            s.replicas.append(self._new_replica(s, accelerator, s.max_batch))
        self._schedule(ready_now=True)

    # --- Collector ----------------------------------------------------------------------------

    def probe(self) -> dict[str, SurgeSignal]:
        """The surge check's cheap read: arrivals since the last probe, and the gauges now
        (waiting and running requests of the serving replicas), as a short-window query
        would give them. Leaves the cycle's observation window alone."""
        out: dict[str, SurgeSignal] = {}
        for s in self.servers.values():
            duration = self._t - s.probe_start
            serving = [r.sim for r in s.serving() if r.sim is not None]
            out[f"{self.namespace}/{s.deployment}"] = SurgeSignal(
                ready=sum(1 for r in s.replicas if r.state == "serving"),
                accelerator=s.accelerator,
                rate_rpm=s.probe_offered / (duration / 60.0) if duration > 0 else None,
                waiting=float(sum(sim.queue_len for sim in serving)),
                running=float(sum(sim.in_service for sim in serving)),
            )
            s.probe_offered, s.probe_start = 0, self._t
        return out

    def collect(self) -> ClusterState:
        return ClusterState(servers=tuple(self._managed(s) for s in self.servers.values()))

    def _managed(self, s: _Server) -> ManagedServer:
        self._observe(s)
        acc = self.system.accelerator(s.accelerator) if s.accelerator else None
        labels = {
            MANAGED_LABEL: "true", LABEL_NAME: s.name, LABEL_MODEL: s.spec.model,
            LABEL_CLASS: s.spec.service_class,
        }
        if s.accelerator:
            labels[LABEL_ACCELERATOR] = s.accelerator
            labels[LABEL_MAX_BATCH] = str(s.max_batch)
        pending = sum(1 for r in s.replicas if r.state == "pending")
        return ManagedServer(
            namespace=self.namespace, deployment=s.deployment, name=s.name, model=s.spec.model,
            service_class=s.spec.service_class, accelerator=s.accelerator,
            max_batch=s.max_batch, replicas=len(s.replicas),
            ready_replicas=sum(1 for r in s.replicas if r.state == "serving"),
            pending_pods=pending, unschedulable_pods=pending,
            unschedulable_by_accelerator={s.accelerator: pending} if pending else {},
            running_pods=tuple(r.name for r in s.replicas if r.state != "pending"),
            # vllm:num_requests_running per pod, as a scrape right now would read it
            pod_running={r.name: float(r.sim.in_service) for r in s.replicas if r.sim is not None},
            load=s.last_load, labels=labels, resource_version=str(s.generation),
            generation=s.generation,
            node_selector=dict(acc.node_selector) if acc is not None and acc.node_selector else {},
            annotations=dict(s.annotations), strategy=s.strategy,
            rollout=Rollout(
                replicas=len(s.replicas), generation=s.generation, observed_generation=s.generation,
                status_replicas=len(s.replicas) + len(s.retiring), updated_replicas=len(s.replicas),
                available_replicas=len(s.serving()),
            ),
        )

    def _observe(self, s: _Server) -> None:
        """Close the server's window: ObservedLoad as a vLLM /metrics scrape would give it."""
        duration = self._t - s.window_start
        if duration <= 0:
            return  # nothing new since the last collect: keep the last observation
        w = s.window
        for sim in s.sims():
            w.add(sim.drain_stats())
        rate = w.offered / (duration / 60.0)
        dur_ms = duration * 1000.0
        obs = ServerObservation(
            rate_rpm=rate, offered=w.offered, lost=w.lost, dropped=w.dropped,
            completed=w.completed,
            itl_ms=w.decode_time / w.decode_tokens if w.decode_tokens else None,
            ttft_ms=w.ttft_sum / w.ttft_n if w.ttft_n else None,
            wait_ms=w.wait_sum / w.wait_n if w.wait_n else None,
            running=w.service_area / dur_ms,
            waiting=max(0.0, w.system_area - w.service_area) / dur_ms,
        )
        s.last = obs
        s.last_load = ObservedLoad(
            status="ok" if w.offered else "idle",
            arrival_rate_rpm=rate,
            avg_in_tokens=float(s.in_tokens),
            avg_out_tokens=float(s.out_tokens),
            itl_ms=obs.itl_ms, ttft_ms=obs.ttft_ms, running=obs.running, waiting=obs.waiting,
            source="emulator",
        )
        s.window = _Window()
        s.window_start = self._t

    # --- Actuator -----------------------------------------------------------------------------

    def apply(self, actions: list[Action]) -> list[ActionResult]:
        results = [self._apply_one(a) for a in actions]
        self._schedule()
        return results

    def _apply_one(self, action: Action) -> ActionResult:
        s = self._by_deployment.get(action.deployment)
        if s is None or action.namespace != self.namespace:
            return ActionResult(
                action, ok=False, sent=True, error=f"deployment {action.namespace}/"
                f"{action.deployment} not found", error_kind="not-found",
            )
        # The patch the real actuator would send (the emulator applies its meaning below).
        patch = build_patch(action, None, ActuationConfig())
        if action.placement is not None:
            p = action.placement
            if self.system.perf(s.spec.model, p.accelerator) is None:
                return ActionResult(
                    action, ok=False, sent=True, error_kind="invalid",
                    error=f"{s.name} has no perf data on {p.accelerator}",
                )
            # Make-before-break: serving replicas stay until the new ones serve.
            s.retiring.extend(r for r in s.replicas if r.state == "serving")
            self._remove(s, [r for r in s.replicas if r.state != "serving"])
            s.replicas = []
            s.accelerator = p.accelerator
            s.max_batch = p.max_batch or self.derived_batch(s.name, p.accelerator)
        elif action.max_batch is not None:
            s.max_batch = action.max_batch
        if action.strategy is not None:
            s.strategy = dict(action.strategy)
        for key, value in action.annotations.items():
            if value is None:
                s.annotations.pop(key, None)
            else:
                s.annotations[key] = value
        # Pods are annotated before the replicas change, as the real actuator does.
        by_name = {r.name: r for r in s.replicas}
        for pod, cost in action.pod_deletion_cost.items():
            if pod in by_name:
                by_name[pod].annotations[DELETION_COST] = str(cost)
        self._scale(s, action.replicas)
        s.generation = next(self._rv) + 1
        return ActionResult(action, ok=True, sent=True, patch=patch)

    # --- for the report -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per server: accelerator, replicas by state, batch and the last window."""
        out: dict[str, dict[str, Any]] = {}
        for s in self.servers.values():
            states = [r.state for r in s.replicas]
            out[s.name] = {
                "accelerator": s.accelerator,
                "batch": s.max_batch,
                "replicas": len(s.replicas),
                "serving": states.count("serving") + len(s.retiring),
                "starting": states.count("starting"),
                "pending": states.count("pending"),
                "retiring": len(s.retiring),
                "terminating": len(s.terminating),
                "scriptedRpm": self.scripted_rate(s.name, self._t),
                "observed": s.last.__dict__.copy(),
            }
        return out


def _dns_name(name: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return out[:63] or "server"
