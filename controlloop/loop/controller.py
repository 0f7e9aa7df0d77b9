"""Controller.run_cycle(): collect -> optimize -> decide -> actuate -> record.

The scheduler, ``run --once``, the demo and the tests all call ``run_cycle``.
Safety rules applied here (each shows up as a "held" reason in the report):

* unknown load (metrics absent, NaN, stale, Prometheus down) → leave as is;
* a Deployment an HPA/KEDA ScaledObject targets → leave it alone;
* replicas changed by someone else since our last decision → hold for a while;
* unallocated by the optimizer → keep current (scale to zero only if allowed);
* accelerator without a nodeSelector → never moved to; moves rate-limited;
* moves are make-before-break (controlloop/loop/moves.py): while one rolls out the
  server is held; a move whose pods cannot schedule is rolled back;
* held servers keep their cards: they count against capacity.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from controlloop.loop.annotations import BehaviorResolver  # per-Deployment overrides
from controlloop.loop.behavior import Stabilizer
from controlloop.loop.capacity import (
    available_capacity,
    current_accelerator,
    current_cost,
    fit_capacity,
)
from controlloop.loop.cycle import (  # re-exported: the cycle's API
    CycleReport,
    ServerReport,
    SpecSource,
    StaticSpecs,
)
from controlloop.loop.decide import CycleContext, decide, placement, sizing_request
from controlloop.loop.drain import deletion_costs, removed_first
from controlloop.loop.forecast import Foresight, Lead
from controlloop.loop.moves import (
    MOVE_ANNOTATION,
    MoveRecord,
    progress,
    roll_back,
)
from controlloop.loop.pending import PendingTracker  # [pending] stuck placements
from controlloop.loop.settings import ControllerSettings, PanicConfig
from controlloop.loop.state import (
    Action,
    ActionResult,
    Actuator,
    ClusterState,
    Collector,
    ManagedServer,
    describe,
)
from controlloop.loop.surge import Panic, PanicState, SurgeSignal, panic_condition, signal_of
from controlloop.optimizer import Solution, optimize
from controlloop.specs import (
    SystemSpec,
)
from controlloop.tuning import ModelError, Tuner, pair_key

__all__ = ["Controller", "CycleReport", "ServerReport", "SpecSource", "StaticSpecs"]

log = logging.getLogger(__name__)

@dataclass
class _Memory:
    """What we asked for last time, to notice when someone else changes a Deployment."""

    expected_replicas: int
    at: float
    # [reliability] a patch that timed out may still have landed: that count is ours too.
    also: int | None = None


@dataclass
class _MoveState:
    """A move recorded on a Deployment, and this cycle's rollback of it, if any."""

    record: MoveRecord
    action: Action | None = None


def _least_loaded_first(row: ServerReport, ms: ManagedServer, action: Action) -> Action:
    """A plain scale-down marks its pods so that the least-loaded go (loop/drain.py)."""
    if action.placement is not None or action.replicas >= action.from_replicas:
        return action
    costs = deletion_costs(ms)
    if not costs:
        return action
    gone = removed_first(ms, costs, ms.replicas - action.replicas - ms.pending_pods)
    if gone:
        note = "least-loaded first: " + ", ".join(f"{p} ({costs[p]} running)" for p in gone)
        row.reason = f"{row.reason}; {note}" if row.reason else note
    return replace(action, pod_deletion_cost=costs, reason=row.reason)


class Controller:
    def __init__(
        self, *, specs: SpecSource, collector: Collector, actuator: Actuator,
        clock: Callable[[], float] = time.time, dry_run: bool = False,
        on_report: list[Callable[[CycleReport], None]] | None = None,
        optimize_fn: Callable[..., Solution] = optimize, tuner: Tuner | None = None,
    ) -> None:
        self.specs = specs
        self.collector = collector
        self.actuator = actuator
        self.clock = clock
        self.dry_run = dry_run
        self.on_report = on_report or []
        self.optimize_fn = optimize_fn
        self.tuner = tuner if tuner is not None else Tuner()  # [tuning] learnt perf per pair
        self.tuner.skip_annotations = (MOVE_ANNOTATION,)
        self.stabilizer = Stabilizer()
        self.behavior_for = BehaviorResolver()  # controlloop.io/* annotations
        self.pending = PendingTracker()  # [pending] back-off of unschedulable placements
        self.foresight = Foresight()  # forecasters and learned start-up (loop/forecast.py)
        self.panic = PanicState()  # surge fast path (loop/surge.py)
        # per server: SLO rate of one replica (req/min) by accelerator, from the last sizing
        self._slo_rate: dict[str, dict[str, float]] = {}
        self._panic_cfg: dict[str, PanicConfig] = {}
        self._last_cycle_at: float | None = None
        self.surge_checks = 0
        self._surge: dict[str, Panic] = {}  # the running cycle's trigger
        self._memory: dict[str, _Memory] = {}
        self._hold_until: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.last_report: CycleReport | None = None
        self.is_leader: Callable[[], bool] = lambda: True
        # Called (namespace, deployment, held_reason, reason) when a server becomes held or
        # is held for a new reason: the daemon records a Kubernetes Event.
        self.on_held: Callable[[str, str, str, str], None] | None = None
        self._held_noted: dict[str, str] = {}

    # --- the cycle -----------------------------------------------------------------------

    def run_cycle(self, *, surge: dict[str, Panic] | None = None) -> CycleReport:
        """One control cycle; never raises. Concurrent calls wait for the running one.

        ``surge``: the servers whose panic condition triggered this cycle (check_surge).
        """
        with self._lock:
            # the previous report goes before this cycle builds its own (at 3,000 servers
            # a report holds tens of MB; two need not be alive at once)
            self.last_report = None
            report = self._run_cycle_locked(surge or {})
        self.last_report = report
        for hook in self.on_report:
            try:
                hook(report)
            except Exception:  # noqa: BLE001 - a failing recorder must not kill the loop
                log.exception("cycle report hook failed")
        return report

    def _run_cycle_locked(self, surge: dict[str, Panic]) -> CycleReport:
        now = self.clock()
        report = CycleReport(
            cycle_id=f"{next(self._counter)}-{uuid.uuid4().hex[:6]}", started_at=now,
            dry_run=self.dry_run, trigger="surge" if surge else "regular",
        )
        self._last_cycle_at = now
        self._surge = surge
        wall0 = time.perf_counter()
        try:
            self._cycle(report, now)
        except Exception as exc:  # noqa: BLE001 - one failed cycle never kills the daemon
            log.exception("cycle %s failed", report.cycle_id)
            report.outcome = "failed"
            report.errors.append(f"internal error: {type(exc).__name__}: {exc}")
            report.error_kinds["internal"] = report.error_kinds.get("internal", 0) + 1
        report.duration_s = time.perf_counter() - wall0
        log.info(report.summary(), extra={"cycle": report.cycle_id})
        return report

    def _cycle(self, report: CycleReport, now: float) -> None:
        try:
            system, settings = self.specs.current()
        except Exception as exc:  # noqa: BLE001
            report.outcome = "failed"
            report.errors.append(f"specs: {exc}")
            report.error_kinds["specs"] = 1
            return
        report.actuation_mode = settings.actuation.mode
        if not self.is_leader():
            report.outcome = "ok"
            report.errors.append("not the leader: observing only")
            self.tuner.forget()  # [tuning] the leader learns; re-read its state when we lead
            return
        state = self._collect(report)
        if state is None:
            return
        rows = [self._observe(ms, now, settings) for ms in state.servers]
        report.servers = [row for row, _ in rows]
        self._check_specs(system, rows)
        live = self._track(system, settings, state, rows, now)
        moves = self._moves(rows, system, now)
        sizing, tuned_notes = self._tune(report, system, state, rows)
        actions = self._plan(report, sizing, settings, state, rows, moves, now)
        note_tuned(rows, tuned_notes)
        t = time.perf_counter()
        results = self.actuator.apply([a for _, _, a in actions]) if actions else []
        report.durations["actuate"] = time.perf_counter() - t
        for (row, ms, action), result in zip(actions, results, strict=True):
            self._record(row, ms, action, result, now, report)
        for row, ms in rows:
            if row.verdict in ("held", "unchanged", "skipped"):
                self._memory[ms.key] = _Memory(ms.replicas, now)
        self._note_holds(rows, live)
        for row, ms in rows:
            if row.cost is None and row.verdict in ("held", "error"):
                row.cost = current_cost(system, ms)  # a held server still costs what it runs
        report.total_cost = sum(r.cost or 0.0 for r in report.servers)
        if report.error_kinds and report.outcome == "ok":
            report.outcome = "partial"

    def _tune(
        self, report: CycleReport, system: SystemSpec, state: ClusterState,
        rows: list[tuple[ServerReport, ManagedServer]],
    ) -> tuple[SystemSpec, dict[str, str]]:
        """[tuning] Learn from this cycle's windows; the system to size with (tuned in apply)."""
        mode = system.optimizer.tuning
        t = time.perf_counter()
        errors = self.tuner.observe(system, state.servers, mode)
        for row, ms in rows:
            if (err := errors.get(ms.key)) is not None:
                row.model_error = model_error_json(err)
        sizing, notes = self.tuner.tuned_system(system) if mode == "apply" else (system, {})
        report.tuning = {"mode": mode, "pairs": self.tuner.rows() if mode != "off" else []}
        report.durations["tuning"] = time.perf_counter() - t
        return sizing, notes

    def _collect(self, report: CycleReport) -> ClusterState | None:
        """This cycle's observations; None when the Deployment list itself failed."""
        t = time.perf_counter()
        state = self.collector.collect()
        report.durations["collect"] = time.perf_counter() - t
        report.skipped = [
            {"namespace": s.namespace, "deployment": s.deployment, "reason": s.reason}
            for s in state.skipped
        ]
        for err in state.errors:
            report.errors.append(err)
            report.error_kinds["collect"] = report.error_kinds.get("collect", 0) + 1
        if not state.complete:
            report.outcome = "failed"
            log.error("collection failed, no action this cycle: %s", "; ".join(state.errors))
            return None
        return state

    def _track(
        self,
        system: SystemSpec,
        settings: ControllerSettings,
        state: ClusterState,
        rows: list[tuple[ServerReport, ManagedServer]],
        now: float,
    ) -> set[str]:
        """Update what is kept across cycles; returns the keys of the Deployments that exist."""
        # [pending] time unschedulable pods per placement; back off the stuck ones.
        for _, ms in rows:
            acc_now = current_accelerator(system, ms)
            # During a move only the new placement's pods count: Kubernetes may first scale
            # the old ReplicaSet up (a scaling event), and those pods wait by design.
            moving = MOVE_ANNOTATION in ms.annotations
            stuck = ms.unschedulable_by_accelerator.get(acc_now, 0) if moving else None
            self.pending.observe(ms, acc_now, now, settings.pending, stuck)
        # Forget Deployments that are gone (bounded memory); a skipped one keeps its
        # history, so a temporary bad label does not erase an external-change hold.
        live = {ms.key for _, ms in rows} | {f"{s.namespace}/{s.deployment}" for s in state.skipped}
        self.pending.forget(live)
        self.stabilizer.forget(live)
        self.foresight.forget(live)
        self.panic.forget(live)
        for key in [k for k in self._slo_rate if k not in live]:
            del self._slo_rate[key]
        for key in [k for k in self._panic_cfg if k not in live]:
            del self._panic_cfg[key]
        for key in [k for k in self._held_noted if k not in live]:
            del self._held_noted[key]
        for _, ms in rows:
            if (
                ms.load.known
                and ms.load.source != "labels"
                and ms.load.arrival_rate_rpm is not None
            ):
                self.foresight.observe(ms.key, now, ms.load.arrival_rate_rpm, settings.forecast)
            self.foresight.startup.observe_ready(ms.key, now, ms.ready_replicas)
        for table in (self._memory, self._hold_until):
            for key in [k for k in table if k not in live]:
                del table[key]
        return live

    def _plan(
        self,
        report: CycleReport,
        system: SystemSpec,
        settings: ControllerSettings,
        state: ClusterState,
        rows: list[tuple[ServerReport, ManagedServer]],
        moves: dict[str, _MoveState],
        now: float,
    ) -> list[tuple[ServerReport, ManagedServer, Action]]:
        """Optimize the servers not held and turn decisions into actions that fit."""
        early = [
            (row, ms, move.action) for row, ms in rows
            if (move := moves.get(ms.key)) is not None and move.action is not None
        ]
        active = [(row, ms) for row, ms in rows if row.verdict not in ("held", "skipped")]
        records = {key: move.record for key, move in moves.items()}
        capacity, capacity_note = available_capacity(system, settings, state, rows, records)
        if capacity is None:
            for row, _ in active:
                row.verdict, row.held_reason = "held", "capacity-unknown"
                row.reason = capacity_note
            return early
        t = time.perf_counter()
        actions: list[tuple[ServerReport, ManagedServer, Action]] = []
        if active:
            ctx = self._context(system, settings, now)
            panic = self._panics(ctx, active)
            ctx = replace(ctx, panic=panic)
            leads: dict[str, Lead] = {}
            request, notes = sizing_request(ctx, [ms for _, ms in active], capacity,
                                            self.foresight, leads)
            for row, ms in active:
                if (lead := leads.get(ms.key)) is not None:
                    row.forecaster, row.forecast_error = lead.forecaster, lead.error
                    row.startup_seconds = lead.startup_s
            solution = self.optimize_fn(request, verify=settings.verify,
                                        verify_budget=settings.verify_budget_seconds or None)
            ctx = replace(ctx, solution=solution, notes=notes, panic=panic)
            for _, ms in active:
                self._slo_rate[ms.key] = {
                    c.accelerator: c.rate_per_replica * 60.0
                    for c in solution.candidates.get(ms.name, [])
                }
            report.solver = solution.solver
            report.solver_status = solution.status.value
            report.solver_message = solution.message
            for row, ms in active:
                decision = solution.decisions.get(row.server)
                if decision is None:
                    row.verdict, row.held_reason, row.reason = (
                        "held", "not-optimized", "no decision"
                    )
                    continue
                finishing = moves.get(ms.key)
                action = decide(ctx, row, ms, decision,
                                finishing=finishing.record if finishing else None)
                if action is not None:
                    actions.append((row, ms, action))
        report.durations["optimize"] = time.perf_counter() - t
        fit_capacity(actions, rows, system, settings, state, records)
        if settings.actuation.pod_deletion_cost:
            actions = [(row, ms, _least_loaded_first(row, ms, a)) for row, ms, a in actions]
        return early + actions

    def _panics(
        self, ctx: CycleContext, active: list[tuple[ServerReport, ManagedServer]]
    ) -> dict[str, str]:
        """Servers in panic this cycle (key -> why): a surge check's trigger or this
        cycle's own load past a threshold starts (or extends) a panic window."""
        out: dict[str, str] = {}
        for row, ms in active:
            cfg = ctx.behavior(ms).panic
            self._panic_cfg[ms.key] = cfg
            found = self._surge.get(ms.key)
            if found is None and (sig := signal_of(ms)) is not None:
                rate = self._slo_rate.get(ms.key, {}).get(current_accelerator(ctx.system, ms))
                found = panic_condition(sig, rate, cfg)
            if found is not None and cfg.enabled:
                self.panic.enter(ms.key, ctx.now, found.why, cfg.window_seconds)
                row.panic_kind = found.kind
            held = self.panic.active(ms.key, ctx.now)
            if held is not None and cfg.enabled:
                until, why = held
                row.panic = f"{why}; until {until - ctx.now:.0f}s from now"
                out[ms.key] = row.panic
        return out

    def check_surge(self) -> CycleReport | None:
        """The fast path between cycles: a cheap read of every server's signal; a cycle at
        once when one is about to miss its SLO (None when none is, or it is too soon)."""
        probe = getattr(self.collector, "probe", None)
        if probe is None:
            return None
        try:
            _, settings = self.specs.current()
        except Exception:  # noqa: BLE001 - the next cycle reports bad specs
            return None
        if not settings.behavior.panic.enabled or not self.is_leader():
            return None
        # Never alongside a cycle (it reads the load itself: both at once would hold the
        # fleet twice); a cycle due meanwhile waits for the probe, which costs less.
        if not self._lock.acquire(blocking=False):
            return None
        try:
            now = self.clock()
            self.surge_checks += 1
            signals: dict[str, SurgeSignal] = probe()
        except Exception:  # noqa: BLE001 - a failed check only waits for the cycle
            log.exception("surge check failed; waiting for the next cycle")
            return None
        finally:
            self._lock.release()
        found: dict[str, Panic] = {}
        for key, sig in signals.items():
            self.foresight.startup.observe_ready(key, now, sig.ready)  # finer than cycles
            cfg = self._panic_cfg.get(key, settings.behavior.panic)
            panic = panic_condition(sig, self._slo_rate.get(key, {}).get(sig.accelerator), cfg)
            if panic is not None:
                self.panic.enter(key, now, panic.why, cfg.window_seconds)
                found[key] = panic
        if not found:
            return None
        wait = min(self._panic_cfg.get(k, settings.behavior.panic).min_interval_seconds
                   for k in found)
        if self._last_cycle_at is not None and now - self._last_cycle_at < wait:
            log.debug("surge in %s, but the last cycle ran %.0fs ago (< %.0fs)",
                      ", ".join(sorted(found)), now - self._last_cycle_at, wait)
            return None
        for key, panic in sorted(found.items()):
            log.info("%s: surge: %s; running a cycle now", key, panic.why)
        return self.run_cycle(surge=found)

    def _context(
        self, system: SystemSpec, settings: ControllerSettings, now: float
    ) -> CycleContext:
        return CycleContext(
            system=system,
            settings=settings,
            now=now,
            behavior_for=self.behavior_for,
            stabilizer=self.stabilizer,
            pending=self.pending,
        )

    def _note_holds(self, rows: list[tuple[ServerReport, ManagedServer]], live: set[str]) -> None:
        """Log every decision (changes are logged by the actuator); report a hold once
        when it starts or its reason changes, not every cycle."""
        for row, ms in rows:
            code = row.held_reason if row.verdict == "held" else ""
            if not code:
                self._held_noted.pop(ms.key, None)
                if row.verdict == "unchanged":
                    log.debug("%s: unchanged at %s x%d: %s", ms.key, row.current_accelerator or "?",
                              ms.replicas, row.reason, extra={"server": ms.name})
                continue
            if self._held_noted.get(ms.key) == code:
                log.debug("%s: still held (%s): %s", ms.key, code, row.reason,
                          extra={"server": ms.name})
                continue
            self._held_noted[ms.key] = code
            log.info("%s: held (%s): %s", ms.key, code, row.reason, extra={"server": ms.name})
            if self.on_held is not None:
                try:
                    self.on_held(ms.namespace, ms.deployment, code, row.reason)
                except Exception:  # noqa: BLE001 - an event is never worth a failed cycle
                    log.exception("recording the hold of %s failed", ms.key)
        for key in [k for k in self._held_noted if k not in live]:
            del self._held_noted[key]

    # --- per server -------------------------------------------------------------------------

    def _moves(
        self, rows: list[tuple[ServerReport, ManagedServer]], system: SystemSpec, now: float
    ) -> dict[str, _MoveState]:
        """Servers with a make-before-break move recorded on their Deployment.

        Rolling out: held (or rolled back when its new pods stay unschedulable).
        Rolled out: the server goes through the optimizer and its action finishes the move.
        """
        moves: dict[str, _MoveState] = {}
        for row, ms in rows:
            text = ms.annotations.get(MOVE_ANNOTATION)
            if text is None or row.verdict == "skipped":
                continue
            try:
                record = MoveRecord.from_annotation(text)
            except ValueError as exc:
                if row.verdict != "held":
                    row.verdict, row.held_reason = "held", "bad-move-annotation"
                    row.reason = (f"annotation {MOVE_ANNOTATION} is unreadable ({exc}): "
                                  "fix or remove it; not acting meanwhile")
                continue
            self.stabilizer.note_move(ms.key, record.started_at)  # survives restarts
            state = _MoveState(record)
            moves[ms.key] = state
            if ms.rollout is not None and ms.rollout.complete:
                continue  # finished by this cycle's action
            if row.verdict == "held":  # held for another reason: say a move is under way
                row.reason = f"{row.reason}; {progress(record, ms.rollout)}"
                continue
            row.verdict, row.held_reason = "held", "move-in-progress"
            row.reason = progress(record, ms.rollout)
            if record.rollback and self.pending.backed_off(ms.key, record.to_accelerator):
                row.held_reason = "move-stalled"
                row.reason += (f"; the way back cannot schedule either ({record.to_accelerator} "
                               "pods unschedulable): free cards or `kubectl rollout undo`")
            elif not record.rollback and self.pending.backed_off(ms.key, record.to_accelerator):
                back_to = placement(system, ms, record.from_accelerator,
                                          record.from_batch or ms.max_batch)
                if back_to is None:
                    row.held_reason = "move-stalled"
                    row.reason += (f"; stalled and {record.from_accelerator or 'the old placement'}"
                                   " has no nodeSelector to go back to")
                    continue
                state.action = roll_back(
                    ms, record, back_to=back_to, now=now,
                    leaving=placement(system, ms, record.to_accelerator, ms.max_batch),
                )
                row.desired_accelerator, row.desired_replicas = record.from_accelerator, ms.replicas
                row.reason = state.action.reason
        return moves

    def _observe(
        self, ms: ManagedServer, now: float, settings: ControllerSettings
    ) -> tuple[ServerReport, ManagedServer]:
        load = ms.load
        row = ServerReport(
            server=ms.name, namespace=ms.namespace, deployment=ms.deployment, model=ms.model,
            service_class=ms.service_class, current_accelerator=ms.accelerator,
            current_replicas=ms.replicas, ready_replicas=ms.ready_replicas,
            pending_pods=ms.pending_pods,
            load={
                "status": load.status, "reason": load.reason, "source": load.source,
                "arrivalRate": load.arrival_rate_rpm, "avgInTokens": load.avg_in_tokens,
                "avgOutTokens": load.avg_out_tokens, "itlMs": load.itl_ms, "ttftMs": load.ttft_ms,
                "running": load.running, "waiting": load.waiting,
            },
        )
        memory = self._memory.get(ms.key)
        # In metrics mode an HPA/ScaledObject owns replicas and follows our series: feed it,
        # and its changes are expected, not someone else's.
        metrics_mode = settings.actuation.mode == "metrics"
        if (not metrics_mode and memory is not None
                and ms.replicas not in (memory.expected_replicas, memory.also)):
            hold = settings.ownership.hold_seconds
            why = (
                f"replicas changed by someone else ({memory.expected_replicas}→{ms.replicas}); "
                f"respecting it for {hold:.0f}s"
            )
            self._hold_until[ms.key] = (now + hold, why)
            self.stabilizer.reset(ms.key)
            log.warning("%s: %s", ms.key, why, extra={"server": ms.name})
        if ms.autoscaler and not metrics_mode:
            row.verdict, row.held_reason = "held", "autoscaler"
            row.reason = f"targeted by {ms.autoscaler}: not ours to scale"
        elif ms.key in self._hold_until and now < self._hold_until[ms.key][0]:
            row.verdict, row.held_reason = "held", "external-change"
            row.reason = self._hold_until[ms.key][1]
        elif not load.known:
            row.verdict, row.held_reason = "held", "unknown-load"
            row.reason = f"load unknown ({load.reason}): leaving as is"
            log.warning("%s: %s", ms.key, row.reason, extra={"server": ms.name})  # [reliability]
        return row, ms

    def _check_specs(
        self, system: SystemSpec, rows: list[tuple[ServerReport, ManagedServer]]
    ) -> None:
        models = set(system.model_names())
        for row, ms in rows:
            if row.verdict in ("held", "skipped"):
                continue
            cls = system.service_class(ms.service_class)
            if ms.bad_labels:  # [bounds] a number no real deployment has: do not size on it
                row.verdict, row.held_reason = "held", "bad-label"
                row.reason = "; ".join(ms.bad_labels) + ": leaving as is"
                log.warning("%s: %s", ms.key, row.reason, extra={"server": ms.name})
            elif ms.model not in models:
                row.verdict, row.held_reason = "held", "unknown-model"
                row.reason = f"model '{ms.model}' has no perf data in the specs"
            elif cls is None:
                row.verdict, row.held_reason = "held", "unknown-class"
                row.reason = f"service class '{ms.service_class}' is not defined"
            elif ms.accelerator and system.accelerator(ms.accelerator) is None:
                row.verdict, row.held_reason = "held", "unknown-accelerator"
                row.reason = f"current accelerator '{ms.accelerator}' is not in the specs"

    def _record(
        self,
        row: ServerReport,
        ms: ManagedServer,
        action: Action,
        result: ActionResult,
        now: float,
        report: CycleReport,
    ) -> None:
        row.patch = result.patch
        row.sent = result.sent
        if result.ok:
            row.held_reason = ""  # e.g. a finish patched while the decision was held
            row.verdict = "moved" if action.placement is not None else (
                "scaled" if action.replicas != action.from_replicas else "unchanged"
            )
            expected = action.replicas if result.sent else ms.replicas
            self._memory[ms.key] = _Memory(expected, now)
            # Dry-run changed nothing: the next cycle decides on the real state again,
            # not rate-limited by changes that never happened.
            if result.sent:
                if action.placement is not None:
                    self.stabilizer.record_move(ms.key, now)
                    self.stabilizer.reset(ms.key)
                else:
                    self.stabilizer.record_scale(
                        ms.key, now, action.replicas - action.from_replicas
                    )
                # time this ask until that many pods are Ready (the learned start-up)
                if action.placement is None and action.replicas > action.from_replicas:
                    self.foresight.startup.scaled_up(ms.key, now, action.replicas)
                elif action.replicas < action.from_replicas or action.placement is not None:
                    self.foresight.startup.cancel(ms.key)
            return
        row.verdict = "error" if result.error_kind != "changed-externally" else "held"
        row.error, row.error_kind = result.error, result.error_kind
        if row.verdict == "held":
            row.held_reason, row.reason = "changed-externally", result.error
        report.errors.append(f"{describe(action)}: {result.error}")
        report.error_kinds[result.error_kind or "actuate"] = (
            report.error_kinds.get(result.error_kind or "actuate", 0) + 1
        )
        landed = action.replicas if result.error_kind == "timeout" else None  # [reliability]
        self._memory[ms.key] = _Memory(ms.replicas, now, also=landed)


def note_tuned(rows: list[tuple[ServerReport, ManagedServer]], notes: dict[str, str]) -> None:
    """Say in its reason when a decision was sized with tuned perf values."""
    if not notes:
        return
    for row, _ in rows:
        acc = row.desired_accelerator or row.current_accelerator
        note = notes.get(pair_key(row.model, acc))
        if note and row.verdict not in ("skipped",) and row.desired_replicas is not None:
            row.reason = f"{row.reason}; sized with {note}" if row.reason else f"sized with {note}"


def model_error_json(err: ModelError) -> dict[str, Any]:
    return {
        "pair": err.pair, "tuned": err.tuned, "itlPredMs": err.itl_pred_ms,
        "ttftPredMs": err.ttft_pred_ms, "itlObsMs": err.itl_obs_ms, "ttftObsMs": err.ttft_obs_ms,
        "itlError": err.itl_error, "ttftError": err.ttft_error,
    }
