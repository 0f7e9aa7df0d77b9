"""Speed of the token-level replica simulation.

Prints simulated replica-hours per wall second for typical (model, accelerator)
pairs of the large sample at I=128, K=1024, and the wall time of 27
allocations x 1 replica-hour (a loop and the process pool of simulate_many).

    .venv/bin/python benchmarks/bench_sim.py [--data DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from controlloop.sim import ReplicaParams, SimCase, simulate, simulate_many

HOUR_MS = 3_600_000.0
CANDIDATES = (Path("config/examples/large"), Path("/work/shared/data/large"))
TYPICAL = (
    ("granite_13b", "A100"),
    ("llama_70b", "H100"),
    ("granite_34b", "L4"),
    ("granite_13b", "MI300X"),
    ("granite_13b", "AIU2"),
)


def load_perf(data_dir: Path | None) -> dict[tuple[str, str], dict]:
    dirs = [data_dir] if data_dir else [d for d in CANDIDATES if d.is_dir()]
    if not dirs:
        raise SystemExit("no model data: pass --data DIR")
    models = json.loads((dirs[0] / "model-data.json").read_text())["models"]
    return {(m["name"], m["acc"]): m for m in models}


def params_for(entry: dict, *, in_tokens: int = 128, out_tokens: int = 1024) -> ReplicaParams:
    """Batch size per docs/model-spec.md section 2: max(1, floor(maxBatchSize * atTokens / K))."""
    batch = max(1, math.floor(entry["maxBatchSize"] * entry["atTokens"] / out_tokens))
    return ReplicaParams(
        alpha=entry["decodeParms"]["alpha"],
        beta=entry["decodeParms"]["beta"],
        gamma=entry["prefillParms"]["gamma"],
        delta=entry["prefillParms"]["delta"],
        batch=batch,
        in_tokens=in_tokens,
        out_tokens=out_tokens,
    )


def bench_one(params: ReplicaParams, load: float, repeat: int) -> tuple[float, float]:
    """Best wall time of one replica-hour and the arrivals simulated per run."""
    rate = load * params.service_rate(params.batch)
    best = math.inf
    for seed in range(repeat):
        t0 = time.perf_counter()
        res = simulate(params, rate_per_ms=rate, duration_ms=HOUR_MS, warmup_ms=0.0, seed=seed)
        best = min(best, time.perf_counter() - t0)
    return best, res.arrivals


def allocations(perf: dict[tuple[str, str], dict], count: int = 27) -> list[SimCase]:
    """``count`` allocations: each model on a rotating accelerator, at 0.8 * mu(N)."""
    models = sorted({m for m, _ in perf})
    accs = ("A100", "H100", "L40S", "MI250", "G2", "L4", "MI300X", "2xA100", "AIU2")
    cases: list[SimCase] = []
    i = 0
    while len(cases) < count:
        key = (models[i % len(models)], accs[i % len(accs)])
        i += 1
        if key in perf:
            p = params_for(perf[key])
            cases.append(
                SimCase(
                    params=p,
                    rate_per_ms=0.8 * p.service_rate(p.batch),
                    duration_ms=HOUR_MS,
                    warmup_ms=0.0,
                    seed=len(cases),
                )
            )
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    perf = load_perf(args.data)
    print(
        f"{'model':12} {'acc':7} {'N':>3} {'load':>4} {'arrivals/h':>10} "
        f"{'ms/rep-hour':>11} {'rep-hours/s':>11}"
    )
    for model, acc in TYPICAL:
        if (model, acc) not in perf:
            continue
        p = params_for(perf[(model, acc)])
        for load in (0.5, 0.8, 0.95):
            wall, arrivals = bench_one(p, load, args.repeat)
            print(
                f"{model:12} {acc:7} {p.batch:3d} {load:4.2f} {arrivals:10d} "
                f"{wall * 1e3:11.1f} {1 / wall:11.0f}"
            )
    cases = allocations(perf)
    pool = max(2, os.cpu_count() or 1)
    for workers in (1, pool):
        t0 = time.perf_counter()
        simulate_many(cases, workers=workers)
        label = "loop" if workers == 1 else f"process pool of {pool}, spawn included"
        print(
            f"{len(cases)} allocations x 1 replica-hour ({label}): {time.perf_counter() - t0:.2f} s"
        )


if __name__ == "__main__":
    main()
