"""Argument parsers of the subcommands other than ``validate``.

Handlers live next to what they drive and are imported only when the
subcommand runs, so ``--help`` stays fast. Defaults read from the environment
are raw strings, converted and checked by the option's ``type`` only when its
subcommand is parsed (see :mod:`controlloop.cli.args`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlloop.cli.args import (
    FlagAction,
    env_default,
    env_flag,
    env_value,
    integer,
    listen_address,
    port_number,
    positive_float,
    text,
)

AddCommon = Callable[[argparse.ArgumentParser], None]
Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]

SATURATION_HELP = (
    "best-effort policy for servers left short of capacity: None = they get nothing "
    "beyond what fits (no best effort), PriorityExhaustive = in priority order each takes "
    "what fits, RoundRobin = one replica at a time in turn, PriorityRoundRobin = "
    "round robin within each priority (default: the config's saturationPolicy, itself "
    "None unless set)"
)


class AppendOverEnv(argparse._AppendAction):
    """``append`` whose first flag replaces the default taken from the environment
    (flags win over variables) instead of adding to it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if self.default is not None and getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)


def register(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    _optimize(sub, add_common, lazy)
    _run(sub, add_common, lazy)
    _serve(sub, add_common, lazy)
    _demo(sub, add_common, lazy)
    _fidelity(sub, add_common, lazy)


def _plan_options(p: argparse.ArgumentParser) -> None:
    """Optimizer overrides shared by ``optimize`` and ``fidelity``."""
    p.add_argument("path", type=Path, help="config directory or system file")
    p.add_argument(
        "--solver", choices=["greedy", "milp"],
        help="solver (default: the config's optimizer options, greedy unless milpSolver)",
    )
    p.add_argument(
        "--unlimited", action="store_true", default=None,
        help="ignore capacity (planning); default: the config's optimizer.unlimited, "
        "which is limited unless set",
    )
    p.add_argument(
        "--limited", dest="unlimited", action="store_false",
        help="respect capacity (the default unless the config sets unlimited: true)",
    )
    p.add_argument(
        "--service-model",
        choices=["decode-prefill", "iteration"],
        help="service-time model (default: the config's optimizer options, decode-prefill "
        "unless set)",
    )
    p.add_argument(
        "--verify",
        choices=["none", "simulate"],
        help="check each chosen allocation in token-level simulation and repair misses "
        "(default: the config's optimizer verify, none unless set)",
    )
    p.add_argument(
        "--margin",
        choices=["none", "calibrated"],
        help="cap each pair's rate by a simulation-calibrated safe rate "
        "(default: the config's optimizer margin, none unless set)",
    )


def _optimize(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "optimize",
        help="decide accelerators, replicas and batch sizes for a system",
        description="Optimize the servers of a config (any form `validate` accepts) and "
        "print or write the allocation solution.",
    )
    _plan_options(p)
    p.add_argument(
        "--saturation-policy",
        choices=["None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"],
        help=SATURATION_HELP,
    )
    p.add_argument(
        "--time-limit", type=positive_float, metavar="SECONDS",
        help="MILP time limit in seconds, > 0 (default: the config's timeLimit, 10)",
    )
    p.add_argument(
        "--format", choices=["table", "json", "yaml"], default="table",
        help="output format (default: %(default)s)",
    )
    p.add_argument(
        "--output", "-o", type=Path, metavar="FILE",
        help="write to FILE instead of stdout (its directory must exist)",
    )
    p.add_argument("--explain", metavar="SERVER", help="list every candidate of one server")
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.cli.optimize", "cmd_optimize"))


def _run(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "run",
        help="run the control loop against a cluster",
        description="Every interval: collect load (Prometheus) and replicas (Kubernetes), "
        "optimize, and patch Deployments. Each option also reads CONTROLLOOP_<OPTION>; "
        "flags win over variables, which win over controller.yaml.",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=env_default("CONFIG", "config"),
        help="config directory (env CONTROLLOOP_CONFIG; default ./config)",
    )
    p.add_argument(
        "--kubeconfig", type=text, default=env_default("KUBECONFIG"),
        help="kubeconfig file (env CONTROLLOOP_KUBECONFIG; default $KUBECONFIG, "
        "else ~/.kube/config)",
    )
    p.add_argument(
        "--in-cluster",
        action=FlagAction,
        default=env_flag("IN_CLUSTER"),
        help="use the pod's service account (env CONTROLLOOP_IN_CLUSTER; default off)",
    )
    p.add_argument(
        "--context", type=text, default=env_default("CONTEXT"),
        help="kubeconfig context (env CONTROLLOOP_CONTEXT; default: the current one)",
    )
    p.add_argument(
        "--prometheus-url",
        type=text,
        default=env_default("PROMETHEUS_URL"),
        help="Prometheus base URL (env CONTROLLOOP_PROMETHEUS_URL; default from controller.yaml)",
    )
    env_ns = env_default("NAMESPACE")
    p.add_argument(
        "--namespace",
        action=AppendOverEnv,
        type=text,
        default=[ns.strip() for ns in (env_ns or "").split(",") if ns.strip()] or None,
        help="namespace to manage (repeatable; env CONTROLLOOP_NAMESPACE, comma-separated; "
        "default: controller.yaml namespaces, all when empty)",
    )
    p.add_argument(
        "--interval",
        type=positive_float,
        metavar="SECONDS",
        default=env_default("INTERVAL"),
        help="seconds between cycles, > 0 (env CONTROLLOOP_INTERVAL; default: controller.yaml "
        "intervalSeconds, itself 60 unless set)",
    )
    p.add_argument(
        "--once",
        action=FlagAction,
        default=env_flag("ONCE"),
        help="run one cycle and exit, non-zero if it failed (env CONTROLLOOP_ONCE)",
    )
    p.add_argument(
        "--dry-run",
        action=FlagAction,
        default=env_flag("DRY_RUN"),
        help="log the patches that would be sent; send nothing (env CONTROLLOOP_DRY_RUN)",
    )
    p.add_argument(
        "--cycle-log",
        type=Path,
        metavar="FILE",
        default=env_default("CYCLE_LOG"),
        help="append one JSON line per cycle to FILE (env CONTROLLOOP_CYCLE_LOG; default none)",
    )
    p.add_argument(
        "--listen",
        type=listen_address,
        metavar="HOST:PORT",
        default=env_default("LISTEN"),
        help="HOST:PORT for /healthz, /readyz, /metrics, POST /invoke (env CONTROLLOOP_LISTEN; "
        "default 0.0.0.0:8080 in-cluster, 127.0.0.1:8080 otherwise; 'off' disables)",
    )
    p.add_argument(
        "--leader-elect",
        action=FlagAction,
        default=env_flag("LEADER_ELECT"),
        help="hold a Lease so only one replica of the controller acts "
        "(env CONTROLLOOP_LEADER_ELECT; default: controller.yaml leaderElection.enabled)",
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
    p.add_argument(
        "--host", type=text, default=env_value("INFERNO_HOST", "localhost"),
        help="address to bind (env INFERNO_HOST; default localhost)",
    )
    p.add_argument(
        "--port", type=port_number, default=env_value("INFERNO_PORT", "8080"),
        help="port to bind (env INFERNO_PORT; default 8080)",
    )
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
        "simulated time and write a report (plots + summary). --log-level debug also "
        "prints each server's decision every cycle.",
    )
    p.add_argument(
        "scenario",
        nargs="?",
        default="ramp",
        help="built-in scenario name or a scenario YAML file (default: ramp; "
        "`--list` shows the built-in ones)",
    )
    p.add_argument("--list", action="store_true", help="list built-in scenarios and exit")
    p.add_argument(
        "--cycles", type=integer, help="number of control cycles, >= 1 (default: scenario's)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("demo-out"), metavar="DIR",
        help="report directory, created if missing (default: %(default)s)",
    )
    p.add_argument("--seed", type=integer, default=1, help="random seed (default: %(default)s)")
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.demo.command", "cmd_demo"))


def _fidelity(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "fidelity",
        help="check a plan's predicted latencies in token-level simulation",
        description="Optimize PATH and simulate every chosen allocation at its "
        "per-replica load: predicted vs simulated ITL and TTFT.",
    )
    _plan_options(p)
    p.add_argument(
        "--duration", type=positive_float, default=3600.0, metavar="SECONDS",
        help="simulated seconds per replica, > 0 (default: %(default)g)",
    )
    p.add_argument(
        "--seed", type=integer, default=1,
        help="random seed of every replica's simulation (default: %(default)s)",
    )
    p.add_argument(
        "--format", choices=["table", "json"], default="table",
        help="output format (default: %(default)s)",
    )
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.fidelity", "cmd_fidelity"))
