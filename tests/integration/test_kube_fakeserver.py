"""The fake API server's own semantics, so tests built on it can trust it."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from controlloop.cluster.kube import KubeClient, KubeConfigError
from tests.fakekube import FakeKubeServer
from tests.fakekube.patch import PatchError, json_patch, merge_patch, strategic_merge

pytestmark = pytest.mark.integration


def test_merge_patch_rfc7386_examples() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}


def test_strategic_merge_keys_and_directives() -> None:
    pod = {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]},
                          {"name": "b"}],
           "tolerations": [{"key": "x"}], "finalizers": ["f1", "f2"]}
    out = strategic_merge(pod, {
        "containers": [{"name": "a", "ports": [{"containerPort": 9090, "name": "metrics"}]},
                       {"name": "c", "image": "new"}],
        "tolerations": [{"key": "y"}],  # no merge key: replaced
        "$deleteFromPrimitiveList/finalizers": ["f1"],
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
    })
    assert [c["name"] for c in out["containers"]] == ["a", "b", "c"]
    assert [p["containerPort"] for p in out["containers"][0]["ports"]] == [80, 9090]
    assert out["tolerations"] == [{"key": "y"}]
    assert out["finalizers"] == ["f2"]
    replaced = strategic_merge(pod, {"containers": [{"$patch": "replace"}, {"name": "z"}]})
    assert replaced["containers"] == [{"name": "z"}]
    assert strategic_merge(pod, {"containers": None}) == {k: v for k, v in pod.items()
                                                          if k != "containers"}
    with pytest.raises(PatchError):
        strategic_merge(pod, {"containers": [{"image": "no-name"}]})


def test_json_patch_ops() -> None:
    doc = {"a": {"b": [1, 2]}, "c~d": 1, "e/f": 2}
    out = json_patch(doc, [
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "add", "path": "/a/b/0", "value": 0},
        {"op": "copy", "from": "/a/b", "path": "/copy"},
        {"op": "move", "from": "/c~0d", "path": "/moved"},
        {"op": "remove", "path": "/e~1f"},
        {"op": "test", "path": "/copy/3", "value": 3},
    ])
    assert out == {"a": {"b": [0, 1, 2, 3]}, "copy": [0, 1, 2, 3], "moved": 1}
    assert doc["a"]["b"] == [1, 2]  # input untouched
    for bad in ([{"op": "remove", "path": "/nope"}], [{"op": "frob", "path": "/a"}],
                {"op": "add"}):
        with pytest.raises(PatchError):
            json_patch(doc, bad)


def test_put_with_stale_resource_version_conflicts(fake_kube: FakeKubeServer,
                                                   kube_client: KubeClient) -> None:
    fake_kube.add_deployment("llm", "granite")
    apps = k8s.AppsV1Api(kube_client.api_client)
    body = kube_client.get_deployment("llm", "granite")
    fake_kube.set_deployment_status("llm", "granite", replicas=1, ready_replicas=0)
    body["spec"]["replicas"] = 4
    with pytest.raises(k8s.ApiException) as exc:
        apps.replace_namespaced_deployment("granite", "llm", body, _preload_content=False)
    assert exc.value.status == 409
    del body["metadata"]["resourceVersion"]  # unconditional update, as the API allows
    apps.replace_namespaced_deployment("granite", "llm", body, _preload_content=False)
    assert fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == 4


def test_discovery_namespaces_and_new_events(fake_kube: FakeKubeServer,
                                             kube_client: KubeClient) -> None:
    api = kube_client.api_client
    assert k8s.VersionApi(api).get_code().git_version == "v1.30.0-fake"
    groups = k8s.ApisApi(api).get_api_versions().groups
    assert {g.name for g in groups} >= {"apps", "coordination.k8s.io", "keda.sh"}
    fake_kube.add_deployment("llm", "granite")
    names = [n.metadata.name for n in k8s.CoreV1Api(api).list_namespace().items]
    assert names == ["llm"]
    k8s.EventsV1Api(api).create_namespaced_event("llm", {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"generateName": "granite."}, "reason": "Scaled", "action": "Scale",
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "controlloop",
        "reportingInstance": "pod-a", "type": "Normal"}, _preload_content=False)
    (ev,) = fake_kube.list_objects("events.k8s.io/v1/Event", "llm")
    assert ev["metadata"]["name"].startswith("granite.")


def test_keda_rejects_strategic_merge(fake_kube: FakeKubeServer,
                                      kube_client: KubeClient) -> None:
    fake_kube.add_scaled_object("llm", "so", target="granite")
    custom = k8s.CustomObjectsApi(kube_client.api_client)
    with pytest.raises(k8s.ApiException) as exc:
        custom.patch_namespaced_custom_object(
            "keda.sh", "v1alpha1", "llm", "scaledobjects", "so", {"spec": {}},
            _content_type="application/strategic-merge-patch+json")
    assert exc.value.status == 415
    custom.patch_namespaced_custom_object(
        "keda.sh", "v1alpha1", "llm", "scaledobjects", "so", {"spec": {"maxReplicaCount": 2}},
        _content_type="application/merge-patch+json")
    assert fake_kube.get("ScaledObject", "llm", "so")["spec"]["maxReplicaCount"] == 2


def test_lease_patch_and_fault_expiry(fake_kube: FakeKubeServer,
                                      kube_client: KubeClient) -> None:
    coord = k8s.CoordinationV1Api(kube_client.api_client)
    kube_client.create_lease("ns", {"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})
    fault = fake_kube.inject("PATCH", "/leases/", status=500, times=2)
    for _ in range(2):
        with pytest.raises(k8s.ApiException):
            coord.patch_namespaced_lease("l", "ns", {"spec": {"holderIdentity": "b"}})
    coord.patch_namespaced_lease("l", "ns", {"spec": {"holderIdentity": "b"}},
                                 _preload_content=False)
    assert fault.hits == 2
    assert fake_kube.get("Lease", "ns", "l")["spec"]["holderIdentity"] == "b"


def test_in_cluster_outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError):
        KubeClient.in_cluster()
