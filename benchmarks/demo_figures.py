"""Headline figures of demo scenarios: SLO attainment, mean cost, dropped requests.

    PYTHONPATH=$PWD python benchmarks/demo_figures.py [SCENARIO ...] \
        [--termination example|default] [--set controller.KEY=YAML ...]

Every scenario runs seeded (seed 1) as ``controlloop demo`` would; ``--termination``
overrides the scenario's pod termination preset, ``--set`` a ``controller:`` setting
(dotted path, YAML value), e.g. ``--set behavior.panic.enabled=false``.
Figures are recorded in docs/demo.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import yaml

from controlloop.demo.command import run_scenario
from controlloop.demo.loadscript import TERMINATION_PRESETS, builtin_names, load_scenario
from controlloop.demo.report import summary_figures


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
    args = ap.parse_args(argv)
    print("| scenario | SLO met (server-cycles) | mean cost (¢/h) | dropped | lost / offered "
          "| fast-path cycles |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.scenarios or builtin_names():
        sc = load_scenario(name)
        controller = dict(sc.controller)
        for item in args.set:
            key, _, raw = item.partition("=")
            if not key.startswith("controller.") or not raw:
                ap.error(f"--set {item}: expected controller.KEY=VALUE")
            _set(controller, key[len("controller."):], yaml.safe_load(raw))
        changes: dict[str, Any] = {"controller": controller}
        if args.termination:
            changes["termination"] = dict(TERMINATION_PRESETS[args.termination])
        run = run_scenario(dataclasses.replace(sc, **changes))
        f = summary_figures(run)
        fast = int(f["surgeCycles"])
        print(f"| {sc.name} | {f['sloMet']:.0f}/{f['serverCycles']:.0f} ({f['sloMetPct']:.1f} %) "
              f"| {f['meanCost']:.1f} | {f['dropped']:.0f} | {f['lost']:.0f} / {f['offered']:.0f} "
              f"| {fast} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
