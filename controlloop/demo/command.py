"""``controlloop demo``: the production Controller against the emulated cluster.

Time is simulated: the Controller's clock is the cluster's, and between two
cycles the cluster is advanced by the scenario's interval (no sleeping).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from controlloop.config import ConfigError, load_system
from controlloop.demo.cluster import EmulatedCluster, Termination
from controlloop.demo.loadscript import Scenario, builtin_names, load_scenario
from controlloop.demo.records import CycleRecord, DemoRun, slo_met
from controlloop.loop.controller import Controller, CycleReport, StaticSpecs
from controlloop.loop.settings import ControllerSettings
from controlloop.optimizer import optimize
from controlloop.specs import (
    CapacityEntry,
    CapacitySpec,
    DecodeParms,
    OptimizerSpec,
    PrefillParms,
    SaturationPolicy,
    SystemSpec,
)
from controlloop.tuning import MemoryStore, Tuner

log = logging.getLogger(__name__)

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
DEMO_SELECTOR_LABEL = "controlloop.io/demo-accelerator"


def resolve_system(ref: str, *, where: str) -> SystemSpec:
    """``large`` (config/: the large sample with nodeSelectors), ``small`` or a path."""
    pkg_data = Path(__file__).resolve().parents[1] / "data"
    candidates = {
        "large": [pkg_data / "large", REPO_CONFIG],
        "small": [pkg_data / "small", REPO_CONFIG / "examples" / "small"],
    }
    if ref in candidates:
        for path in candidates[ref]:
            if path.exists():
                return load_system(path)
        raise ConfigError([f"{where}: system: built-in system '{ref}' not found in this install"])
    path = Path(ref)
    if not path.is_absolute() and not where.startswith("builtin:"):
        path = Path(where).parent / path
    if not path.exists():
        raise ConfigError([f"{where}: system: no such config '{ref}' (use large, small or a path)"])
    return load_system(path)


def build_system(scenario: Scenario, *, tuning: str | None = None,
                 optimizer: dict[str, Any] | None = None,
                 ) -> tuple[SystemSpec, dict[str, int] | None]:
    """The scenario's system (servers, optimizer overrides, capacity) and the cluster capacity."""
    system = resolve_system(scenario.system, where=scenario.source)
    extra = {**scenario.optimizer, **(optimizer or {})}
    if extra:
        try:
            system = system.model_copy(update={"optimizer": OptimizerSpec.model_validate(
                {**system.optimizer.model_dump(by_alias=True), **extra})})
        except ValidationError as exc:
            raise ConfigError([
                f"{scenario.source}: optimizer.{'.'.join(str(p) for p in e['loc'])}: "
                f"{e['msg']} (got {e.get('input')!r})" for e in exc.errors()
            ]) from exc
    names = [s.name for s in system.servers]
    servers = system.servers
    if scenario.servers is not None:
        unknown = [n for n in scenario.servers if n not in names]
        if unknown:
            raise ConfigError([
                f"{scenario.source}: servers: unknown server(s) {', '.join(unknown)} "
                f"(the system has {', '.join(names)})"
            ])
        servers = [s for s in system.servers if s.name in scenario.servers]
    opt: dict[str, Any] = {}
    if scenario.unlimited is not None:
        opt["unlimited"] = scenario.unlimited
    if scenario.solver is not None:
        opt["milp_solver"] = scenario.solver == "milp"
    if scenario.saturation_policy is not None:
        opt["saturation_policy"] = SaturationPolicy(scenario.saturation_policy)
    if (tuning or scenario.tuning) is not None:
        opt["tuning"] = tuning or scenario.tuning
    update: dict[str, Any] = {
        "servers": servers,
        "optimizer": system.optimizer.model_copy(update=opt),
        # The controller only moves servers to accelerators with a nodeSelector:
        # give the emulated nodes one where the system has none (e.g. the JSON samples).
        "accelerators": [
            a
            if a.node_selector
            else a.model_copy(update={"node_selector": {DEMO_SELECTOR_LABEL: a.name}})
            for a in system.accelerators
        ],
    }
    if scenario.capacity is not None:
        update["capacity"] = CapacitySpec(
            count=[CapacityEntry(type=t, count=c) for t, c in sorted(scenario.capacity.items())]
        )
    system = system.model_copy(update=update)
    capacity = None if system.optimizer.unlimited else system.capacity_by_type()
    return system, capacity


def controller_settings(scenario: Scenario) -> ControllerSettings:
    try:
        return ControllerSettings.model_validate(scenario.controller)
    except ValidationError as exc:
        raise ConfigError([
            f"{scenario.source}: controller.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        ]) from exc


def run_scenario(
    scenario: Scenario,
    *,
    cycles: int | None = None,
    seed: int = 1,
    progress: Callable[[CycleRecord, int, int], None] | None = None,
    tuning: str | None = None,
    oracle: bool = False,
    restart_at: int | None = None,
    optimizer: dict[str, Any] | None = None,
) -> DemoRun:
    """Build the cluster, start it from the scenario's initial state and run the cycles.

    ``oracle``: the controller reads the true perf (the truth applied to the profile).
    ``restart_at``: a new Controller takes over after that cycle, with the same tuning store.
    """
    wall0 = time.perf_counter()
    system, capacity = build_system(scenario, tuning=tuning, optimizer=optimizer)
    settings = controller_settings(scenario)
    profiles = {s.name: scenario.profile(s.name) for s in system.servers}
    term = scenario.termination
    cluster = EmulatedCluster(
        system, profiles, capacity=capacity, startup_s=scenario.startup_seconds, seed=seed,
        termination=Termination(
            pre_stop_s=term["preStopSeconds"], drain_s=term["drainSeconds"],
            grace_s=term["gracePeriodSeconds"],
        ),
        truth=scenario.truth_for if scenario.truth else None,
    )
    if scenario.initial == "plan":
        # Start in the steady state the optimizer plans for the load at t=0.
        at_start = [
            s.model_copy(update={"current_alloc": s.current_alloc.model_copy(update={
                "load": s.load.model_copy(update={
                    "arrival_rate": cluster.scripted_rate(s.name, 0.0),
                    "avg_in_tokens": float(cluster.servers[s.name].in_tokens),
                    "avg_out_tokens": float(cluster.servers[s.name].out_tokens),
                })
            })})
            for s in system.servers
        ]
        plan = optimize(system.model_copy(update={"servers": at_start}))
        for name, d in sorted(plan.decisions.items()):
            if d.accelerator and d.replicas > 0:
                cluster.place(name, d.accelerator, d.replicas, d.batch)
    seen = truth_system(system, scenario) if oracle else system
    store = MemoryStore()

    def new_controller() -> Controller:
        return Controller(
            specs=StaticSpecs(seen, settings), collector=cluster, actuator=cluster,
            clock=cluster.now_s, tuner=Tuner(store=store),
        )

    controller = new_controller()
    run = DemoRun(scenario=scenario, system=system, capacity=capacity)
    total = cycles or scenario.cycles
    cluster.advance(scenario.interval)  # a first window of load before the first cycle
    cluster.probe()  # the surge check's window starts with the cycles
    panic = settings.behavior.panic
    step = panic.check_seconds if panic.enabled else scenario.interval

    def record(report: CycleReport, i: int, *, fast: bool = False) -> None:
        rec = CycleRecord(
            t_s=cluster.now_s(), report=report, cluster=cluster.snapshot(),
            used_cards=cluster.used_cards(), fast=fast,
        )
        run.records.append(rec)
        if progress is not None:
            progress(rec, i, total)

    for i in range(total):
        record(controller.run_cycle(), i + 1)
        if restart_at is not None and i + 1 == restart_at:
            controller = new_controller()  # as after a restart: only the store survives
        if i + 1 == total:
            break
        # Between cycles the surge check runs every checkSeconds (daemon: its own job).
        end = cluster.now_s() + scenario.interval
        while cluster.now_s() < end - 1e-6:
            cluster.advance(min(step, end - cluster.now_s()))
            if cluster.now_s() < end - 1e-6:
                fast = controller.check_surge()
                if fast is not None:
                    record(fast, i + 1, fast=True)
    run.wall_s = time.perf_counter() - wall0
    run.removed_running, run.longest_drain_s = cluster.removed_running, cluster.longest_drain_s
    return run


def truth_system(system: SystemSpec, scenario: Scenario) -> SystemSpec:
    """The system with the scenario's truth applied to its perf parameters (the oracle)."""
    models = []
    for perf in system.models:
        m = scenario.truth_for(perf.name, perf.acc)
        update: dict[str, Any] = {}
        if perf.decode_parms is not None:
            update["decode_parms"] = DecodeParms(alpha=perf.decode_parms.alpha * m["alpha"],
                                                 beta=perf.decode_parms.beta * m["beta"])
        if perf.prefill_parms is not None:
            update["prefill_parms"] = PrefillParms(gamma=perf.prefill_parms.gamma * m["gamma"],
                                                   delta=perf.prefill_parms.delta * m["delta"])
        models.append(perf.model_copy(update=update))
    return system.model_copy(update={"models": models})


def progress_line(rec: CycleRecord, i: int, total: int) -> str:
    rows = rec.report.servers
    load = sum(r.load.get("arrivalRate") or 0.0 for r in rows)
    replicas = sum(c["replicas"] for c in rec.cluster.values())
    pending = sum(c["pending"] for c in rec.cluster.values())
    starting = sum(c["starting"] for c in rec.cluster.values())
    met = [slo_met(r) for r in rows]
    known = [m for m in met if m is not None]
    changed = rec.report.count("scaled") + rec.report.count("moved")
    return (
        ("[ surge ]" if rec.fast else f"[{i:3d}/{total}]")
        + f" t={rec.t_s:6.0f}s  load {load:7.0f} rpm  "
        f"replicas {replicas:4d} ({starting} starting, {pending} pending)  "
        f"cost {rec.report.total_cost:8.1f} ¢/h  SLO met {sum(known)}/{len(known)}  "
        f"changes {changed}" + (f"  errors {len(rec.report.errors)}" if rec.report.errors else "")
    )


def write_cycle_log(run: DemoRun, path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for rec in run.records:
            fh.write(json.dumps(rec.report.to_json(), default=str) + "\n")


def prepare_outdir(outdir: Path) -> None:
    """Create the report directory (``--out``) or fail with a clear message."""
    if outdir.exists() and not outdir.is_dir():
        raise ConfigError([f"--out {outdir}: exists and is not a directory"])
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([
            f"--out {outdir}: cannot create the report directory: {exc.strerror or exc}"
        ]) from None
    if not os.access(outdir, os.W_OK):
        raise ConfigError([f"--out {outdir}: directory is not writable"])


def decision_lines(rec: CycleRecord) -> list[str]:
    """One line per server: what the controller decided this cycle and why."""
    lines = []
    for r in rec.report.servers:
        target = ""
        now = f"{r.current_accelerator or '-'}x{r.current_replicas}"
        if r.desired_replicas is not None:
            then = f"{r.desired_accelerator or r.current_accelerator or '-'}x{r.desired_replicas}"
            target = f" {now}" if then == now else f" {now} -> {then}"
        rate = r.load.get("arrivalRate")
        load = f", load {rate:.0f} rpm" if isinstance(rate, int | float) else ""
        why = f": {r.reason}" if r.reason else ""
        lines.append(f"{r.server}: {r.verdict}{target}{load}{why}")
    return lines


def cmd_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    if getattr(args, "list", False):
        for name in builtin_names():
            sc = load_scenario(name)
            first = sc.description.splitlines()[0] if sc.description else ""
            print(f"{name:24s} {sc.cycles:3d} cycles x {sc.interval:g}s  {first}", file=stream)
        return 0
    if args.cycles is not None and args.cycles < 1:
        raise ConfigError([f"--cycles: must be >= 1, got {args.cycles}"])
    scenario = load_scenario(args.scenario)
    prepare_outdir(args.out)  # before simulating: a bad --out fails at once
    # The per-cycle summary below replaces the controller's own INFO line; at debug the
    # controller's lines stay and each server's decision is logged (decision_lines).
    ctl_log = logging.getLogger("controlloop.loop.controller")
    previous_level = ctl_log.level
    if ctl_log.getEffectiveLevel() >= logging.INFO:
        ctl_log.setLevel(logging.WARNING)
    try:
        return _run_and_report(args, scenario, stream)
    finally:
        ctl_log.setLevel(previous_level)  # a library caller's logging is left as it was


def _run_and_report(args: argparse.Namespace, scenario: Any, stream: Any) -> int:
    print(f"scenario {scenario.name} ({scenario.source}): {scenario.description.splitlines()[0]}"
          if scenario.description else f"scenario {scenario.name}", file=stream)

    live = _live_dashboard(args, scenario, stream)  # --serve: the page, live

    def show(rec: CycleRecord, i: int, total: int) -> None:
        print(progress_line(rec, i, total), file=stream, flush=True)
        if log.isEnabledFor(logging.DEBUG):
            for line in decision_lines(rec):
                log.debug("cycle %d: %s", i, line)
        if live is not None and not rec.fast:  # the page counts the scenario's cycles
            live.publish(rec)

    try:
        run = run_scenario(scenario, cycles=args.cycles, seed=args.seed, progress=show,
                           tuning=getattr(args, "tuning", None),
                           oracle=getattr(args, "oracle", False),
                           restart_at=getattr(args, "restart_at", None))
    except BaseException:
        if live is not None:
            live.close()
        raise
    outdir: Path = args.out
    prepare_outdir(outdir)
    write_cycle_log(run, outdir / "cycles.jsonl")
    from controlloop.demo.report import write_report

    t = time.perf_counter()
    files = write_report(run, outdir)
    print(
        f"simulated {run.records[-1].t_s:.0f}s in {run.wall_s:.1f}s; report in "
        f"{time.perf_counter() - t:.1f}s: {outdir / 'report.md'} ({len(files)} plots), "
        f"cycle log {outdir / 'cycles.jsonl'}",
        file=stream,
    )
    if live is not None:
        live.serve_until_interrupted(stream)
    return 0


def _live_dashboard(args: argparse.Namespace, scenario: Scenario, stream: Any) -> Any:
    """``--serve [HOST:]PORT``: the dashboard (controlloop.ui) over this run, or None."""
    address = getattr(args, "serve", None)
    if address is None:
        return None
    from controlloop.ui.live import LiveDashboard

    system, capacity = build_system(scenario)
    live = LiveDashboard(
        address, system=system, capacity=capacity, total_cycles=args.cycles or scenario.cycles,
        pace_s=args.pace, title=f"controlloop demo: {scenario.name}",
    )
    print(f"dashboard: {live.url} (one cycle every {args.pace:g}s)", file=stream, flush=True)
    return live
