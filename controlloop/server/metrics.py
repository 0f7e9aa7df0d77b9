"""Prometheus metrics of the API, in a private registry (one per app, so tests can
create many apps in one process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "controlloop_api_requests",
            "HTTP requests by endpoint (route template), method and status code",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.optimize_seconds = Histogram(
            "controlloop_api_optimize_duration_seconds",
            "Wall time of one optimizer run (sizing + solve), seconds",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.last_total_cost = Gauge(
            "controlloop_api_last_total_cost",
            "Total cost of the last solution returned, cents per hour",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
