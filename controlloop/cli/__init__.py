"""The `controlloop` command."""

from controlloop.cli.main import main

__all__ = ["main"]
