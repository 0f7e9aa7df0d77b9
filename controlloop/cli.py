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
import math
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
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class EnvValue(str):
    """A default taken from an environment variable: error messages name the variable."""

    env: str = ""


def env_value(variable: str, default: Any = None) -> Any:
    """``$variable`` as an :class:`EnvValue` (checked later by the option's type), or ``default``."""
    raw = os.environ.get(variable)
    if raw is None:
        return default
    value = EnvValue(raw)
    value.env = variable
    return value


def env_default(name: str, default: Any = None) -> Any:
    return env_value(ENV_PREFIX + name, default)


def env_flag(name: str) -> Any:
    """Default of a boolean option: the raw variable (see :func:`boolean`) or False."""
    return env_default(name, False)


def _bad(value: str, expected: str) -> argparse.ArgumentTypeError:
    source = f" (from {value.env})" if isinstance(value, EnvValue) and value.env else ""
    return argparse.ArgumentTypeError(f"{expected}, got {str(value)!r}{source}")


def positive_float(value: str) -> float:
    """A finite number > 0 (seconds, durations, limits)."""
    try:
        number = float(value)
    except ValueError:
        raise _bad(value, "expected a number > 0") from None
    if not math.isfinite(number) or number <= 0:
        raise _bad(value, "must be a number > 0")
    return number


def integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _bad(value, "expected an integer") from None


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise _bad(value, "expected a port number 0..65535") from None
    if not 0 <= port <= 65535:
        raise _bad(value, "must be a port number 0..65535")
    return port


def text(value: str) -> str:
    """A plain ``str`` (an :class:`EnvValue` default loses its marker)."""
    return str(value)


def boolean(value: str) -> bool:
    """An environment flag: true for 1/true/yes/on, false for 0/false/no/off or empty."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise _bad(value, f"expected one of {', '.join(TRUE_WORDS)} (true) or "
                      f"{', '.join(w for w in FALSE_WORDS if w)} (false)")


def one_of(*choices: str) -> Callable[[str], str]:
    """A choice, case-insensitive; also checks values from the environment."""

    def convert(value: str) -> str:
        word = value.strip().lower()
        if word not in choices:
            raise _bad(value, f"expected one of {', '.join(choices)}")
        return word

    convert.__name__ = "choice"
    return convert


def listen_address(value: str) -> str:
    """``HOST:PORT`` (port 0..65535) or ``off``; checked here, resolved by the daemon."""
    if value.strip().lower() in ("off", "none", ""):
        return str(value)
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise _bad(value, "expected HOST:PORT (port 0..65535) or 'off'")
    return str(value)


class FlagAction(argparse.Action):
    """``store_true`` whose default may come from an environment variable.

    The string default is converted by ``type`` (:func:`boolean`) when the
    subcommand is parsed, so a bad value is an error, never a silent False.
    """

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        default: Any = False,
        type: Callable[[str], Any] | None = boolean,  # noqa: A002 - argparse's name
        required: bool = False,
        help: str | None = None,  # noqa: A002
    ) -> None:
        super().__init__(
            option_strings, dest, nargs=0, const=True, default=default, type=type,
            required=required, help=help,
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, True)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", "info"),
        type=one_of("debug", "info", "warning", "error"),
        choices=["debug", "info", "warning", "error"],
        help="log level (env CONTROLLOOP_LOG_LEVEL; default info)",
    )
    parser.add_argument(
        "--log-format",
        default=env_default("LOG_FORMAT", "text"),
        type=one_of("text", "json"),
        choices=["text", "json"],
        help="log format (env CONTROLLOOP_LOG_FORMAT; default text)",
    )


# --- validate -----------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    """Check the specs and, in a directory, ``controller.yaml``; all problems at once."""
    from controlloop.config import read_document
    from controlloop.settings import controller_file, load_controller_settings

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
    _add_common(p)
    p.set_defaults(handler=cmd_validate)

    from controlloop import cli_commands

    cli_commands.register(sub, _add_common, _lazy)
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
    except KeyboardInterrupt:
        return 130
