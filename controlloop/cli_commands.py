"""Argument parsers of the subcommands other than ``validate``.

Handlers live next to what they drive and are imported only when the
subcommand runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlloop.cli import env_default, env_flag

AddCommon = Callable[[argparse.ArgumentParser], None]
Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    _optimize(sub, add_common, lazy)
    _run(sub, add_common, lazy)
    _serve(sub, add_common, lazy)
    _demo(sub, add_common, lazy)
    _fidelity(sub, add_common, lazy)


def _optimize(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "optimize",
        help="decide accelerators, replicas and batch sizes for a system",
        description="Optimize the servers of a config (any form `validate` accepts) and "
        "print or write the allocation solution.",
    )
    p.add_argument("path", type=Path, help="config directory or system file")
    p.add_argument(
        "--solver", choices=["greedy", "milp"], help="solver (default: from optimizer options)"
    )
    p.add_argument(
        "--unlimited", action="store_true", default=None, help="ignore capacity (planning)"
    )
    p.add_argument("--limited", dest="unlimited", action="store_false", help="respect capacity")
    p.add_argument(
        "--saturation-policy",
        choices=["None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"],
        help="best-effort policy for servers left short (default: from optimizer options)",
    )
    p.add_argument(
        "--service-model",
        choices=["decode-prefill", "iteration"],
        help="service-time model (default: from optimizer options)",
    )
    p.add_argument(
        "--verify",
        choices=["none", "simulate"],
        help="check each chosen allocation in token-level simulation and repair misses",
    )
    p.add_argument(
        "--margin",
        choices=["none", "calibrated"],
        help="cap each pair's rate by a simulation-calibrated safe rate",
    )
    p.add_argument("--time-limit", type=float, help="MILP time limit, seconds")
    p.add_argument("--format", choices=["table", "json", "yaml"], default="table")
    p.add_argument("--output", "-o", type=Path, help="write to FILE instead of stdout")
    p.add_argument("--explain", metavar="SERVER", help="list every candidate of one server")
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.optimizer.command", "cmd_optimize"))


def _run(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "run",
        help="run the control loop against a cluster",
        description="Every interval: collect load (Prometheus) and replicas (Kubernetes), "
        "optimize, and patch Deployments. Each option also reads CONTROLLOOP_<OPTION>.",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=env_default("CONFIG", "config"),
        help="config directory (env CONTROLLOOP_CONFIG; default ./config)",
    )
    p.add_argument("--kubeconfig", default=env_default("KUBECONFIG"), help="kubeconfig file")
    p.add_argument(
        "--in-cluster",
        action="store_true",
        default=env_flag("IN_CLUSTER"),
        help="use the pod's service account (env CONTROLLOOP_IN_CLUSTER)",
    )
    p.add_argument("--context", default=env_default("CONTEXT"), help="kubeconfig context")
    p.add_argument(
        "--prometheus-url",
        default=env_default("PROMETHEUS_URL"),
        help="Prometheus base URL (env CONTROLLOOP_PROMETHEUS_URL; default from controller.yaml)",
    )
    env_ns = env_default("NAMESPACE")
    p.add_argument(
        "--namespace",
        action="append",
        default=[ns for ns in (env_ns or "").split(",") if ns] or None,
        help="namespace to manage (repeatable; env CONTROLLOOP_NAMESPACE, comma-separated; "
        "default all)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=float(env_default("INTERVAL")) if env_default("INTERVAL") else None,
        help="seconds between cycles (env CONTROLLOOP_INTERVAL; default: controller.yaml "
        "intervalSeconds, 60)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        default=env_flag("ONCE"),
        help="run one cycle and exit (non-zero if it failed)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=env_flag("DRY_RUN"),
        help="log the patches that would be sent; send nothing (env CONTROLLOOP_DRY_RUN)",
    )
    p.add_argument(
        "--cycle-log",
        type=Path,
        default=env_default("CYCLE_LOG"),
        help="append one JSON line per cycle to FILE",
    )
    p.add_argument(
        "--listen",
        default=env_default("LISTEN"),
        help="HOST:PORT for /healthz, /readyz, /metrics, POST /invoke "
        "(default 0.0.0.0:8080 in-cluster, 127.0.0.1:8080 otherwise; 'off' disables)",
    )
    p.add_argument(
        "--leader-elect",
        action="store_true",
        default=env_flag("LEADER_ELECT"),
        help="hold a Lease so only one replica of the controller acts",
    )
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.daemon", "cmd_run"))


def _serve(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "serve",
        help="REST API of the optimizer",
        description="Serve the optimizer over HTTP (API of the reference server). Host and "
        "port also from INFERNO_HOST / INFERNO_PORT.",
    )
    p.add_argument("--host", default=os.environ.get("INFERNO_HOST", "localhost"))
    p.add_argument("--port", type=int, default=int(os.environ.get("INFERNO_PORT", "8080")))
    p.add_argument(
        "--stateful", action="store_true", help="keep the system in the server; full verb set"
    )
    p.add_argument("--config", type=Path, help="preload the system from a config (stateful)")
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.server", "cmd_serve"))


def _demo(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "demo",
        help="run the control loop against an emulated cluster",
        description="Run the production control loop against an emulated cluster in "
        "simulated time and write a report (plots + summary).",
    )
    p.add_argument(
        "scenario",
        nargs="?",
        default="ramp",
        help="built-in scenario name or a scenario YAML file (default: ramp; "
        "`--list` shows the built-in ones)",
    )
    p.add_argument("--list", action="store_true", help="list built-in scenarios and exit")
    p.add_argument("--cycles", type=int, help="number of control cycles (default: scenario's)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="report directory")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.demo.command", "cmd_demo"))


def _fidelity(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "fidelity",
        help="check a plan's predicted latencies in token-level simulation",
        description="Optimize PATH (or read a plan) and simulate every chosen allocation "
        "at its per-replica load: predicted vs simulated ITL and TTFT.",
    )
    p.add_argument("path", type=Path, help="config directory or system file")
    p.add_argument("--solver", choices=["greedy", "milp"])
    p.add_argument("--unlimited", action="store_true", default=None)
    p.add_argument("--service-model", choices=["decode-prefill", "iteration"])
    p.add_argument("--verify", choices=["none", "simulate"])
    p.add_argument("--margin", choices=["none", "calibrated"])  # [fidelity]
    p.add_argument("--duration", type=float, default=3600.0, help="simulated seconds per replica")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--format", choices=["table", "json"], default="table")
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.fidelity", "cmd_fidelity"))
