"""Why predicted TTFT was off by ~100 % on the emulated ``ramp`` demo (profile == servers).

Runs ``controlloop demo ramp`` without tuning and compares, per server-cycle, the
observed window (ITL, TTFT) with:

1. ``planned``: the cycle report's predicted figures (the decision's: the *desired*
   replicas at the sized demand, forecast lead and backlog included), against the window
   observed at the next cycle (the window that allocation served);
2. ``at the operating point``: the chain at the window's own operating point (the
   replicas that served it, the observed per-replica rate, batch) -- what the cycle
   report's ``model_error`` now gives;
3. as 2 with the prefill term of TTFT taken as one joiner's prefill (``gamma + delta*I``,
   MODEL.md section 7) instead of section 2's ``gamma + delta*I*n*``;

then simulates a few of the demo's operating points for 6 hours to compare the chain's
mean TTFT with the long-run mean and with the median of 60-second window means.

    .venv/bin/python benchmarks/bench_ttft_finding.py [--hours 6]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from controlloop.demo.command import build_system, run_scenario
from controlloop.demo.fidelity_figures import run_figures
from controlloop.demo.loadscript import load_scenario
from controlloop.model.perf import DecodePrefillPerf
from controlloop.model.queue import evaluate_chain
from controlloop.sim import ReplicaParams, ReplicaSimulator, poisson_arrivals


def chain(p: object, batch: int, rate_rpm: float, i: float, k: float) -> tuple[float, ...]:
    d, f = p.decode_parms, p.prefill_parms  # type: ignore[attr-defined]
    perf = DecodePrefillPerf(alpha=d.alpha, beta=d.beta, gamma=f.gamma, delta=f.delta,
                             in_tokens=i, out_tokens=k, batch=batch)
    m = perf.metrics(evaluate_chain(perf.chain(), rate_rpm / 60000.0))
    joiner = float(m.wait[0]) + f.gamma + f.delta * i
    return float(m.itl[0]), float(m.ttft[0]), joiner, float(m.concurrency[0])


def med(xs: list[float]) -> str:
    return f"{100 * statistics.median(xs):.0f} %" if xs else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=6.0)
    args = ap.parse_args()
    sc = load_scenario("ramp")
    system, _ = build_system(sc, tuning="off")
    run = run_scenario(sc, tuning="off")
    reps = [r.report for r in run.records]
    planned_i, planned_t, op_i, op_t, op_j = [], [], [], [], []
    points: list[tuple[str, str, int, float]] = []
    for k in range(1, len(reps)):
        prev = {s.server: s for s in reps[k - 1].servers}
        for s in reps[k].servers:
            o, pv = s.load, prev[s.server]
            itl, ttft = o.get("itlMs"), o.get("ttftMs")
            if not itl or not ttft:
                continue
            if pv.predicted_itl_ms and pv.predicted_ttft_ms:
                planned_i.append(abs(pv.predicted_itl_ms / itl - 1))
                planned_t.append(abs(pv.predicted_ttft_ms / ttft - 1))
            n, acc = s.ready_replicas, s.current_accelerator
            stable = (n and n == s.current_replicas and acc == pv.current_accelerator
                      and pv.ready_replicas == n and s.batch)
            if not stable:
                continue
            perf = system.perf(s.model, acc)
            assert perf is not None and s.batch
            rate = o["arrivalRate"] / n
            c_itl, c_ttft, c_join, _ = chain(perf, s.batch, rate, o["avgInTokens"],
                                             o["avgOutTokens"])
            op_i.append(abs(c_itl / itl - 1))
            op_t.append(abs(c_ttft / ttft - 1))
            op_j.append(abs(c_join / ttft - 1))
            points.append((s.model, acc, s.batch, rate))
    print("median |relative error| of predicted vs observed, ramp, profile == servers\n")
    print("| compared with the window | server-cycles | ITL | TTFT |")
    print("|---|---:|---:|---:|")
    print(f"| planned (cycle report's prediction, next window) | {len(planned_t)} | "
          f"{med(planned_i)} | {med(planned_t)} |")
    print(f"| the chain at the window's operating point | {len(op_t)} | {med(op_i)} | "
          f"{med(op_t)} |")
    print(f"| same, TTFT prefill = one joiner's (gamma + delta*I) | {len(op_j)} | "
          f"{med(op_i)} | {med(op_j)} |")
    # The whole loop with each TTFT prefill form (no tuning; model error from cycle 15).
    print("\nthe demo with each TTFT prefill form (tuning off), from cycle 15\n")
    print("| optimizer.ttftPrefill | SLO met | mean cost (¢/h) | median ITL error | "
          "median TTFT error |")
    print("|---|---:|---:|---:|---:|")
    for form, r in (("batch", run), ("joiner", run_scenario(
            sc, tuning="off", optimizer={"ttftPrefill": "joiner"}))):
        f = run_figures([x.report for x in r.records])
        print(f"| {form} | {100 * f.attainment:.1f} % ({f.met}/{f.server_cycles}) | "
              f"{f.mean_cost:.0f} | {100 * (f.itl_error or 0):.1f} % | "
              f"{100 * (f.ttft_error or 0):.1f} % |", flush=True)
    # Steady state at typical operating points of the demo (the median rate of each pair).
    rates: dict[tuple[str, str, int], list[float]] = {}
    for model, acc, batch, rate in points:
        rates.setdefault((model, acc, batch), []).append(rate)
    best = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\nsteady state, {args.hours:g} h simulated per point (after 10 min warm-up)\n")
    print("| pair | N | rpm/replica | n* | chain TTFT | chain W | sim mean TTFT | sim W | "
          "median of 60 s means | p90 of 60 s means | chain ITL | sim ITL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, acc, batch), rate in sorted(best.items()):
        perf = system.perf(model, acc)
        assert perf is not None and perf.decode_parms and perf.prefill_parms
        d, f = perf.decode_parms, perf.prefill_parms
        dp = DecodePrefillPerf(alpha=d.alpha, beta=d.beta, gamma=f.gamma, delta=f.delta,
                               in_tokens=128, out_tokens=1024, batch=batch)
        m = dp.metrics(evaluate_chain(dp.chain(), rate / 60000.0))
        sim = ReplicaSimulator(ReplicaParams(alpha=d.alpha, beta=d.beta, gamma=f.gamma,
                                             delta=f.delta, batch=batch, in_tokens=128,
                                             out_tokens=1024))
        rng = np.random.default_rng(1)
        end = args.hours * 3600e3 + 600e3
        sim.offer(poisson_arrivals(rng, rate_per_ms=rate / 60000, start_ms=0, end_ms=end))
        sim.advance(600e3)
        sim.drain_stats()
        t, windows, ttfts, waits, dt, dn = 600e3, [], [], [], 0.0, 0
        while t < end:
            t += 60e3
            sim.advance(t)
            st = sim.drain_stats()
            if st.ttft_ms.size:
                windows.append(float(st.ttft_ms.mean()))
                ttfts.append(st.ttft_ms)
                waits.append(st.wait_ms)
            dt, dn = dt + st.decode_time_ms, dn + st.decode_tokens
        all_t, all_w = np.concatenate(ttfts), np.concatenate(waits)
        print(f"| {model}/{acc} | {batch} | {rate:.0f} | {m.concurrency[0]:.1f} | "
              f"{m.ttft[0]:.0f} | {m.wait[0]:.0f} | {all_t.mean():.0f} | {all_w.mean():.0f} | "
              f"{np.median(windows):.0f} | {np.percentile(windows, 90):.0f} | "
              f"{m.itl[0]:.1f} | {dt / dn:.1f} |", flush=True)


if __name__ == "__main__":
    main()
