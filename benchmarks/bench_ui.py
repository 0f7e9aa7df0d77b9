"""Size and cost of the dashboard's history (plain script; prints figures).

    .venv/bin/python benchmarks/bench_ui.py [--scenario ramp] [--cycles 10] [--history 720]

Runs a demo scenario, publishes its cycle reports to a ``ReportStore``, then fills the
store to ``--history`` cycles by re-publishing them, and reports: bytes per cycle of the
API's JSON, the full history's JSON (what a page loads when it opens), plain and gzipped,
the time to serve it (``/ui/api/cycles?since=0``), the time to publish one cycle, and the store's
memory (tracemalloc) at the full history.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

from controlloop.demo.command import run_scenario
from controlloop.demo.loadscript import load_scenario
from controlloop.ui import ReportStore, UiApp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="ramp")
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--history", type=int, default=720)
    args = ap.parse_args()
    run = run_scenario(load_scenario(args.scenario), cycles=args.cycles)
    reports = [r.report for r in run.records]
    servers = len(reports[-1].servers)

    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    store = ReportStore(args.history)
    publish_s = []
    for i in range(args.history):
        t = time.perf_counter()
        store.publish(reports[i % len(reports)])
        publish_s.append(time.perf_counter() - t)
    memory = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()

    app = UiApp(store)
    serve_s = []
    for _ in range(5):
        t = time.perf_counter()
        body = app.handle("/ui/api/cycles?since=0").body
        serve_s.append(time.perf_counter() - t)
    packed_s = []
    for _ in range(5):
        t = time.perf_counter()
        packed = app.handle("/ui/api/cycles?since=0", accept_encoding="gzip").body
        packed_s.append(time.perf_counter() - t)
    one = app.handle(f"/ui/api/cycles?since={args.history - 1}").body
    print(f"scenario {args.scenario}: {servers} servers, history {args.history} cycles")
    print(f"  one cycle (poll):      {len(one) / 1024:8.1f} KiB")
    print(f"  full history (open):   {len(body) / 1024:8.1f} KiB")
    print(f"  full history, gzipped: {len(packed) / 1024:8.1f} KiB")
    print(f"  serve full history:    {statistics.median(serve_s) * 1000:8.1f} ms (median of 5)")
    print(f"  ... gzipped:           {statistics.median(packed_s) * 1000:8.1f} ms (median of 5)")
    print(f"  publish one cycle:     {statistics.median(publish_s) * 1e6:8.1f} µs (median)")
    print(f"  store memory:          {memory / 1024 / 1024:8.2f} MiB")


if __name__ == "__main__":
    main()
