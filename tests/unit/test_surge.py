"""The surge fast path: panic conditions, and the Controller against the emulated cluster."""

from __future__ import annotations

import threading
from functools import cache

import pytest

from controlloop.demo.cluster import EmulatedCluster
from controlloop.loop.controller import Controller, StaticSpecs
from controlloop.loop.settings import ControllerSettings, PanicConfig
from controlloop.loop.surge import PanicState, SurgeSignal, panic_condition
from controlloop.specs import SystemSpec
from tests.helpers.systems import one_scaling_server

SERVER = "Premium-llama_7b"
ACC = "MI300X"


@pytest.mark.parametrize(
    ("signal", "kind"),
    [
        (SurgeSignal(ready=2, rate_rpm=250.0), "capacity"),  # 250 > 1.2 x 2 x 100
        (SurgeSignal(ready=2, rate_rpm=230.0), None),  # within the threshold
        (SurgeSignal(ready=2, rate_rpm=100.0, waiting=8.0), "waiting"),  # 8 >= 4 x 2
        (SurgeSignal(ready=2, rate_rpm=100.0, waiting=7.0), None),
        (SurgeSignal(ready=0, waiting=4.0), "waiting"),  # nothing ready: per 1 replica
        (SurgeSignal(ready=2, kv_cache_usage=0.96), "kv-cache"),
        (SurgeSignal(ready=2, kv_cache_usage=0.5, rate_rpm=None, waiting=None), None),
    ],
)
def test_panic_conditions(signal: SurgeSignal, kind: str | None) -> None:
    panic = panic_condition(signal, 100.0, PanicConfig())
    assert (panic.kind if panic else None) == kind
    assert panic_condition(signal, 100.0, PanicConfig(enabled=False)) is None


def test_unknown_capacity_is_no_capacity_panic() -> None:
    assert panic_condition(SurgeSignal(ready=1, rate_rpm=1e6), None, PanicConfig()) is None


def test_panic_window_extends_from_the_last_condition() -> None:
    state = PanicState()
    state.enter("a", 100.0, "x", 60.0)
    assert state.active("a", 159.0) == (160.0, "x") and state.active("a", 160.0) is None
    state.enter("a", 150.0, "y", 60.0)
    assert state.active("a", 200.0) == (210.0, "y") and state.panicking(200.0) == ["a"]
    state.forget(set())
    assert state.active("a", 200.0) is None


@cache
def _system() -> SystemSpec:
    return one_scaling_server(SERVER, ACC)  # only ACC has a nodeSelector: never moves


def _setup(rate: dict[str, float], panic: dict[str, object]) -> tuple[EmulatedCluster, Controller]:
    cluster = EmulatedCluster(_system(), {}, capacity=None, startup_s=120.0, seed=11,
                              rate_fn=lambda _s, _t: rate["rpm"])
    cluster.place(SERVER, ACC, 2)
    settings = ControllerSettings.model_validate({
        "behavior": {"panic": panic, "scaleDown": {"stabilizationWindowSeconds": 0}},
        "forecast": {"leadSeconds": 0},
    })
    ctl = Controller(specs=StaticSpecs(_system(), settings), collector=cluster,
                     actuator=cluster, clock=cluster.now_s)
    cluster.advance(60)
    cluster.probe()
    return cluster, ctl


def test_a_surge_runs_a_cycle_at_once_and_scales_up() -> None:
    rate = {"rpm": 100.0}
    cluster, ctl = _setup(rate, {})
    first = ctl.run_cycle()
    assert first.trigger == "regular" and not first.servers[0].panic
    replicas = cluster.collect().servers[0].replicas
    cluster.advance(10)
    assert ctl.check_surge() is None  # steady: nothing to do
    rate["rpm"] = 1000.0  # x10
    cluster.advance(10)
    report = ctl.check_surge()
    assert report is not None and report.trigger == "surge"
    (row,) = report.servers
    assert row.panic_kind == "capacity" and "SLO capacity" in row.panic
    assert row.verdict == "scaled" and row.desired_replicas is not None
    assert row.desired_replicas > replicas
    assert ctl.surge_checks == 2
    cluster.advance(10)
    assert ctl.check_surge() is None  # minIntervalSeconds: the new pods are on their way


def test_a_panicking_server_never_scales_down_within_the_window() -> None:
    rate = {"rpm": 100.0}
    cluster, ctl = _setup(rate, {"windowSeconds": 120, "minIntervalSeconds": 0})
    ctl.run_cycle()
    rate["rpm"] = 400.0
    cluster.advance(30)
    assert ctl.check_surge() is not None
    up = cluster.collect().servers[0].replicas
    rate["rpm"] = 20.0  # the burst is over at once
    cluster.advance(60)
    (row,) = ctl.run_cycle().servers
    assert row.desired_replicas == up and "no scale-down" in row.reason
    cluster.advance(120)  # past the panic window: the scale-down goes ahead
    (row,) = ctl.run_cycle().servers
    assert not row.panic, (
        row.panic and row.desired_replicas is not None and row.desired_replicas < up
    )


def test_disabled_fast_path_never_checks() -> None:
    rate = {"rpm": 1000.0}
    cluster, ctl = _setup(rate, {"enabled": False})
    ctl.run_cycle()
    cluster.advance(30)
    assert ctl.check_surge() is None and ctl.surge_checks == 0


class _GatedCollector:
    """The emulated cluster, whose cycle collection waits at a gate; probes are counted."""

    def __init__(self, cluster: EmulatedCluster) -> None:
        self.cluster = cluster
        self.collecting, self.release = threading.Event(), threading.Event()
        self.probes = 0

    def collect(self) -> object:
        self.collecting.set()
        assert self.release.wait(10), "the test never opened the gate"
        return self.cluster.collect()

    def probe(self) -> object:
        self.probes += 1
        return self.cluster.probe()

    def __getattr__(self, name: str) -> object:
        return getattr(self.cluster, name)


def test_no_surge_probe_while_a_cycle_runs() -> None:
    """A cycle is reading the load already: a probe then would read the whole fleet a
    second time (memory, API load) and learn nothing the cycle does not act on."""
    rate = {"rpm": 1000.0}  # a surge for the 2 replicas placed
    cluster, base = _setup(rate, {"minIntervalSeconds": 0})
    gated = _GatedCollector(cluster)
    ctl = Controller(specs=StaticSpecs(_system(), base.specs.current()[1]), collector=gated,
                     actuator=cluster, clock=cluster.now_s)
    cycle = threading.Thread(target=ctl.run_cycle)
    cycle.start()
    assert gated.collecting.wait(10)
    assert ctl.check_surge() is None and gated.probes == 0
    gated.release.set()
    cycle.join(10)
    assert not cycle.is_alive()
    report = ctl.check_surge()  # the cycle is over: the probe reads, and finds the surge
    assert gated.probes == 1 and report is not None and report.trigger == "surge"


def test_a_cycle_waits_for_a_probe_under_way() -> None:
    """The other order: a cycle due while a probe reads waits for it, never reads
    alongside it."""
    rate = {"rpm": 100.0}
    cluster, base = _setup(rate, {})
    reading, release = threading.Event(), threading.Event()
    events: list[str] = []

    class SlowProbe(_GatedCollector):
        def collect(self) -> object:
            events.append("collect")
            return self.cluster.collect()

        def probe(self) -> object:
            events.append("probe")
            reading.set()
            assert release.wait(10)
            events.append("probe done")
            return self.cluster.probe()

    ctl = Controller(specs=StaticSpecs(_system(), base.specs.current()[1]),
                     collector=SlowProbe(cluster), actuator=cluster, clock=cluster.now_s)
    check = threading.Thread(target=ctl.check_surge)
    check.start()
    assert reading.wait(10)
    cycle = threading.Thread(target=ctl.run_cycle)
    cycle.start()
    cycle.join(0.3)
    assert cycle.is_alive() and events == ["probe"]  # held until the probe is done
    release.set()
    check.join(10)
    cycle.join(10)
    assert events == ["probe", "probe done", "collect"]
