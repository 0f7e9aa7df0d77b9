"""``controlloop tuning show``: the learnt state, from the ConfigMap or a file."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from controlloop.config import ConfigError
from controlloop.tuning.estimator import PerfEstimator
from controlloop.tuning.tuner import Tuner


def tuner_from_doc(doc: dict[str, Any], *, where: str) -> Tuner:
    """A Tuner holding the saved estimators (each against the profile it was learnt on)."""
    pairs = doc.get("pairs")
    if not isinstance(pairs, dict):
        raise ConfigError([f"{where}: no 'pairs' mapping: not a tuning state"])
    tuner = Tuner()
    problems = []
    for key, state in sorted(pairs.items()):
        try:
            tuner.estimators[key] = PerfEstimator.from_dict(
                state, state["profile"], state["serviceModel"])
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{where}: pairs.{key}: {exc}")
    if problems:
        raise ConfigError(problems)
    return tuner


def format_rows(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "nothing learnt yet"
    out = [f"{'pair':28s} {'state':9s} {'obs':>4s} {'rej':>4s} {'NIS':>6s} {'cond':8s} parameters"
           " (profile -> used, x multiplier ± 1-sigma)"]
    for r in rows:
        state = "warm" if r["warmedUp"] else "warming"
        nis = "-" if r["nis"] is None or not math.isfinite(r["nis"]) else f"{r['nis']:.1f}"
        params = ", ".join(
            f"{n} {r['profile'][n]:.4g}->{r['params'][n]:.4g} (x{r['applied'][n]:.2f} "
            f"±{100 * r['sigma'][n]:.0f}%)" for n in r["params"])
        out.append(f"{r['pair']:28s} {state:9s} {r['observations']:4d} {r['rejected']:4d} "
                   f"{nis:>6s} {r['conditioning']:8s} {params}")
    return "\n".join(out)


def cmd_tuning_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    if args.file is not None:
        where = str(args.file)
        try:
            doc = json.loads(args.file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{where}: cannot read: {exc.strerror or exc}"]) from None
        except ValueError as exc:
            raise ConfigError([f"{where}: not JSON: {exc}"]) from None
    else:
        from controlloop.cluster.kube import KubeClient
        from controlloop.cluster.kube_errors import KubeError
        from controlloop.cluster.tuning_store import ConfigMapStore

        where = f"configmap {args.namespace}/{args.name}"
        if args.kubeconfig and not Path(args.kubeconfig).is_file():
            raise ConfigError([f"kubernetes: kubeconfig {args.kubeconfig} does not exist"])
        try:
            kube = KubeClient.from_kubeconfig(args.kubeconfig, args.context)
        except Exception as exc:  # noqa: BLE001 - the client's config errors have no base
            raise ConfigError([f"kubernetes: {exc}"]) from None
        try:
            loaded = ConfigMapStore(kube, args.namespace, args.name).load()
        except KubeError as exc:
            raise ConfigError([f"{where}: {exc}"]) from None
        doc = loaded if loaded is not None else {"pairs": {}}
    if not isinstance(doc, dict):
        raise ConfigError([f"{where}: not a tuning state (expected a JSON object)"])
    rows = tuner_from_doc(doc, where=where).rows()
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str), file=stream)
    else:
        print(format_rows(rows), file=stream)
    return 0
