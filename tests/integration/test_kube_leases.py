"""Leases (leader election): create, read, optimistic-concurrency replace."""

from __future__ import annotations

import pytest

from controlloop.cluster.kube import Conflict, KubeClient, NotFound
from tests.fakekube import FakeKubeServer

pytestmark = pytest.mark.integration


def _lease(holder: str) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "controlloop-leader", "namespace": "controlloop"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": "2026-01-01T00:00:00.000000Z"}}


def test_lease_lifecycle(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    with pytest.raises(NotFound):
        kube_client.get_lease("controlloop", "controlloop-leader")
    created = kube_client.create_lease("controlloop", _lease("pod-a"))
    assert created["spec"]["holderIdentity"] == "pod-a"
    with pytest.raises(Conflict) as exc:
        kube_client.create_lease("controlloop", _lease("pod-b"))  # lost the creation race
    assert exc.value.reason == "AlreadyExists"

    lease = kube_client.get_lease("controlloop", "controlloop-leader")
    lease["spec"]["renewTime"] = "2026-01-01T00:00:10.000000Z"
    renewed = kube_client.replace_lease("controlloop", "controlloop-leader", lease)
    assert renewed["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"]
    (put,) = fake_kube.requests_for("PUT", "/leases/controlloop-leader$")
    assert put.body["metadata"]["resourceVersion"] == lease["metadata"]["resourceVersion"]
    assert put.path == ("/apis/coordination.k8s.io/v1/namespaces/controlloop/leases/"
                        "controlloop-leader")


def test_concurrent_replace_loses_with_conflict(fake_kube: FakeKubeServer,
                                                kube_client: KubeClient) -> None:
    other = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=2)
    kube_client.create_lease("controlloop", _lease("pod-a"))
    mine = kube_client.get_lease("controlloop", "controlloop-leader")
    theirs = other.get_lease("controlloop", "controlloop-leader")

    theirs["spec"]["holderIdentity"] = "pod-b"
    other.replace_lease("controlloop", "controlloop-leader", theirs)
    mine["spec"]["renewTime"] = "2026-01-01T00:00:10.000000Z"
    with pytest.raises(Conflict) as exc:
        kube_client.replace_lease("controlloop", "controlloop-leader", mine)
    assert exc.value.status == 409 and exc.value.obj == "leases controlloop/controlloop-leader"
    assert fake_kube.get("Lease", "controlloop", "controlloop-leader")["spec"][
        "holderIdentity"] == "pod-b"


def test_replace_without_resource_version_is_refused(kube_client: KubeClient) -> None:
    with pytest.raises(ValueError, match="resourceVersion"):
        kube_client.replace_lease("controlloop", "controlloop-leader", _lease("pod-a"))
