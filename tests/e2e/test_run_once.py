"""`controlloop run --once` against a real Prometheus and the loopback Kubernetes API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlloop.cli import main
from tests.helpers.cluster import CONFIG, managed_labels
from tests.promharness.fixtures import DEPLOYMENT_A, WINDOW


def config_dir(tmp_path: Path, prometheus_url: str) -> Path:
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


@pytest.mark.integration
def test_run_once_from_load_to_patched_deployment(
    vllm_prom: Any, fake_kube: Any, tmp_path: Path
) -> None:
    add_vllm_a(fake_kube)
    cycle_log = tmp_path / "cycles.jsonl"
    code = main([
        "run", "--config", str(config_dir(tmp_path, vllm_prom.url)),
        "--kubeconfig", str(fake_kube.kubeconfig), "--once", "--cycle-log", str(cycle_log),
    ])
    assert code == 0
    (record,) = [json.loads(line) for line in cycle_log.read_text().splitlines()]
    (server,) = record["servers"]
    # 25 req/s of 640/80-token requests, read back from Prometheus
    assert server["load"]["status"] == "ok"
    assert server["load"]["arrivalRate"] == pytest.approx(1500, rel=0.05)
    assert server["load"]["avgOutTokens"] == pytest.approx(80, rel=0.05)
    assert server["verdict"] in ("scaled", "moved", "unchanged")
    dep = fake_kube.get("Deployment", "llm", "vllm-a")
    assert dep["spec"]["replicas"] == server["desired_replicas"]
    assert [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]] == ["vllm", "proxy"]
    if server["verdict"] != "unchanged":
        assert fake_kube.requests_for("PATCH", "/deployments/vllm-a")


@pytest.mark.integration
def test_run_once_dry_run_changes_nothing(vllm_prom: Any, fake_kube: Any, tmp_path: Path) -> None:
    add_vllm_a(fake_kube)
    before = json.dumps(fake_kube.get("Deployment", "llm", "vllm-a"), sort_keys=True)
    cycle_log = tmp_path / "cycles.jsonl"
    code = main([
        "run", "--config", str(config_dir(tmp_path, vllm_prom.url)),
        "--kubeconfig", str(fake_kube.kubeconfig), "--once", "--dry-run",
        "--cycle-log", str(cycle_log),
    ])
    assert code == 0
    (record,) = [json.loads(line) for line in cycle_log.read_text().splitlines()]
    assert record["dry_run"] is True
    (server,) = record["servers"]
    assert server["load"]["status"] == "ok"
    assert server["sent"] is False
    assert json.dumps(fake_kube.get("Deployment", "llm", "vllm-a"), sort_keys=True) == before
    assert fake_kube.requests_for("PATCH", "") == []


@pytest.mark.integration
def test_run_once_prometheus_down_holds(fake_kube: Any, tmp_path: Path) -> None:
    add_vllm_a(fake_kube)
    cycle_log = tmp_path / "cycles.jsonl"
    code = main([
        "run", "--config", str(config_dir(tmp_path, "http://127.0.0.1:9")),
        "--kubeconfig", str(fake_kube.kubeconfig), "--once", "--cycle-log", str(cycle_log),
    ])
    assert code == 0
    (record,) = [json.loads(line) for line in cycle_log.read_text().splitlines()]
    (server,) = record["servers"]
    assert server["verdict"] == "held" and server["held_reason"] == "unknown-load"
    assert "unreachable" in server["reason"]
    assert fake_kube.requests_for("PATCH", "") == []
