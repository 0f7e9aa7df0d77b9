"""Real Prometheus + fake vLLM exporter for integration tests (see ``harness``)."""

from .harness import (
    CountingProxy,
    PodLoad,
    PrometheusProcess,
    PromStack,
    VllmExporter,
    expected_load,
    free_port,
    prometheus_binary,
    promtool_binary,
    start_stack,
    wait_until,
)

__all__ = [
    "CountingProxy",
    "PodLoad",
    "PromStack",
    "PrometheusProcess",
    "VllmExporter",
    "expected_load",
    "free_port",
    "prometheus_binary",
    "promtool_binary",
    "start_stack",
    "wait_until",
]
