"""Single rules of docs/model-spec.md sections 4-5, each on a system small enough to derive by hand.

Numbers come from test_optimizer_fixtures: on ``P`` lam* = 4.995 req/s (cost 10),
on ``Q`` (alpha 20) lam* = 3.33 req/s.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlloop.optimizer import DecisionStatus, optimize
from controlloop.optimizer.candidates import transition_value
from tests.helpers.optimizer_fixtures import (
    LAM_P,
    LAM_Q,
    accelerator,
    classes,
    per_min,
    perf,
    replicas,
    server,
    stable_json,
    system,
)

TWO_ACCS = {
    "accelerators": [accelerator("P", 10.0), accelerator("Q", 7.0)],
    "models": [perf("P"), perf("Q", alpha=20.0)],
}


def test_fixture_rates_are_what_the_docstring_derives() -> None:
    solution = optimize(system([server("s", 60.0)], **TWO_ACCS), unlimited=True)
    rates = {c.accelerator: c.rate_per_replica for c in solution.candidates["s"]}
    assert rates["P"] == pytest.approx(LAM_P, rel=1e-6)
    assert rates["Q"] == pytest.approx(LAM_Q, rel=1e-6)
    assert {c.limited_by for c in solution.candidates["s"]} == {"stability"}


def test_heterogeneous_milp_mixes_when_mixing_is_cheaper() -> None:
    """7 req/s: P alone needs 2 (cost 20), Q alone 3 (cost 21); 1 P + 1 Q carries
    4.995 + 3.33 = 8.3 >= 7 at cost 17. With the move penalty from no allocation
    (0.1 * full-candidate cost per accelerator used) the objectives are P 22, Q 23.1,
    mixed 17 + 2 + 2.1 = 21.1: mixing wins; without heterogeneous, P x2."""
    base = system([server("s", 7 * 60.0)], capacity={"P": 10, "Q": 10}, **TWO_ACCS)
    mixed = optimize(base.model_copy(update={"optimizer": base.optimizer.model_copy(
        update={"heterogeneous": True})}), solver="milp")
    d = mixed.decisions["s"]
    assert d.replicas == 2 and d.cost == pytest.approx(17.0)
    assert "mixed placement" in d.reason
    assert mixed.usage_by_type["P"].cards_used == 1 and mixed.usage_by_type["Q"].cards_used == 1
    single = optimize(base, solver="milp")
    assert (single.decisions["s"].accelerator, single.decisions["s"].replicas) == ("P", 2)
    assert single.total_cost == pytest.approx(20.0)


@pytest.mark.parametrize("solver", ["greedy", "milp"])
def test_zero_load(solver: str) -> None:
    """Rate 0: minNumReplicas 0 -> nothing; 2 -> 2 replicas at ITL alpha+beta = 11 ms,
    TTFT gamma+delta = 0 ms."""
    sys_ = system(
        [server("idle", 0.0), server("warm", 0.0, minNumReplicas=2)], capacity={"P": 10}
    )
    solution = optimize(sys_, solver=solver)
    idle, warm = solution.decisions["idle"], solution.decisions["warm"]
    assert idle.status is DecisionStatus.ZERO_LOAD
    assert (idle.accelerator, idle.replicas, idle.cost) == ("", 0, 0.0)
    assert warm.status is DecisionStatus.ZERO_LOAD
    assert (warm.accelerator, warm.replicas) == ("P", 2)
    assert warm.itl_ms == pytest.approx(11.0) and warm.ttft_ms == pytest.approx(0.0)
    assert solution.total_cost == pytest.approx(20.0)


def test_min_num_replicas_raises_the_replicas() -> None:
    """1 req/s needs 1 replica; minNumReplicas 3 gives 3, each at 1/3 req/s."""
    solution = optimize(system([server("s", 60.0, minNumReplicas=3)]), unlimited=True)
    d = solution.decisions["s"]
    assert d.replicas == 3 and d.needed_replicas == 3 and d.cost == pytest.approx(30.0)
    assert "minNumReplicas 3" in d.reason


def test_keep_accelerator_allows_only_the_current_one() -> None:
    """P is cheaper for 7 req/s, but the server keeps Q (3 replicas)."""
    current = {"accelerator": "Q", "numReplicas": 1}
    sys_ = system([server("s", 7 * 60.0, keepAccelerator=True, current=current)], **TWO_ACCS)
    solution = optimize(sys_, unlimited=True)
    assert [c.accelerator for c in solution.candidates["s"]] == ["Q"]
    assert [(r.accelerator, r.reason) for r in solution.rejected["s"]] == [
        ("P", "keepAccelerator is set")
    ]
    assert (solution.decisions["s"].accelerator, solution.decisions["s"].replicas) == ("Q", 3)


def test_max_batch_size_override() -> None:
    """Batch 5: T(5) = 100 * (10 + 5) = 1500 ms, lam_max = 0.999 * 5/1.5 = 3.33 req/s,
    so 7 req/s needs 3 replicas (2 at batch 10)."""
    solution = optimize(system([server("s", 7 * 60.0, maxBatchSize=5)]), unlimited=True)
    d = solution.decisions["s"]
    assert d.batch == 5
    assert d.rate_per_replica == pytest.approx(0.999 * 5 / 1.5, rel=1e-6)
    assert d.replicas == 3


def test_tps_target_sets_demand_and_rate() -> None:
    """slo-tps 2020 with K = 101: demand 20 req/s whatever the arrival rate;
    lam* = 0.9 * 4.995 = 4.4955 -> ceil(20 / 4.4955) = 5 replicas."""
    sys_ = system([server("s", 1.0)], service_classes=classes({"slo-tps": 2020}))
    d = optimize(sys_, unlimited=True).decisions["s"]
    assert d.demand == pytest.approx(20.0)
    assert d.rate_per_replica == pytest.approx(0.9 * LAM_P, rel=1e-6)
    assert d.replicas == 5
    assert optimize(sys_, unlimited=True).candidates["s"][0].limited_by == "tps"


def test_infeasible_slo_leaves_the_server_unallocated_with_the_reason() -> None:
    """ITL target 5 ms is below alpha = 10 ms: no rate meets it on P."""
    sys_ = system([server("s", 60.0)], service_classes=classes({"slo-itl": 5}))
    for solver in ("greedy", "milp"):
        d = optimize(sys_, solver=solver, unlimited=solver == "greedy").decisions["s"]
        assert d.status is DecisionStatus.UNALLOCATED
        assert "ITL target 5" in d.reason and "no feasible accelerator" in d.reason


def test_transition_value_rules() -> None:
    kw = {"cur_acc": "Q", "cur_replicas": 3, "cur_cost": 21.0}
    assert transition_value(**kw, acc="Q", replicas=3, cost=21.0) == 0.0
    assert transition_value(**kw, acc="Q", replicas=4, cost=28.0) == pytest.approx(7.0)
    assert transition_value(**kw, acc="P", replicas=2, cost=20.0) == pytest.approx(
        0.1 * (21 + 20) + 20 - 21
    )


@pytest.mark.parametrize("solver", ["greedy", "milp"])
def test_moving_is_penalised_against_staying(solver: str) -> None:
    """7 req/s on Q x3 (cost 21). P x2 costs 20 but moving has value 0.1*(21+20) - 1 = 3.1
    against 0 for staying: the server stays. With no current allocation it takes P."""
    stay = system([server("s", 7 * 60.0, current={"accelerator": "Q", "numReplicas": 3})],
                  capacity={"P": 10, "Q": 10}, **TWO_ACCS)
    d = optimize(stay, solver=solver).decisions["s"]
    assert (d.accelerator, d.replicas, d.change.kind) == ("Q", 3, "none")
    fresh = system([server("s", 7 * 60.0)], capacity={"P": 10, "Q": 10}, **TWO_ACCS)
    assert optimize(fresh, solver=solver).decisions["s"].accelerator == "P"


def _fleet(seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        server(f"s{i:02d}", round(rng.uniform(30, 900)), rng.choice(["hi", "lo", "low"]))
        for i in range(12)
    ]


@pytest.mark.parametrize("solver", ["greedy", "milp"])
def test_same_input_same_output_and_server_order_does_not_matter(solver: str) -> None:
    servers = _fleet(7)
    kw = {"capacity": {"P": 25, "Q": 12}, "saturationPolicy": "RoundRobin", **TWO_ACCS}
    first = optimize(system(servers, **kw), solver=solver)
    again = optimize(system(servers, **kw), solver=solver)
    shuffled = list(servers)
    random.Random(3).shuffle(shuffled)
    other = optimize(system(shuffled, **kw), solver=solver)
    if solver == "greedy":
        assert stable_json(first) == stable_json(again) == stable_json(other)
    decisions = {n: (d.accelerator, d.replicas) for n, d in first.decisions.items()}
    assert decisions == {n: (d.accelerator, d.replicas) for n, d in again.decisions.items()}
    assert decisions == {n: (d.accelerator, d.replicas) for n, d in other.decisions.items()}


# --- capacity monotonicity ---------------------------------------------------------------
#
# Greedy is not monotone in capacity in general (first fit: with one more card a big
# server fits and blocks two smaller ones; a cheap weak accelerator gets room and takes the
# best-effort replicas a strong one would have had). It is for what the lead's tie rules
# make of the top group when each server has one candidate of one type and best effort
# fills the capacity: the cards given to the top group are min(capacity, its total need),
# and the order by value (= replicas here) makes first-fit's served demand monotone.


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rates=st.lists(st.floats(0.5, 9.0), min_size=1, max_size=6),
    cap=st.integers(1, 20),
    extra=st.integers(1, 8),
    policy=st.sampled_from(["PriorityExhaustive", "RoundRobin", "PriorityRoundRobin"]),
)
def test_more_capacity_never_serves_the_top_group_less(
    rates: list[float], cap: int, extra: int, policy: str
) -> None:
    servers = [server(f"t{i}", per_min(r), "hi") for i, r in enumerate(rates)]
    servers.append(server("other", per_min(3.0), "lo"))

    def served(capacity: int) -> float:
        sol = optimize(system(servers, capacity={"P": capacity}), saturation_policy=policy)
        return sum(min(d.demand, d.replicas * LAM_P)
                   for d in sol.decisions.values() if d.priority == 1)

    assert served(cap + extra) >= served(cap) - 1e-9


def test_greedy_is_not_monotone_in_general() -> None:
    """Policy None, needs 4, 3, 1, 1 (order by value): 6 cards serve 4+1+1 (3 servers),
    7 cards serve 4+3 (2 servers). The MILP serves the most at each capacity."""
    servers = [server(n, per_min(k - 0.5), "hi") for n, k in
               (("a", 4), ("b", 3), ("c", 1), ("d", 1))]
    count = {}
    for cap in (6, 7):
        sol = optimize(system(servers, capacity={"P": cap}), saturation_policy="None")
        count[cap] = sum(d.status is DecisionStatus.MEETS_SLO for d in sol.decisions.values())
        milp = optimize(system(servers, capacity={"P": cap}), solver="milp",
                        saturation_policy="None")
        # three servers, and the cheapest three: b, c, d (5 cards)
        assert replicas(milp) == {"a": 0, "b": 3, "c": 1, "d": 1}
    assert (count[6], count[7]) == (3, 2)
    assert math.isclose(sum(replicas(sol).values()), 7)
