"""Graceful scale-down through the official client: pods annotated, then the Deployment."""

from __future__ import annotations

import pytest

from controlloop.cluster.actuator import KubeActuator
from controlloop.cluster.kube import KubeClient
from controlloop.loop.settings import DELETION_COST, ActuationConfig
from controlloop.loop.state import Action
from tests.fakekube import FakeKubeServer

pytestmark = pytest.mark.integration


def test_pods_get_their_deletion_cost_before_the_scale_down(
    fake_kube: FakeKubeServer, kube_client: KubeClient
) -> None:
    fake_kube.add_deployment("llm", "granite", replicas=3)
    for pod in ("granite-a", "granite-b", "granite-c"):
        fake_kube.add_pod("llm", pod, {"app": "granite"})
    action = Action("llm", "granite", "granite", 2, 3,
                    pod_deletion_cost={"granite-a": 4, "granite-b": 0, "granite-c": 7,
                                       "granite-gone": 1})
    [result] = KubeActuator(kube_client, ActuationConfig(), sleep=lambda s: None).apply([action])
    assert result.ok and result.sent  # a pod gone meanwhile does not fail the scale-down
    for pod, cost in (("granite-a", "4"), ("granite-b", "0"), ("granite-c", "7")):
        assert fake_kube.get("Pod", "llm", pod)["metadata"]["annotations"][DELETION_COST] == cost
    patches = [r.path for r in fake_kube.requests if r.method == "PATCH"]
    assert patches[-1].endswith("/deployments/granite")  # the scale comes last
    assert sum("/pods/" in p for p in patches) == 4
    assert fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == 2


def test_the_real_loop_marks_the_least_loaded_pods_and_probes_the_surge(
    fake_kube: FakeKubeServer, kube_client: KubeClient
) -> None:
    """KubeCollector + KubeActuator: per-pod running requests from the load source become
    deletion costs before the scale-down; probe() gives the surge check its signal."""
    from dataclasses import replace

    from controlloop.loop.settings import ControllerSettings
    from tests.helpers.cluster import FakeLoadSource, add_server, make_controller, reading

    pods = add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium",
                      replicas=4)
    per_pod = {pods[0]: 5.0, pods[1]: 0.0, pods[2]: 3.0, pods[3]: 1.0}
    load = FakeLoadSource({"granite": replace(reading(6.0), pod_running=per_pod, running=9.0)})
    settings = ControllerSettings.model_validate({
        "namespaces": ["llm"], "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
    })
    controller = make_controller(kube_client, load, settings=settings)
    (row,) = controller.run_cycle().servers
    assert row.verdict == "scaled" and row.desired_replicas is not None
    assert row.desired_replicas < 4, row.reason
    costs = {p: fake_kube.get("Pod", "llm", p)["metadata"]["annotations"][DELETION_COST]
             for p in pods}
    assert costs == {p: str(int(n)) for p, n in per_pod.items()}
    assert f"least-loaded first: {pods[1]} (0 running)" in row.reason
    signals = controller.collector.probe()  # type: ignore[attr-defined]
    (sig,) = signals.values()
    assert sig.rate_rpm == 6.0 and sig.running == 9.0 and sig.waiting == 0
