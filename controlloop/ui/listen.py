"""``[HOST:]PORT`` of ``controlloop demo --serve`` (no heavy imports: used by --help)."""

from __future__ import annotations

import argparse

DEFAULT_HOST = "127.0.0.1"  # the demo is a local tool: loopback unless a host is given


def serve_address(value: str) -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` (``[::1]:PORT`` for IPv6), port 0..65535 (0: any free one)."""
    host, sep, port = str(value).strip().rpartition(":")
    if not port.isdigit() or int(port) > 65535 or (sep and not host):
        raise argparse.ArgumentTypeError(
            f"expected [HOST:]PORT with a port 0..65535, got {str(value)!r}"
        )
    return (host.strip("[]") if sep else DEFAULT_HOST), int(port)
