"""The production control loop against the loopback Kubernetes API (fake load source)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.cluster import (
    FakeLoadSource,
    add_server,
    make_controller,
    reading,
)


def test_scale_up_patches_replicas_and_keeps_sidecar(fake_kube: Any, kube_client: Any) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    load = FakeLoadSource({"granite": reading(600)})
    controller = make_controller(kube_client, load)
    report = controller.run_cycle()
    assert report.outcome == "ok", report.errors
    (row,) = report.servers
    assert row.load["status"] == "ok"
    assert row.desired_replicas is not None and row.desired_replicas > 1
    dep = fake_kube.get("Deployment", "llm", "granite")
    assert dep["spec"]["replicas"] == row.desired_replicas
    names = [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]]
    assert names == ["vllm", "proxy"]  # strategic merge kept the sidecar
    assert load.asked == [("llm", ("granite-0",))]
    patches = fake_kube.requests_for("PATCH", "/deployments/granite")
    assert len(patches) == 1
    assert patches[0].content_type.startswith("application/strategic-merge-patch+json")


def test_unknown_load_is_left_alone(fake_kube: Any, kube_client: Any) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=4)
    controller = make_controller(kube_client, FakeLoadSource({}))
    report = controller.run_cycle()
    (row,) = report.servers
    assert row.verdict == "held" and row.held_reason == "unknown-load"
    assert fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == 4
    assert fake_kube.requests_for("PATCH", "") == []


def test_fallback_labels_give_the_load(fake_kube: Any, kube_client: Any) -> None:
    add_server(
        fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1,
        extra_labels={
            "inferno.server.load.rpm": "600",
            "inferno.server.load.intokens": "128",
            "inferno.server.load.outtokens": "1024",
        },
    )
    report = make_controller(kube_client, FakeLoadSource({})).run_cycle()
    (row,) = report.servers
    assert row.load["status"] == "fallback" and row.load["source"] == "labels"
    assert row.verdict in ("scaled", "moved")


def test_missing_model_label_is_skipped_and_reported(fake_kube: Any, kube_client: Any) -> None:
    fake_kube.add_deployment(
        "llm", "nomodel", labels={"inferno.server.managed": "true", "app": "x"}
    )
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    report = make_controller(kube_client, FakeLoadSource({"granite": reading(60)})).run_cycle()
    assert report.skipped == [
        {"namespace": "llm", "deployment": "nomodel",
         "reason": "managed but has no 'inferno.server.model' label"}
    ]
    assert [s.server for s in report.servers] == ["granite"]


def test_dry_run_changes_nothing(fake_kube: Any, kube_client: Any, caplog: Any) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    before = json.dumps(fake_kube.get("Deployment", "llm", "granite"), sort_keys=True)
    caplog.set_level("INFO")
    report = make_controller(
        kube_client, FakeLoadSource({"granite": reading(600)}), dry_run=True
    ).run_cycle()
    after = json.dumps(fake_kube.get("Deployment", "llm", "granite"), sort_keys=True)
    assert before == after
    assert fake_kube.requests_for("PATCH", "") == []
    (row,) = report.servers
    assert row.patch is not None and row.sent is False
    assert any("DRY-RUN: would patch llm/granite" in r.getMessage() for r in caplog.records)


def test_hpa_targeted_deployment_is_not_touched(fake_kube: Any, kube_client: Any) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    fake_kube.add_hpa("llm", "granite-hpa", target="granite")
    report = make_controller(kube_client, FakeLoadSource({"granite": reading(600)})).run_cycle()
    (row,) = report.servers
    assert row.verdict == "held" and row.held_reason == "autoscaler"
    assert "HorizontalPodAutoscaler llm/granite-hpa" in row.reason
    assert fake_kube.requests_for("PATCH", "") == []


def test_external_change_is_respected(fake_kube: Any, kube_client: Any) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    now = [1000.0]
    controller = make_controller(
        kube_client, FakeLoadSource({"granite": reading(600)}), clock=lambda: now[0]
    )
    first = controller.run_cycle()
    desired = first.servers[0].desired_replicas
    # someone else (kubectl scale) sets 7
    kube_client.patch_deployment("llm", "granite", {"spec": {"replicas": 7}}, strategic=False)
    now[0] += 60
    second = controller.run_cycle()
    (row,) = second.servers
    assert desired != 7
    assert row.verdict == "held" and row.held_reason == "external-change"
    assert fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == 7


def test_move_patches_node_selector_and_gpu_resources(
    fake_kube: Any, kube_client: Any, tmp_path: Path
) -> None:
    # A server on L4 (2 cards per replica for granite_13b) that the optimizer moves.
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium",
               accelerator="L4", replicas=2)
    report = make_controller(kube_client, FakeLoadSource({"granite": reading(240)})).run_cycle()
    (row,) = report.servers
    assert row.verdict == "moved", row.reason
    dep = fake_kube.get("Deployment", "llm", "granite")
    pod_spec = dep["spec"]["template"]["spec"]
    labels = dep["metadata"]["labels"]
    assert labels["inferno.server.allocation.accelerator"] == row.desired_accelerator
    assert pod_spec["nodeSelector"]
    vllm = next(c for c in pod_spec["containers"] if c["name"] == "vllm")
    assert any(k.endswith("/gpu") or k.startswith("habana") or k.startswith("ibm")
               for k in vllm["resources"]["limits"])
    assert [c["name"] for c in pod_spec["containers"]] == ["vllm", "proxy"]
