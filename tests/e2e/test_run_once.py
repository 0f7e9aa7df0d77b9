"""`controlloop run --once` against a real Prometheus and the loopback Kubernetes API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controlloop.cli import main
from tests.helpers.cluster import add_vllm_a, daemon_config_dir


@pytest.mark.integration
def test_run_once_from_load_to_patched_deployment(
    vllm_prom: Any, fake_kube: Any, tmp_path: Path
) -> None:
    add_vllm_a(fake_kube)
    cycle_log = tmp_path / "cycles.jsonl"
    code = main([
        "run", "--config", str(daemon_config_dir(tmp_path, vllm_prom.url)),
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
        "run", "--config", str(daemon_config_dir(tmp_path, vllm_prom.url)),
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
        "run", "--config", str(daemon_config_dir(tmp_path, "http://127.0.0.1:9")),
        "--kubeconfig", str(fake_kube.kubeconfig), "--once", "--cycle-log", str(cycle_log),
    ])
    assert code == 0
    (record,) = [json.loads(line) for line in cycle_log.read_text().splitlines()]
    (server,) = record["servers"]
    assert server["verdict"] == "held" and server["held_reason"] == "unknown-load"
    assert "unreachable" in server["reason"]
    assert fake_kube.requests_for("PATCH", "") == []
