"""`controlloop serve --stateful` over real HTTP: the reference verbs, what-if, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from controlloop.config import load_system
from controlloop.server import create_app
from controlloop.server.testing import LiveServer
from tests.helpers.rest import EXAMPLES, EXPECTED_COST, sample_doc

pytestmark = pytest.mark.integration


def serve(system: Any = None) -> LiveServer:
    return LiveServer(create_app(stateful=True, system=system))


@pytest.fixture()
def empty() -> Iterator[httpx.Client]:
    with serve() as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


@pytest.fixture()
def small() -> Iterator[httpx.Client]:
    with (
        serve(load_system(EXAMPLES / "small")) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as c,
    ):
        yield c


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


def test_round_trip_piece_by_piece(empty: httpx.Client) -> None:
    doc = sample_doc("small")["system"]
    ok(empty.post("/setAccelerators", json=doc["acceleratorData"]))
    ok(empty.post("/setCapacities", json=doc["capacityData"]))
    ok(empty.post("/setModels", json=doc["modelData"]))
    ok(empty.post("/setServiceClasses", json=doc["serviceClassData"]))
    ok(empty.post("/setServers", json=doc["serverData"]))
    solution = ok(empty.post("/optimize", json=doc["optimizerData"]))
    assert solution["totalCost"] == pytest.approx(EXPECTED_COST["small"], abs=0.5)
    # the bare options object works too, and get* give back the shapes that were set
    bare = ok(empty.post("/optimize", json=doc["optimizerData"]["optimizer"]))
    assert bare["totalCost"] == solution["totalCost"]
    assert len(ok(empty.get("/getServers"))["servers"]) == len(doc["serverData"]["servers"])
    assert ok(empty.get("/getCapacities")) == doc["capacityData"]
    assert ok(empty.get("/healthz"))["servers"] == len(doc["serverData"]["servers"])


def test_set_order_matters_and_errors_name_fields(empty: httpx.Client) -> None:
    doc = sample_doc("small")["system"]
    r = empty.post("/setModels", json=doc["modelData"])
    assert r.status_code == 400
    assert r.json()["problems"][0].startswith("body: models[0].acc: unknown accelerator")
    r = empty.post("/setAccelerators", json={"accelerators": [{"name": "A", "type": "A"}]})
    assert r.status_code == 400
    assert r.json()["problems"] == ["body: accelerators[0].cost: required field is missing"]
    r = empty.post(
        "/setAccelerators", json={"Accelerators": [{"NAME": "A", "TYPE": "A", "cost": 1}]}
    )
    assert ok(r)["accelerators"][0]["name"] == "A"  # keys case-insensitive


def test_accelerator_verbs(small: httpx.Client) -> None:
    new = {"name": "H100", "type": "H100", "cost": 90}
    assert ok(small.post("/addAccelerator", json=new))["cost"] == 90
    assert ok(small.get("/getAccelerator", params={"name": "H100"}))["type"] == "H100"
    r = small.post("/addAccelerator", json={"name": "H200", "type": "H200", "cost": -1})
    assert r.status_code == 400 and r.json()["problems"] == ["body: cost: must be >= 0, got -1"]
    # used by perf data: removing it would orphan entries -> 409 naming them
    r = small.delete("/removeAccelerator/A100")
    assert r.status_code == 409
    assert any("models[" in p and "'A100'" in p for p in r.json()["problems"])
    assert ok(small.post("/removeAccelerator/H100"))["name"] == "H100"
    assert small.get("/removeAccelerator", params={"name": "H100"}).status_code == 404


def test_capacity_verbs(small: httpx.Client) -> None:
    assert ok(small.post("/setCapacity", json={"type": "A100", "count": 8})) == {
        "type": "A100",
        "count": 8,
    }
    assert ok(small.get("/getCapacity/A100"))["count"] == 8
    r = small.post("/setCapacity", json={"type": "TPU", "count": 8})
    assert r.status_code == 400 and "unknown accelerator type 'TPU'" in r.json()["problems"][0]
    assert ok(small.request("DELETE", "/removeCapacity/A100"))["type"] == "A100"
    assert small.get("/getCapacity/A100").status_code == 404


def test_model_and_perf_verbs(small: httpx.Client) -> None:
    assert ok(small.post("/addModel/phi3")) == {"name": "phi3"}
    assert ok(small.post("/addModel", json={"name": "qwen"})) == {"name": "qwen"}
    assert ok(small.post("/addModel", params={"name": "mistral"})) == {"name": "mistral"}
    assert small.post("/addModel").status_code == 400
    assert ok(small.get("/getModel/phi3")) == {"name": "phi3", "models": []}
    perf = {
        "name": "phi3",
        "acc": "L4",
        "maxBatchSize": 16,
        "atTokens": 512,
        "decodeParms": {"alpha": 10, "beta": 0.1},
        "prefillParms": {"gamma": 5, "delta": 0.01},
    }
    assert ok(small.post("/addModelAcceleratorPerf", json=perf))["acc"] == "L4"
    assert ok(small.get("/getModelAcceleratorPerf/phi3/L4"))["maxBatchSize"] == 16
    r = small.post("/addModelAcceleratorPerf", json={**perf, "acc": "TPU"})
    assert r.status_code == 400 and r.json()["problems"][0].startswith("body: acc: unknown")
    r = small.post("/addModelAcceleratorPerf", json={**perf, "decodeParms": {"alpha": 0}})
    assert r.status_code == 400
    assert set(r.json()["problems"]) == {
        "body: decodeParms.alpha: must be >= 0.001, got 0",
        "body: decodeParms.beta: required field is missing",
    }
    assert len(ok(small.get("/getModel", params={"name": "phi3"}))["models"]) == 1
    removed = ok(small.get("/removeModelAcceleratorPerf", params={"name": "phi3", "acc": "L4"}))
    assert removed["name"] == "phi3"
    assert ok(small.post("/removeModel/phi3"))["name"] == "phi3"
    assert small.get("/getModel/phi3").status_code == 404
    # a model that servers run cannot go while they do
    r = small.delete("/removeModel/llama_13b")
    assert r.status_code == 409 and "servers[" in r.json()["problems"][0]


def test_service_class_verbs(small: httpx.Client) -> None:
    assert ok(small.post("/addServiceClass/Gold/3")) == {
        "name": "Gold",
        "priority": 3,
        "modelTargets": [],
    }
    assert (
        ok(small.post("/addServiceClass", json={"name": "Silver", "priority": 7}))["priority"] == 7
    )
    # out-of-range priority: accepted as 100 with a warning (as in config files)
    body = ok(small.post("/addServiceClass/Bronze/0"))
    assert body["priority"] == 100 and "1..100" in body["warnings"][0]
    r = small.post("/addServiceClass/Tin/high")
    assert r.status_code == 400 and r.json()["problems"][0].startswith("body: priority:")
    targets = {"name": "Gold", "modelTargets": [{"model": "llama_13b", "slo-itl": 50}]}
    gold = ok(small.post("/addServiceClassModelTargets", json=targets))
    assert gold["priority"] == 3 and gold["modelTargets"][0]["slo-itl"] == 50
    targets["modelTargets"] = [{"model": "llama_13b", "SLO-TTFT": 900}]
    gold = ok(small.post("/addServiceClassModelTargets", json=targets))
    assert gold["modelTargets"] == [
        {"model": "llama_13b", "slo-itl": 0.0, "slo-ttft": 900.0, "slo-tps": 0.0}
    ]
    assert ok(small.get("/getServiceClassModelTarget/Gold/llama_13b"))["slo-ttft"] == 900
    assert ok(small.get("/getServiceClass/Gold"))["priority"] == 3
    assert ok(small.post("/addServiceClass/Gold/2"))["modelTargets"], "targets are kept"
    ok(
        small.delete(
            "/removeServiceClassModelTarget", params={"name": "Gold", "model": "llama_13b"}
        )
    )
    assert small.get("/getServiceClassModelTarget/Gold/llama_13b").status_code == 404
    assert ok(small.get("/removeServiceClass/Gold"))["name"] == "Gold"
    r = small.post("/removeServiceClass/Premium")  # servers use it
    assert r.status_code == 409 and "unknown service class 'Premium'" in r.json()["problems"][0]


def test_server_verbs(small: httpx.Client) -> None:
    server = ok(small.get("/getServer/Premium-llama_13b"))
    copy = {**server, "name": "extra", "minNumReplicas": 1}
    assert ok(small.post("/addServer", json=copy))["minNumReplicas"] == 1
    assert ok(small.get("/getServer", params={"name": "extra"}))["name"] == "extra"
    r = small.post("/addServer", json={**copy, "model": "gpt5"})
    assert r.status_code == 400
    assert r.json()["problems"][0].startswith("body: model: unknown model 'gpt5'")
    r = small.post("/addServer", json={**copy, "class": "Gold"})
    assert r.status_code == 400 and "unknown service class 'Gold'" in r.json()["problems"][0]
    for method in ("GET", "POST", "DELETE"):
        ok(small.post("/addServer", json=copy))
        assert ok(small.request(method, "/removeServer/extra"))["name"] == "extra"
        assert small.request(method, "/removeServer/extra").status_code == 404


def test_optimize_one_leaves_state_alone(small: httpx.Client) -> None:
    before = ok(small.get("/getServers"))
    large = ok(small.post("/optimizeOne", json=sample_doc("large")))
    assert large["totalCost"] == pytest.approx(EXPECTED_COST["large"], abs=0.5)
    assert ok(small.get("/getServers")) == before
    assert ok(small.post("/optimize"))["totalCost"] == pytest.approx(
        EXPECTED_COST["small"], abs=0.5
    )


def test_optimize_options(small: httpx.Client) -> None:
    assert (
        ok(small.post("/optimize", json={"optimizer": {"unlimited": True}}))["solver"]
        == "unlimited"
    )
    r = small.post("/optimize", json={"optimizer": {"saturationPolicy": "Sometimes"}})
    assert r.status_code == 400
    assert r.json()["problems"][0].startswith("body: optimizer.saturationPolicy: must be one of")
    r = small.post("/optimize", json={"unlimitd": True})
    assert r.status_code == 400 and "did you mean 'unlimited'" in r.json()["problems"][0]
    r = small.post("/optimize", json=[True])
    assert r.status_code == 400


def test_whatif_overrides(small: httpx.Client) -> None:
    server = "Premium-llama_13b"
    body = ok(
        small.post(
            "/whatif",
            json={
                "overrides": {
                    "servers": {server: {"arrivalRate": 0}},
                    "slo": [{"class": "Premium", "model": "llama_70b", "slo-itl": 200}],
                    "capacity": {"A100": -10000},
                    "optimizer": {"saturationPolicy": "None"},
                }
            },
        )
    )
    assert body["baseline"]["totalCost"] == pytest.approx(EXPECTED_COST["small"], abs=0.5)
    assert body["whatif"]["usageByType"]["A100"]["capacity"] == 0  # clamped at 0
    assert body["diff"][server]["replicas"]["after"] == 0
    assert body["totalCostDelta"] < 0
    r = small.post(
        "/whatif",
        json={
            "overrides": {
                "servers": {
                    "ghost": {"loadFactor": 2},
                    server: {"loadFactor": 2, "arrivalRate": 3},
                },
                "capacity": {"TPU": 4},
                "slo": [{"class": "Gold", "model": "x"}],
            }
        },
    )
    assert r.status_code == 400
    problems = r.json()["problems"]
    assert any("overrides.servers.Premium-llama_13b" in p and "not both" in p for p in problems)
    r = small.post(
        "/whatif",
        json={
            "overrides": {
                "servers": {"ghost": {"loadFactor": 2}},
                "capacity": {"TPU": 4},
                "slo": [{"class": "Gold", "model": "x"}],
            }
        },
    )
    assert sorted(r.json()["problems"]) == [
        'body: overrides.capacity.TPU: unknown accelerator type "TPU"',
        'body: overrides.servers.ghost: unknown server "ghost"',
        'body: overrides.slo[0].class: unknown service class "Gold"',
    ]
    r = small.post("/whatif", json={"overrides": {"loadFactr": 2}})
    assert r.status_code == 400 and "did you mean 'loadFactor'" in r.json()["problems"][0]
    # the stored state is untouched by what-if
    assert ok(small.get("/getCapacity/A100"))["count"] == 512


def test_concurrent_mixed_requests(small: httpx.Client) -> None:
    """8 threads x 20 requests: add/remove servers while optimizing; no 5xx, state consistent."""
    template = ok(small.get("/getServer/Premium-llama_13b"))
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with httpx.Client(base_url=str(small.base_url), timeout=60) as c:
            for i in range(20):
                name = f"t{n}-{i}"
                if i % 4 == 3:
                    r = c.post("/optimize")
                elif i % 4 == 2:
                    r = c.delete(f"/removeServer/t{n}-{i - 1}")
                else:
                    r = c.post("/addServer", json={**template, "name": name})
                with lock:
                    statuses.append(r.status_code)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 160 and all(s == 200 for s in statuses), sorted(set(statuses))
    names = [s["name"] for s in ok(small.get("/getServers"))["servers"]]
    extra = sorted(n for n in names if n.startswith("t"))
    # per thread: i = 0,4,8,12,16 added and kept; 1,5,9,13,17 added then removed
    assert extra == sorted(f"t{n}-{i}" for n in range(8) for i in range(0, 20, 4))
    assert len(names) == len(set(names))
    assert ok(small.get("/healthz"))["version"] == 1 + 8 * 15


def test_server_may_name_a_model_added_by_name(small: httpx.Client) -> None:
    ok(small.post("/addModel/phi3"))
    ok(
        small.post(
            "/addServiceClassModelTargets",
            json={
                "name": "Premium",
                "modelTargets": [{"model": "phi3", "slo-itl": 50}],
            },
        )
    )
    server = {"name": "phi", "class": "Premium", "model": "phi3"}
    body = ok(small.post("/addServer", json=server))
    assert any("no perf data yet for model 'phi3'" in w for w in body["warnings"])
    solution = ok(small.post("/optimize"))
    phi = solution["allocations"].get("phi", {"numReplicas": 0})
    assert phi["numReplicas"] == 0  # zero load and no perf data: nothing to give
    r = small.post("/removeModel/phi3")
    assert r.status_code == 409  # the server still runs it
