"""The optimizer on the sample configs and every scenario of config/examples/scenarios."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from controlloop.config import load_system
from controlloop.optimizer import DecisionStatus, Solution, SolveStatus, optimize
from controlloop.optimizer.solve import compare_plans
from controlloop.specs import SystemSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
SCENARIOS = sorted((EXAMPLES / "scenarios").glob("*.json"))
LIMITED = [p for p in SCENARIOS if "unlimited" not in p.name]


@cache
def _system(path: Path) -> SystemSpec:
    return load_system(path)


@cache
def _solve(path: Path, solver: str) -> Solution:
    # A 2 s MILP limit keeps the suite fast; the three hard partial-capacity scenarios
    # (large capacity/4, rate x2, x4) then may return greedy's plan (status fallback).
    return optimize(_system(path), solver=solver, time_limit=2.0)


def _cards_used(system: SystemSpec, solution: Solution) -> dict[str, int]:
    """Recount the cards from the decisions (independent of ``usage_by_type``)."""
    accs = system.accelerators_by_name()
    used: dict[str, int] = {}
    for d in solution.decisions.values():
        if not d.accelerator:
            continue
        acc = accs[d.accelerator]
        perf = system.perf(d.model, d.accelerator)
        assert perf is not None
        used[acc.type] = used.get(acc.type, 0) + d.replicas * perf.acc_count * acc.multiplicity
    return used


@pytest.mark.parametrize(("name", "total"), [("small", 43819.0), ("large", 19273.0)])
def test_greedy_reproduces_the_published_totals(name: str, total: float) -> None:
    solution = _solve(EXAMPLES / name, "greedy")
    assert solution.solver == "greedy"
    assert solution.total_cost == pytest.approx(total, abs=0.5)


def test_milp_is_optimal_and_cheaper_than_greedy_on_small() -> None:
    solution = _solve(EXAMPLES / "small", "milp")
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.total_cost < 43819.0
    assert all(d.meets_slo for d in solution.decisions.values())


def test_milp_serves_all_27_large_servers_within_capacity() -> None:
    system = _system(EXAMPLES / "large")
    solution = _solve(EXAMPLES / "large", "milp")
    assert len(solution.decisions) == 27
    assert all(d.status is DecisionStatus.MEETS_SLO for d in solution.decisions.values())
    capacity = system.capacity_by_type()
    for acc_type, used in _cards_used(system, solution).items():
        assert used <= capacity[acc_type]
    # greedy leaves one server saturated on the same input
    assert len(_solve(EXAMPLES / "large", "greedy").saturated) == 1


@pytest.mark.parametrize("solver", ["greedy", "milp"])
@pytest.mark.parametrize("path", LIMITED, ids=lambda p: p.stem)
def test_capacity_is_never_exceeded(path: Path, solver: str) -> None:
    system = _system(path)
    solution = _solve(path, solver)
    capacity = system.capacity_by_type()
    used = _cards_used(system, solution)
    for acc_type, cards in used.items():
        assert cards <= capacity.get(acc_type, 0), (acc_type, cards)
    for acc_type, usage in solution.usage_by_type.items():
        assert usage.cards_used == used.get(acc_type, 0)
        assert usage.capacity == capacity.get(acc_type, 0)


@pytest.mark.parametrize("path", LIMITED, ids=lambda p: p.stem)
def test_milp_is_never_worse_than_greedy(path: Path) -> None:
    """Served demand per priority first (higher priority decides), then cost."""
    milp, greedy = _solve(path, "milp"), _solve(path, "greedy")
    assert compare_plans(milp, greedy) <= 0
    served_m, served_g = milp.served_by_priority(), greedy.served_by_priority()
    for level in sorted(served_g):
        if abs(served_m[level] - served_g[level]) > 1e-6:
            assert served_m[level] > served_g[level]
            break
    else:
        assert milp.total_cost <= greedy.total_cost + 1e-6


@pytest.mark.parametrize("path", [p for p in SCENARIOS if "unlimited" in p.name],
                         ids=lambda p: p.stem)
def test_unlimited_takes_each_servers_lowest_value_candidate(path: Path) -> None:
    solution = _solve(path, "greedy")
    for name, d in solution.decisions.items():
        cands = solution.candidates[name]
        assert d.accelerator == cands[0].accelerator
        assert d.replicas == cands[0].replicas
        assert solution.usage_by_type[cands[0].acc_type].capacity is None
