"""KubeClient against the loopback API server: reads, writes and error mapping."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlloop.cluster.kube import (
    Conflict,
    Forbidden,
    KubeClient,
    KubeConfigError,
    KubeError,
    KubeTimeout,
    NotFound,
    ServerError,
    Unauthorized,
)
from tests.fakekube import FakeKubeServer
from tests.fakekube.objects import deployment

pytestmark = pytest.mark.integration
Factory = Callable[..., FakeKubeServer]


def test_list_deployments_all_namespaces_with_selector(fake_kube: FakeKubeServer,
                                                        kube_client: KubeClient) -> None:
    managed = {"controlloop.io/managed": "true"}
    fake_kube.add_deployment("llm", "granite", labels={**managed, "app": "granite"}, replicas=2)
    fake_kube.add_deployment("other", "llama", labels={**managed, "app": "llama"})
    fake_kube.add_deployment("llm", "web", labels={"app": "web"})

    got = kube_client.list_deployments(None, "controlloop.io/managed=true")

    assert sorted(d["metadata"]["name"] for d in got) == ["granite", "llama"]
    granite = next(d for d in got if d["metadata"]["name"] == "granite")
    assert granite["kind"] == "Deployment" and granite["apiVersion"] == "apps/v1"
    assert granite["status"]["readyReplicas"] == 2
    (req,) = fake_kube.requests_for("GET", "/deployments$")
    assert req.path == "/apis/apps/v1/deployments"
    assert req.query == {"labelSelector": "controlloop.io/managed=true", "limit": "500"}


def test_list_deployments_in_given_namespaces(fake_kube: FakeKubeServer,
                                              kube_client: KubeClient) -> None:
    for ns in ("a", "b", "c"):
        fake_kube.add_deployment(ns, f"d-{ns}")
    got = kube_client.list_deployments(["a", "c"], "")
    assert [d["metadata"]["namespace"] for d in got] == ["a", "c"]
    assert [r.path for r in fake_kube.requests_for("GET")] == [
        "/apis/apps/v1/namespaces/a/deployments", "/apis/apps/v1/namespaces/c/deployments"]


def test_get_deployment_and_not_found(fake_kube: FakeKubeServer,
                                      kube_client: KubeClient) -> None:
    fake_kube.add_deployment("llm", "granite", replicas=3)
    dep = kube_client.get_deployment("llm", "granite")
    assert dep["spec"]["replicas"] == 3 and dep["metadata"]["uid"]

    with pytest.raises(NotFound) as exc:
        kube_client.get_deployment("llm", "missing")
    err = exc.value
    assert (err.status, err.reason, err.obj) == (404, "NotFound", "deployments llm/missing")
    assert 'deployments.apps "missing" not found' in str(err)


def test_create_and_delete_deployment(fake_kube: FakeKubeServer,
                                      kube_client: KubeClient) -> None:
    body = deployment("llm", "granite-b", replicas=1)
    created = kube_client.create_deployment("llm", body)
    assert created["metadata"]["resourceVersion"] and created["metadata"]["generation"] == 1
    assert fake_kube.get("Deployment", "llm", "granite-b")["spec"]["replicas"] == 1

    with pytest.raises(Conflict) as exc:
        kube_client.create_deployment("llm", body)
    assert exc.value.reason == "AlreadyExists"

    status = kube_client.delete_deployment("llm", "granite-b")
    assert status["status"] == "Success"
    (req,) = fake_kube.requests_for("DELETE")
    assert req.query.get("propagationPolicy") == "Background"
    with pytest.raises(NotFound):
        kube_client.delete_deployment("llm", "granite-b")


def test_list_pods_by_labels_and_phase(fake_kube: FakeKubeServer,
                                       kube_client: KubeClient) -> None:
    fake_kube.add_pod("llm", "granite-1", {"app": "granite"}, node_name="n1")
    fake_kube.add_pod("llm", "granite-2", {"app": "granite"}, unschedulable=True)
    fake_kube.add_pod("llm", "web-1", {"app": "web"})

    assert len(kube_client.list_pods("llm", "app=granite")) == 2
    pending = kube_client.list_pods(
        "llm", "app in (granite)", field_selector="status.phase=Pending"
    )
    assert [p["metadata"]["name"] for p in pending] == ["granite-2"]
    cond = {c["type"]: c for c in pending[0]["status"]["conditions"]}
    assert cond["PodScheduled"]["status"] == "False"
    assert cond["PodScheduled"]["reason"] == "Unschedulable"
    assert len(kube_client.list_pods(None, "app")) == 3


def test_list_nodes(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    fake_kube.add_node("a100-1", {"nvidia.com/gpu.product": "A100"},
                       {"nvidia.com/gpu": "8", "cpu": "96"})
    fake_kube.add_node("cpu-1", {"node-role": "cpu"})
    nodes = kube_client.list_nodes("nvidia.com/gpu.product")
    assert [n["metadata"]["name"] for n in nodes] == ["a100-1"]
    assert nodes[0]["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert len(kube_client.list_nodes()) == 2


def test_create_event(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    fake_kube.add_deployment("llm", "granite")
    dep = kube_client.get_deployment("llm", "granite")

    kube_client.create_event("llm", dep, reason="ScaledUp", message="replicas 1 -> 3",
                             type="Normal", action="Scale")

    (ev,) = fake_kube.list_objects("Event", "llm")
    assert ev["apiVersion"] == "v1"
    assert ev["involvedObject"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "granite", "namespace": "llm",
        "uid": dep["metadata"]["uid"], "resourceVersion": dep["metadata"]["resourceVersion"]}
    assert (ev["reason"], ev["message"], ev["type"]) == ("ScaledUp", "replicas 1 -> 3", "Normal")
    assert ev["source"] == {"component": "controlloop"}
    with pytest.raises(ValueError, match="Normal or Warning"):
        kube_client.create_event("llm", dep, reason="X", message="y", type="Error")


def test_list_hpas(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    fake_kube.add_hpa("llm", "granite-hpa", target="granite")
    fake_kube.add_hpa("other", "x", target="x")
    hpas = kube_client.list_hpas("llm")
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == ["granite"]
    assert hpas[0]["kind"] == "HorizontalPodAutoscaler"
    assert len(kube_client.list_hpas()) == 2


def test_scaled_objects(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    fake_kube.add_scaled_object("llm", "granite-so", target="granite", max_replicas=4)
    (so,) = kube_client.list_scaled_objects("llm")
    # Unknown-to-the-client fields survive: we never go through the generated models.
    assert so["spec"]["maxReplicaCount"] == 4 and so["spec"]["triggers"]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert len(kube_client.list_scaled_objects()) == 1


def test_scaled_objects_without_keda_crd_is_empty(fake_kube_factory: Factory) -> None:
    srv = fake_kube_factory(keda_installed=False)
    client = KubeClient.from_kubeconfig(srv.kubeconfig, timeout_s=2)
    assert client.list_scaled_objects() == []
    assert client.list_scaled_objects("llm") == []
    assert len(srv.requests_for("GET", "keda.sh")) == 2


def test_bearer_token_unauthorized(fake_kube_factory: Factory, tmp_path: Path) -> None:
    srv = fake_kube_factory(token="s3cret")
    srv.add_deployment("llm", "granite")
    good = KubeClient.from_kubeconfig(srv.kubeconfig, timeout_s=2)
    assert good.get_deployment("llm", "granite")["metadata"]["name"] == "granite"

    bad_cfg = srv.write_kubeconfig(tmp_path / "bad", token="wrong")
    bad = KubeClient.from_kubeconfig(bad_cfg, timeout_s=2)
    with pytest.raises(Unauthorized) as exc:
        bad.list_deployments(None, "")
    assert exc.value.status == 401


def test_forbidden_per_verb(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    fake_kube.add_deployment("llm", "granite")
    fake_kube.forbid("deployments", {"patch"})
    assert kube_client.list_deployments(["llm"], "")  # list still allowed
    with pytest.raises(Forbidden) as exc:
        kube_client.patch_deployment("llm", "granite", {"spec": {"replicas": 2}})
    assert exc.value.status == 403 and "cannot patch" in exc.value.message


@pytest.mark.parametrize("code", [500, 503])
def test_server_error_is_not_retried(fake_kube: FakeKubeServer, kube_client: KubeClient,
                                     code: int) -> None:
    fake_kube.add_deployment("llm", "granite")
    fake_kube.inject("GET", r"/deployments/granite$", status=code, times=1)
    with pytest.raises(ServerError) as exc:
        kube_client.get_deployment("llm", "granite")
    assert exc.value.status == code
    assert len(fake_kube.requests_for("GET")) == 1  # no hidden retries
    assert kube_client.get_deployment("llm", "granite")  # the fault was one-shot


def test_other_4xx_is_plain_kube_error(fake_kube: FakeKubeServer,
                                       kube_client: KubeClient) -> None:
    with pytest.raises(KubeError) as exc:
        kube_client.list_pods("llm", "app in (a")
    assert type(exc.value) is KubeError and exc.value.status == 400


def test_timeout(fake_kube_factory: Factory) -> None:
    srv = fake_kube_factory()
    srv.add_deployment("llm", "granite")
    client = KubeClient.from_kubeconfig(srv.kubeconfig, timeout_s=0.3)
    srv.inject("PATCH", "granite", delay_s=3.0)
    start = time.monotonic()
    with pytest.raises(KubeTimeout) as exc:
        client.patch_deployment("llm", "granite", {"spec": {"replicas": 2}})
    assert time.monotonic() - start < 2.0
    assert exc.value.obj == "deployments llm/granite"


def test_dropped_connection(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    fake_kube.inject("GET", "deployments", drop=True)
    with pytest.raises(KubeTimeout):
        kube_client.list_deployments(None, "")


def test_connection_refused(fake_kube_factory: Factory) -> None:
    srv = fake_kube_factory()
    client = KubeClient.from_kubeconfig(srv.kubeconfig, timeout_s=1)
    srv.stop()
    with pytest.raises(KubeTimeout):
        client.list_nodes()


def test_kubeconfig_from_env_and_missing(fake_kube: FakeKubeServer, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(fake_kube.kubeconfig))
    assert KubeClient.from_kubeconfig(context="fake").list_nodes() == []
    with pytest.raises(KubeConfigError):
        KubeClient.from_kubeconfig(tmp_path / "nope")
    with pytest.raises(KubeConfigError):
        KubeClient.from_kubeconfig(fake_kube.kubeconfig, context="no-such-context")


def test_missing_kubeconfig_says_it_does_not_exist(tmp_path: Path) -> None:
    from controlloop.cluster.kube import KubeConfigError

    missing = tmp_path / "nope"
    with pytest.raises(KubeConfigError, match="does not exist"):
        KubeClient.from_kubeconfig(missing)
