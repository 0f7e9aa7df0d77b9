"""Benchmark of the queueing model's SLO sizing (plain script; prints figures).

    .venv/bin/python benchmarks/bench_model.py [--runs 5] [--fleets 1000,3000]

(a) the servers of the large sample against every accelerator with perf data
for their model; (b) synthetic fleets of distinct token mixes against all
accelerators.  Each case: median wall time over ``--runs`` cold runs (new
cache), the warm-cache time, peak traced memory, pairs per second, chain
evaluations and head states touched per sizing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controlloop.model.perf import DecodePrefillPerf, batch_size
from controlloop.model.sizing import SizingCache, size

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples" / "large"


def _lower(obj: Any) -> Any:
    """JSON with keys lower-cased (the reference format is case-insensitive)."""
    if isinstance(obj, dict):
        return {str(k).lower(): _lower(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_lower(v) for v in obj]
    return obj


def _load(name: str) -> Any:
    return _lower(json.loads((EXAMPLES / f"{name}.json").read_text()))


@dataclass(frozen=True)
class Server:
    cls: str
    model: str
    in_tokens: float
    out_tokens: float
    max_batch: int = 0  # override; 0 = derive from the perf data


def sample_servers() -> list[Server]:
    out = []
    for s in _load("server-data")["servers"]:
        load = s.get("currentalloc", {}).get("load", {})
        out.append(Server(s.get("class", "Free"), s["model"], float(load.get("avgintokens", 0)),
                          float(load.get("avgouttokens", 0)), int(s.get("maxbatchsize", 0) or 0)))
    return out


def synthetic_servers(count: int) -> list[Server]:
    models = sorted({m["name"] for m in _load("model-data")["models"]})
    classes = [c["name"] for c in _load("serviceclass-data")["serviceclasses"]]
    return [Server(classes[i % len(classes)], models[i % len(models)],
                   64 + (53 * i) % 1985, 128 + (97 * i) % 1921) for i in range(count)]


def build_pairs(servers: list[Server]) -> tuple[DecodePrefillPerf, dict[str, np.ndarray]]:
    """One row per (server, accelerator with perf data for its model)."""
    perf_by_model: dict[str, list[dict[str, Any]]] = {}
    for m in _load("model-data")["models"]:
        perf_by_model.setdefault(m["name"], []).append(m)
    targets = {(c["name"], t["model"]): t for c in _load("serviceclass-data")["serviceclasses"]
               for t in c.get("modeltargets", [])}
    cols: dict[str, list[float]] = {k: [] for k in (
        "alpha", "beta", "gamma", "delta", "in", "out", "maxb", "at", "over", "ttft", "itl", "tps")}
    for s in servers:
        t = targets.get((s.cls, s.model), {})
        for m in perf_by_model.get(s.model, []):
            row = (m["decodeparms"]["alpha"], m["decodeparms"]["beta"],
                   m["prefillparms"]["gamma"], m["prefillparms"]["delta"], s.in_tokens,
                   s.out_tokens, m["maxbatchsize"], m["attokens"], s.max_batch,
                   t.get("slo-ttft", 0), t.get("slo-itl", 0), t.get("slo-tps", 0))
            for key, value in zip(cols, row, strict=True):
                cols[key].append(float(value))
    c = {k: np.asarray(v) for k, v in cols.items()}
    perf = DecodePrefillPerf(
        alpha=c["alpha"], beta=c["beta"], gamma=c["gamma"], delta=c["delta"],
        in_tokens=c["in"], out_tokens=c["out"],
        batch=batch_size(c["maxb"], c["at"], c["out"], override=c["over"]),
    )
    return perf, {"ttft_target": c["ttft"], "itl_target": c["itl"], "tps_target": c["tps"]}


def bench(label: str, servers: list[Server], runs: int) -> dict[str, float]:
    perf, targets = build_pairs(servers)
    times = []
    result = None
    for _ in range(runs):
        cache = SizingCache()  # cold: nothing sized yet
        t0 = time.perf_counter()
        result = size(perf, cache=cache, **targets)
        times.append(time.perf_counter() - t0)
    assert result is not None
    warm = []
    for _ in range(runs):
        t0 = time.perf_counter()
        size(perf, cache=cache, **targets)
        warm.append(time.perf_counter() - t0)
    tracemalloc.start()  # a separate run: tracing slows numpy's allocations down
    size(perf, cache=SizingCache(), **targets)
    peaks = [tracemalloc.get_traced_memory()[1]]
    tracemalloc.stop()
    median = statistics.median(times)
    figures = {
        "servers": len(servers), "pairs": perf.size, "cold_ms": 1e3 * median,
        "warm_ms": 1e3 * statistics.median(warm), "peak_mb": max(peaks) / 2**20,
        "pairs_per_s": perf.size / median, "evaluations": result.evaluations,
        "states_per_pair": result.states / perf.size,
        "head_states": int(np.sum(perf.batch + 1)),
        "infeasible": int(np.sum(~result.feasible)),
    }
    print(f"{label:>14}: servers={figures['servers']:5d} pairs={figures['pairs']:6d} "
          f"cold={figures['cold_ms']:8.1f} ms warm={figures['warm_ms']:6.1f} ms "
          f"peak={figures['peak_mb']:6.1f} MB pairs/s={figures['pairs_per_s']:9.0f} "
          f"evals={figures['evaluations']:3d} states/pair={figures['states_per_pair']:7.1f} "
          f"(head states {figures['head_states']}) infeasible={figures['infeasible']}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fleets", default="1000,3000")
    args = parser.parse_args()
    bench("large sample", sample_servers(), args.runs)
    for n in (int(v) for v in args.fleets.split(",") if v):
        bench(f"synthetic {n}", synthetic_servers(n), args.runs)


if __name__ == "__main__":
    main()
