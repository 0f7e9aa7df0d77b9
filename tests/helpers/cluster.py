"""Shared set-up for control-loop tests: managed vLLM Deployments on the fake API."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlloop.cluster.actuator import DryRunActuator, KubeActuator
from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.prom import LoadReading
from controlloop.config import load_system
from controlloop.loop.controller import Controller, StaticSpecs
from controlloop.loop.settings import ControllerSettings

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


def make_controller(kube_client: Any, load: FakeLoadSource, *, dry_run: bool = False,
                    clock: Any = None, settings: ControllerSettings | None = None) -> Controller:
    settings = settings or ControllerSettings()
    system = load_system(CONFIG)
    actuator: Any = (
        DryRunActuator(kube_client.get_deployment, settings.actuation)
        if dry_run
        else KubeActuator(kube_client, settings.actuation, sleep=lambda s: None)
    )
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["clock"] = clock
    return Controller(
        specs=StaticSpecs(system, settings),
        collector=KubeCollector(kube_client, load, settings),
        actuator=actuator,
        dry_run=dry_run,
        **kwargs,
    )


def daemon_config_dir(tmp_path: Path, prometheus_url: str) -> Path:
    """A config directory for ``controlloop run``: the large sample, namespace llm, the given
    Prometheus with the test window."""
    from tests.promharness.fixtures import WINDOW

    target = tmp_path / "config"
    target.mkdir()
    for name in ("accelerators.yaml", "capacity.yaml", "models.yaml", "service-classes.yaml",
                 "optimizer.yaml"):
        shutil.copy(CONFIG / name, target / name)
    (target / "controller.yaml").write_text(
        yaml.safe_dump(
            {
                "controller": {
                    "namespaces": ["llm"],
                    "prometheus": {"url": prometheus_url, "window": WINDOW, "stalenessSeconds": 30},
                }
            }
        )
    )
    return target


def add_vllm_a(fake_kube: Any) -> None:
    """The Deployment whose pods the test exporter publishes (vllm-a-1, vllm-a.2 in llm)."""
    from tests.promharness.fixtures import DEPLOYMENT_A

    labels = managed_labels("granite_13b", "Premium", "A100")
    labels["app"] = "vllm-a"
    fake_kube.add_deployment(
        "llm", "vllm-a", labels=labels, replicas=2,
        containers=[
            {"name": "vllm", "image": "vllm/vllm-openai:v0.6.0",
             "resources": {"limits": {"nvidia.com/gpu": "1"}}},
            {"name": "proxy", "image": "envoyproxy/envoy:v1.31"},
        ],
        node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    )
    for pod in DEPLOYMENT_A:
        fake_kube.add_pod("llm", pod.pod, {"app": "vllm-a"})
