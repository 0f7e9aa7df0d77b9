"""Sizing cost at the REST limits: wall time and peak memory of one ``optimize`` call
on systems at the per-request bounds (controlloop/server/limits.py).

Each case runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own.

    .venv/bin/python benchmarks/bench_limits.py
"""

from __future__ import annotations

import copy
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "config" / "examples" / "scenarios" / "large-unlimited.json"
# (label, copies of the large sample's 27 servers, batch override: 0 = derived)
CASES = [("large sample", 1, 0), ("~20,000 pairs, derived batch", 35, 0),
         ("~10M states at batch 4096", 4, 4096), ("~20,000 pairs at batch 499", 35, 499)]


def _doc(copies: int, batch: int) -> dict:
    doc = json.loads(SCENARIO.read_text())
    servers = doc["system"]["serverData"]["servers"]
    out = []
    for k in range(copies):
        for s in servers:
            s2 = copy.deepcopy(s)
            s2["name"] = f"{s['name']}-{k}"
            if batch:
                s2["maxBatchSize"] = batch
            out.append(s2)
    doc["system"]["serverData"]["servers"] = out
    return doc


def _one(copies: int, batch: int) -> None:
    from controlloop.config import parse_system_document
    from controlloop.optimizer import optimize
    from controlloop.optimizer.work import sizing_work

    system = parse_system_document(_doc(copies, batch), where="bench").system
    work = sizing_work(system)
    t0 = time.perf_counter()
    optimize(system)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    body = len(json.dumps(_doc(copies, batch)))
    print(json.dumps({"pairs": work.pairs, "states": work.states, "wall_s": round(wall, 2),
                      "peak_rss_mib": round(rss), "body_kib": round(body / 1024)}))


def main() -> None:
    if len(sys.argv) == 3:
        _one(int(sys.argv[1]), int(sys.argv[2]))
        return
    print(f"{'case':32} {'pairs':>7} {'states':>10} {'body KiB':>9} {'wall s':>7} {'peak MiB':>9}")
    for label, copies, batch in CASES:
        out = subprocess.run([sys.executable, __file__, str(copies), str(batch)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{label:32} {r['pairs']:>7} {r['states']:>10} {r['body_kib']:>9} "
              f"{r['wall_s']:>7} {r['peak_rss_mib']:>9}")


if __name__ == "__main__":
    main()
