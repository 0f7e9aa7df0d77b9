"""Stabilizer (HPA-like behaviour) with an injected clock, and annotation overrides."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlloop.loop.annotations import BehaviorResolver, apply_annotations, parse_annotations
from controlloop.loop.behavior import Stabilizer
from controlloop.loop.settings import (
    BehaviorOverride,
    BehaviorSpec,
    ControllerSettings,
    ScalingPolicy,
    ScalingRules,
)
from controlloop.loop.state import ManagedServer

KEY = "llm/granite"


def rules(*policies: tuple[str, int, int], window: int | None = 0, select: str = "Max") -> Any:
    return ScalingRules(
        stabilization_window_seconds=window,
        select_policy=select,  # type: ignore[arg-type]
        policies=[ScalingPolicy(type=t, value=v, period_seconds=p) for t, v, p in policies],
    )


def spec(**kw: Any) -> BehaviorSpec:
    base: dict[str, Any] = {"tolerance": 0.0, "min_replicas": 1}
    base.update(kw)
    return BehaviorSpec().model_copy(update=base)


class Loop:
    """A Stabilizer driven like the controller drives it: stabilize, then record the scale."""

    def __init__(self, behavior: BehaviorSpec, current: int, now: float = 1000.0) -> None:
        self.s, self.b, self.current, self.now = Stabilizer(), behavior, current, now

    def step(self, recommended: int, dt: float = 15.0) -> int:
        self.now += dt
        out = self.s.stabilize(
            KEY, now=self.now, current=self.current, recommended=recommended, behavior=self.b
        )
        self.s.record_scale(KEY, self.now, out.replicas - self.current)
        self.current = out.replicas
        return out.replicas


# --- scale-down stabilisation ---------------------------------------------------------------


def test_scale_down_acts_on_the_highest_recommendation_of_the_window() -> None:
    loop = Loop(spec(scale_down=rules(window=300)), current=10, now=0.0)
    assert loop.step(10, dt=0) == 10
    assert loop.step(8, dt=60) == 10  # t=60: window holds 10
    assert loop.step(4, dt=60) == 10  # t=120
    assert loop.step(6, dt=60) == 10  # t=180
    assert loop.step(3, dt=120) == 10  # t=300: the t=0 sample is still inside [0, 300]
    assert loop.step(3, dt=1) == 8  # t=301: 10 fell out; highest left is 8 (t=60)
    assert loop.step(3, dt=60) == 6  # t=361: 8 out, highest left 6 (t=180)
    assert loop.step(3, dt=120) == 3  # t=481: only 3s left


def test_one_low_sample_after_a_burst_does_not_shed_replicas() -> None:
    loop = Loop(spec(), current=8)  # default scale-down window 300 s
    for _ in range(10):
        assert loop.step(8) == 8
    assert loop.step(1) == 8
    assert loop.step(8) == 8


def test_scale_down_window_zero_acts_at_once() -> None:
    loop = Loop(spec(scale_down=rules(window=0)), current=8)
    assert loop.step(3) == 3


def test_without_history_the_first_scale_down_waits_a_window() -> None:
    """A restarted controller or a new leader has no recommendations: the replicas running
    when it first sees a server stand in for them, so it does not act on one low sample."""
    loop = Loop(spec(scale_down=rules(window=300)), current=10, now=0.0)
    assert loop.step(3, dt=0) == 10
    assert loop.step(3, dt=299) == 10
    assert loop.step(3, dt=2) == 3  # t=301: the stand-in left the window


def test_without_history_scale_up_is_not_delayed() -> None:
    loop = Loop(spec(scale_up=rules(window=0), scale_down=rules(window=300)), current=2)
    assert loop.step(6) == 6


def test_after_a_move_reset_the_scale_down_is_immediate() -> None:
    """The bridge count of a finished move is not a recommendation to honour."""
    loop = Loop(spec(scale_down=rules(window=300)), current=18, now=0.0)
    loop.s.record_move(KEY, 0.0)
    loop.s.reset(KEY)
    assert loop.step(2, dt=60) == 2


def test_scale_up_window_acts_on_the_lowest_recommendation() -> None:
    loop = Loop(spec(scale_up=rules(window=60)), current=2, now=0.0)
    assert loop.step(2, dt=0) == 2
    assert loop.step(6, dt=30) == 2  # 2 still in the window
    assert loop.step(6, dt=31) == 6  # t=61: the 2 left the window


# --- scale-up policies ----------------------------------------------------------------------------


def test_pods_policy_limits_growth_per_period() -> None:
    loop = Loop(spec(scale_up=rules(("Pods", 2, 60))), current=2)
    assert loop.step(10, dt=0) == 4
    assert loop.step(10, dt=30) == 4  # 2 added in the last 60 s: nothing more yet
    assert loop.step(10, dt=31) == 6  # the first event left the period


def test_percent_policy_limits_growth_per_period() -> None:
    loop = Loop(spec(scale_up=rules(("Percent", 50, 60))), current=4)
    assert loop.step(20, dt=0) == 6  # ceil(4 * 1.5)
    assert loop.step(20, dt=61) == 9  # ceil(6 * 1.5)


def test_select_policy_max_takes_the_most_permissive() -> None:
    both = (("Pods", 1, 60), ("Percent", 100, 60))
    assert Loop(spec(scale_up=rules(*both, select="Max")), current=4).step(20, dt=0) == 8
    assert Loop(spec(scale_up=rules(*both, select="Min")), current=4).step(20, dt=0) == 5


def test_select_policy_disabled_never_scales_that_way() -> None:
    loop = Loop(spec(scale_up=rules(("Pods", 4, 15), select="Disabled")), current=3)
    assert loop.step(10) == 3
    loop = Loop(spec(scale_down=rules(("Pods", 4, 15), window=0, select="Disabled")), current=3)
    assert loop.step(1) == 3
    assert loop.step(5) == 5  # the other direction still works


def test_scale_down_policies() -> None:
    down = rules(("Pods", 1, 60), ("Percent", 50, 60), window=0)
    assert Loop(spec(scale_down=down), current=10).step(1) == 5  # Max: most change
    down = rules(("Pods", 1, 60), ("Percent", 50, 60), window=0, select="Min")
    loop = Loop(spec(scale_down=down), current=10)
    assert loop.step(1) == 9
    assert loop.step(1, dt=10) == 9  # one removed in the period already


def test_no_policies_means_unlimited() -> None:
    assert Loop(spec(scale_up=rules()), current=1).step(50) == 50


# --- tolerance, min/max ---------------------------------------------------------------------------


def test_tolerance_dead_band() -> None:
    loop = Loop(spec(tolerance=0.1, scale_down=rules(window=0)), current=20)
    assert loop.step(22) == 20  # 10 % of 20
    assert loop.step(18) == 20
    assert loop.step(23) == 23
    out = Stabilizer().stabilize(KEY, now=0, current=20, recommended=21,
                                 behavior=spec(tolerance=0.1))
    assert out.replicas == 20 and "within tolerance" in out.reason


def test_min_and_max_replicas_apply_last() -> None:
    b = spec(min_replicas=3, max_replicas=6, scale_down=rules(window=0))
    assert Loop(b, current=4).step(1) == 3
    assert Loop(b, current=4).step(50) == 6
    out = Stabilizer().stabilize(KEY, now=0, current=4, recommended=50, behavior=b)
    assert "maxReplicas 6" in out.reason


def test_zero_only_with_scale_to_zero() -> None:
    down = rules(window=0)
    assert Loop(spec(min_replicas=0, scale_down=down), current=2).step(0) == 1
    assert Loop(spec(min_replicas=0, scale_to_zero=True, scale_down=down), current=2).step(0) == 0


def test_scale_to_zero_is_for_idle_servers_and_min_replicas_holds_under_load() -> None:
    """Like KEDA's idleReplicaCount: 0 when idle, minReplicas while there is load."""
    b = spec(min_replicas=2, scale_to_zero=True, scale_down=rules(window=0))
    assert Loop(b, current=3).step(0) == 0
    assert Loop(b, current=3).step(1) == 2


# --- accelerator moves ----------------------------------------------------------------------------


def test_accelerator_change_minimum_interval() -> None:
    s, b = Stabilizer(), spec(accelerator_change_min_interval_seconds=600)
    assert s.move_allowed(KEY, 0.0, b) == (True, "")
    s.record_move(KEY, 100.0)
    allowed, why = s.move_allowed(KEY, 699.0, b)
    assert not allowed and "599s ago, minimum interval 600s" in why
    assert s.move_allowed(KEY, 700.0, b)[0]
    assert s.move_allowed("other/server", 101.0, b)[0]  # per server


def test_reset_forgets_the_window() -> None:
    loop = Loop(spec(), current=8)
    loop.step(8)
    loop.s.reset(KEY)
    assert loop.step(2) == 2


def test_history_is_bounded() -> None:
    loop = Loop(spec(scale_down=rules(window=0)), current=5)
    for i in range(2000):
        loop.step(5 + i % 3, dt=15)
    assert len(loop.s.history[KEY].recommendations) <= 3600 / 15 + 1


@settings(max_examples=200, deadline=None)
@given(
    current=st.integers(0, 50),
    recs=st.lists(st.integers(0, 80), min_size=1, max_size=20),
    lo=st.integers(0, 5),
    span=st.integers(0, 40),
)
def test_result_stays_within_bounds_and_between_current_and_target(
    current: int, recs: list[int], lo: int, span: int
) -> None:
    b = spec(min_replicas=lo, max_replicas=lo + span + 1, scale_to_zero=True)
    loop = Loop(b, current=current)
    for rec in recs:
        before = loop.current
        out = loop.step(rec)
        floor = 0 if rec == 0 else b.min_replicas  # scaleToZero: idle may go to 0
        assert floor <= out <= (b.max_replicas or out)
        inside = min(before, rec) <= out <= max(before, rec)
        clamped = out in (floor, b.max_replicas)
        assert inside or clamped


# --- annotations ----------------------------------------------------------------------------------


def server(annotations: dict[str, str], name: str = "granite") -> ManagedServer:
    return ManagedServer(
        namespace="llm", deployment=name, name=name, model="m", service_class="Premium",
        accelerator="A100", max_batch=8, replicas=2, ready_replicas=2, annotations=annotations,
    )


def test_annotations_parse_every_field() -> None:
    b, problems = apply_annotations(BehaviorSpec(), {
        "controlloop.io/min-replicas": "2",
        "controlloop.io/max-replicas": " 9 ",
        "controlloop.io/scale-down-stabilization-seconds": "120",
        "controlloop.io/scale-up-stabilization-seconds": "30",
        "controlloop.io/tolerance": "0.2",
        "controlloop.io/scale-to-zero": "True",
        "controlloop.io/accelerator-change-min-interval-seconds": "3600",
        "unrelated.io/x": "y",
    })
    assert problems == []
    assert (b.min_replicas, b.max_replicas, b.tolerance, b.scale_to_zero) == (2, 9, 0.2, True)
    assert b.scale_down.stabilization_window_seconds == 120
    assert b.scale_up.stabilization_window_seconds == 30
    assert b.scale_down.policies == BehaviorSpec().scale_down.policies  # kept
    assert b.accelerator_change_min_interval_seconds == 3600


@pytest.mark.parametrize("key,value", [
    ("controlloop.io/min-replicas", "two"),
    ("controlloop.io/min-replicas", "-1"),
    ("controlloop.io/min-replicas", "2.5"),
    ("controlloop.io/max-replicas", "0"),
    ("controlloop.io/tolerance", "1.5"),
    ("controlloop.io/tolerance", "nan"),
    ("controlloop.io/scale-to-zero", "maybe"),
    ("controlloop.io/scale-down-stabilization-seconds", "-5"),
    ("controlloop.io/scale-up-stabilization-seconds", "inf"),
    ("controlloop.io/accelerator-change-min-interval-seconds", ""),
    ("controlloop.io/min-replcas", "2"),
])
def test_garbage_annotations_are_ignored_with_a_reason(key: str, value: str) -> None:
    b, problems = apply_annotations(BehaviorSpec(), {key: value})
    assert b == BehaviorSpec()
    assert len(problems) == 1 and problems[0].startswith(key)


def test_min_above_max_is_ignored() -> None:
    base = BehaviorSpec().model_copy(update={"max_replicas": 4})
    b, problems = apply_annotations(base, {"controlloop.io/min-replicas": "6"})
    assert b.min_replicas == 1 and b.max_replicas == 4
    assert "minReplicas 6 > maxReplicas 4" in problems[0]


def test_precedence_annotations_over_servers_over_globals(caplog: Any) -> None:
    cfg = ControllerSettings().model_copy(update={
        "behavior": BehaviorSpec().model_copy(update={"min_replicas": 1, "tolerance": 0.05}),
        "servers": {"granite": BehaviorOverride(min_replicas=2, max_replicas=8)},
    })
    resolve = BehaviorResolver()
    b = resolve(cfg, server({"controlloop.io/max-replicas": "5"}))
    assert (b.min_replicas, b.max_replicas, b.tolerance) == (2, 5, 0.05)
    assert resolve(cfg, server({}, name="other")).min_replicas == 1
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        b = resolve(cfg, server({"controlloop.io/max-replicas": "lots"}))
    assert b.max_replicas == 8
    warned = [r for r in caplog.records if "max-replicas" in r.getMessage()]
    assert len(warned) == 1  # logged once, not every cycle
    assert "llm/granite" in warned[0].getMessage()


def test_parse_reports_unknown_prefix_keys() -> None:
    values, problems = parse_annotations({"controlloop.io/foo": "1"})
    assert values == {} and "unknown annotation" in problems[0]


def test_an_idle_server_with_scale_to_zero_goes_to_zero_through_the_controller() -> None:
    from controlloop.config import load_system
    from controlloop.loop.controller import Controller, StaticSpecs
    from controlloop.loop.state import ObservedLoad
    from tests.helpers.cluster import CONFIG
    from tests.helpers.moves import OneServer, _server

    settings = ControllerSettings(verify="none").model_copy(update={
        "behavior": spec(scale_to_zero=True, scale_down=rules(window=0)),
    })
    idle = ObservedLoad("idle", arrival_rate_rpm=0.0, avg_in_tokens=0.0, avg_out_tokens=0.0)
    fake = OneServer(_server(accelerator="H100", replicas=2, load=idle, rollout=None))
    controller = Controller(specs=StaticSpecs(load_system(CONFIG), settings), collector=fake,
                            actuator=fake, clock=lambda: 1000.0)
    (row,) = controller.run_cycle().servers
    (action,) = fake.applied
    assert action.replicas == 0, row.reason


def test_a_restarted_controller_does_not_scale_down_on_its_first_cycle() -> None:
    """Through the controller (which asks the stabiliser about moves first): 18 replicas
    for a load that needs 5 stay 18 until a full scale-down window has passed."""
    from controlloop.config import load_system
    from controlloop.loop.controller import Controller, StaticSpecs
    from controlloop.loop.state import ObservedLoad
    from tests.helpers.cluster import CONFIG
    from tests.helpers.moves import OneServer, _server

    now = [1000.0]
    load = ObservedLoad("ok", arrival_rate_rpm=10.0, avg_in_tokens=128, avg_out_tokens=1024)
    fake = OneServer(_server(accelerator="L40S", replicas=18, load=load, rollout=None,
                             max_batch=0))
    controller = Controller(
        specs=StaticSpecs(load_system(CONFIG), ControllerSettings(verify="none")),
        collector=fake,
        actuator=fake,
        clock=lambda: now[0],
    )
    (row,) = controller.run_cycle().servers
    # Whether it stays or starts a move (the bridge keeps the old pods), nothing goes.
    assert all(a.replicas >= 18 for a in fake.applied), row.reason
    assert "18" in row.reason
