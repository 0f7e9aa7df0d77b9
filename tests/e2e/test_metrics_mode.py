"""``actuation.mode: metrics``: the controller never writes a Deployment; it publishes
controlloop_target_replicas and an HPA-owned Deployment follows it. The HPA here is the HPA
algorithm for an External AverageValue metric (desired = ceil(value / target), 10 % tolerance)
applied to the shipped example manifest and our /metrics exposition."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from controlloop.cluster.actuator import KubeActuator
from controlloop.cluster.collector import KubeCollector
from controlloop.config import load_system
from controlloop.loop.controller import Controller, StaticSpecs
from controlloop.loop.settings import ControllerSettings
from controlloop.metrics import ControllerMetrics
from tests.helpers.cluster import CONFIG, FakeLoadSource, add_server, reading

ROOT = Path(__file__).resolve().parents[2]
HPA = ROOT / "manifests" / "examples" / "metrics-mode" / "hpa-external-metric.yaml"


def make(kube_client: Any, load: FakeLoadSource, mode: str) -> tuple[Controller, ControllerMetrics]:
    settings = ControllerSettings.model_validate({
        "namespaces": ["llm"], "actuation": {"mode": mode},
        "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 100,
                                               "periodSeconds": 1}]}}})
    controller = Controller(
        specs=StaticSpecs(load_system(CONFIG), settings),
        collector=KubeCollector(kube_client, load, settings),
        actuator=KubeActuator(kube_client, settings.actuation, sleep=lambda s: None))
    metrics = ControllerMetrics()
    controller.on_report.append(metrics.observe)
    return controller, metrics


def published(metrics: ControllerMetrics) -> dict[str, tuple[float, dict[str, str]]]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if family.name == "controlloop_target_replicas":
            for sample in family.samples:
                out[sample.labels["deployment"]] = (sample.value, sample.labels)
    return out


def hpa_step(fake_kube: Any, metrics: ControllerMetrics) -> int:
    """One HPA sync for the example HPA retargeted at llm/granite: returns the new replicas."""
    (hpa,) = [d for d in yaml.safe_load_all(HPA.read_text(encoding="utf-8")) if d]
    target = float(hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"])
    value, _ = published(metrics)["granite"]
    current = fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"]
    desired = math.ceil(value / target)
    if current and abs(value / (target * current) - 1) <= 0.1:
        desired = current  # within tolerance
    desired = max(hpa["spec"]["minReplicas"], min(hpa["spec"]["maxReplicas"], desired))
    if desired != current:
        dep = fake_kube.get("Deployment", "llm", "granite")
        dep["spec"]["replicas"] = desired
        fake_kube.store.update(fake_kube.find_resource("Deployment"), "llm", "granite", dep)
        fake_kube.set_deployment_status("llm", "granite", replicas=desired)
    return int(desired)


def test_hpa_owned_deployment_follows_the_published_series(fake_kube: Any,
                                                           kube_client: Any) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    fake_kube.add_hpa("llm", "granite", target="granite", max_replicas=16)
    controller, metrics = make(kube_client, FakeLoadSource({"granite": reading(200)}), "metrics")
    report = controller.run_cycle()
    (row,) = report.servers
    assert row.verdict == "scaled", row.reason  # fed, not held for the HPA
    assert row.desired_accelerator == "A100", "no accelerator moves in metrics mode"
    assert "metrics mode" in row.reason
    assert fake_kube.requests_for("PATCH", "deployments") == [], "never patched"
    value, labels = published(metrics)["granite"]
    assert value == row.desired_replicas and value > 1
    assert labels == {"namespace": "llm", "deployment": "granite", "server": row.server,
                      "accelerator": "A100"}
    assert hpa_step(fake_kube, metrics) == row.desired_replicas
    # The HPA's change is expected: the next cycle is no "changed by someone else" hold.
    again = controller.run_cycle()
    (row2,) = again.servers
    assert row2.verdict == "unchanged" and row2.current_replicas == row.desired_replicas
    assert published(metrics)["granite"][0] == row.desired_replicas
    assert fake_kube.requests_for("PATCH", "deployments") == []


def test_unknown_load_publishes_the_current_replicas(fake_kube: Any, kube_client: Any) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=4)
    fake_kube.add_hpa("llm", "granite", target="granite")
    controller, metrics = make(kube_client, FakeLoadSource({}), "metrics")
    (row,) = controller.run_cycle().servers
    assert row.verdict == "held" and row.held_reason == "unknown-load"
    assert published(metrics)["granite"][0] == 4, "missing data never scales down"
    assert hpa_step(fake_kube, metrics) == 4


def test_patch_mode_still_holds_autoscaled_deployments(fake_kube: Any, kube_client: Any) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    fake_kube.add_hpa("llm", "granite", target="granite")
    controller, metrics = make(kube_client, FakeLoadSource({"granite": reading(600)}), "patch")
    (row,) = controller.run_cycle().servers
    assert row.verdict == "held" and row.held_reason == "autoscaler"
    assert published(metrics) == {}, "the series exists only in metrics mode"
