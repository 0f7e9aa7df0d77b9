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
