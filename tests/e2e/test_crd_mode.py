"""``run --specs crd``: specs from the controlloop.io resources on the loopback API, a watched
edit to the Optimizer changes the next decision within one debounce, its status carries the
solution, an invalid resource is reported on itself and the last good specs are kept."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from controlloop.cli import main
from controlloop.cluster.actuator import KubeActuator
from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.crdspecs import CrdSpecSource
from controlloop.config import ConfigError, load_config
from controlloop.crds import GROUP, KIND_BY_NAME, VERSION, crd_documents, system_to_crs
from controlloop.loop.controller import Controller
from controlloop.loop.settings import ControllerSettings
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import CONFIG, FakeLoadSource, add_server, reading

pytestmark = pytest.mark.integration

NS = "controlloop-system"
DEBOUNCE = 0.5


def install(api: Any, *, settings: ControllerSettings | None = None) -> None:
    ext = k8s.ApiextensionsV1Api(api)
    for doc in crd_documents():
        ext.create_custom_resource_definition(doc)
    custom = k8s.CustomObjectsApi(api)
    for doc in system_to_crs(load_config(CONFIG).system, settings=settings,
                             include_servers=False):
        custom.create_namespaced_custom_object(GROUP, VERSION, NS,
                                               KIND_BY_NAME[doc["kind"]].plural, doc)


def optimizer(api: Any) -> Any:
    return k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, NS, "optimizers", "default")


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def loop(fake_kube: FakeKubeServer, kube_client: Any) -> Any:
    # Already on the accelerator the optimizer picks for this load: decisions scale, no move.
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium",
               accelerator="MI300X", replicas=1)
    # Scale-up not rate-limited, so that a second decision right after the first can differ.
    install(kube_client.api_client, settings=ControllerSettings.model_validate(
        {"namespaces": ["llm"], "behavior": {"scaleUp": {"policies": [
            {"type": "Pods", "value": 100, "periodSeconds": 1}]}}}))
    source = CrdSpecSource(kube_client.api_client, NS, debounce_s=DEBOUNCE, events=kube_client)
    settings = source.current()[1]
    controller = Controller(
        specs=source,
        collector=KubeCollector(kube_client, FakeLoadSource({"granite": reading(600)}),
                                lambda: source.current()[1]),
        actuator=KubeActuator(kube_client, settings.actuation, sleep=lambda s: None))
    controller.on_report.append(source.write_status)
    cycles: list[float] = []
    controller.on_report.append(lambda r: cycles.append(time.monotonic()))

    def on_change() -> None:  # what the daemon's scheduler does: a cycle now
        threading.Thread(target=controller.run_cycle, daemon=True).start()

    source.on_change = on_change
    source.start()
    yield source, controller, cycles
    source.stop()


def test_status_carries_the_solution(loop: Any, kube_client: Any,
                                     fake_kube: FakeKubeServer) -> None:
    source, controller, _ = loop
    report = controller.run_cycle()
    assert report.outcome == "ok", report.errors
    status = optimizer(kube_client.api_client)["status"]
    (row,) = report.servers
    (srv,) = status["servers"]
    assert srv["name"] == row.server and srv["decision"] == row.verdict
    assert srv["replicas"] == row.desired_replicas == fake_kube.get(
        "Deployment", "llm", "granite")["spec"]["replicas"]
    assert srv["accelerator"] == row.desired_accelerator
    assert srv["predictedItlMs"] == pytest.approx(row.predicted_itl_ms)
    assert srv["cost"] == pytest.approx(row.cost)
    assert status["totals"]["servers"] == 1 and status["totals"]["replicas"] == srv["replicas"]
    assert status["observedGeneration"] == 1 and status["lastCycleTime"].endswith("Z")
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Degraded"]["status"] == "False"
    assert conds["Valid"]["status"] == "True"
    # Our own status writes are no spec change: nothing reloads.
    time.sleep(DEBOUNCE * 3)
    assert source.reloads == 0


def test_optimizer_edit_changes_the_next_decision_within_one_debounce(
        loop: Any, kube_client: Any, fake_kube: FakeKubeServer) -> None:
    source, controller, cycles = loop
    first = controller.run_cycle()
    (row,) = first.servers
    before = row.desired_replicas
    assert before is not None
    wanted = before + 3
    custom = k8s.CustomObjectsApi(kube_client.api_client)
    edited_at = time.monotonic()
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "optimizers", "default", {
        "spec": {"controller": {"behavior": {"minReplicas": wanted}}}})
    status = wait_for(lambda: (s := optimizer(kube_client.api_client).get("status", {}))
                      .get("observedGeneration") == 2 and s)
    # The cycle started one debounce after the edit (plus the reload), not at the interval.
    started = cycles[-1]
    assert started - edited_at < DEBOUNCE + 5.0
    assert source.reloads == 1
    (srv,) = status["servers"]
    # minReplicas may also make another accelerator the cheaper one: at least `wanted`.
    assert srv["replicas"] >= wanted and srv["decision"] in ("scaled", "moved")
    assert fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == srv["replicas"]


def test_invalid_resource_is_reported_and_last_good_kept(
        loop: Any, kube_client: Any, fake_kube: FakeKubeServer) -> None:
    source, controller, _ = loop
    good = source.current()
    custom = k8s.CustomObjectsApi(kube_client.api_client)
    model = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "models")["items"][0]
    name = model["metadata"]["name"]
    perf = model["spec"]["perf"]
    perf[0]["acc"] = "NoSuchCard"  # schema-valid, but refers to nothing
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "models", name,
                                          {"spec": {"perf": perf}})
    wait_for(lambda: source.last_error)
    assert "NoSuchCard" in source.last_error
    assert source.current() == good, "last good specs kept"
    obj = wait_for(lambda: (o := custom.get_namespaced_custom_object(
        GROUP, VERSION, NS, "models", name)).get("status") and o)
    (valid,) = [c for c in obj["status"]["conditions"] if c["type"] == "Valid"]
    assert valid["status"] == "False" and "NoSuchCard" in valid["message"]
    assert valid["message"].startswith(f"Model/{name}: spec.perf[0].acc: unknown accelerator")
    # The cycle that the edit triggered ran on the last good specs and says so.
    status = wait_for(lambda: (s := optimizer(kube_client.api_client).get("status", {}))
                      .get("conditions") and any(c["type"] == "Degraded"
                                                 and c["status"] == "True"
                                                 for c in s["conditions"]) and s)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpecs" and "NoSuchCard" in degraded["message"]
    assert status["totals"]["servers"] == 1
    # Fixing it recovers.
    perf[0]["acc"] = model_acc(good, name)
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "models", name,
                                          {"spec": {"perf": perf}})
    wait_for(lambda: not source.last_error)
    fixed = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "models", name)
    assert wait_for(lambda: any(
        c["type"] == "Valid" and c["status"] == "True" for c in custom.get_namespaced_custom_object(
            GROUP, VERSION, NS, "models", name)["status"]["conditions"])) and fixed


def model_acc(good: Any, k8s_name: str) -> str:
    from controlloop.crds import dns_name

    system = good[0]
    return next(m.acc for m in system.models if dns_name(m.name) == k8s_name)


def test_cross_reference_problem_names_the_resource_in_its_status(
        fake_kube: FakeKubeServer, kube_client: Any) -> None:
    install(kube_client.api_client)
    source = CrdSpecSource(kube_client.api_client, NS, debounce_s=DEBOUNCE, events=kube_client)
    # A Model row with a bad value can only be written past the schema by a direct store
    # write (an older CRD version, say): it is then refused by the loader and reported.
    model = fake_kube.list_objects(f"{GROUP}/{VERSION}/Model", NS)[0]
    model["spec"]["perf"][0]["maxBatchSize"] = 0
    with fake_kube.store.lock:
        key = next(k for k in fake_kube.store.objects if k[0] == f"{GROUP}/{VERSION}/Model"
                   and k[2] == model["metadata"]["name"])
        fake_kube.store.objects[key]["spec"] = model["spec"]
    source.load()
    ref = f"Model/{model['metadata']['name']}"
    assert ref in source.last_error and "maxBatchSize" in source.last_error
    stored = fake_kube.get(f"{GROUP}/{VERSION}/Model", NS, model["metadata"]["name"])
    (valid,) = [c for c in stored["status"]["conditions"] if c["type"] == "Valid"]
    assert valid["status"] == "False" and valid["reason"] == "Invalid"
    assert "spec.perf[0].maxBatchSize" in valid["message"]
    events = fake_kube.list_objects("v1/Event", NS)
    assert any(e["reason"] == "InvalidSpec" and e["involvedObject"]["kind"] == "Model"
               and e["type"] == "Warning" for e in events)
    # Other resources are marked valid.
    acc = fake_kube.list_objects(f"{GROUP}/{VERSION}/Accelerator", NS)[0]
    assert {c["type"]: c["status"] for c in acc["status"]["conditions"]} == {"Valid": "True"}


def test_missing_crds_or_resources_fail_at_start(fake_kube: FakeKubeServer,
                                                 kube_client: Any) -> None:
    with pytest.raises(ConfigError, match="are the CRDs installed"):
        CrdSpecSource(kube_client.api_client, NS)
    ext = k8s.ApiextensionsV1Api(kube_client.api_client)
    for doc in crd_documents():
        ext.create_custom_resource_definition(doc)
    with pytest.raises(ConfigError, match="no accelerators found"):
        CrdSpecSource(kube_client.api_client, NS)


def test_run_once_with_specs_from_resources(fake_kube: FakeKubeServer, kube_client: Any,
                                            tmp_path: Path) -> None:
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    install(kube_client.api_client, settings=ControllerSettings.model_validate(
        {"namespaces": ["llm"], "prometheus": {"url": "http://127.0.0.1:9"}}))
    log = tmp_path / "cycles.jsonl"
    code = main(["run", "--once", "--specs", "crd", "--crd-namespace", NS,
                 "--kubeconfig", str(fake_kube.kubeconfig), "--config", str(tmp_path / "none"),
                 "--cycle-log", str(log)])
    assert code == 0
    (line,) = log.read_text().splitlines()
    (row,) = yaml.safe_load(line)["servers"]
    assert row["verdict"] == "held" and row["held_reason"] == "unknown-load"
    status = optimizer(kube_client.api_client)["status"]
    assert status["servers"][0]["decision"] == "held"
    assert status["cycleId"] == yaml.safe_load(line)["cycle_id"]
