"""Benchmark the whole ``optimize`` (sizing + solve) on the large sample and synthetic fleets.

Run: ``.venv/bin/python benchmarks/bench_optimize.py [--sizes 1000 3000] [--repeat 3]
[--milp-repeat 3]``

Fleet of N servers: server i has arrivalRate = 30 + (37*i mod 571) req/min,
avgInTokens = 64 + (53*i mod 1985), avgOutTokens = 128 + (97*i mod 1921); its model
and class cycle through the large sample's 9 models and the 3 classes its servers use
(Premium, Bronze, Free). Capacity per type = the large sample's x ceil(N/27).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

from controlloop.config import load_system
from controlloop.demo.fleet import fleet
from controlloop.optimizer import DecisionStatus, Solution, optimize
from controlloop.specs import SystemSpec

LARGE = Path(__file__).resolve().parents[1] / "config" / "examples" / "large"


def counts(sol: Solution) -> tuple[int, int, int]:
    full = sum(d.status in (DecisionStatus.MEETS_SLO, DecisionStatus.ZERO_LOAD)
               for d in sol.decisions.values())
    return full, len(sol.saturated), len(sol.unallocated)


def served_demand(sol: Solution) -> float:
    return sum(d.demand * d.served_fraction for d in sol.decisions.values())


def run_all(system: SystemSpec, repeat: int, **kw: object) -> tuple[float, list[Solution]]:
    times, sols = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sols.append(optimize(system, **kw))  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), sols


def run(system: SystemSpec, repeat: int, **kw: object) -> tuple[float, Solution]:
    t, sols = run_all(system, repeat, **kw)
    return t, sols[-1]


def milp_gaps(sols: list[Solution]) -> str:
    """Per run: the reported gap and the message's level / cost gaps; then the median."""
    parts = []
    for sol in sols:
        detail = re.search(r"gaps: ([^;]*)", sol.message)
        gap = "-" if sol.gap is None else f"{sol.gap:.2%}"
        parts.append(gap + (f" ({detail.group(1)})" if detail else ""))
    gaps = [s.gap for s in sols if s.gap is not None]
    median = f"; median {statistics.median(gaps):.2%}" if gaps else ""
    return "gap per run: " + ", ".join(parts) + median


def milp_served(sol: Solution) -> str:
    return "/".join(f"{v:.2f}" for _, v in sorted(sol.served_by_priority().items()))


def report(label: str, mode: str, seconds: float, sol: Solution) -> None:
    full, sat, una = counts(sol)
    gap = "" if sol.gap is None else f" gap {sol.gap:.2%}"
    print(f"{label:>12} {mode:<14} {seconds * 1000:9.1f} ms  cost {sol.total_cost:12.2f}  "
          f"full/sat/unalloc {full}/{sat}/{una}  served {served_demand(sol):9.2f} req/s  "
          f"{sol.status.value}{gap}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 3000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--milp-time-limit", type=float, default=10.0)
    parser.add_argument("--milp-max", type=int, default=1000, help="largest N for the MILP")
    parser.add_argument("--milp-repeat", type=int, default=1,
                        help="MILP runs per fleet above 100 servers (median reported)")
    args = parser.parse_args()
    base = load_system(LARGE)
    cases = [("large (27)", base)] + [(f"fleet {n}", fleet(base, n)) for n in args.sizes]
    for label, system in cases:
        n = len(system.servers)
        rep = args.repeat if n <= 1000 else max(1, args.repeat)
        t, sol = run(system, rep, unlimited=True)
        report(label, "unlimited", t, sol)
        t, greedy = run(system, rep, unlimited=False, solver="greedy")
        report(label, "greedy-limited", t, greedy)
        if n > args.milp_max:
            continue
        t, milps = run_all(system, args.milp_repeat if n > 100 else rep, unlimited=False,
                           solver="milp", time_limit=args.milp_time_limit)
        milp = milps[-1]
        report(label, "milp-limited", t, milp)
        print(f"{'':>12} {milp_gaps(milps)}; served per priority {milp_served(milp)} "
              f"(greedy {milp_served(greedy)})")
        print(f"{'':>12} milp vs greedy: cost {milp.total_cost - greedy.total_cost:+.2f} "
              f"({milp.total_cost / max(greedy.total_cost, 1e-9) - 1:+.2%}), served demand "
              f"{served_demand(milp) - served_demand(greedy):+.2f} req/s; {milp.message[:240]}")


if __name__ == "__main__":
    main()
