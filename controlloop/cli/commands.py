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
    _tuning(sub, add_common, lazy)
    _export_crs(sub, add_common, lazy)


def _tuning(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "tuning",
        help="what the controller learnt of each (model, accelerator)'s performance",
        description="Show the online tuner's state: per (model, accelerator) the learnt perf "
        "parameters against the profile, their uncertainty, warm-up, conditioning and NIS. "
        "Reads the controller's ConfigMap, or a saved JSON document with --file.",
    )
    tsub = p.add_subparsers(dest="tuning_command", metavar="{show}", required=True)
    show = tsub.add_parser("show", help="print the learnt parameters",
                           description="Print the learnt parameters per (model, accelerator).")
    show.add_argument("--file", type=Path, metavar="PATH",
                      help="a saved state (the ConfigMap's tuning.json) instead of the cluster")
    show.add_argument(
        "--kubeconfig", type=text, default=env_default("KUBECONFIG"),
        help="kubeconfig file (env CONTROLLOOP_KUBECONFIG; default $KUBECONFIG, "
        "then ~/.kube/config)",
    )
    show.add_argument("--context", type=text, default=env_default("CONTEXT"),
                      help="kubeconfig context (env CONTROLLOOP_CONTEXT; default: the current one)")
    show.add_argument("--namespace", type=text, default="controlloop-system",
                      help="the controller's namespace, where its ConfigMap is "
                      "(default: %(default)s, the leaderElection namespace)")
    show.add_argument("--name", type=text, default="controlloop-tuning",
                      help="ConfigMap name (default: %(default)s)")
    show.add_argument("--format", choices=["table", "json"], default="table",
                      help="output format (default: %(default)s)")
    add_common(show)
    show.set_defaults(handler=lazy("controlloop.tuning_show", "cmd_tuning_show"))


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
        "--saturated-latency",
        choices=["sized", "offered"],
        help="ITL/TTFT shown for a best-effort allocation: at the rate it was sized to "
        "(sized, the reference's figures) or at the load its fewer replicas get (offered) "
        "(default: the config's saturatedLatency, sized)",
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
    _run_crd_and_http_options(p)
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.daemon", "cmd_run"))


def _run_crd_and_http_options(p: argparse.ArgumentParser) -> None:
    """``run``: where specs come from (docs/crds.md) and who may call the HTTP endpoints."""
    p.add_argument(
        "--specs", choices=["files", "crd"], default=env_default("SPECS", "files"),
        help="read the static specs from --config files, or from the controlloop.io custom "
        "resources through the API (env CONTROLLOOP_SPECS; default files)",
    )
    p.add_argument(
        "--crd-namespace", type=text, default=env_default("CRD_NAMESPACE"),
        help="(--specs crd) namespace of the spec resources (env CONTROLLOOP_CRD_NAMESPACE; "
        "default: the pod's namespace in-cluster, else controlloop-system)",
    )
    p.add_argument(
        "--optimizer", type=text, default=env_default("OPTIMIZER", "default"),
        help="(--specs crd) name of the Optimizer resource (env CONTROLLOOP_OPTIMIZER; "
        "default %(default)s)",
    )
    p.add_argument(
        "--debounce", type=positive_float, metavar="SECONDS",
        default=env_default("DEBOUNCE", "2"),
        help="(--specs crd) a change to the resources starts a cycle this long after the "
        "last change, > 0 (env CONTROLLOOP_DEBOUNCE; default %(default)s)",
    )
    p.add_argument(
        "--http-auth", choices=["auto", "none", "token", "tokenreview"],
        default=env_default("HTTP_AUTH", "auto"),
        help="who may POST /invoke (and GET /metrics with --metrics-auth): tokenreview = a "
        "bearer token the API server authenticates and RBAC allows (nonResourceURLs), token = "
        "the token in --http-token-file, none = anyone; auto = token with a token file, "
        "tokenreview in-cluster, none otherwise (env CONTROLLOOP_HTTP_AUTH)",
    )
    p.add_argument(
        "--http-token-file", type=text, default=env_default("HTTP_TOKEN_FILE"),
        help="file with the shared bearer token, e.g. a mounted Secret "
        "(env CONTROLLOOP_HTTP_TOKEN_FILE)",
    )
    p.add_argument(
        "--invoke", choices=["on", "off"], default=env_default("INVOKE", "on"),
        help="serve POST /invoke (env CONTROLLOOP_INVOKE; default on)",
    )
    p.add_argument(
        "--invoke-rate", type=positive_float, metavar="PER_MINUTE",
        default=env_default("INVOKE_RATE", "6"),
        help="at most this many POST /invoke per minute, > 0; more get 429 "
        "(env CONTROLLOOP_INVOKE_RATE; default %(default)s)",
    )
    p.add_argument(
        "--metrics-auth", action=FlagAction, default=env_flag("METRICS_AUTH"),
        help="serve /metrics and the dashboard (/ui) only to callers --http-auth accepts "
        "(env CONTROLLOOP_METRICS_AUTH)",
    )


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
    p.add_argument(
        "--token-file", type=text, default=env_default("SERVE_TOKEN_FILE"),
        help="require `Authorization: Bearer <token>` (the file's content) on every request "
        "but /healthz (env CONTROLLOOP_SERVE_TOKEN_FILE; default: no auth, for loopback)",
    )
    p.add_argument(
        "--tls-cert", type=text, default=env_default("SERVE_TLS_CERT"),
        help="serve HTTPS with this PEM certificate (with --tls-key; env "
        "CONTROLLOOP_SERVE_TLS_CERT; default plain HTTP)",
    )
    p.add_argument(
        "--tls-key", type=text, default=env_default("SERVE_TLS_KEY"),
        help="PEM private key of --tls-cert (env CONTROLLOOP_SERVE_TLS_KEY)",
    )
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
    p.add_argument(
        "--tuning", choices=["off", "observe", "apply"],
        help="online tuning of the perf profile (default: the scenario's tuning, else the "
        "system's optimizer.tuning, apply unless set)",
    )
    p.add_argument(
        "--oracle", action="store_true",
        help="the controller reads the emulated replicas' true perf (the scenario's truth: "
        "applied to the profile): the best a perfect profile can do",
    )
    p.add_argument(
        "--restart-at", type=integer, metavar="CYCLE",
        help="replace the controller by a new one after this cycle (its learnt tuning comes "
        "back from the store, as after a restart)",
    )
    p.add_argument(
        "--serve", type=_serve_address, metavar="[HOST:]PORT",
        help="serve the live dashboard at http://HOST:PORT/ui/ (host default 127.0.0.1, "
        "port 0: any free one) while the run goes on in paced time, and after it until "
        "interrupted",
    )
    p.add_argument(
        "--pace", type=positive_float, default=1.0, metavar="SECONDS",
        help="with --serve: wall seconds per cycle (default: %(default)s)",
    )
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


def _export_crs(sub: Any, add_common: AddCommon, lazy: Lazy) -> None:
    p = sub.add_parser(
        "export-crs",
        help="print a config as custom resources (multi-document YAML)",
        description="Print the Accelerator, Capacity, Model, ServiceClass, Server and "
        "Optimizer resources (controlloop.io/v1alpha1) of a config in any form, ready for "
        "`kubectl create -f -`; a directory's controller.yaml goes into the Optimizer's "
        "spec.controller. --definitions prints the CustomResourceDefinitions instead.",
    )
    p.add_argument("path", type=Path, nargs="?", help="config directory or system file")
    p.add_argument("--namespace", "-n", default="", type=text,
                   help="metadata.namespace of every resource (default: none, kubectl's)")
    p.add_argument("--optimizer-name", default="default", type=text,
                   help="name of the Optimizer resource (default: %(default)s)")
    p.add_argument("--no-servers", action="store_true",
                   help="leave out Server resources (the controller finds servers from "
                   "labelled Deployments)")
    p.add_argument("--definitions", action="store_true",
                   help="print the CustomResourceDefinitions (manifests/crds/) and exit")
    add_common(p)
    p.set_defaults(handler=lazy("controlloop.crds", "cmd_export_crs"))


def _serve_address(value: str) -> Any:
    """``controlloop.ui.listen.serve_address``, imported when the option is used: the UI
    package (http.server, the dashboard store) cost every command ~90 ms of start-up."""
    from controlloop.ui.listen import serve_address

    return serve_address(value)

