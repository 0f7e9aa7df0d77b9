"""Fuzzing bad input: spec documents, REST bodies, labels, annotations, Prometheus readings.

Documents are a small valid system with one to three mutations: a leaf set to a number
at or past a bound (controlloop.bounds), NaN, +-inf, a huge string, a wrong type, a key
removed or an unknown key added. Every outcome must be either a clear validation error
(one line per problem, naming the field, short) or a plan whose statuses are consistent
(no NaN, no negative replicas, the served fraction matches the status, capacity kept),
within a time and memory bound asserted per example (tracemalloc peak).

The time bound is generous (the machine is shared); it catches minutes, not milliseconds.
CI cost: ~20-40 s for the whole file.
"""

from __future__ import annotations

import copy
import json
import math
import time
import tracemalloc
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlloop import bounds as B
from controlloop.cluster.collector import (
    count_node_capacity,
    fallback_load,
    label_problems,
    observed_from_reading,
)
from controlloop.cluster.prom import LoadReading
from controlloop.config import ConfigError, parse_system_document
from controlloop.loop.annotations import parse_annotations
from controlloop.loop.settings import LABEL_LOAD_IN, LABEL_LOAD_OUT, LABEL_LOAD_RPM, LABEL_MAX_BATCH
from controlloop.optimizer import DecisionStatus, Solution, optimize
from controlloop.server import create_app
from controlloop.server.testing import LiveServer
from controlloop.specs import LoadSpec

WALL_S = 20.0  # per example
PEAK_BYTES = 300 * 1024 * 1024  # tracemalloc peak per example
MAX_PROBLEM_CHARS = 400  # a problem line stays one readable line


def base_doc() -> dict[str, Any]:
    """Two accelerators, two models, two classes, three servers (one at zero load)."""
    acc = {"name": "A", "type": "A", "multiplicity": 1, "cost": 10.0}
    acc2 = {"name": "2xB", "type": "B", "multiplicity": 2, "cost": 7.0, "memSize": 80}
    perf = {"name": "m", "acc": "A", "accCount": 1, "maxBatchSize": 32, "atTokens": 512,
            "decodeParms": {"alpha": 20.0, "beta": 0.5},
            "prefillParms": {"gamma": 5.0, "delta": 0.01}}
    perf2 = {**perf, "acc": "2xB", "maxBatchSize": 16}
    perf3 = {**perf, "name": "n", "decodeParms": {"alpha": 30.0, "beta": 1.0}}
    return {"system": {
        "acceleratorData": {"accelerators": [acc, acc2]},
        "capacityData": {"count": [{"type": "A", "count": 12}, {"type": "B", "count": 8}]},
        "modelData": {"models": [perf, perf2, perf3]},
        "serviceClassData": {"serviceClasses": [
            {"name": "Premium", "priority": 1, "modelTargets": [
                {"model": "m", "slo-itl": 60, "slo-ttft": 1000},
                {"model": "n", "slo-itl": 90, "slo-ttft": 2000}]},
            {"name": "Free", "priority": 3, "modelTargets": [
                {"model": "m", "slo-itl": 200, "slo-ttft": 4000, "slo-tps": 0}]},
        ]},
        "serverData": {"servers": [
            {"name": "s1", "class": "Premium", "model": "m", "minNumReplicas": 1,
             "currentAlloc": {"accelerator": "A", "numReplicas": 2, "load": {
                 "arrivalRate": 120, "avgInTokens": 128, "avgOutTokens": 256}}},
            {"name": "s2", "class": "Free", "model": "m", "maxBatchSize": 8,
             "currentAlloc": {"load": {"arrivalRate": 600, "avgInTokens": 64,
                                       "avgOutTokens": 128}}},
            {"name": "s3", "class": "Premium", "model": "n",
             "currentAlloc": {"load": {"arrivalRate": 0, "avgInTokens": 0, "avgOutTokens": 0}}},
        ]},
        "optimizerData": {"optimizer": {"unlimited": False, "saturationPolicy": "RoundRobin"}},
    }}


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        out = [path] if path else []
        for k, v in node.items():
            out += _leaves(v, (*path, k))
        return out
    if isinstance(node, list):
        out = [path]
        for i, v in enumerate(node):
            out += _leaves(v, (*path, i))
        return out
    return [path]


PATHS = _leaves(base_doc())

# at and just past every bound, and the classic trouble makers
BOUNDARY: list[Any] = [
    0, -1, -1e-9, 1e-9, 0.5, 1, 2, B.MAX_BATCH, B.MAX_BATCH + 1, B.MAX_TOKENS, B.MAX_TOKENS + 1,
    B.MAX_ARRIVAL_RPM, B.MAX_ARRIVAL_RPM * 1.0001, B.MAX_REPLICAS, B.MAX_REPLICAS + 1,
    B.MAX_CARDS, B.MAX_CARDS + 1, B.MAX_UNITS, B.MAX_UNITS + 1, B.MAX_LATENCY_MS,
    B.MAX_LATENCY_MS + 1, B.MAX_PERF_MS, B.MAX_PERF_MS + 1, B.MIN_ALPHA_MS, B.MIN_ALPHA_MS / 2,
    B.MAX_COST, B.MAX_COST * 2, 100, 101, 2**63, 10**30, 1e300, 1e308, math.inf, -math.inf,
    math.nan,
]
VALUES = st.one_of(
    st.sampled_from(BOUNDARY),
    st.floats(min_value=0, max_value=5000),  # mostly valid: reaches the optimizer
    st.integers(min_value=0, max_value=5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12),
    st.just("x" * 100_000),
    st.none(),
    st.booleans(),
    st.lists(st.integers(0, 10), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(0, 3), max_size=2),
)


@st.composite
def mutated_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc = base_doc()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            last = path[-1]
            kind = draw(st.sampled_from(["set", "set", "set", "delete", "extra"]))
            if kind == "set":
                parent[last] = draw(VALUES)
            elif kind == "delete":
                del parent[last]
            elif isinstance(parent[last], dict):
                value = draw(VALUES)  # drawn before the key, as in ``d[draw(k)] = draw(v)``
                parent[last][draw(st.sampled_from(["bogus", "x" * 1000, "maxbatch"]))] = value
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or retyped the parent
    return doc


def check_plan(solution: Solution, doc: dict[str, Any]) -> None:
    """The plan's statuses are consistent with its numbers."""
    assert math.isfinite(solution.total_cost) and solution.total_cost >= 0
    total = 0.0
    for d in solution.decisions.values():
        assert d.replicas >= 0 and d.needed_replicas >= 0
        assert math.isfinite(d.cost) and d.cost >= 0
        total += d.cost
        for v in (d.itl_ms, d.ttft_ms, d.rho):
            assert v is None or math.isfinite(v)
        assert 0.0 <= d.served_fraction <= 1.0
        if d.status is DecisionStatus.MEETS_SLO:
            assert d.served_fraction >= 1 - 1e-6 and d.replicas > 0
        elif d.status is DecisionStatus.SATURATED:
            assert d.served_fraction < 1 and d.replicas < d.needed_replicas
        elif d.status is DecisionStatus.UNALLOCATED:
            assert d.replicas == 0 and d.served_fraction == 0
        else:  # zero load
            assert d.served_fraction == 1
    assert total == pytest.approx(solution.total_cost, rel=1e-9, abs=1e-9)
    for usage in solution.usage_by_type.values():
        assert usage.cards_used >= 0
        if usage.capacity is not None:
            assert usage.cards_used <= usage.capacity


def check_problems(problems: list[str], where: str) -> None:
    assert problems
    for line in problems:
        assert "\n" not in line and line.startswith(f"{where}: ")
        assert len(line) <= MAX_PROBLEM_CHARS, line[:200]
        assert "Traceback" not in line


def run_bounded(fn: Any) -> Any:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        wall = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert wall < WALL_S, f"{wall:.1f}s"
        assert peak < PEAK_BYTES, f"{peak / 2**20:.0f} MiB"


def load_and_optimize(doc: dict[str, Any], solver: str) -> None:
    try:
        loaded = parse_system_document(copy.deepcopy(doc), where="fuzz.json")
    except ConfigError as exc:
        check_problems(exc.problems, "fuzz.json")
        return
    solution = optimize(loaded.system, solver=solver, time_limit=2.0)
    check_plan(solution, doc)


FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(doc=mutated_docs(), solver=st.sampled_from(["greedy", "milp"]))
def test_load_system_and_optimize_never_crash_or_lie(doc: dict[str, Any], solver: str) -> None:
    run_bounded(lambda: load_and_optimize(doc, solver))


def test_every_number_at_its_bound_is_accepted_and_optimized() -> None:
    """The bounds are inclusive: a system with every number at its upper bound is valid
    and gets a consistent plan (huge replica needs are rejected candidates, with reasons)."""
    doc = base_doc()
    sysd = doc["system"]
    for perf in sysd["modelData"]["models"]:
        perf.update(maxBatchSize=B.MAX_BATCH, atTokens=B.MAX_TOKENS, accCount=B.MAX_UNITS)
        perf["decodeParms"] = {"alpha": B.MAX_PERF_MS, "beta": B.MAX_PERF_MS}
        perf["prefillParms"] = {"gamma": B.MAX_PERF_MS, "delta": B.MAX_PERF_MS}
    for acc in sysd["acceleratorData"]["accelerators"]:
        acc.update(cost=B.MAX_COST, multiplicity=B.MAX_UNITS)
    for entry in sysd["capacityData"]["count"]:
        entry["count"] = B.MAX_CARDS
    for cls in sysd["serviceClassData"]["serviceClasses"]:
        for t in cls["modelTargets"]:
            t.update({"slo-itl": B.MAX_LATENCY_MS, "slo-ttft": B.MAX_LATENCY_MS})
    for srv in sysd["serverData"]["servers"]:
        srv["currentAlloc"]["load"] = {"arrivalRate": B.MAX_ARRIVAL_RPM,
                                       "avgInTokens": B.MAX_TOKENS, "avgOutTokens": B.MAX_TOKENS}
        srv["maxBatchSize"] = B.MAX_BATCH
    loaded = parse_system_document(doc, where="bounds.json")
    solution = run_bounded(lambda: optimize(loaded.system))
    check_plan(solution, doc)
    # a minute per token: no TTFT target within the bound is met, and each server says so
    for name in ("s1", "s2"):
        d = solution.decisions[name]
        assert d.status is DecisionStatus.UNALLOCATED
        assert "TTFT target 3.6e+06 ms is below" in d.reason


def test_more_replicas_than_a_deployment_holds_is_no_candidate() -> None:
    """1e9 req/min on replicas of batch 1 at a minute per token: ~2e13 replicas
    (the old int64 cast overflowed to 1 replica, meets-slo); now rejected with a reason."""
    doc = base_doc()
    sysd = doc["system"]
    for perf in sysd["modelData"]["models"]:
        perf["decodeParms"] = {"alpha": B.MAX_PERF_MS, "beta": 0}
        perf["prefillParms"] = {"gamma": 0, "delta": 0}
    for cls in sysd["serviceClassData"]["serviceClasses"]:
        for t in cls["modelTargets"]:
            t.update({"slo-itl": B.MAX_LATENCY_MS, "slo-ttft": B.MAX_LATENCY_MS})
    srv = sysd["serverData"]["servers"][0]
    srv["maxBatchSize"] = 1
    srv["currentAlloc"] = {"load": {"arrivalRate": B.MAX_ARRIVAL_RPM, "avgInTokens": 10,
                                    "avgOutTokens": 1024}}
    solution = optimize(parse_system_document(doc, where="x.json").system)
    check_plan(solution, doc)
    d = solution.decisions["s1"]
    assert d.status is DecisionStatus.UNALLOCATED and d.replicas == 0
    assert "more than a Deployment can have (2147483647)" in d.reason


@pytest.mark.parametrize(("path", "value", "problem"), [
    (("serverData", "servers", 0, "maxBatchSize"), 100_000_000,
     "system.serverData.servers[0].maxBatchSize: must be <= 4096, got 100000000"),
    (("modelData", "models", 0, "maxBatchSize"), 1e9,
     "system.modelData.models[0].maxBatchSize: must be <= 4096, got 1000000000.0"),
    (("serverData", "servers", 0, "currentAlloc", "load", "arrivalRate"), 1e300,
     "system.serverData.servers[0].currentAlloc.load.arrivalRate: must be <= 1000000000, "
     "got 1e+300"),
    (("serverData", "servers", 0, "currentAlloc", "load", "arrivalRate"), math.nan,
     "system.serverData.servers[0].currentAlloc.load.arrivalRate: must be a finite number, "
     "got NaN"),
    (("serverData", "servers", 0, "currentAlloc", "load", "avgOutTokens"), 0.5,
     "system.serverData.servers[0].currentAlloc.load.avgOutTokens: must be 0 (no load) or "
     ">= 1 token, got 0.5"),
    (("capacityData", "count", 0, "count"), 10**12,
     "system.capacityData.count[0].count: must be <= 10000000, got 1000000000000"),
    (("serviceClassData", "serviceClasses", 0, "modelTargets", 0, "slo-ttft"), 1e12,
     "system.serviceClassData.serviceClasses[0].modelTargets[0].slo-ttft: must be <= 3600000, "
     "got 1000000000000.0"),
])
def test_the_issue_reproductions_are_one_line_errors(
    path: tuple[Any, ...], value: Any, problem: str
) -> None:
    doc = base_doc()
    node: Any = doc["system"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        parse_system_document(doc, where="x.json")
    assert err.value.problems == [f"x.json: {problem}"]


# --- the REST app ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Any:
    with LiveServer(create_app()) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(doc=mutated_docs())
def test_rest_optimize_one_answers_200_400_or_422(client: Any, doc: dict[str, Any]) -> None:
    def post() -> Any:
        return client.post("/optimizeOne", content=json.dumps(doc),
                           headers={"content-type": "application/json"})

    r = run_bounded(post)
    assert r.status_code in (200, 400, 422), r.text[:500]
    body = r.json()
    if r.status_code == 200:
        for alloc in body["allocations"].values():
            assert alloc["numReplicas"] >= 0 and alloc["cost"] >= 0
            assert alloc["status"] != "meets-slo" or alloc["servedFraction"] >= 1 - 1e-6
    else:
        assert body["error"]
        for line in body.get("problems", []):
            assert "\n" not in line and len(line) <= MAX_PROBLEM_CHARS


# --- the collector: labels, annotations, Prometheus readings ---------------------------

NUMBER_TEXT = st.one_of(
    st.sampled_from([str(v) for v in BOUNDARY] + ["", " ", "abc", "1e", "0x10", "-0", "٣",
                                                  "9" * 400, "4096", "4097", "1_000"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=8),
)
READING = st.one_of(st.none(), st.sampled_from(BOUNDARY),
                    st.floats(allow_nan=True, allow_infinity=True))


def _sizable(load: Any) -> None:
    """A known load must make a valid LoadSpec (the specs' bounds, same as the files')."""
    if load is None or not load.known:
        return
    LoadSpec(arrival_rate=load.arrival_rate_rpm or 0.0, avg_in_tokens=load.avg_in_tokens or 0.0,
             avg_out_tokens=load.avg_out_tokens or 0.0)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(rpm=NUMBER_TEXT, in_tok=NUMBER_TEXT, out_tok=NUMBER_TEXT, batch=NUMBER_TEXT)
def test_labels_at_the_bounds_are_sized_or_flagged(
    rpm: str, in_tok: str, out_tok: str, batch: str
) -> None:
    labels = {LABEL_LOAD_RPM: rpm, LABEL_LOAD_IN: in_tok, LABEL_LOAD_OUT: out_tok,
              LABEL_MAX_BATCH: batch}
    problems = label_problems(labels)
    load = fallback_load(labels, "prometheus down")
    _sizable(load)
    if load is not None:
        assert not any("load" in p for p in problems)
    if batch.strip().isdigit() and int(batch) > B.MAX_BATCH:
        assert any("maxbatchsize" in p for p in problems)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(status=st.sampled_from(["ok", "idle", "unknown"]), rpm=READING, in_tok=READING,
       out_tok=READING, itl=READING, ttft=READING)
def test_prometheus_readings_at_the_bounds_are_sized_or_unknown(
    status: Any, rpm: Any, in_tok: Any, out_tok: Any, itl: Any, ttft: Any
) -> None:
    reading = LoadReading(status=status, reason="r", arrival_rate_rpm=rpm, avg_in_tokens=in_tok,
                          avg_out_tokens=out_tok, itl_ms=itl, ttft_ms=ttft)
    load = observed_from_reading(reading)
    if status != "unknown" and load.known:
        # what the real LoadSource never returns (NaN) is not ours to judge here: a known
        # load is only checked when its numbers are numbers
        numbers = [v for v in (rpm, in_tok, out_tok) if v is not None]
        if all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in numbers):
            _sizable(load)
        for v in (load.itl_ms, load.ttft_ms):
            assert v is None or not v > B.MAX_LATENCY_MS


@settings(max_examples=200, deadline=None, derandomize=True)
@given(values=st.lists(NUMBER_TEXT, min_size=1, max_size=5))
def test_node_capacity_is_a_bounded_count(values: list[str]) -> None:
    nodes = [{"metadata": {"labels": {"gpu": "A"}}, "status": {"allocatable": {"g": v}}}
             for v in values]
    capacity = count_node_capacity(nodes, node_label="gpu", type_by_label={}, resources=["g"])
    assert set(capacity) <= {"A"}
    assert all(0 < c <= B.MAX_CARDS for c in capacity.values())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(values=st.dictionaries(
    st.sampled_from(["controlloop.io/min-replicas", "controlloop.io/max-replicas",
                     "controlloop.io/tolerance", "controlloop.io/scale-to-zero",
                     "controlloop.io/scale-down-stabilization-seconds",
                     "controlloop.io/accelerator-change-min-interval-seconds"]),
    NUMBER_TEXT, max_size=6))
def test_annotations_at_the_bounds_parse_or_are_ignored(values: dict[str, str]) -> None:
    parsed, problems = parse_annotations(values)
    assert len(parsed) + len(problems) == len(values)
    for key, value in parsed.items():
        if key.endswith("replicas"):
            assert 0 <= value <= B.MAX_REPLICAS
        elif key.endswith("seconds"):
            assert 0 <= value <= 366 * 86400
