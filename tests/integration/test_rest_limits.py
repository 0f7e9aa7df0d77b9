"""REST resource limits over real HTTP: body size (413), sizing work and bounds (422),
time and concurrency (503); the server keeps answering others meanwhile."""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlloop.config import parse_system_document
from controlloop.optimizer.work import sizing_work
from controlloop.server import create_app
from controlloop.server.limits import Limits
from controlloop.server.testing import LiveServer

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).resolve().parents[2] / "config" / "examples" / "scenarios"


# room for many heavy copies: the tests that need a long run raise the state limit
HEAVY_STATES = 200_000_000


def scenario(name: str = "large-unlimited") -> dict[str, Any]:
    return json.loads((SCENARIOS / f"{name}.json").read_text())


def heavy(copies: int = 1, batch: int = 4096) -> dict[str, Any]:
    """The large sample's servers ``copies`` times over, each at batch ``batch``: about
    0.1 s of sizing per copy at 4096 on an idle machine (567 pairs, 2.3M chain states;
    4 copies stay under the default 10M-state limit, more need ``HEAVY_LIMITS``)."""
    doc = scenario()
    servers = doc["system"]["serverData"]["servers"]
    out = []
    for k in range(copies):
        for s in servers:
            s2 = copy.deepcopy(s)
            s2["name"] = f"{s['name']}-{k}"
            s2["maxBatchSize"] = batch
            out.append(s2)
    doc["system"]["serverData"]["servers"] = out
    return doc


@pytest.fixture()
def serve() -> Iterator[Any]:
    servers: list[LiveServer] = []

    def start(limits: Limits) -> httpx.Client:
        srv = LiveServer(create_app(limits=limits)).__enter__()
        servers.append(srv)
        return httpx.Client(base_url=srv.url, timeout=60)

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


def test_body_over_the_limit_is_413_announced_or_streamed(serve: Any) -> None:
    client = serve(Limits(max_body_bytes=10_000))
    big = json.dumps(scenario()).encode()
    assert len(big) > 10_000
    r = client.post("/optimizeOne", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "10000-byte limit" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]

    r = client.post("/optimizeOne", content=chunks())
    assert r.status_code == 413 and "limit" in r.json()["error"]
    # a body within the limit on the same server is served
    small = serve(Limits())
    assert small.post("/optimizeOne", content=big).status_code == 200


def test_too_many_pairs_or_states_is_422_before_any_sizing(serve: Any) -> None:
    doc = scenario()
    work = sizing_work(parse_system_document(doc, where="x").system)
    client = serve(Limits(max_pairs=work.pairs - 1))
    r = client.post("/optimizeOne", json=doc)
    assert r.status_code == 422
    assert r.json()["problems"] == [
        f"{work.pairs} (server, accelerator) pairs to size; at most {work.pairs - 1} per "
        "request: send fewer servers or accelerators"
    ]
    client = serve(Limits(max_states=work.states - 1))
    r = client.post("/optimizeOne", json=doc)
    assert r.status_code == 422 and "chain states" in r.json()["problems"][0]
    # the same limits guard the stored system (stateless: the last one held)
    assert client.post("/optimize").status_code == 409


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("serverData", "servers", 0, "maxBatchSize"), 100_000_000,
         "system.serverData.servers[0].maxBatchSize: must be <= 4096, got 100000000"),
        (("modelData", "models", 0, "maxBatchSize"), 1e9,
         "system.modelData.models[0].maxBatchSize: must be <= 4096, got 1000000000.0"),
        (("serverData", "servers", 0, "currentAlloc", "load", "arrivalRate"), 1e300,
         "system.serverData.servers[0].currentAlloc.load.arrivalRate: must be <= 1000000000, "
         "got 1e+300"),
    ],
)
def test_values_beyond_their_bounds_are_422(
    serve: Any, path: tuple[Any, ...], value: float, problem: str
) -> None:
    doc = scenario()
    node: Any = doc["system"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    r = serve(Limits()).post("/optimizeOne", json=doc)
    assert r.status_code == 422
    assert r.json() == {"error": "invalid system", "problems": [f"body: {problem}"]}


def test_over_time_is_503_and_others_are_answered_meanwhile(serve: Any) -> None:
    client = serve(Limits(request_seconds=0.3, max_concurrent=1, max_states=HEAVY_STATES))
    r = client.post("/optimizeOne", json=heavy(copies=12))  # ~1.2 s of sizing
    assert r.status_code == 503 and "0.3s request time limit" in r.json()["error"]
    # the abandoned run still holds the one slot until its thread ends: the next heavy
    # request waits for it, then is either served late (503) or busy (503). Another batch
    # size, so that it cannot be answered from the sizing the first one cached.
    assert client.post("/optimizeOne", json=heavy(copies=12, batch=4095)).status_code == 503
    assert client.get("/healthz").status_code == 200


def test_a_heavy_request_does_not_block_small_ones(serve: Any) -> None:
    """While a ~2.5 s optimization runs, /healthz and a small optimizeOne are answered
    (both finish before it does)."""
    client = serve(Limits(max_concurrent=2, max_states=HEAVY_STATES))
    done: list[str] = []
    status: list[int] = []

    def slow() -> None:
        status.append(client.post("/optimizeOne", json=heavy(copies=24)).status_code)
        done.append("heavy")

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)  # the heavy body is parsed and its sizing under way
    assert client.get("/healthz").status_code == 200
    done.append("healthz")
    assert client.post("/optimizeOne", json=scenario("small-unlimited")).status_code == 200
    done.append("small")
    thread.join()
    assert status == [200]
    assert done == ["healthz", "small", "heavy"]


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"loadFactor": 1e300}, "body: overrides.loadFactor: must be <= 1000000000, got 1e+300"),
    ({"loadFactor": 1e8}, "body: overrides: loadFactor 1e+08 makes server Premium-llama_7b's "
                          "arrival rate 1.2e+10 req/min, must be <= 1e+09"),
    ({"slo": [{"class": "Premium", "model": "llama_7b", "slo-ttft": math.inf}]},
     "body: overrides.slo[0].slo-ttft: must be a finite number, got Infinity"),
])
def test_whatif_overrides_beyond_the_bounds_are_422(
    serve: Any, overrides: dict[str, Any], problem: str
) -> None:
    r = serve(Limits()).post("/whatif", content=json.dumps(
        {"system": scenario()["system"], "overrides": overrides}))
    assert r.status_code == 422, r.text
    assert problem in r.json()["problems"]
