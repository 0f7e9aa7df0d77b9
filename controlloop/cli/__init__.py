"""The `controlloop` command."""

import os

# pydantic looks for plugins among the installed distributions' entry points when it
# builds the first model, ~10 ms of every command's start-up; the command uses none. Set
# PYDANTIC_DISABLE_PLUGINS (e.g. to an empty string) to have them loaded.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from controlloop.cli.main import main  # noqa: E402  (after the variable is set)

__all__ = ["main"]
