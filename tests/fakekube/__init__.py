"""Loopback Kubernetes API server for integration tests (see server.py)."""

from .kubeconfig import write_kubeconfig
from .selectors import SelectorError, parse_label_selector
from .server import FakeKubeServer, Fault, Request

__all__ = [
    "FakeKubeServer",
    "Fault",
    "Request",
    "SelectorError",
    "parse_label_selector",
    "write_kubeconfig",
]
