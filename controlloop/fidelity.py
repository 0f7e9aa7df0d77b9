"""Fidelity of a plan: the chain's predicted latencies vs the token-level simulation.

Every chosen allocation (a decision with replicas) is simulated as one replica
at its per-replica load ``demand / replicas`` (the load splits evenly over
identical replicas, so one replica stands for all) with Poisson arrivals, and
its simulated mean ITL and TTFT (and p95 TTFT) are set against the optimizer's
predictions and the SLO targets.

    controlloop fidelity config/examples/large [--solver milp] [--verify simulate]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

from controlloop.optimizer.calibrate import LOSS_TOLERANCE, replica_params
from controlloop.optimizer.solution import DecisionStatus, ServerDecision, Solution
from controlloop.sim import ReplicaParams, SimCase, SimResult, simulate_many
from controlloop.specs import SystemSpec


@dataclass(frozen=True)
class FidelityRow:
    """One server: predicted (chain) vs simulated figures at the plan's per-replica load.

    Times in ms, rate in req/s per replica; errors are ``(sim - pred) / pred``.
    ``itl_ok``/``ttft_ok`` are None when the target is not set.
    """

    server: str
    accelerator: str
    replicas: int
    batch: int
    status: str  # the decision's status (meets-slo, saturated, zero-load)
    rate_per_replica: float
    rho: float | None
    itl_pred: float | None
    itl_sim: float
    itl_err: float
    ttft_pred: float | None
    ttft_sim: float
    ttft_p95_sim: float
    ttft_err: float
    loss_fraction: float
    slo_itl: float
    slo_ttft: float
    itl_ok: bool | None
    ttft_ok: bool | None

    @property
    def fully_served(self) -> bool:
        return self.status == DecisionStatus.MEETS_SLO.value

    @property
    def meets(self) -> bool:
        """Every set target holds in simulation and (almost) nothing is lost."""
        return (self.itl_ok is not False and self.ttft_ok is not False
                and self.loss_fraction <= LOSS_TOLERANCE)


@dataclass(frozen=True)
class FidelityReport:
    rows: list[FidelityRow]
    skipped: dict[str, str]  # server -> why it was not simulated
    duration_s: float
    seed: int
    total_cost: float

    @property
    def missing(self) -> list[str]:
        """Fully served servers that miss a target in simulation."""
        return [r.server for r in self.rows if r.fully_served and not r.meets]

    @property
    def fully_served(self) -> int:
        return sum(r.fully_served for r in self.rows)

    def to_json(self) -> dict[str, object]:
        return {
            "durationS": self.duration_s,
            "seed": self.seed,
            "totalCost": round(self.total_cost, 6),
            "fullyServed": self.fully_served,
            "missing": self.missing,
            "servers": [_clean(asdict(r)) for r in self.rows],
            "skipped": self.skipped,
        }

    def format_table(self) -> str:
        head = (f"{'server':<24} {'acc':<8} {'rep':>4} {'N':>3} {'rho':>5} "
                f"{'ITL pred':>8} {'sim':>7} {'err':>6} {'SLO':>5} "
                f"{'TTFT pred':>9} {'sim':>8} {'p95':>8} {'err':>6} {'SLO':>6}  verdict")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            verdict = "ok" if r.meets else "MISS " + ",".join(
                k for k, ok in (("itl", r.itl_ok), ("ttft", r.ttft_ok)) if ok is False
            ) + (f" loss={r.loss_fraction:.1%}" if r.loss_fraction else "")
            if not r.fully_served:
                verdict += f" ({r.status})"
            lines.append(
                f"{r.server:<24} {r.accelerator:<8} {r.replicas:>4} {r.batch:>3} "
                f"{_f(r.rho, 5, 2)} {_f(r.itl_pred, 8, 1)} {_f(r.itl_sim, 7, 1)} "
                f"{_pct(r.itl_err)} {r.slo_itl:>5.0f} {_f(r.ttft_pred, 9, 0)} "
                f"{_f(r.ttft_sim, 8, 0)} {_f(r.ttft_p95_sim, 8, 0)} {_pct(r.ttft_err)} "
                f"{r.slo_ttft:>6.0f}  {verdict}"
            )
        lines.append(
            f"{len(self.missing)} of {self.fully_served} fully served servers miss a target in "
            f"simulation ({self.duration_s:g} s per replica, seed {self.seed}); "
            f"total cost {self.total_cost:.2f} cents/h"
        )
        for name, why in self.skipped.items():
            lines.append(f"  not simulated: {name}: {why}")
        return "\n".join(lines)


def fidelity_report(
    system: SystemSpec,
    solution: Solution,
    *,
    duration_s: float = 3600.0,
    seed: int = 1,
    workers: int | None = None,
) -> FidelityReport:
    """Simulate every chosen allocation of ``solution`` for ``duration_s`` simulated
    seconds per replica (after a 10 % warm-up) and compare with the predictions.

    Every replica runs with the same ``seed``; ``workers`` is passed to
    :func:`~controlloop.sim.simulate_many` (results do not depend on it).
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s: must be > 0, got {duration_s}")
    todo: list[tuple[ServerDecision, ReplicaParams, float]] = []
    skipped: dict[str, str] = {}
    for name, d in solution.decisions.items():
        if d.replicas <= 0 or not d.accelerator:
            continue
        rate = d.demand / d.replicas
        server = next(s for s in system.servers if s.name == name)
        perf = system.perf(d.model, d.accelerator)
        params = replica_params(perf, server, d.batch) if perf else None
        if params is None:
            skipped[name] = f"no decode/prefill data for {d.model} on {d.accelerator}"
        elif rate <= 0:
            skipped[name] = "zero load"
        else:
            todo.append((d, params, rate))
    cases = [SimCase(params=p, rate_per_ms=r / 1000.0, duration_ms=duration_s * 1000.0,
                     seed=seed) for _, p, r in todo]
    results = simulate_many(cases, workers=workers)
    rows = [_row(d, rate, res) for (d, _, rate), res in zip(todo, results, strict=True)]
    return FidelityReport(rows=rows, skipped=skipped, duration_s=duration_s, seed=seed,
                          total_cost=solution.total_cost)


def _row(d: ServerDecision, rate: float, res: SimResult) -> FidelityRow:
    itl_ok = None if d.slo_itl_ms <= 0 else bool(res.itl_mean_ms <= d.slo_itl_ms)
    ttft_ok = None if d.slo_ttft_ms <= 0 else bool(res.ttft_mean_ms <= d.slo_ttft_ms)
    return FidelityRow(
        server=d.server, accelerator=d.accelerator, replicas=d.replicas, batch=d.batch,
        status=d.status.value, rate_per_replica=rate, rho=d.rho,
        itl_pred=d.itl_ms, itl_sim=res.itl_mean_ms, itl_err=_err(d.itl_ms, res.itl_mean_ms),
        ttft_pred=d.ttft_ms, ttft_sim=res.ttft_mean_ms, ttft_p95_sim=res.ttft_p95_ms,
        ttft_err=_err(d.ttft_ms, res.ttft_mean_ms), loss_fraction=res.loss_fraction,
        slo_itl=d.slo_itl_ms, slo_ttft=d.slo_ttft_ms, itl_ok=itl_ok, ttft_ok=ttft_ok,
    )


def _err(pred: float | None, sim: float) -> float:
    if pred is None or pred <= 0 or not math.isfinite(sim):
        return math.nan
    return (sim - pred) / pred


def _f(x: float | None, width: int, digits: int) -> str:
    if x is None or not math.isfinite(x):
        return f"{'-':>{width}}"
    return f"{x:>{width}.{digits}f}"


def _pct(x: float) -> str:
    return f"{'-':>6}" if not math.isfinite(x) else f"{x:>+6.0%}"


def _clean(doc: dict[str, object]) -> dict[str, object]:
    """JSON has no NaN: missing figures become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in doc.items()}


def cmd_fidelity(args: argparse.Namespace) -> int:
    """``controlloop fidelity PATH``: optimize, simulate the plan, print the comparison."""
    from controlloop.config import ConfigError, load_system
    from controlloop.optimizer.api import optimize

    duration = args.duration
    if not isinstance(duration, int | float) or not math.isfinite(duration) or duration <= 0:
        raise ConfigError([f"--duration: must be a number of seconds > 0, got {duration!r}"])
    system = load_system(args.path)
    solution = optimize(
        system, solver=args.solver, unlimited=args.unlimited,
        service_model=args.service_model, verify=args.verify,
        margin=getattr(args, "margin", None),
    )
    report = fidelity_report(system, solution, duration_s=args.duration, seed=args.seed)
    if args.format == "json":
        doc = {"solver": solution.solver, "status": solution.status.value,
               "timings": solution.timings, **report.to_json()}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"plan: {solution.solver}, {solution.status.value}: {solution.message}")
        print(report.format_table())
    return 0
