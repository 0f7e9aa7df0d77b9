"""Command line: ``controlloop {validate,optimize,run,serve,demo,fidelity}``.

Every option of ``run`` also reads an environment variable ``CONTROLLOOP_<NAME>``
(shown in ``--help``). Bad input prints one line per problem and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from controlloop import __version__
from controlloop.config import ConfigError, load_config
from controlloop.logsetup import setup_logging

log = logging.getLogger("controlloop")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

ENV_PREFIX = "CONTROLLOOP_"


def env_default(name: str, default: Any = None) -> Any:
    return os.environ.get(ENV_PREFIX + name, default)


def env_flag(name: str) -> bool:
    value = os.environ.get(ENV_PREFIX + name, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log level (env CONTROLLOOP_LOG_LEVEL; default info)",
    )
    parser.add_argument(
        "--log-format",
        default=env_default("LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="log format (env CONTROLLOOP_LOG_FORMAT; default text)",
    )


# --- validate -----------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_config(args.path)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    system = loaded.system
    types = sorted({acc.type for acc in system.accelerators})
    used_classes = sorted(
        {s.service_class for s in system.servers}, key=lambda n: _class_priority(system, n)
    )
    print(f"{args.path}: valid")
    print(f"  {len(system.accelerators)} accelerators ({len(types)} types)")
    print(f"  {len(system.model_names())} models ({len(system.models)} model/accelerator perf entries)")
    classes = f"  {len(system.service_classes)} service classes"
    if used_classes and len(used_classes) != len(system.service_classes):
        classes += f" ({len(used_classes)} used by servers: {', '.join(used_classes)})"
    print(classes)
    print(f"  {len(system.servers)} servers")
    capacity = system.capacity_by_type()
    if capacity:
        print("  capacity per type: " + ", ".join(f"{t}={capacity[t]}" for t in sorted(capacity)))
    else:
        print("  capacity per type: none given")
    opt = system.optimizer
    print(
        f"  optimizer: {'unlimited' if opt.unlimited else 'limited'}, solver {opt.solver}, "
        f"saturation policy {opt.saturation_policy.value}"
    )
    return EXIT_OK


def _class_priority(system: Any, name: str) -> tuple[int, str]:
    cls = system.service_class(name)
    return (cls.priority if cls else 101, name)


# --- subcommands owned by other modules (imported lazily: fast --help) ------------------


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        handler: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), func
        )
        return handler(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controlloop",
        description="SLO-driven, cost-optimal autoscaling for LLM inference servers.",
    )
    parser.add_argument("--version", action="version", version=f"controlloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "validate",
        help="validate a config and print a summary",
        description="Load a config (directory of reference JSON or our YAML files, or one "
        "system file) and print counts of accelerators, models, classes, servers and "
        "capacity per type. Exit 2 with one line per problem if it is invalid.",
    )
    p.add_argument("path", type=Path, help="config directory or system file")
    _add_common(p)
    p.set_defaults(handler=cmd_validate)

    from controlloop import cli_commands

    cli_commands.register(sub, _add_common, _lazy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    setup_logging(level=args.log_level, fmt=args.log_format)
    try:
        result: int = args.handler(args)
        return result
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
