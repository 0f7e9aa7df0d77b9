"""Argument helpers shared by every subcommand: exit codes, environment defaults,
checked value types and the common logging options.

Environment values are read when the parsers are built but converted and
checked only when the subcommand that uses them is parsed (argparse converts a
string default with the option's ``type``), with the same checks as the flag: a
bad value fails that subcommand only, naming the flag, the variable and the
value, never ``--help`` or ``--version``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # the environment failed (StartupError), not the input
EXIT_BAD_INPUT = 2

ENV_PREFIX = "CONTROLLOOP_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class EnvValue(str):
    """A default taken from an environment variable: error messages name the variable."""

    env: str = ""


def env_value(variable: str, default: Any = None) -> Any:
    """``$variable`` as an :class:`EnvValue` (checked later by the option's type), or
    ``default``."""
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


def add_common(parser: argparse.ArgumentParser) -> None:
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


