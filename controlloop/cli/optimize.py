"""``controlloop optimize PATH``: load a config, optimize, print or write the plan."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from controlloop.cli.args import EXIT_BAD_INPUT, EXIT_OK
from controlloop.config import ConfigError, load_config
from controlloop.jsonout import dumps_indented
from controlloop.optimizer.api import optimize
from controlloop.optimizer.report import (
    UnknownServer,
    explain_json,
    format_explain,
    format_solution,
)
from controlloop.optimizer.solution import Solution

log = logging.getLogger(__name__)

def run_optimize(args: argparse.Namespace) -> Solution:
    """The CLI overrides map one to one onto ``optimize``'s keyword arguments."""
    loaded = load_config(args.path)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return optimize(
        loaded.system,
        solver=getattr(args, "solver", None),
        unlimited=getattr(args, "unlimited", None),
        saturation_policy=getattr(args, "saturation_policy", None),
        service_model=getattr(args, "service_model", None),
        verify=getattr(args, "verify", None),
        margin=getattr(args, "margin", None),
        time_limit=getattr(args, "time_limit", None),
        saturated_latency=getattr(args, "saturated_latency", None),
    )


def render(solution: Solution, fmt: str, explain: str | None = None) -> str:
    """Text in ``fmt`` (table, json, yaml); raises :class:`UnknownServer` for ``explain``."""
    data: dict[str, Any] | None = None
    if explain is not None:
        if fmt == "table":
            return format_explain(solution, explain)
        data = explain_json(solution, explain)
    elif fmt == "table":
        return format_solution(solution)
    else:
        data = solution.to_json()
    if fmt == "yaml":
        import yaml  # only for this format: start-up of the other formats without it

        return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return dumps_indented(data) + "\n"


def check_output(output: Path) -> None:
    """Fail before optimizing when ``--output`` cannot be written."""
    parent = output.parent
    if output.is_dir():
        raise ConfigError([f"--output {output}: is a directory; give a file name"])
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise ConfigError([f"--output {output}: directory {parent} {problem}"])
    if not os.access(parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ConfigError([f"--output {output}: not writable"])


def cmd_optimize(args: argparse.Namespace) -> int:
    output: Path | None = getattr(args, "output", None)
    if output is not None:
        check_output(output)
    solution = run_optimize(args)
    try:
        text = render(solution, args.format, getattr(args, "explain", None))
    except UnknownServer as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"--output {output}: cannot write: {exc.strerror or exc}"]) from None
        log.info(
            "wrote %s plan to %s: total cost %.2f cents/h, status %s",
            args.format, output, solution.total_cost, solution.status.value,
        )
    return EXIT_OK
