"""The MILP's speed-ups (milp.py): dominated-candidate pruning, the LP cuts, warm starts
and time shares. Each must keep the plan optimal (or the greedy plan's equal or better)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controlloop.config import load_system
from controlloop.demo.fleet import fleet
from controlloop.optimizer import optimize
from controlloop.optimizer.candidates import build_candidates
from controlloop.optimizer.milp_model import MilpModel, MilpServer, max_replicas, prune_dominated
from controlloop.optimizer.solution import Candidate

ROOT = Path(__file__).resolve().parents[2]


def _cand(
    acc: str, acc_type: str, *, units: int, rate: float, replicas: int, cost: float
) -> Candidate:
    return Candidate(
        server="s",
        accelerator=acc,
        acc_type=acc_type,
        batch=8,
        replicas=replicas,
        cost=cost,
        value=cost,
        units_per_replica=units,
        rate_per_replica=rate,
        itl_ms=1.0,
        ttft_ms=1.0,
        rho=0.5,
        limited_by="stability",
    )


def test_prune_drops_only_dominated_candidates_of_the_same_type() -> None:
    server = MilpServer("s", 1, 10.0, "", 0.0)
    one = _cand("A100", "A100", units=1, rate=2.0, replicas=5, cost=50.0)
    four = _cand("4xA100", "A100", units=4, rate=1.5, replicas=7, cost=280.0)  # worse on all
    other = _cand("H100", "H100", units=4, rate=1.0, replicas=10, cost=400.0)  # other type
    kept, dropped = prune_dominated([one, four, other], server)
    assert kept == [one, other]
    assert dropped == {four: one}


def test_prune_keeps_a_candidate_better_on_one_count() -> None:
    server = MilpServer("s", 1, 10.0, "", 0.0)
    cheap = _cand("A100", "A100", units=1, rate=2.0, replicas=5, cost=50.0)
    fast = _cand("4xA100", "A100", units=4, rate=9.0, replicas=2, cost=80.0)  # more cards, faster
    kept, dropped = prune_dominated([cheap, fast], server)
    assert kept == [cheap, fast] and not dropped


def test_moving_penalty_counts_in_dominance() -> None:
    """The current accelerator has no move penalty: a costlier current one is kept."""
    server = MilpServer("s", 1, 10.0, "4xA100", 280.0)
    one = _cand("A100", "A100", units=1, rate=2.0, replicas=5, cost=50.0)
    four = _cand("4xA100", "A100", units=4, rate=2.0, replicas=5, cost=50.0)
    kept, _ = prune_dominated([one, four], server)
    assert four in kept


@pytest.mark.parametrize("partial", [True, False])
def test_cuts_hold_at_integer_points(partial: bool) -> None:
    """Every row of the model (with the envelope and choice cuts) holds at random integer
    plans completed with their largest served fractions: the cuts remove no plan."""
    system = load_system(ROOT / "config" / "examples" / "large")
    cset = build_candidates(system)
    capacity = system.capacity_by_type()
    servers = [
        MilpServer(n, c.priority, c.demand, c.current_accelerator, c.current_cost)
        for n, c in sorted(cset.servers.items())
    ]
    fits = {s.name: [c for c in cset.candidates[s.name] if max_replicas(c, capacity, partial) > 0]
            for s in servers}
    active = [s for s in servers if fits[s.name]]
    model = MilpModel(active, fits, capacity, partial, False, partial)
    rng = np.random.default_rng(7)
    matrix = model.matrix.toarray()
    for _ in range(200):
        x = np.zeros(model.n_c)
        for i in range(model.n_s):
            ks = np.flatnonzero(model.owner == i)
            if rng.random() < 0.2:
                continue
            k = rng.choice(ks)
            x[k] = model.upper[k] if not partial else rng.integers(0, model.upper[k] + 1)
        point = model.complete(x)
        rows = matrix @ point
        # rows: link (n_c), one accelerator (n_s), capacity (types), then the rest
        capacity_rows = slice(model.n_c + model.n_s, model.n_c + model.n_s + len(model.types))
        ok = (rows >= model.row_lower - 1e-7) & (rows <= model.row_upper + 1e-7)
        ok[capacity_rows] = True  # random plans may exceed capacity; that row is not a cut
        assert ok.all(), np.flatnonzero(~ok)


def test_milp_on_a_saturated_fleet_beats_greedy_in_time() -> None:
    """60 servers, capacity short: the MILP returns its own plan (no fallback) within the
    time limit, serving every priority level at least as much as greedy."""
    system = fleet(load_system(ROOT / "config" / "examples" / "large"), 60)
    greedy = optimize(system, solver="greedy", unlimited=False)
    milp = optimize(system, solver="milp", unlimited=False, time_limit=4.0)
    assert milp.solver == "milp", milp.message
    assert milp.timings["solve"] < 4.0 + 2.0
    g, m = greedy.served_by_priority(), milp.served_by_priority()
    for level in sorted(g):
        if abs(m[level] - g[level]) > 1e-6:
            assert m[level] > g[level]
            break


def _fleet_stages(n: int):  # type: ignore[no-untyped-def]
    """The model of an n-server bench fleet (policy RoundRobin) with priorities 1-2 fixed
    fully served, as in the priority-3 stage, and greedy's plan as a point."""
    from controlloop.optimizer.greedy import solve_greedy
    from controlloop.optimizer.milp import _Stages
    from controlloop.specs import SaturationPolicy

    system = fleet(load_system(ROOT / "config" / "examples" / "large"), n)
    cset = build_candidates(system)
    capacity = system.capacity_by_type()
    servers = [
        MilpServer(name, c.priority, c.demand, c.current_accelerator, c.current_cost)
        for name, c in sorted(cset.servers.items())
    ]
    fits = {s.name: prune_dominated([c for c in cset.candidates[s.name]
                                      if max_replicas(c, capacity, True) > 0], s)[0]
            for s in servers}
    active = [s for s in servers if fits[s.name]]
    model = MilpModel(active, fits, capacity, True, False, True)
    greedy = solve_greedy({s.name: fits[s.name] for s in active},
                          {s.name: s.priority for s in active}, capacity,
                          policy=SaturationPolicy.ROUND_ROBIN, delayed_best_effort=False)
    start = model.start_vector(
        {k: [(a.candidate, a.replicas)] for k, a in greedy.assigned.items()}, {}
    )
    stages = _Stages(model, start, start, 1e18, 1e-4, 0.0)
    for level in (1, 2):
        members = np.flatnonzero(model.priority == level)
        assert model.level_value(start, members) == pytest.approx(len(members))
        stages._fix_served(members)
        stages.fixed.append((members, float(len(members))))
    return model, stages, start


def _assert_feasible(model: MilpModel, stages, point: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    x = point[: model.n_c]
    assert np.all(x == np.rint(x)) and np.all(x >= 0) and np.all(x <= model.upper)
    # one accelerator
    assert np.all(np.bincount(model.owner, weights=(x > 0), minlength=model.n_s) <= 1)
    used = np.bincount(model.t_rows, weights=model.units * x, minlength=len(model.types))
    assert np.all(used <= model.caps)
    assert stages._meets_levels(point)


def _bounds(stages) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    lp = stages.h.getLp()
    return np.asarray(lp.col_lower_), np.asarray(lp.col_upper_)


def test_dive_plan_is_feasible_beats_greedy_and_respects_its_lp_bound() -> None:
    """The LP-guided dive (priority-3 stage of a 100-server fleet) returns an integer plan
    within capacity that keeps priorities 1-2 fully served, serves priority 3 more than
    greedy and no more than the LP bound; the model's bounds are restored afterwards."""
    model, stages, greedy = _fleet_stages(100)
    members = np.flatnonzero(model.priority == 3)
    objective = np.zeros(model.n_var)
    objective[model.i_f[members]] = -1.0
    before = _bounds(stages)
    plan = stages._dive(objective, 5.0, "priority 3")
    assert plan is not None, stages.stages
    _assert_feasible(model, stages, plan)
    value = model.level_value(plan, members)
    assert value > model.level_value(greedy, members)
    assert stages.lp_point is not None
    assert value <= -float(objective @ stages.lp_point) + 1e-6
    after = _bounds(stages)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_neighbourhood_never_costs_more_than_its_start() -> None:
    """The restricted MILP of min-cost starts from a feasible plan and returns a feasible plan
    no dearer than it, with the same service; bounds are restored."""
    model, stages, greedy = _fleet_stages(60)
    members = np.flatnonzero(model.priority == 3)
    level = model.level_value(greedy, members)
    stages.h.addRow(level - 1e-7, np.inf, len(members), model.i_f[members].astype(np.int32),
                    np.ones(len(members)))
    stages.fixed.append((members, level - 1e-7))
    before = _bounds(stages)
    plan = stages._neighbourhood(model.cost, greedy, 5.0, "min-cost")
    assert plan is not None, stages.stages
    _assert_feasible(model, stages, plan)
    assert float(model.cost @ plan) <= float(model.cost @ greedy) + 1e-6
    after = _bounds(stages)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_milp_on_300_servers_reports_both_gaps_and_beats_greedy() -> None:
    """300 servers, 6 s: the MILP's own plan, priority by priority at least greedy's, with the
    level and cost gaps both in the message; the level gap is the dive's LP-bound gap."""
    system = fleet(load_system(ROOT / "config" / "examples" / "large"), 300)
    greedy = optimize(system, solver="greedy", unlimited=False)
    milp = optimize(system, solver="milp", unlimited=False, time_limit=6.0)
    assert milp.solver == "milp", milp.message
    assert "dive" in milp.message and "gaps: service levels" in milp.message
    assert milp.gap is not None and milp.gap < 0.2
    g, m = greedy.served_by_priority(), milp.served_by_priority()
    for level in sorted(g):
        if abs(m[level] - g[level]) > 1e-6:
            assert m[level] > g[level]
            break
