"""Tuning vs no tuning vs an oracle on demo scenarios whose servers differ from the profile.

For each scenario, three runs of the demo (same seed): ``apply`` (the controller
learns the servers' perf online), ``off`` (it plans with the profile) and
``oracle`` (its profile is the truth, no tuning). From cycle 15 on: SLO
attainment over server-cycles (the emulated window's ITL and TTFT within the
server's SLO), mean planned cost per cycle, and the median relative error of
predicted (with the values sizing used, at the observed per-replica operating
point) vs observed ITL and TTFT. Optionally ``restart``: ``apply`` with the
controller replaced after cycle 20 (only the tuning store survives).

    .venv/bin/python benchmarks/bench_tuning.py [--scenarios drift-slower drift-faster drift-ramp]
        [--seed 1] [--plot tuning.png] [--restart]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from controlloop.demo.command import run_scenario
from controlloop.demo.fidelity_figures import run_figures
from controlloop.demo.loadscript import load_scenario

FROM_CYCLE = 15


def model_error_series(run: Any) -> tuple[list[float], list[float | None], list[float | None]]:
    """Per cycle: time (min), median |ITL error| and |TTFT error| over servers."""
    ts, itl, ttft = [], [], []
    for rec in run.records:
        errs = [r.model_error for r in rec.report.servers if r.model_error]
        i = [abs(e["itlError"]) for e in errs if e.get("itlError") is not None]
        t = [abs(e["ttftError"]) for e in errs if e.get("ttftError") is not None]
        ts.append(rec.t_s / 60.0)
        itl.append(statistics.median(i) if i else None)
        ttft.append(statistics.median(t) if t else None)
    return ts, itl, ttft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+",
                    default=["drift-slower", "drift-faster", "drift-ramp"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--restart", action="store_true")
    args = ap.parse_args()
    variants: list[tuple[str, dict[str, Any]]] = [
        ("apply", {"tuning": "apply"}), ("off", {"tuning": "off"}),
        ("oracle", {"tuning": "off", "oracle": True}),
    ]
    if args.restart:
        variants.append(("restart@20", {"tuning": "apply", "restart_at": 20}))
    series: dict[str, dict[str, Any]] = {}
    print(f"| scenario | run | SLO met (cycle >= {FROM_CYCLE}) | vs oracle (points) | "
          "mean cost (¢/h) | vs oracle | median ITL error | median TTFT error | wall (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.scenarios:
        sc = load_scenario(name)
        figs = {}
        for label, kw in variants:
            t = time.perf_counter()
            run = run_scenario(sc, seed=args.seed, **kw)
            wall = time.perf_counter() - t
            f = run_figures([r.report for r in run.records], from_cycle=FROM_CYCLE)
            figs[label] = (f, wall)
            series.setdefault(name, {})[label] = model_error_series(run)
        oracle = figs["oracle"][0]
        for label, (f, wall) in figs.items():
            def pct(x: float | None) -> str:
                return "–" if x is None else f"{100 * x:.1f} %"
            print(f"| {name} | {label} | {100 * f.attainment:.1f} % ({f.met}/{f.server_cycles}) | "
                  f"{100 * (f.attainment - oracle.attainment):+.1f} | {f.mean_cost:.0f} | "
                  f"{100 * (f.mean_cost / oracle.mean_cost - 1):+.1f} % | {pct(f.itl_error)} | "
                  f"{pct(f.ttft_error)} | {wall:.0f} |", flush=True)
    if args.plot is not None:
        plot(series, args.plot)
        print(f"plot: {args.plot}")


def plot(series: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(series), figsize=(5 * len(series), 6), squeeze=False,
                             sharex="col")
    for col, (name, runs) in enumerate(series.items()):
        for row, (idx, what) in enumerate(((1, "ITL"), (2, "TTFT"))):
            ax = axes[row][col]
            for label, data in runs.items():
                ts, vals = data[0], data[idx]
                pts = [(t, v) for t, v in zip(ts, vals, strict=True) if v is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], label=label)
            ax.set_yscale("log")
            ax.axvline(FROM_CYCLE, color="grey", lw=0.5, ls=":")
            ax.set_title(f"{name}: median |{what} error| over servers")
            ax.set_ylabel("%")
            if row == 1:
                ax.set_xlabel("simulated minutes")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
