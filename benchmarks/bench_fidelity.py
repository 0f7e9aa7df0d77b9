"""Plans that hold: SLO attainment in token-level simulation, cost and optimize time.

For each sample (small, large) x mode (greedy limited, MILP limited, unlimited)
x option, optimize and simulate every chosen allocation for one hour per
replica (`controlloop.fidelity.fidelity_report`, seed 1; seeds 2 and 3 as a
robustness check), and print: fully served servers that miss a target in
simulation, total cost, cost ratio vs the seed plan (decode-prefill model, no
verification) of the same sample and mode, and optimize wall time with cold
caches (and warm, i.e. a second identical call).

    .venv/bin/python benchmarks/bench_fidelity.py [--samples small large] [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from controlloop.config import load_system
from controlloop.fidelity import fidelity_report
from controlloop.optimizer import calibrate, verify
from controlloop.optimizer.api import optimize

ROOT = Path(__file__).resolve().parents[1] / "config" / "examples"
MODES = {"greedy": {"solver": "greedy", "unlimited": False},
         "milp": {"solver": "milp", "unlimited": False},
         "unlimited": {"solver": "greedy", "unlimited": True}}
OPTIONS: dict[str, dict[str, Any]] = {
    "seed": {},
    "iteration": {"service_model": "iteration"},
    "verify": {"verify": "simulate"},
    "calibrated": {"margin": "calibrated"},
    "calibrated+verify": {"margin": "calibrated", "verify": "simulate"},
}


def cold() -> None:
    """Forget every cached simulation, so the first call pays for them."""
    verify.DEFAULT_ORACLE = calibrate.SimOracle(verify.DEFAULT_ORACLE.settings)
    calibrate._CALIBRATORS.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", nargs="+", default=["small", "large"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = ap.parse_args()
    print("| sample | mode | option | missing (seed 1) | missing (seeds "
          f"{','.join(map(str, args.seeds))}) | served fully | cost (cents/h) | vs seed "
          "| time cold (s) | time warm (s) |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    for sample in args.samples:
        for mode, kw in MODES.items():
            base_cost = None
            for option, okw in OPTIONS.items():
                path = ROOT / sample
                if option == "iteration":
                    if sample != "large":
                        continue  # the perfParms sample is derived from the large one
                    path = ROOT / "iteration"
                system = load_system(path)
                cold()
                t0 = time.perf_counter()
                sol = optimize(system, **kw, **okw)
                t_cold = time.perf_counter() - t0
                t0 = time.perf_counter()
                optimize(system, **kw, **okw)
                t_warm = time.perf_counter() - t0
                if base_cost is None:
                    base_cost = sol.total_cost
                misses = [len(fidelity_report(system, sol, seed=s).missing) for s in args.seeds]
                served = fidelity_report(system, sol, duration_s=60).fully_served
                print(f"| {sample} | {mode} | {option} | {misses[0]} | "
                      f"{'/'.join(map(str, misses))} | {served}/{len(system.servers)} | "
                      f"{sol.total_cost:.2f} | {sol.total_cost / base_cost:.3f} | "
                      f"{t_cold:.2f} | {t_warm:.2f} |", flush=True)


if __name__ == "__main__":
    main()
