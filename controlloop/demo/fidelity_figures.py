"""Figures of a demo run for tuning: SLO attainment, cost and model error from a cycle on.

Kept apart from report.py so that the tuning figures can be computed for any run
(benchmarks/bench_tuning.py compares tuning / no tuning / oracle with them).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunFigures:
    server_cycles: int
    met: int
    mean_cost: float  # cents/h per cycle
    itl_error: float | None  # median |relative error|
    ttft_error: float | None
    tuned_share: float  # share of server-cycles whose prediction used tuned values

    @property
    def attainment(self) -> float:
        return self.met / self.server_cycles if self.server_cycles else float("nan")


def _met(row: Any) -> bool | None:
    load = row.load if hasattr(row, "load") else row["load"]
    get = (lambda k: getattr(row, k)) if hasattr(row, "load") else row.get
    itl, ttft = load.get("itlMs"), load.get("ttftMs")
    if itl is None and ttft is None:
        return None
    ok = True
    if get("slo_itl_ms") and itl is not None:
        ok = ok and itl <= get("slo_itl_ms")
    if get("slo_ttft_ms") and ttft is not None:
        ok = ok and ttft <= get("slo_ttft_ms")
    return ok


def run_figures(reports: list[Any], *, from_cycle: int = 15) -> RunFigures:
    """``reports``: CycleReport objects or their JSON; regular cycles numbered from 1 (the
    surge check's extra cycles, ``trigger: surge``, are left out: their windows are short)."""
    met = total = tuned = with_err = 0
    costs: list[float] = []
    itl: list[float] = []
    ttft: list[float] = []
    regular = [rep for rep in reports
               if (rep.trigger if hasattr(rep, "trigger") else rep.get("trigger")) != "surge"]
    for i, rep in enumerate(regular, start=1):
        if i < from_cycle:
            continue
        servers = rep.servers if hasattr(rep, "servers") else rep["servers"]
        costs.append(rep.total_cost if hasattr(rep, "total_cost") else rep["total_cost"])
        for row in servers:
            ok = _met(row)
            if ok is not None:
                total += 1
                met += int(ok)
            err = row.model_error if hasattr(row, "model_error") else row.get("model_error")
            if err:
                with_err += 1
                tuned += int(bool(err.get("tuned")))
                if err.get("itlError") is not None:
                    itl.append(abs(err["itlError"]))
                if err.get("ttftError") is not None:
                    ttft.append(abs(err["ttftError"]))
    return RunFigures(
        server_cycles=total, met=met,
        mean_cost=statistics.fmean(costs) if costs else float("nan"),
        itl_error=statistics.median(itl) if itl else None,
        ttft_error=statistics.median(ttft) if ttft else None,
        tuned_share=tuned / with_err if with_err else 0.0,
    )


def _median_errors(rec: Any) -> tuple[float | None, float | None]:
    errs = [r.model_error for r in rec.report.servers if r.model_error]
    i = [abs(e["itlError"]) for e in errs if e.get("itlError") is not None]
    t = [abs(e["ttftError"]) for e in errs if e.get("ttftError") is not None]
    return (statistics.median(i) if i else None, statistics.median(t) if t else None)


def model_error_section(run: Any, *, from_cycle: int = 15) -> str:
    """The demo report's "Model error and tuning" section (markdown)."""
    recs = run.records
    start = from_cycle if len(recs) >= from_cycle else 1
    f = run_figures([r.report for r in recs], from_cycle=start)
    mode = run.system.optimizer.tuning

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f} %"

    lines = [
        "## Model error and tuning", "",
        f"Tuning `{mode}`. Model error: predicted (with the values sizing used) vs emulated, "
        "at each window's operating point (the replicas that served it, the per-replica rate), "
        f"for servers whose window ran on one placement. From cycle {start}: SLO met in "
        f"{f.met}/{f.server_cycles} server-cycles ({pct(f.attainment)}), mean cost "
        f"{f.mean_cost:.0f} ¢/h, median |ITL error| {pct(f.itl_error)}, median |TTFT error| "
        f"{pct(f.ttft_error)}; {pct(f.tuned_share)} of the predictions used tuned values.", "",
    ]
    pairs = (recs[-1].report.tuning or {}).get("pairs") or [] if recs else []
    if pairs:
        lines += ["| pair | warmed up | observations (rejected) | conditioning | "
                  "applied multipliers | truth |", "|---|---|---:|---|---|---|"]
        truth_for = getattr(run.scenario, "truth_for", None)
        for p in pairs:
            model, _, acc = p["pair"].partition("/")
            truth = ""
            if truth_for is not None and run.scenario.truth:
                truth = ", ".join(f"{k} x{v:g}" for k, v in truth_for(model, acc).items())
            mult = ", ".join(f"{k} x{v:.2f}" for k, v in p["applied"].items())
            lines.append(f"| {p['pair']} | {'yes' if p['warmedUp'] else 'no'} | "
                         f"{p['observations']} ({p['rejected']}) | {p['conditioning']} | "
                         f"{mult} | {truth} |")
        lines.append("")
    return "\n".join(lines)


def model_error_plot(run: Any) -> Any:
    """Median |relative error| over servers per cycle, ITL and TTFT (log scale)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    t = [r.t_s / 60.0 for r in run.records]
    errs = [_median_errors(r) for r in run.records]
    for idx, label in ((0, "ITL"), (1, "TTFT")):
        pts: list[tuple[float, float]] = [
            (x, v) for x, e in zip(t, errs, strict=True) if (v := e[idx]) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker=".",
                    label=f"median |{label} error|")
    ax.set_yscale("log")
    ax.set_xlabel("simulated time (min)")
    ax.set_ylabel("relative error (%)")
    ax.set_title(f"Model error over servers (tuning {run.system.optimizer.tuning})")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend()
    else:  # e.g. a run too short for any cycle to have both a prediction and a reading
        ax.text(0.5, 0.5, "no cycle had both a prediction and an observed latency",
                transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    return fig
