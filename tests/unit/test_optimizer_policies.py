"""Saturation policies, delayedBestEffort and priority order on a tight hand-made system.

One accelerator ``P`` (type P, 10 cards, one card per replica, lam* = 4.995 req/s; see
test_optimizer_fixtures). Needs: priority 1 (class hi): A 7, B 5, E 4 replicas;
priority 2 (class lo): C 5, D 6. Every server has one candidate, so regret is
infinite for all and the greedy order within a group is value (~ replicas) descending:
A, B, E then D, C.

Full allocations: A takes 7 (3 left); B (5) and E (4) do not fit; in group 2, D (6)
and C (5) do not fit either. Then the best-effort pass with 3 cards:

- not delayed (per group; group 1 takes the 3 cards, group 2 finds none):
  None -> nothing; PriorityExhaustive -> B 3; RoundRobin and PriorityRoundRobin -> B, E, B
  = B 2, E 1;
- delayed (one pass over B, E, D, C after all groups):
  None -> nothing; PriorityExhaustive -> B 3; RoundRobin -> B 1, E 1, D 1;
  PriorityRoundRobin -> round robin in group 1 first -> B 2, E 1.
"""

from __future__ import annotations

import pytest

from controlloop.optimizer import DecisionStatus, optimize
from tests.helpers.optimizer_fixtures import per_min, replicas, server, system

SERVERS = [
    server("A", per_min(6.6), "hi"),  # 33 req/s -> 7 replicas
    server("B", per_min(4.6), "hi"),  # 5
    server("E", per_min(3.6), "hi"),  # 4
    server("C", per_min(4.6), "lo"),  # 5
    server("D", per_min(5.6), "lo"),  # 6
]
NEEDS = {"A": 7, "B": 5, "E": 4, "C": 5, "D": 6}


def _tight(delayed: bool) -> object:
    return system(SERVERS, capacity={"P": 10}, delayedBestEffort=delayed)


EXPECTED = {
    (False, "None"): {"A": 7},
    (False, "PriorityExhaustive"): {"A": 7, "B": 3},
    (False, "RoundRobin"): {"A": 7, "B": 2, "E": 1},
    (False, "PriorityRoundRobin"): {"A": 7, "B": 2, "E": 1},
    (True, "None"): {"A": 7},
    (True, "PriorityExhaustive"): {"A": 7, "B": 3},
    (True, "RoundRobin"): {"A": 7, "B": 1, "E": 1, "D": 1},
    (True, "PriorityRoundRobin"): {"A": 7, "B": 2, "E": 1},
}


@pytest.mark.parametrize(("delayed", "policy"), sorted(EXPECTED))
def test_greedy_best_effort_policies(delayed: bool, policy: str) -> None:
    solution = optimize(_tight(delayed), solver="greedy", saturation_policy=policy)
    expected = {name: EXPECTED[(delayed, policy)].get(name, 0) for name in NEEDS}
    assert replicas(solution) == expected
    for name, d in solution.decisions.items():
        if expected[name] == 0:
            assert d.status is DecisionStatus.UNALLOCATED
            assert "capacity exhausted" in d.reason
        elif expected[name] < NEEDS[name]:
            assert d.status is DecisionStatus.SATURATED
            assert d.needed_replicas == NEEDS[name]
            # cost scales with the replicas actually given
            assert d.cost == pytest.approx(10.0 * expected[name])
            assert d.served_fraction == pytest.approx(expected[name] * 4.995 / d.demand)
        else:
            assert d.status is DecisionStatus.MEETS_SLO
    assert solution.usage_by_type["P"].cards_used == sum(expected.values())


def test_best_effort_replicas_are_repredicted_at_their_higher_load() -> None:
    """saturatedLatency "offered": B gets 3 of 5 replicas: 23 req/s over 3 replicas is
    above lam_max, so rho ~ 1 and TTFT far above the candidate's."""
    solution = optimize(_tight(False), saturation_policy="PriorityExhaustive",
                        saturated_latency="offered")
    b = solution.decisions["B"]
    full = solution.candidates["B"][0]
    assert b.rho is not None and full.rho < b.rho <= 1.0
    assert b.ttft_ms is not None and b.ttft_ms > full.ttft_ms


def test_best_effort_latency_is_the_sized_one_by_default() -> None:
    """The reference (default "sized") reports the candidate's figures, sized at
    demand/needed replicas, whatever the replicas given."""
    solution = optimize(_tight(False), saturation_policy="PriorityExhaustive")
    b = solution.decisions["B"]
    full = solution.candidates["B"][0]
    assert b.status is DecisionStatus.SATURATED and b.replicas == 3
    assert (b.itl_ms, b.ttft_ms, b.rho) == (full.itl_ms, full.ttft_ms, full.rho)


@pytest.mark.parametrize("policy", ["None", "PriorityExhaustive", "RoundRobin"])
def test_milp_serves_the_higher_priority_first(policy: str) -> None:
    """Priority 1 needs 7+5+4 = 16 > 10 cards: the MILP maximises its served fraction
    (all 10 cards to group 1 when partial service is allowed) and gives group 2 nothing."""
    solution = optimize(_tight(False), solver="milp", saturation_policy=policy)
    given = replicas(solution)
    assert given["C"] == given["D"] == 0
    assert sum(given.values()) <= 10
    if policy == "None":
        # all or nothing: A (7) alone is the most demand of group 1 that fits
        assert {k: v for k, v in given.items() if v} in ({"A": 7}, {"B": 5, "E": 4})
    else:
        assert given["A"] + given["B"] + given["E"] == 10


def test_no_lower_priority_server_takes_a_card_a_higher_one_needed() -> None:
    """H (priority 1) needs 6 cards; L (priority 3) needs 5 and sorts first by name and
    value would favour it: 8 cards go 6 to H, and L gets what is left only best effort."""
    sys_ = system(
        [server("L", per_min(4.6), "low"), server("H", per_min(5.6), "hi")],
        capacity={"P": 8},
    )
    for solver in ("greedy", "milp"):
        for policy in ("None", "RoundRobin", "PriorityExhaustive", "PriorityRoundRobin"):
            solution = optimize(sys_, solver=solver, saturation_policy=policy)
            h, low = solution.decisions["H"], solution.decisions["L"]
            assert h.status is DecisionStatus.MEETS_SLO and h.replicas == 6, (solver, policy)
            assert low.replicas == (0 if policy == "None" else 2), (solver, policy)


def test_priority_order_holds_across_every_class_pair() -> None:
    """Whatever the policy, no server of a lower priority is given a card while a server
    of a higher priority is short (on a single-type system where any card helps)."""
    for delayed in (False, True):
        for policy in ("None", "PriorityExhaustive", "RoundRobin", "PriorityRoundRobin"):
            solution = optimize(_tight(delayed), saturation_policy=policy)
            short = [d.priority for d in solution.decisions.values()
                     if d.replicas < NEEDS[d.server]]
            given_low = [d.priority for d in solution.decisions.values() if d.replicas > 0]
            if delayed and policy == "RoundRobin":
                continue  # the one policy that by design shares across priorities
            if short:
                assert max(given_low) <= min(short), (delayed, policy)
