"""The loopback API serves custom resources the way a real API server does, through the
official client (ApiextensionsV1Api, CustomObjectsApi, watch) over HTTP, and through kubectl
where it is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from controlloop.config import load_config
from controlloop.crds import GROUP, VERSION, crd_documents, system_to_crs
from tests.fakekube import FakeKubeServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NS = "controlloop-system"


@pytest.fixture
def api(fake_kube: FakeKubeServer) -> Iterator[k8s.ApiClient]:
    from controlloop.cluster.kube import KubeClient

    kube = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=5.0)
    yield kube.api_client
    kube.close()


def raw(fake: FakeKubeServer, method: str, path: str, *, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One plain HTTP request (for what the typed client does not send)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(fake.url + path, data=data, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def install_crds(api: k8s.ApiClient) -> None:
    ext = k8s.ApiextensionsV1Api(api)
    for doc in crd_documents():
        ext.create_custom_resource_definition(doc)


def optimizer(name: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Optimizer",
            "metadata": {"name": name}, "spec": {"optimizer": spec}}


def test_unregistered_group_is_404_until_its_crd_is_created(api: k8s.ApiClient) -> None:
    custom = k8s.CustomObjectsApi(api)
    with pytest.raises(k8s.ApiException) as exc:
        custom.list_namespaced_custom_object(GROUP, VERSION, NS, "optimizers")
    assert exc.value.status == 404
    groups = {g.name for g in k8s.ApisApi(api).get_api_versions().groups}
    assert GROUP not in groups
    install_crds(api)
    groups = {g.name for g in k8s.ApisApi(api).get_api_versions().groups}
    assert GROUP in groups
    assert custom.list_namespaced_custom_object(GROUP, VERSION, NS, "optimizers")["items"] == []
    crd = k8s.ApiextensionsV1Api(api).read_custom_resource_definition(
        f"optimizers.{GROUP}")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    # Deleting the definition stops serving it and deletes its objects.
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "optimizers", optimizer())
    k8s.ApiextensionsV1Api(api).delete_custom_resource_definition(f"optimizers.{GROUP}")
    with pytest.raises(k8s.ApiException) as exc:
        custom.list_namespaced_custom_object(GROUP, VERSION, NS, "optimizers")
    assert exc.value.status == 404


def test_bad_definition_is_refused(api: k8s.ApiClient) -> None:
    doc = crd_documents()[0]
    doc["metadata"]["name"] = "wrong.name.io"
    with pytest.raises(k8s.ApiException) as exc:
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(doc)
    assert exc.value.status == 422 and "spec.names.plural" in json.loads(exc.value.body)["message"]
    doc = crd_documents()[0]
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].pop("type")
    with pytest.raises(k8s.ApiException) as exc:
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(doc)
    assert exc.value.status == 422 and "type is required" in exc.value.body


def test_schema_validation_pruning_and_generation(api: k8s.ApiClient,
                                                  fake_kube: FakeKubeServer) -> None:
    install_crds(api)
    custom = k8s.CustomObjectsApi(api)
    with pytest.raises(k8s.ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "optimizers",
                                               optimizer(saturationPolicy="Sometimes"))
    body = json.loads(exc.value.body)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.optimizer.saturationPolicy"
    obj = optimizer(saturationPolicy="RoundRobin")
    obj["spec"]["optimizer"]["noSuchField"] = 1
    created = custom.create_namespaced_custom_object(GROUP, VERSION, NS, "optimizers", obj)
    assert "noSuchField" not in created["spec"]["optimizer"], "unknown fields are pruned"
    assert created["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "optimizers", "default", {"spec": {"optimizer": {"unlimited": True}}})
    assert patched["metadata"]["generation"] == 2
    labelled = custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "optimizers", "default", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 2, "metadata changes keep the generation"
    # Strategic merge is not defined for custom resources.
    code, _ = raw(fake_kube, "PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/optimizers/"
                  "default", body={"spec": {}},
                  headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert code == 415


def test_status_subresource_has_its_own_writes_and_conflicts(api: k8s.ApiClient) -> None:
    install_crds(api)
    custom = k8s.CustomObjectsApi(api)
    args = (GROUP, VERSION, NS, "optimizers", "default")
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "optimizers", optimizer())
    # The main resource ignores status; /status ignores everything else.
    with_status = custom.patch_namespaced_custom_object(
        *args, {"status": {"observedGeneration": 1}, "spec": {"optimizer": {"unlimited": True}}})
    assert "status" not in with_status or not with_status["status"]
    after = custom.patch_namespaced_custom_object_status(
        *args, {"status": {"observedGeneration": 2, "totals": {"servers": 3}},
                "spec": {"optimizer": {"unlimited": False}}})
    assert after["status"]["totals"] == {"servers": 3}
    assert after["spec"]["optimizer"]["unlimited"] is True, "spec change ignored on /status"
    assert after["metadata"]["generation"] == 2, "a status write does not bump generation"
    # Status is validated too.
    with pytest.raises(k8s.ApiException) as exc:
        custom.patch_namespaced_custom_object_status(
            *args, {"status": {"servers": [{"name": "s", "decision": "frobbed"}]}})
    assert exc.value.status == 422
    # PUT on /status with a stale resourceVersion: 409; with the current one: accepted.
    stale = dict(after)
    custom.patch_namespaced_custom_object_status(*args, {"status": {"cycleId": "c2"}})
    stale["status"] = {**after["status"], "cycleId": "c1"}
    with pytest.raises(k8s.ApiException) as exc:
        custom.replace_namespaced_custom_object_status(*args, stale)
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "Conflict"
    fresh = custom.get_namespaced_custom_object(*args)
    fresh["status"]["cycleId"] = "c3"
    assert custom.replace_namespaced_custom_object_status(*args, fresh)["status"]["cycleId"] \
        == "c3"
    # A merge patch carrying a stale resourceVersion conflicts as well.
    with pytest.raises(k8s.ApiException) as exc:
        custom.patch_namespaced_custom_object_status(
            *args, {"metadata": {"resourceVersion": after["metadata"]["resourceVersion"]},
                    "status": {"cycleId": "c4"}})
    assert exc.value.status == 409


def test_list_and_watch(api: k8s.ApiClient) -> None:
    install_crds(api)
    custom = k8s.CustomObjectsApi(api)
    for doc in system_to_crs(load_config(ROOT / "config" / "examples" / "small").system):
        plural = {"Capacity": "capacities", "ServiceClass": "serviceclasses"}.get(
            doc["kind"], doc["kind"].lower() + "s")
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, plural, doc)
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "accelerators")
    names = [o["metadata"]["name"] for o in listed["items"]]
    assert names == sorted(names) and names
    rv = listed["metadata"]["resourceVersion"]
    # From the list's resourceVersion: only what changed after it, in order.
    seen: list[tuple[str, str]] = []

    def consume() -> None:
        w = watch.Watch()
        for event in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, NS,
                              "accelerators", resource_version=rv, timeout_seconds=5):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if len(seen) == 3:
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "accelerators", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Accelerator", "metadata": {"name": "x1"},
        "spec": {"type": "X", "cost": 1}})
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "accelerators", "x1",
                                          {"spec": {"cost": 2}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "accelerators", "x1")
    t.join(10)
    assert seen == [("ADDED", "x1"), ("MODIFIED", "x1"), ("DELETED", "x1")]
    # Without a resourceVersion: the current objects first, as ADDED.
    w = watch.Watch()
    initial = [e["object"]["metadata"]["name"] for e in w.stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, NS, "accelerators",
        timeout_seconds=1)]
    assert initial == names


def test_watch_from_a_compacted_version_is_gone(api: k8s.ApiClient,
                                                fake_kube: FakeKubeServer) -> None:
    install_crds(api)
    custom = k8s.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "optimizers", optimizer())
    fake_kube.store.compact()
    code, data = raw(fake_kube, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/optimizers"
                     "?watch=true&resourceVersion=1")
    assert code == 200
    (line,) = [x for x in data.decode().splitlines() if x]
    event = json.loads(line)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


def test_watch_history_is_a_bounded_window(api: k8s.ApiClient,
                                            fake_kube: FakeKubeServer) -> None:
    """The fake keeps the last ``history`` changes, as a real server's watch cache does: a
    watch from before the window, or one that falls behind it, gets 410 Gone."""
    install_crds(api)
    custom = k8s.CustomObjectsApi(api)
    store = fake_kube.store
    store.history = 3
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/accelerators"

    def accelerator(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "accelerators", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Accelerator",
            "metadata": {"name": name}, "spec": {"type": "X", "cost": 1}})

    start = store.revision
    code, _, live = fake_kube.watch(path, {"resourceVersion": str(start)})
    assert code == 200 and live is not None
    accelerator("a0")
    first = next(live)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a0")
    for i in range(1, 6):  # the live watcher does not read meanwhile
        accelerator(f"a{i}")
    assert [e.revision for e in store.events] == list(range(store.revision - 2,
                                                            store.revision + 1))
    assert store.compacted == store.revision - 3
    behind = next(live)
    assert behind["type"] == "ERROR" and behind["object"]["code"] == 410, behind
    assert next(live, None) is None
    # From before the window: 410 at once; from its start: the 3 changes kept.
    code, _, old = fake_kube.watch(path, {"resourceVersion": str(start)})
    assert old is not None and next(old)["object"]["code"] == 410
    code, _, kept = fake_kube.watch(path, {"resourceVersion": str(store.compacted),
                                           "timeoutSeconds": "0.5"})
    assert kept is not None
    assert [e["object"]["metadata"]["name"] for e in kept] == ["a3", "a4", "a5"]


def test_table_has_the_printer_columns(api: k8s.ApiClient, fake_kube: FakeKubeServer) -> None:
    install_crds(api)
    custom = k8s.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "optimizers", optimizer())
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, "optimizers", "default", {
        "status": {"totals": {"servers": 4, "replicas": 9, "cost": 123.5},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "CycleOk"}]}})
    code, data = raw(fake_kube, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/optimizers",
                     headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert code == 200
    table = json.loads(data)
    assert table["kind"] == "Table"
    heads = [c["name"] for c in table["columnDefinitions"]]
    assert heads == ["Name", "Ready", "Reason", "Servers", "Replicas", "Cost", "Last Cycle",
                     "Age"]
    (row,) = table["rows"]
    assert row["cells"][:6] == ["default", "True", "CycleOk", 4, 9, 123.5]


def kubectl(fake: FakeKubeServer, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("kubectl")
    assert exe, (
        "kubectl missing: scripts/install-system-deps.sh installs Debian's kubernetes-client"
    )
    return subprocess.run(
        [exe, f"--kubeconfig={fake.kubeconfig}", f"--cache-dir={tmp / 'cache'}", *args],
        capture_output=True, text=True, timeout=60, check=False)


def test_kubectl_lists_our_resources_with_printer_columns(fake_kube: FakeKubeServer,
                                                          tmp_path: Path) -> None:
    crds = tmp_path / "crds.yaml"
    from controlloop.crds import dump_yaml

    crds.write_text(dump_yaml(crd_documents()), encoding="utf-8")
    # --validate=false: the fake serves no OpenAPI documents (it validates server-side).
    proc = kubectl(fake_kube, tmp_path, "create", "--validate=false", "-f", str(crds))
    assert proc.returncode == 0, proc.stderr
    proc = kubectl(fake_kube, tmp_path, "create", "--validate=false", "-n", NS, "-f",
                   str(ROOT / "manifests" / "examples" / "crs" / "large.yaml"))
    assert proc.returncode == 0, proc.stderr
    proc = kubectl(fake_kube, tmp_path, "get", "accelerators", "-n", NS)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "UNITS", "MEMORY", "COST", "VALID", "AGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["2xa100"][1:5] == ["A100", "2", "160", "80"]
    fake_kube.set_status(f"{GROUP}/{VERSION}/Optimizer", NS, "default", {
        "totals": {"servers": 27, "replicas": 61, "cost": 19273.0},
        "lastCycleTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Ready", "status": "True", "reason": "SolutionApplied"}]})
    proc = kubectl(fake_kube, tmp_path, "get", "opt", "-n", NS)
    assert proc.returncode == 0, proc.stderr
    head, row = proc.stdout.splitlines()
    assert head.split() == ["NAME", "READY", "REASON", "SERVERS", "REPLICAS", "COST", "LAST",
                            "CYCLE", "AGE"]
    assert row.split()[:6] == ["default", "True", "SolutionApplied", "27", "61", "19273"]
    proc = kubectl(fake_kube, tmp_path, "get", "models.controlloop.io", "-n", NS,
                   "-o", "jsonpath={.items[*].metadata.name}")
    assert proc.returncode == 0, proc.stderr
    assert "granite-13b" in proc.stdout.split()
