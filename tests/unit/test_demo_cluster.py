"""The emulated cluster: load split, start-up delay, capacity, observed load."""

from __future__ import annotations

from functools import cache

import pytest

from controlloop.config import load_system
from controlloop.demo.cluster import EmulatedCluster, Termination
from controlloop.demo.command import REPO_CONFIG
from controlloop.loop.state import Action, Placement
from controlloop.specs import SystemSpec

SERVER = "Premium-llama_7b"
ACC = "MI300X"


@cache
def _system() -> SystemSpec:
    system = load_system(REPO_CONFIG)
    return system.model_copy(update={"servers": [s for s in system.servers if s.name == SERVER]})


def _cluster(rate: float = 120.0, *, capacity: dict[str, int] | None = None,
             startup: float = 120.0) -> EmulatedCluster:
    return EmulatedCluster(
        _system(), {}, capacity=capacity, startup_s=startup, seed=3,
        rate_fn=lambda _s, _t: rate,
    )


def _scale(cluster: EmulatedCluster, to: int) -> None:
    ms = cluster.collect().servers[0]
    [result] = cluster.apply([Action(ms.namespace, ms.deployment, ms.name, to, ms.replicas)])
    assert result.ok and result.sent


def test_load_is_split_evenly_over_serving_replicas() -> None:
    cluster = _cluster(rate=300.0)
    cluster.place(SERVER, ACC, 3)
    cluster.advance(300)
    sims = [r.sim for r in cluster.servers[SERVER].replicas]
    arrivals = [s.drain_stats().arrivals for s in sims if s is not None]
    assert len(arrivals) == 3
    assert sum(arrivals) > 1300  # ~1500 expected
    assert max(arrivals) - min(arrivals) <= 1  # round robin


def test_observed_load_comes_from_the_simulated_requests() -> None:
    cluster = _cluster(rate=240.0)
    cluster.place(SERVER, ACC, 2)
    cluster.advance(600)
    load = cluster.collect().servers[0].load
    assert load.status == "ok" and load.source == "emulator"
    assert load.arrival_rate_rpm == pytest.approx(240.0, rel=0.1)
    assert load.avg_in_tokens == 128 and load.avg_out_tokens == 1024
    assert load.itl_ms is not None and load.itl_ms > 0
    assert load.ttft_ms is not None and load.ttft_ms > 0
    idle = _cluster(rate=0.0)
    idle.place(SERVER, ACC, 1)
    idle.advance(60)
    assert idle.collect().servers[0].load.status == "idle"


def test_new_replicas_serve_nothing_before_startup() -> None:
    cluster = _cluster(rate=300.0, startup=120.0)
    cluster.place(SERVER, ACC, 1)
    cluster.advance(60)
    _scale(cluster, 3)
    ms = cluster.collect().servers[0]
    assert (ms.replicas, ms.ready_replicas) == (3, 1)
    cluster.advance(119)
    server = cluster.servers[SERVER]
    assert [r.state for r in server.replicas] == ["serving", "starting", "starting"]
    assert all(r.sim is None for r in server.replicas[1:])  # no requests at all
    cluster.advance(61)
    assert [r.state for r in server.replicas] == ["serving"] * 3
    later = [r.sim.drain_stats().arrivals for r in server.replicas[1:] if r.sim is not None]
    assert len(later) == 2 and all(0 < a < 150 for a in later)  # only the last ~60 s


def test_capacity_is_never_exceeded_extra_replicas_stay_pending() -> None:
    acc = _system().accelerator(ACC)
    assert acc is not None
    cluster = _cluster(rate=120.0, capacity={acc.type: 3}, startup=0.0)
    cluster.place(SERVER, ACC, 2)
    _scale(cluster, 5)
    for _ in range(3):
        cluster.advance(60)
        assert cluster.used_cards()[acc.type] <= 3
    ms = cluster.collect().servers[0]
    assert ms.replicas == 5 and ms.ready_replicas == 3
    assert ms.pending_pods == ms.unschedulable_pods == 2
    _scale(cluster, 3)  # pending ones go first
    assert cluster.collect().servers[0].pending_pods == 0


def test_scale_down_reroutes_queued_requests() -> None:
    cluster = _cluster(rate=900.0)
    cluster.place(SERVER, ACC, 3)
    cluster.advance(120)
    cluster.collect()
    _scale(cluster, 1)
    cluster.advance(120)
    ms = cluster.collect().servers[0]
    assert ms.replicas == 1 and not cluster.servers[SERVER].terminating
    assert cluster.servers[SERVER].last.completed > 0


def test_move_is_make_before_break() -> None:
    cluster = _cluster(rate=120.0, startup=120.0)
    cluster.place(SERVER, ACC, 1)
    cluster.advance(60)
    ms = cluster.collect().servers[0]
    target = _system().accelerator("G2")
    assert target is not None
    placement = Placement("G2", dict(target.node_selector or {}), "nvidia.com/gpu", 1, 0)
    [res] = cluster.apply([Action(ms.namespace, ms.deployment, ms.name, 2, 1, placement)])
    assert res.ok
    cluster.advance(60)
    snap = cluster.snapshot()[SERVER]
    assert snap["accelerator"] == "G2" and snap["retiring"] == 1 and snap["serving"] == 1
    cluster.advance(90)
    snap = cluster.snapshot()[SERVER]
    assert snap["retiring"] == 0 and snap["serving"] == 2
    # models.yaml llama_7b on G2: maxBatchSize 76 at 512 tokens; the server's K = 1024
    # output tokens, so N = floor(76 * 512 / 1024) = 38 (docs/model-spec.md section 2)
    assert cluster.servers[SERVER].max_batch == 38
    # and the patch is the real actuator's: new nodeSelector, allocation labels
    labels = res.patch["metadata"]["labels"] if res.patch else {}
    assert labels.get("inferno.server.allocation.accelerator") == "G2", res.patch


# --- pod removal with running requests (Termination) and pod-deletion-cost -------------------


def _loaded(termination: Termination, *, replicas: int = 3) -> EmulatedCluster:
    cluster = EmulatedCluster(
        _system(), {}, capacity=None, startup_s=0.0, seed=5, rate_fn=lambda _s, _t: 600.0,
        termination=termination,
    )
    cluster.place(SERVER, ACC, replicas)
    cluster.advance(120)
    cluster.collect()
    return cluster


def _running(cluster: EmulatedCluster) -> dict[str, int]:
    return {r.name: r.sim.in_service for r in cluster.servers[SERVER].replicas if r.sim}


def test_default_termination_drops_the_running_requests_of_removed_pods() -> None:
    cluster = _loaded(Termination())  # Kubernetes' and vLLM's defaults
    before = _running(cluster)
    assert cluster.collect().servers[0].pod_running == {k: float(v) for k, v in before.items()}
    _scale(cluster, 1)
    kept = [r.name for r in cluster.servers[SERVER].replicas]
    expected = sum(n for name, n in before.items() if name not in kept)
    assert expected > 0
    assert cluster.dropped_total == expected
    cluster.advance(60)
    assert cluster.collect().servers[0].load.status == "ok"
    assert cluster.servers[SERVER].last.dropped == expected
    assert not cluster.servers[SERVER].terminating


def test_drained_pods_finish_their_requests_and_hold_their_cards_meanwhile() -> None:
    acc = _system().accelerator(ACC)
    assert acc is not None
    cluster = _loaded(Termination(pre_stop_s=10, drain_s=600, grace_s=630))
    cards = cluster.used_cards()[acc.type]
    before = _running(cluster)
    _scale(cluster, 1)
    term = cluster.servers[SERVER].terminating
    assert len(term) == 2 and cluster.used_cards()[acc.type] == cards  # still held
    assert all(t.sim.closed for t in term)
    cluster.advance(600)
    assert cluster.dropped_total == 0 and not cluster.servers[SERVER].terminating
    assert cluster.used_cards()[acc.type] == cards // 3
    assert sum(before.values()) > 0


def test_grace_period_kills_what_still_runs() -> None:
    # 1024 output tokens take far longer than 5 s: a 5 s drain drops the generations.
    cluster = _loaded(Termination(pre_stop_s=0, drain_s=5, grace_s=30))
    before = _running(cluster)
    _scale(cluster, 1)
    kept = {r.name for r in cluster.servers[SERVER].replicas}
    running = sum(n for name, n in before.items() if name not in kept)
    cluster.advance(4)
    assert len(cluster.servers[SERVER].terminating) == 2 and cluster.dropped_total == 0
    cluster.advance(2)
    assert not cluster.servers[SERVER].terminating
    assert 0 < cluster.dropped_total <= running


def test_scale_down_removes_the_lowest_pod_deletion_cost_first() -> None:
    cluster = _loaded(Termination(), replicas=3)
    names = [r.name for r in cluster.servers[SERVER].replicas]
    ms = cluster.collect().servers[0]
    # Without annotations the newest goes; the oldest carries the lowest cost here.
    costs = {names[0]: -5, names[1]: 10, names[2]: 3}
    [res] = cluster.apply([Action(ms.namespace, ms.deployment, ms.name, 2, 3,
                                  pod_deletion_cost=costs)])
    assert res.ok
    assert [r.name for r in cluster.servers[SERVER].replicas] == names[1:]
    ms = cluster.collect().servers[0]
    _scale(cluster, 1)
    assert [r.name for r in cluster.servers[SERVER].replicas] == [names[1]]
    # Not-ready pods go before any serving one, whatever its cost.
    _scale(cluster, 2)
    ms = cluster.collect().servers[0]
    [res] = cluster.apply([Action(ms.namespace, ms.deployment, ms.name, 1, 2,
                                  pod_deletion_cost={names[1]: -100})])
    assert [r.name for r in cluster.servers[SERVER].replicas] == [names[1]]
