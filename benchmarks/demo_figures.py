"""Headline figures of demo scenarios: SLO attainment, mean cost, dropped requests.

    PYTHONPATH=$PWD python benchmarks/demo_figures.py [SCENARIO ...] \
        [--termination example|default] [--set controller.KEY=YAML ...] [--legacy]
        [--compare DIR]

Every scenario runs seeded (seed 1) as ``controlloop demo`` would; ``--termination``
overrides the scenario's pod termination preset, ``--set`` a ``controller:`` setting
(dotted path, YAML value), e.g. ``--set behavior.panic.enabled=false``.
``--legacy`` runs the loop as it was before issue 18 (no surge check, trend lead
with leadSeconds, no pod-deletion-cost, Kubernetes' and vLLM's termination
defaults); ``--compare DIR`` runs each scenario both ways and plots SLO met,
dropped requests and cost per cycle into ``DIR/compare-<scenario>.png``.
Figures are recorded in docs/demo.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml

from controlloop.demo.command import run_scenario
from controlloop.demo.loadscript import TERMINATION_PRESETS, builtin_names, load_scenario
from controlloop.demo.records import DemoRun, slo_met
from controlloop.demo.report import summary_figures

LEGACY = {
    "behavior.panic.enabled": False, "behavior.forecaster": "trend",
    "forecast.maxIncrease": 1.0, "forecast.learnStartup": False,
    "actuation.podDeletionCost": False,
}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", help="built-in names or files (default: all built-in)")
    ap.add_argument("--termination", choices=sorted(TERMINATION_PRESETS))
    ap.add_argument("--set", action="append", default=[], metavar="controller.KEY=YAML")
    ap.add_argument("--legacy", action="store_true", help="the loop before issue 18")
    ap.add_argument("--compare", metavar="DIR", help="plot legacy vs now per scenario")
    args = ap.parse_args(argv)
    sets = []
    for item in args.set:
        key, _, raw = item.partition("=")
        if not key.startswith("controller.") or not raw:
            ap.error(f"--set {item}: expected controller.KEY=VALUE")
        sets.append((key[len("controller."):], yaml.safe_load(raw)))
    if args.compare:
        for name in args.scenarios or ["ramp", "spike"]:
            sc = load_scenario(name)
            runs = {"before": _run(sc, list(LEGACY.items()), "default"),
                    "after": _run(sc, sets, args.termination)}
            path = _plot(name, runs, args.compare)
            for label, run in runs.items():
                f = summary_figures(run)
                print(f"{name} {label}: SLO met {f['sloMet']:.0f}/{f['serverCycles']:.0f} "
                      f"({f['sloMetPct']:.1f} %), mean cost {f['meanCost']:.1f}, dropped "
                      f"{f['dropped']:.0f}, lost {f['lost']:.0f}", flush=True)
            print(f"plot: {path}")
        return 0
    if args.legacy:
        sets = list(LEGACY.items()) + sets
    termination = args.termination or ("default" if args.legacy else None)
    print("| scenario | SLO met (server-cycles) | mean cost (¢/h) | dropped | lost / offered "
          "| fast-path cycles |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.scenarios or builtin_names():
        run = _run(load_scenario(name), sets, termination)
        sc = run.scenario
        f = summary_figures(run)
        fast = int(f["surgeCycles"])
        print(f"| {sc.name} | {f['sloMet']:.0f}/{f['serverCycles']:.0f} ({f['sloMetPct']:.1f} %) "
              f"| {f['meanCost']:.1f} | {f['dropped']:.0f} | {f['lost']:.0f} / {f['offered']:.0f} "
              f"| {fast} |", flush=True)
    return 0


def _run(sc: Any, sets: list[tuple[str, Any]], termination: str | None) -> DemoRun:
    controller = dict(sc.controller)
    for key, value in sets:
        _set(controller, key, value)
    changes: dict[str, Any] = {"controller": controller}
    if termination:
        changes["termination"] = dict(TERMINATION_PRESETS[termination])
    return run_scenario(dataclasses.replace(sc, **changes))


def _plot(name: str, runs: dict[str, DemoRun], outdir: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for label, run in runs.items():
        recs = [r for r in run.records if not r.fast]
        t = [r.t_s / 60 for r in recs]
        met = []
        for r in recs:
            known = [m for m in (slo_met(row) for row in r.report.servers) if m is not None]
            met.append(100.0 * sum(known) / len(known) if known else float("nan"))
        f = summary_figures(run)
        axes[0].step(t, met, where="post", label=f"{label}: {f['sloMetPct']:.1f} % overall")
        # dropped requests per regular cycle: windows closed by surge cycles count with the
        # next regular cycle
        dropped, acc = [], 0
        for r in run.records:
            acc += sum(int(c["observed"].get("dropped", 0)) for c in r.cluster.values())
            if not r.fast:
                dropped.append(acc)
                acc = 0
        axes[1].step(t, dropped, where="post", label=f"{label}: {f['dropped']:.0f} in all")
        axes[2].step(t, [r.report.total_cost for r in recs], where="post",
                     label=f"{label}: mean {f['meanCost']:.0f} ¢/h")
    axes[0].set_ylabel("servers meeting SLO (%)")
    axes[1].set_ylabel("running requests dropped")
    axes[2].set_ylabel("planned cost (¢/h)")
    axes[2].set_xlabel("simulated time (minutes)")
    axes[0].set_title(f"{name}: before (legacy loop, no drain) and after (this loop, example "
                      "drain)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(outdir) / f"compare-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
