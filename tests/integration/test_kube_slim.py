"""Listed objects are kept slim as their pages arrive, and nothing that reads them can
tell: a cycle over real-sized pods and Deployments (managedFields, full container specs,
kubectl's last-applied copy) collects the same servers and builds the same patches as
over the test doubles' bare ones.

Real parts: the official Kubernetes client against the loopback API (paged lists)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from controlloop.cluster.actuator import build_patch
from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.kube import LAST_APPLIED, KubeClient, KubeError
from controlloop.loop.settings import ActuationConfig, ControllerSettings
from controlloop.loop.state import Action, placement_for
from tests.fakekube import FakeKubeServer, objects
from tests.fakekube.bulky import deployment_bulk, merged, pod_bulk
from tests.helpers.cluster import A100_SELECTOR, FakeLoadSource, add_server, managed_labels
from tests.helpers.cluster import reading as load_reading

pytestmark = pytest.mark.integration

MODELS = ("granite_13b", "llama3_8b")


def add_bulky_server(fake: FakeKubeServer, name: str, model: str, replicas: int) -> None:
    """add_server's Deployment and pods (no sidecar), the size real ones are."""
    labels = {**managed_labels(model, "Premium", "A100"), "app": name}
    containers = [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.0",
                   "resources": {"limits": {"nvidia.com/gpu": "1"},
                                 "requests": {"nvidia.com/gpu": "1"}}}]
    dep = objects.deployment("llm", name, labels=labels, replicas=replicas,
                             containers=containers, node_selector=A100_SELECTOR)
    fake.put(merged(dep, deployment_bulk(dep, model)))
    fake.set_deployment_status("llm", name, replicas=replicas)
    for i in range(replicas):
        pod = objects.pod("llm", f"{name}-{i}", labels={"app": name})
        fake.put(merged(pod, pod_bulk(f"{name}-{i}", model, f"node-{i}")))


@pytest.fixture
def two_fakes(
    fake_kube_factory: Callable[..., FakeKubeServer],
) -> tuple[FakeKubeServer, FakeKubeServer]:
    bare, bulky = fake_kube_factory(), fake_kube_factory()
    for k in range(5):
        name, model, replicas = f"srv-{k}", MODELS[k % 2], 1 + k % 3
        add_server(bare, "llm", name, model=model, cls="Premium", replicas=replicas,
                   sidecar=False)
        add_bulky_server(bulky, name, model, replicas)
    # one pod Pending and Unschedulable in each: the collector reads its conditions
    for fake in (bare, bulky):
        fake.add_pod("llm", "srv-0-pending", {"app": "srv-0"}, unschedulable=True)
    return bare, bulky


def client(fake: FakeKubeServer) -> KubeClient:
    return KubeClient.from_kubeconfig(fake.kubeconfig, timeout_s=5, page_size=2)


def test_listed_pods_and_deployments_lose_their_bulk_page_by_page(
    two_fakes: tuple[FakeKubeServer, FakeKubeServer],
) -> None:
    _, bulky = two_fakes
    kube = client(bulky)
    stored = bulky.get("Pod", "llm", "srv-1-0")
    assert "managedFields" in stored["metadata"] and len(json.dumps(stored)) > 5000

    pods = kube.list_pods("llm")
    assert len(pods) == 10  # 1+2+3+1+2 running, 1 pending: five pages of 2
    assert len(bulky.requests_for("GET", "/pods$")) == 5
    for pod in pods:
        assert set(pod) == {"kind", "apiVersion", "metadata", "spec", "status"}
        assert "managedFields" not in pod["metadata"]
        assert "containers" not in pod["spec"]
        assert len(json.dumps(pod)) < 700
    pod = next(p for p in pods if p["metadata"]["name"] == "srv-1-0")
    assert pod["metadata"]["labels"] == stored["metadata"]["labels"]
    assert pod["metadata"]["uid"] == stored["metadata"]["uid"]
    assert pod["spec"] == {"nodeName": "node-0"}
    assert pod["status"] == {"phase": "Running", "conditions": stored["status"]["conditions"]}

    deps = kube.list_deployments(["llm"])
    dep = next(d for d in deps if d["metadata"]["name"] == "srv-1")
    full = bulky.get("Deployment", "llm", "srv-1")
    assert LAST_APPLIED in full["metadata"]["annotations"] and full["metadata"]["managedFields"]
    assert "managedFields" not in dep["metadata"]
    assert dep["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "3"}
    assert dep["status"] == full["status"]
    for key in ("replicas", "selector", "strategy"):
        assert dep["spec"].get(key) == full["spec"].get(key)
    full_template = full["spec"]["template"]
    assert dep["spec"]["template"]["metadata"]["labels"] == full_template["metadata"]["labels"]
    container = full_template["spec"]["containers"][0]
    assert {"env", "args", "readinessProbe"} <= set(container)  # the bulk a real one has
    assert dep["spec"]["template"]["spec"] == {
        "nodeSelector": full_template["spec"]["nodeSelector"],
        "containers": [{"name": container["name"], "resources": container["resources"]}]}
    assert len(json.dumps(dep)) < len(json.dumps(full)) / 5
    # kept for the patches: what they are built from, not the whole object
    cached = kube.cached_deployment("llm", "srv-1")
    assert cached is not None and cached["metadata"]["resourceVersion"] == (
        full["metadata"]["resourceVersion"])
    assert cached["spec"]["template"]["spec"] == {
        "nodeSelector": A100_SELECTOR,
        "containers": [{"name": "vllm", "resources": c["resources"]}
                       for c in full["spec"]["template"]["spec"]["containers"]]}
    assert len(json.dumps(cached)) < 600


def test_collection_and_patches_are_the_same_over_real_sized_objects(
    two_fakes: tuple[FakeKubeServer, FakeKubeServer],
) -> None:
    settings = ControllerSettings.model_validate({"namespaces": ["llm"]})
    states, patches = [], []
    for fake in two_fakes:
        kube = client(fake)
        source = FakeLoadSource({f"srv-{k}": load_reading(60.0 + k) for k in range(5)})
        state = KubeCollector(kube, source, settings).collect()
        assert state.complete and len(state.servers) == 5
        # resourceVersions and the revision annotation are the two fakes' own
        states.append([dataclasses.replace(
            ms, resource_version="",
            annotations={k: v for k, v in ms.annotations.items()
                         if k != "deployment.kubernetes.io/revision"})
            for ms in state.servers])
        move = Action("llm", "srv-2", "srv-2", replicas=3, from_replicas=3,
                      placement=placement_for("H100", node_selector={"gpu": "h100"},
                                              resource="nvidia.com/gpu", count=2,
                                              max_batch=64))
        patch = build_patch(move, kube.cached_deployment("llm", "srv-2"), ActuationConfig())
        assert patch == build_patch(move, kube.get_deployment("llm", "srv-2"),
                                    ActuationConfig())  # as from the whole object
        patches.append(patch)
    assert states[0] == states[1]
    srv0 = next(ms for ms in states[1] if ms.deployment == "srv-0")
    assert (srv0.pending_pods, srv0.unschedulable_pods) == (1, 1)
    assert patches[0] == patches[1]
    container = patches[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "vllm"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert patches[1]["spec"]["template"]["spec"]["nodeSelector"] == {
        **{k: None for k in A100_SELECTOR}, "gpu": "h100"}


def test_listed_nodes_keep_labels_schedulability_and_allocatable(
    fake_kube: FakeKubeServer,
) -> None:
    fake = fake_kube
    node = objects.node("gpu-1", labels={"nvidia.com/gpu.product": "H100"},
                        unschedulable=True)
    images = [{"names": [f"registry/image-{i}@sha256:{'ab' * 32}"], "sizeBytes": 10**9}
              for i in range(200)]
    fake.put(merged(node, {"status": {"images": images, "nodeInfo": {"kubeletVersion":
                                                                     "v1.31.0"}}}))
    (got,) = client(fake).list_nodes()
    assert got["kind"] == "Node" and got["metadata"]["name"] == "gpu-1"
    assert got["metadata"]["labels"] == {"nvidia.com/gpu.product": "H100"}
    assert got["spec"] == {"unschedulable": True}
    assert set(got["status"]) == {"allocatable", "capacity"}
    assert got["status"]["allocatable"]["nvidia.com/gpu"] == "8"


def test_a_page_that_is_not_json_is_a_clear_error(
    two_fakes: tuple[FakeKubeServer, FakeKubeServer],
) -> None:
    # e.g. a proxy cutting a page of pods short
    _, bulky = two_fakes
    kube = client(bulky)
    bulky.inject("GET", "/pods$", status=200, body=b'{"kind": "PodList", "items": [{"meta')
    with pytest.raises(KubeError) as err:
        kube.list_pods("llm")
    assert err.value.reason == "BadResponse"
    assert "pods llm/" in str(err.value) and "invalid JSON in response" in str(err.value)
