"""``verify: simulate``: chosen allocations meet their targets in simulation, within capacity.

The truth here is not the verifier's own check: every allocation is re-simulated with
``controlloop.sim.simulate`` directly, by independent replications (other seeds than the
verifier's seed 1, each run 1.5x its 2,000 requests and at least 1,800 s against its 900 s,
five of them: 7.5x its horizon), and the SLO must hold within 3 standard errors taken across
the replications. Cards are recounted from the decisions (replicas x cards_per_replica)
against the spec's capacity, not read from ``usage_by_type``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controlloop.config import load_system
from controlloop.optimizer.api import optimize
from controlloop.optimizer.solution import DecisionStatus, ServerDecision, Solution
from controlloop.specs import SystemSpec
from tests.helpers.plans import Replicated, over_capacity, replicate, sim_params
from tests.helpers.systems import tiny_system

SMALL = Path(__file__).resolve().parents[2] / "config" / "examples" / "small"
REQUESTS, MIN_S, REPS, SEED = 3000, 1800.0, 5, 1000  # the verifier: 2000, 900 s, 1 run, seed 1


def fresh(system: SystemSpec, d: ServerDecision, replicas: int | None = None) -> Replicated:
    """Independent replications of one replica of ``d`` at ``demand / replicas``."""
    params = sim_params(system, d)
    assert params is not None
    n = d.replicas if replicas is None else replicas
    return replicate(params, d.demand / n, requests=REQUESTS, min_s=MIN_S, reps=REPS, seed=SEED)


def misses_in_fresh_simulation(system: SystemSpec, solution: Solution) -> dict[str, list[str]]:
    """Fully served allocations whose SLO fails in the fresh simulation, with the figures."""
    out = {}
    checked = 0
    for d in solution.decisions.values():
        if d.status is not DecisionStatus.MEETS_SLO or d.demand <= 0:
            continue
        checked += 1
        if miss := fresh(system, d).misses(ttft=d.slo_ttft_ms, itl=d.slo_itl_ms):
            out[d.server] = miss
    assert checked, "nothing was simulated"
    return out


@pytest.mark.parametrize("solver", ["greedy", "milp"])
def test_small_sample_holds(solver: str) -> None:
    system = load_system(SMALL)
    seed_plan = optimize(system, solver=solver)
    solution = optimize(system, solver=solver, verify="simulate")
    assert "verified in simulation" in solution.message
    assert sum(d.status is DecisionStatus.MEETS_SLO for d in solution.decisions.values()) == 15
    assert misses_in_fresh_simulation(system, solution) == {}
    assert over_capacity(system, solution) == {}
    # never serves less than the seed plan when the repaired plan fits
    assert len(solution.saturated) <= len(seed_plan.saturated)
    assert solution.total_cost <= 1.15 * seed_plan.total_cost


def test_tight_case_is_repaired_to_the_fewest_replicas() -> None:
    """The seed plan (1 replica of 2xG2 at 2 req/s) misses TTFT in simulation; verify adds
    replicas, and one fewer than it chose misses in the fresh simulation too."""
    system = tiny_system(capacity=64)
    seed_plan = optimize(system)
    solution = optimize(system, verify="simulate")
    d0, d = seed_plan.decisions["Premium-mistral_7b"], solution.decisions["Premium-mistral_7b"]
    assert fresh(system, d0).misses(ttft=d0.slo_ttft_ms, itl=d0.slo_itl_ms)  # needs repair
    assert d.status is DecisionStatus.MEETS_SLO
    assert d.replicas > d0.replicas
    assert misses_in_fresh_simulation(system, solution) == {}
    assert fresh(system, d, d.replicas - 1).misses(ttft=d.slo_ttft_ms, itl=d.slo_itl_ms)
    assert over_capacity(system, solution) == {}


def test_never_exceeds_capacity() -> None:
    """With room for only the seed plan, the repair cannot fit: best effort, not overcommit,
    and the saturation it reports is honest (fresh simulation: its replicas miss the target,
    the replicas it says it needs meet it)."""
    seed_plan = optimize(tiny_system(capacity=64))
    d0 = seed_plan.decisions["Premium-mistral_7b"]
    cards = d0.replicas * tiny_system().cards_per_replica(d0.model, d0.accelerator)
    system = tiny_system(capacity=cards)
    solution = optimize(system, verify="simulate")
    assert over_capacity(system, solution) == {}
    d = solution.decisions["Premium-mistral_7b"]
    assert d.status is DecisionStatus.SATURATED  # honest: short of what simulation needs
    assert d.needed_replicas > d.replicas
    assert fresh(system, d).misses(ttft=d.slo_ttft_ms, itl=d.slo_itl_ms)
    assert not fresh(system, d, d.needed_replicas).misses(ttft=d.slo_ttft_ms, itl=d.slo_itl_ms)


def test_unlimited_and_cached() -> None:
    system = load_system(SMALL)
    first = optimize(system, unlimited=True, verify="simulate")
    again = optimize(system, unlimited=True, verify="simulate")
    assert again.total_cost == first.total_cost
    assert "(0 cached)" not in again.message and " 0 simulations" in again.message


def test_budget_reports_what_it_could_not_verify() -> None:
    """A spent budget runs no simulation: the plan is the model's, every allocation it
    would have checked is named as not verified."""
    system = load_system(SMALL)
    seed_plan = optimize(system)
    solution = optimize(system, verify="simulate", verify_budget=1e-9)
    served = {n for n, d in seed_plan.decisions.items() if d.replicas > 0 and d.demand > 0}
    assert set(solution.unverified) == served and served
    assert f"NOT verified within the {1e-9:g} s budget: {len(served)} allocation(s)" in (
        solution.message)
    assert {n: d.replicas for n, d in solution.decisions.items()} == {
        n: d.replicas for n, d in seed_plan.decisions.items()}


def test_a_generous_budget_verifies_everything_and_holds() -> None:
    system = load_system(SMALL)
    solution = optimize(system, verify="simulate", verify_budget=600.0)
    assert solution.unverified == () and "NOT verified" not in solution.message
    assert misses_in_fresh_simulation(system, solution) == {}
    assert over_capacity(system, solution) == {}


def test_quantised_rates_round_up_within_two_percent() -> None:
    from controlloop.optimizer.verify import quantised

    rates = [0.01 * 1.0137**k for k in range(400)]
    for rate in rates:
        q = quantised(rate)
        assert rate <= q <= rate * 1.02 * (1 + 1e-9)
        assert quantised(q) == q  # grid points map to themselves
    assert len({quantised(r) for r in rates}) < len(rates)  # nearby loads share a key
