"""Deployment patches through KubeClient: strategic merge vs merge patch, conflicts."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from controlloop.cluster.kube import Conflict, KubeClient, KubeError
from tests.fakekube import FakeKubeServer

pytestmark = pytest.mark.integration

SERVING = {
    "name": "vllm", "image": "vllm/vllm-openai:v0.6.0",
    "args": ["--model", "granite-13b"],
    "env": [{"name": "HF_HOME", "value": "/cache"}, {"name": "VLLM_LOG", "value": "info"}],
    "ports": [{"containerPort": 8000, "name": "http"}],
    "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "4"}},
}
SIDECAR = {"name": "metrics-proxy", "image": "proxy:1.2",
           "resources": {"limits": {"cpu": "100m"}}}


@pytest.fixture
def granite(fake_kube: FakeKubeServer) -> FakeKubeServer:
    fake_kube.add_deployment("llm", "granite", replicas=2, containers=[SERVING, SIDECAR],
                             node_selector={"gpu": "a100", "zone": "z1"},
                             annotations={"team": "ml"})
    return fake_kube


def _containers(srv: FakeKubeServer) -> dict[str, dict]:
    dep = srv.get("Deployment", "llm", "granite")
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


MOVE_TO_H100 = {"spec": {"replicas": 3, "template": {"spec": {
    "nodeSelector": {"gpu": "h100"},
    "containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
}}}}


def test_strategic_merge_keeps_sidecar_and_other_fields(granite: FakeKubeServer,
                                                        kube_client: KubeClient) -> None:
    before = granite.get("Deployment", "llm", "granite")["metadata"]
    out = kube_client.patch_deployment("llm", "granite", MOVE_TO_H100)

    (req,) = granite.requests_for("PATCH")
    assert req.content_type == "application/strategic-merge-patch+json"
    assert req.body == MOVE_TO_H100  # exactly what we meant, nothing more
    cs = _containers(granite)
    assert list(cs) == ["vllm", "metrics-proxy"]
    assert cs["metrics-proxy"] == SIDECAR
    assert cs["vllm"]["resources"] == {"limits": {"nvidia.com/gpu": "2"},
                                       "requests": {"cpu": "4"}}
    assert cs["vllm"]["env"] == SERVING["env"] and cs["vllm"]["args"] == SERVING["args"]
    pod_spec = out["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"gpu": "h100", "zone": "z1"}  # maps merge
    assert out["metadata"]["annotations"] == {"team": "ml"}
    assert out["metadata"]["generation"] == before["generation"] + 1
    assert int(out["metadata"]["resourceVersion"]) > int(before["resourceVersion"])


def test_merge_patch_replaces_lists(granite: FakeKubeServer, kube_client: KubeClient) -> None:
    kube_client.patch_deployment("llm", "granite", MOVE_TO_H100, strategic=False)

    (req,) = granite.requests_for("PATCH")
    assert req.content_type == "application/merge-patch+json"
    cs = _containers(granite)
    # RFC 7386: the whole containers list is replaced; sidecar and image are gone.
    assert list(cs) == ["vllm"]
    assert "image" not in cs["vllm"]


def test_strategic_directives(granite: FakeKubeServer, kube_client: KubeClient) -> None:
    pod_spec = {
        "nodeSelector": {"$patch": "replace", "gpu": "l4"},
        "containers": [
            {"name": "metrics-proxy", "$patch": "delete"},
            {"name": "vllm", "env": [{"name": "VLLM_LOG", "value": "debug"}],
             "args": ["--model", "granite-8b"]},
        ]}
    kube_client.patch_deployment("llm", "granite", {
        "metadata": {"annotations": {"team": None}},
        "spec": {"template": {"spec": pod_spec}}})

    dep = granite.get("Deployment", "llm", "granite")
    spec = dep["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"gpu": "l4"}
    (vllm,) = spec["containers"]
    assert vllm["env"] == [{"name": "HF_HOME", "value": "/cache"},
                           {"name": "VLLM_LOG", "value": "debug"}]  # merged by name
    assert vllm["args"] == ["--model", "granite-8b"]  # scalar list replaced
    assert dep["metadata"]["annotations"] == {}


def test_stale_resource_version_conflicts(granite: FakeKubeServer,
                                          kube_client: KubeClient) -> None:
    seen = kube_client.get_deployment("llm", "granite")["metadata"]["resourceVersion"]
    granite.set_deployment_status("llm", "granite", replicas=2, ready_replicas=1)  # rv moves

    with pytest.raises(Conflict) as exc:
        kube_client.patch_deployment("llm", "granite", {
            "metadata": {"resourceVersion": seen}, "spec": {"replicas": 5}})
    assert exc.value.status == 409 and exc.value.reason == "Conflict"
    assert granite.get("Deployment", "llm", "granite")["spec"]["replicas"] == 2

    fresh = kube_client.get_deployment("llm", "granite")["metadata"]["resourceVersion"]
    out = kube_client.patch_deployment("llm", "granite", {
        "metadata": {"resourceVersion": fresh}, "spec": {"replicas": 5}}, strategic=False)
    assert out["spec"]["replicas"] == 5


def test_status_is_a_subresource(granite: FakeKubeServer, kube_client: KubeClient) -> None:
    gen = granite.get("Deployment", "llm", "granite")["metadata"]["generation"]
    out = kube_client.patch_deployment("llm", "granite", {"status": {"readyReplicas": 99}})
    assert out["status"]["readyReplicas"] == 2  # ignored on the main resource
    granite.set_deployment_status("llm", "granite", replicas=3, ready_replicas=1,
                                  updated_replicas=1)
    dep = kube_client.get_deployment("llm", "granite")
    assert dep["status"]["readyReplicas"] == 1 and dep["status"]["updatedReplicas"] == 1
    assert dep["metadata"]["generation"] == gen  # status writes do not bump generation


def test_json_patch_through_official_client(granite: FakeKubeServer,
                                            kube_client: KubeClient) -> None:
    apps = k8s.AppsV1Api(kube_client.api_client)
    apps.patch_namespaced_deployment("granite", "llm", [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/labels/tier", "value": "gold"},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
    ])
    (req,) = granite.requests_for("PATCH")
    assert req.content_type == "application/json-patch+json"
    dep = granite.get("Deployment", "llm", "granite")
    assert dep["spec"]["replicas"] == 4 and dep["metadata"]["labels"]["tier"] == "gold"
    assert list(_containers(granite)) == ["vllm"]


def test_failed_json_patch_is_422_and_atomic(granite: FakeKubeServer,
                                            kube_client: KubeClient) -> None:
    apps = k8s.AppsV1Api(kube_client.api_client)
    before = granite.get("Deployment", "llm", "granite")
    with pytest.raises(k8s.ApiException) as exc:
        apps.patch_namespaced_deployment("granite", "llm", [
            {"op": "replace", "path": "/spec/replicas", "value": 7},
            {"op": "test", "path": "/spec/replicas", "value": 2},
        ])
    assert exc.value.status == 422
    assert granite.get("Deployment", "llm", "granite") == before


def test_patch_missing_deployment(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    with pytest.raises(KubeError) as exc:
        kube_client.patch_deployment("llm", "ghost", {"spec": {"replicas": 1}})
    assert exc.value.status == 404
