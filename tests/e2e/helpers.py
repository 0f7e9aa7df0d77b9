"""Shared set-up for control-loop tests: managed vLLM Deployments on the fake API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controlloop.cluster.prom import LoadReading

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"

A100_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


def managed_labels(model: str, cls: str, accelerator: str = "", **extra: str) -> dict[str, str]:
    labels = {
        "inferno.server.managed": "true",
        "inferno.server.model": model,
        "inferno.server.class": cls,
    }
    if accelerator:
        labels["inferno.server.allocation.accelerator"] = accelerator
    labels.update(extra)
    return labels


def add_server(
    kube: object,
    ns: str,
    name: str,
    *,
    model: str,
    cls: str,
    accelerator: str = "A100",
    replicas: int = 1,
    running: int | None = None,
    sidecar: bool = True,
    extra_labels: dict[str, str] | None = None,
) -> list[str]:
    """A managed Deployment with ``running`` Running pods; returns the pod names."""
    containers = [
        {
            "name": "vllm",
            "image": "vllm/vllm-openai:v0.6.0",
            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
        }
    ]
    if sidecar:
        containers.append({"name": "proxy", "image": "envoyproxy/envoy:v1.31"})
    labels = managed_labels(model, cls, accelerator, **(extra_labels or {}))
    labels["app"] = name
    kube.add_deployment(  # type: ignore[attr-defined]
        ns, name, labels=labels, replicas=replicas, containers=containers,
        node_selector=A100_SELECTOR if accelerator == "A100" else None,
    )
    pods = [f"{name}-{i}" for i in range(replicas if running is None else running)]
    for pod in pods:
        kube.add_pod(ns, pod, {"app": name})  # type: ignore[attr-defined]
    return pods


@dataclass
class FakeLoadSource:
    """LoadSource returning fixed readings per namespace; records the pods asked about."""

    readings: dict[str, LoadReading] = field(default_factory=dict)
    asked: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def read_load(
        self, *, namespace: str, pods: Sequence[str], model: str | None = None
    ) -> LoadReading:
        self.asked.append((namespace, tuple(pods)))
        key = pods[0].rsplit("-", 1)[0] if pods else ""
        return self.readings.get(key, LoadReading("unknown", "no series"))


def reading(rpm: float, in_tokens: float = 128, out_tokens: float = 1024) -> LoadReading:
    status = "ok" if rpm > 0 else "idle"
    return LoadReading(
        status, "", arrival_rate_rpm=rpm, avg_in_tokens=in_tokens, avg_out_tokens=out_tokens,
        itl_ms=30.0, ttft_ms=200.0, running=3, waiting=0,
    )
