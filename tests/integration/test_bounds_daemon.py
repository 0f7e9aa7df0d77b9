"""The daemon at the physical bounds: Deployment labels and Prometheus readings beyond
them hold the server with a reason (and an Event), never crash the cycle or size on them.

Same harness as test_faults.py: the production Controller, KubeCollector and KubeActuator
against the loopback Kubernetes API, and the scriptable fake Prometheus behind the real
PrometheusLoadSource.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from controlloop.cluster.actuator import note_held
from controlloop.cluster.kube import KubeClient
from controlloop.loop.annotations import parse_annotations
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import add_server
from tests.helpers.faults import FakeProm, Loop, assert_recovers, granite, patches

pytestmark = pytest.mark.integration








def _held_events(fake: FakeKubeServer) -> list[Any]:
    return [e for e in fake.list_objects("Event", "llm") if e["reason"] == "Held"]


@pytest.mark.parametrize(("label", "value", "why"), [
    ("inferno.server.allocation.maxbatchsize", "100000000",
     "label inferno.server.allocation.maxbatchsize: must be <= 4096, got 100000000"),
    ("inferno.server.load.rpm", "1e300",
     "label inferno.server.load.rpm: must be <= 1000000000 req/min, got 1e+300"),
])
def test_a_label_beyond_its_bound_holds_that_server_with_an_event(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm, label: str, value: str, why: str
) -> None:
    granite(fake_kube)
    add_server(fake_kube, "llm", "huge", model="granite_13b", cls="Premium",
               extra_labels={label: value})
    loop = Loop(kube, prom.url)
    loop.controller.on_held = partial(note_held, kube)
    report = loop.cycle()
    rows = {s.deployment: s for s in report.servers}
    assert rows["huge"].verdict == "held" and rows["huge"].held_reason == "bad-label"
    assert rows["huge"].reason == f"{why}: leaving as is"
    assert [p.path.rsplit("/", 1)[1] for p in patches(fake_kube)] == ["granite"]
    (event,) = _held_events(fake_kube)
    assert event["involvedObject"]["name"] == "huge"
    assert event["message"].startswith(f"bad-label: {why}")
    assert loop.metric("controlloop_decisions_total", server="huge", verdict="held",
                       reason="bad-label") == 1


def test_a_prometheus_rate_beyond_the_bound_is_unknown_load(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube, replicas=3)
    loop = Loop(kube, prom.url)
    prom.rpm = 1e12  # req/s counter rate x 60: far past 1e9 req/min
    (row,) = loop.cycle().servers
    assert row.verdict == "held" and row.held_reason == "unknown-load"
    assert "prometheus reading out of bounds: arrival rate: must be <= 1000000000 req/min" \
        in row.reason
    assert patches(fake_kube) == []  # neither up to an absurd count nor down
    prom.rpm = 600.0
    assert_recovers(loop, fake_kube)


def test_node_capacity_ignores_counts_that_are_no_counts() -> None:
    """A Node announcing 1e11 or -4 cards: those values are not counted (the cycle runs
    on the Nodes that make sense)."""
    from controlloop.cluster.collector import count_node_capacity

    nodes = [
        {"metadata": {"labels": {"gpu": "A100"}}, "status": {"allocatable": {"g": "8"}}},
        {"metadata": {"labels": {"gpu": "A100"}}, "status": {"allocatable": {"g": "100000000000"}}},
        {"metadata": {"labels": {"gpu": "A100"}}, "status": {"allocatable": {"g": "-4"}}},
    ]
    assert count_node_capacity(nodes, node_label="gpu", type_by_label={}, resources=["g"]) == {
        "A100": 8}


def test_replica_annotations_beyond_int32_are_ignored_with_a_problem() -> None:
    values, problems = parse_annotations({
        "controlloop.io/min-replicas": "99999999999",
        "controlloop.io/max-replicas": "9" * 10_000,
        "controlloop.io/scale-down-stabilization-seconds": "1e300",
    })
    assert values == {}
    assert len(problems) == 3 and all("ignored" in p for p in problems), problems
