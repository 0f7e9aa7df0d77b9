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
    """``reports``: CycleReport objects or their JSON; cycles numbered from 1."""
    met = total = tuned = with_err = 0
    costs: list[float] = []
    itl: list[float] = []
    ttft: list[float] = []
    for i, rep in enumerate(reports, start=1):
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
