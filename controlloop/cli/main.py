"""Command line: ``controlloop {validate,optimize,run,serve,demo,fidelity}``.

Every option of ``run`` also reads an environment variable ``CONTROLLOOP_<NAME>``
(shown in ``--help``). Bad input prints one line per problem and exits 2.

Environment values are read when the parsers are built but converted and
checked only when the subcommand that uses them is parsed (argparse converts a
string default with the option's ``type``), with the same checks as the flag: a
bad value fails that subcommand only, naming the flag, the variable and the
value, never ``--help`` or ``--version``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from controlloop import __version__
from controlloop.cli import commands as cli_commands
from controlloop.cli.args import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_common
from controlloop.config import ConfigError, StartupError, load_config
from controlloop.logsetup import setup_logging

log = logging.getLogger("controlloop")

# --- validate -----------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    """Check the specs and, in a directory, ``controller.yaml``; all problems at once."""
    from controlloop.config import read_document
    from controlloop.loop.settings import controller_file, load_controller_settings

    path = Path(args.path)
    problems: list[str] = []
    loaded = None
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        problems += exc.problems
    settings_file = None
    try:
        settings_file = controller_file(path) if path.is_dir() else None
    except ConfigError as exc:
        problems += exc.problems
    settings = None
    if settings_file is not None:
        try:
            settings = load_controller_settings(path)
        except ConfigError as exc:
            problems += exc.problems
    if problems or loaded is None:
        raise ConfigError(problems)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    system = loaded.system
    types = sorted({acc.type for acc in system.accelerators})
    used_classes = sorted(
        {s.service_class for s in system.servers}, key=lambda n: _class_priority(system, n)
    )
    print(f"{args.path}: valid")
    print(f"  {len(system.accelerators)} accelerators ({len(types)} types)")
    print(
        f"  {len(system.model_names())} models"
        f" ({len(system.models)} model/accelerator perf entries)"
    )
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
    if settings_file is not None and settings is not None:
        # An empty file is all defaults, like an empty optional spec file.
        empty = read_document(settings_file) is None
        print(
            f"  {settings_file.name}: {'empty, defaults: ' if empty else ''}"
            f"interval {settings.interval_seconds:g} s, "
            f"namespaces {', '.join(settings.namespaces) or 'all'}, "
            f"capacity {settings.capacity.source}, moves {settings.actuation.move_strategy}"
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
        "capacity per type, and the daemon settings of a directory's controller.yaml. "
        "Exit 2 with one line per problem if it is invalid.",
    )
    p.add_argument(
        "path", type=Path,
        help="config directory or system file (a directory's controller.yaml is checked too)",
    )
    add_common(p)
    p.set_defaults(handler=cmd_validate)

    cli_commands.register(sub, add_common, _lazy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        return EXIT_BAD_INPUT
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
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
