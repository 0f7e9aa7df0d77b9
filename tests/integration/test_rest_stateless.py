"""`controlloop serve` (stateless, the default) over real HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from controlloop.server import create_app
from controlloop.server.testing import LiveServer
from tests.helpers.rest import EXAMPLES, EXPECTED_COST, sample_doc

pytestmark = pytest.mark.integration





@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with LiveServer(create_app()) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


@pytest.fixture()
def fresh() -> Iterator[httpx.Client]:
    with LiveServer(create_app()) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize("name", ["small", "large"])
def test_optimize_one_sample_directories(client: httpx.Client, name: str) -> None:
    r = client.post("/optimizeOne", json=sample_doc(name))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totalCost"] == pytest.approx(EXPECTED_COST[name], abs=0.5)
    assert body["allocations"], "allocations in the reference shape"
    one = next(iter(body["allocations"].values()))
    assert {"accelerator", "numReplicas", "maxBatch", "cost", "itlAverage", "ttftAverage"} <= set(
        one
    )


@pytest.mark.parametrize("name", ["small", "large"])
def test_optimize_one_scenario_files(client: httpx.Client, name: str) -> None:
    doc = json.loads((EXAMPLES / "scenarios" / f"{name}-limited-RoundRobin.json").read_text())
    r = client.post("/optimizeOne", json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["totalCost"] == pytest.approx(EXPECTED_COST[name], abs=0.5)


def _fold_keys(value: Any) -> Any:
    """Upper-case every key (the reference decoder matched case-insensitively)."""
    if isinstance(value, dict):
        return {k.upper(): _fold_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fold_keys(v) for v in value]
    return value


def test_keys_are_case_insensitive(client: httpx.Client) -> None:
    doc = sample_doc("small")
    doc["system"] = {k: _fold_keys(v) for k, v in doc["system"].items()}
    r = client.post("/optimizeOne", json={"SYSTEM": doc["system"]})
    assert r.status_code == 200, r.text
    assert r.json()["totalCost"] == pytest.approx(EXPECTED_COST["small"], abs=0.5)


def test_get_endpoints_show_last_system(fresh: httpx.Client) -> None:
    assert fresh.get("/getAccelerators").json() == {"accelerators": []}
    assert fresh.post("/optimizeOne", json=sample_doc("small")).status_code == 200
    doc = sample_doc("small")["system"]
    accs = fresh.get("/getAccelerators").json()["accelerators"]
    assert [a["name"] for a in accs] == [a["name"] for a in doc["acceleratorData"]["accelerators"]]
    assert fresh.get("/getCapacities").json()["count"][0] == doc["capacityData"]["count"][0]
    assert len(fresh.get("/getModels").json()["models"]) == len(doc["modelData"]["models"])
    assert len(fresh.get("/getServers").json()["servers"]) == len(doc["serverData"]["servers"])
    classes = fresh.get("/getServiceClasses").json()["serviceClasses"]
    assert {c["name"] for c in classes} == {
        c["name"] for c in doc["serviceClassData"]["serviceClasses"]
    }
    # one item: by path and by query
    assert fresh.get("/getAccelerator/A100").json()["cost"] == 40.0
    assert fresh.get("/getAccelerator", params={"name": "A100"}).json()["type"] == "A100"
    assert fresh.get("/getCapacity/A100").json() == {"type": "A100", "count": 512}
    server = doc["serverData"]["servers"][0]
    assert fresh.get(f"/getServer/{server['name']}").json()["model"] == server["model"]
    perf = doc["modelData"]["models"][0]
    got = fresh.get("/getModelAcceleratorPerf", params={"name": perf["name"], "acc": perf["acc"]})
    assert got.json()["maxBatchSize"] == perf["maxBatchSize"]
    got = fresh.get(f"/getModelAcceleratorPerf/{perf['name']}/{perf['acc']}")
    assert got.json()["acc"] == perf["acc"]
    model = fresh.get(f"/getModel/{perf['name']}").json()
    assert model["name"] == perf["name"] and model["models"]
    assert fresh.get("/getServiceClass/Premium").json()["priority"] == 1
    target = fresh.get("/getServiceClassModelTarget/Premium/llama_13b").json()
    assert (
        target
        == fresh.get(
            "/getServiceClassModelTarget", params={"name": "Premium", "model": "llama_13b"}
        ).json()
    )
    assert target["slo-itl"] == 80.0
    # /optimize re-runs the held system with other options
    r = fresh.post("/optimize", json={"unlimited": True})
    assert r.status_code == 200 and r.json()["solver"] == "unlimited"


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/getAccelerator/H200", "unknown accelerator 'H200'"),
        ("/getCapacity/H200", "unknown capacity type 'H200'"),
        ("/getServer/nope", "unknown server 'nope'"),
        ("/getModel/nope", "unknown model 'nope'"),
        ("/getServiceClass/Gold", "unknown service class 'Gold'"),
        ("/getModelAcceleratorPerf/llama_13b/H200", "'llama_13b/H200'"),
        ("/getServiceClassModelTarget/Premium/nope", "unknown model target 'nope'"),
    ],
)
def test_unknown_names_are_404(client: httpx.Client, path: str, what: str) -> None:
    client.post("/optimizeOne", json=sample_doc("small"))
    r = client.get(path)
    assert r.status_code == 404
    assert what in r.json()["error"]


MUTATIONS = [
    ("POST", "/setAccelerators"),
    ("POST", "/addAccelerator"),
    ("DELETE", "/removeAccelerator/A100"),
    ("POST", "/setCapacities"),
    ("POST", "/setCapacity"),
    ("GET", "/removeCapacity/A100"),
    ("POST", "/setModels"),
    ("POST", "/addModel/m"),
    ("POST", "/removeModel/m"),
    ("POST", "/setServiceClasses"),
    ("POST", "/addServiceClass/Gold/3"),
    ("POST", "/addServiceClassModelTargets"),
    ("GET", "/removeServiceClass/Premium"),
    ("DELETE", "/removeServiceClassModelTarget/Premium/llama_13b"),
    ("POST", "/setServers"),
    ("POST", "/addServer"),
    ("GET", "/removeServer/x"),
    ("POST", "/addModelAcceleratorPerf"),
    ("DELETE", "/removeModelAcceleratorPerf/llama_13b/A100"),
]


@pytest.mark.parametrize(("method", "path"), MUTATIONS)
def test_mutations_need_stateful_mode(client: httpx.Client, method: str, path: str) -> None:
    r = client.request(method, path, json={})
    assert r.status_code == 409
    assert "--stateful" in r.json()["error"]


def test_optimize_without_a_system_is_409(fresh: httpx.Client) -> None:
    r = fresh.post("/optimize")
    assert r.status_code == 409
    assert "/optimizeOne" in r.json()["error"]


def test_malformed_json_names_line_and_column(client: httpx.Client) -> None:
    r = client.post("/optimizeOne", content=b'{"system": {\n  "acceleratorData": [1,]\n}}')
    assert r.status_code == 400
    assert r.json()["error"].startswith("malformed JSON: line 2, column")
    r = client.post("/optimizeOne", content=b"")
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = client.post("/optimizeOne", content=b"\xff\xfe")
    assert r.status_code == 400


def test_invalid_system_lists_field_paths(client: httpx.Client) -> None:
    doc = sample_doc("small")
    doc["system"]["acceleratorData"]["accelerators"][1]["cost"] = -3
    doc["system"]["modelData"]["models"][0]["maxBatchSize"] = "many"
    r = client.post("/optimizeOne", json=doc)
    assert r.status_code == 400
    problems = r.json()["problems"]
    assert "body: system.acceleratorData.accelerators[1].cost: must be >= 0, got -3" in problems
    assert any(
        p.startswith("body: system.modelData.models[0].maxBatchSize: expected an integer")
        for p in problems
    )


def test_referential_errors_are_400(client: httpx.Client) -> None:
    doc = sample_doc("small")
    doc["system"]["serverData"]["servers"][0]["model"] = "llama_13"
    r = client.post("/optimizeOne", json=doc)
    assert r.status_code == 400
    (problem,) = r.json()["problems"]
    assert problem.startswith("body: system.serverData.servers[0].model: unknown model 'llama_13'")
    assert "did you mean" in problem


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([1, 2], "expected a mapping with key 'system', got list"),
        ({"system": 3}, "system: expected a mapping of sections"),
        ({"sistem": {}}, "sistem: unknown section"),
        ({"system": {"acceleratorDta": {}}}, "did you mean 'acceleratorData'"),
        ("text", "got str"),
    ],
)
def test_wrong_shapes_are_400(client: httpx.Client, body: Any, fragment: str) -> None:
    r = client.post("/optimizeOne", json=body)
    assert r.status_code == 400
    assert fragment in json.dumps(r.json())


def test_unknown_key_suggests_the_right_one(client: httpx.Client) -> None:
    doc = copy.deepcopy(sample_doc("small"))
    doc["system"]["serverData"]["servers"][0]["minNumReplica"] = 2
    r = client.post("/optimizeOne", json=doc)
    assert r.status_code == 400
    assert "did you mean 'minNumReplicas'" in r.json()["problems"][0]


def test_missing_query_parameter_and_wrong_method(client: httpx.Client) -> None:
    r = client.get("/getAccelerator")
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid request parameters",
        "problems": ["query: name: Field required"],
    }
    r = client.get("/optimizeOne")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]
    r = client.get("/nowhere")
    assert r.status_code == 404 and "/docs" in r.json()["error"]


def test_health_docs_openapi_metrics(fresh: httpx.Client) -> None:
    assert fresh.get("/healthz").json()["mode"] == "stateless"
    assert "swagger" in fresh.get("/docs").text.lower()
    spec = fresh.get("/openapi.json").json()
    assert {"/optimizeOne", "/optimize", "/whatif", "/getAccelerator/{name}"} <= set(spec["paths"])
    fresh.post("/optimizeOne", json=sample_doc("small"))
    fresh.get("/getServer/nope")
    text = fresh.get("/metrics").text
    assert (
        'controlloop_api_requests_total{endpoint="/optimizeOne",method="POST",status="200"} 1.0'
        in text
    )
    assert 'endpoint="/getServer/{name}",method="GET",status="404"' in text
    assert 'controlloop_api_optimize_duration_seconds_count{endpoint="optimizeOne"} 1.0' in text
    assert "controlloop_api_last_total_cost 43819.0" in text


def test_whatif_on_the_last_system_and_on_a_body(fresh: httpx.Client) -> None:
    fresh.post("/optimizeOne", json=sample_doc("small"))
    same = fresh.post("/whatif", json={"overrides": {}}).json()
    assert same["totalCostDelta"] == 0
    assert not any(d["changed"] for d in same["diff"].values())
    doc = sample_doc("large")
    r = fresh.post("/whatif", json={**doc, "overrides": {"loadFactor": 2}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["baseline"]["totalCost"] == pytest.approx(EXPECTED_COST["large"], abs=0.5)
    assert body["totalCostDelta"] == pytest.approx(
        body["whatif"]["totalCost"] - body["baseline"]["totalCost"], abs=1e-6
    )
    assert body["totalCostDelta"] > 0  # twice the load costs more
    name, entry = next(iter(body["diff"].items()))
    assert set(entry) >= {"accelerator", "replicas", "cost", "itl", "ttft", "changed"}
    assert set(entry["replicas"]) == {"before", "after"}
