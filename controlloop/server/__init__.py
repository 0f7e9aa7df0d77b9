"""``controlloop serve``: the optimizer's REST API (FastAPI)."""

from controlloop.server.app import cmd_serve, create_app

__all__ = ["cmd_serve", "create_app"]
