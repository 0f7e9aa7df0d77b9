"""The MILP's speed-ups (milp.py): dominated-candidate pruning, the LP cuts, warm starts
and time shares. Each must keep the plan optimal (or the greedy plan's equal or better)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from controlloop.config import load_system
from controlloop.optimizer import optimize
from controlloop.optimizer.candidates import build_candidates
from controlloop.optimizer.milp import MilpServer, _max_replicas, _Model, _prune_dominated
from controlloop.optimizer.solution import Candidate

ROOT = Path(__file__).resolve().parents[2]


def _cand(acc: str, acc_type: str, *, units: int, rate: float, replicas: int, cost: float) -> Candidate:
    return Candidate(
        server="s", accelerator=acc, acc_type=acc_type, batch=8, replicas=replicas, cost=cost,
        value=cost, units_per_replica=units, rate_per_replica=rate, itl_ms=1.0, ttft_ms=1.0,
        rho=0.5, limited_by="stability",
    )


def test_prune_drops_only_dominated_candidates_of_the_same_type() -> None:
    server = MilpServer("s", 1, 10.0, "", 0.0)
    one = _cand("A100", "A100", units=1, rate=2.0, replicas=5, cost=50.0)
    four = _cand("4xA100", "A100", units=4, rate=1.5, replicas=7, cost=280.0)  # worse on all
    other = _cand("H100", "H100", units=4, rate=1.0, replicas=10, cost=400.0)  # other type
    kept, dropped = _prune_dominated([one, four, other], server)
    assert kept == [one, other]
    assert dropped == {four: one}


def test_prune_keeps_a_candidate_better_on_one_count() -> None:
    server = MilpServer("s", 1, 10.0, "", 0.0)
    cheap = _cand("A100", "A100", units=1, rate=2.0, replicas=5, cost=50.0)
    fast = _cand("4xA100", "A100", units=4, rate=9.0, replicas=2, cost=80.0)  # more cards, faster
    kept, dropped = _prune_dominated([cheap, fast], server)
    assert kept == [cheap, fast] and not dropped


def test_moving_penalty_counts_in_dominance() -> None:
    """The current accelerator has no move penalty: a costlier current one is kept."""
    server = MilpServer("s", 1, 10.0, "4xA100", 280.0)
    one = _cand("A100", "A100", units=1, rate=2.0, replicas=5, cost=50.0)
    four = _cand("4xA100", "A100", units=4, rate=2.0, replicas=5, cost=50.0)
    kept, _ = _prune_dominated([one, four], server)
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
    fits = {s.name: [c for c in cset.candidates[s.name] if _max_replicas(c, capacity, partial) > 0]
            for s in servers}
    active = [s for s in servers if fits[s.name]]
    model = _Model(active, fits, capacity, partial, False, partial)
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


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_optimize", ROOT / "benchmarks" / "bench_optimize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_optimize"] = module
    spec.loader.exec_module(module)
    return module


def test_milp_on_a_saturated_fleet_beats_greedy_in_time() -> None:
    """60 servers, capacity short: the MILP returns its own plan (no fallback) within the
    time limit, serving every priority level at least as much as greedy."""
    bench = _bench_module()
    system = bench.fleet(load_system(ROOT / "config" / "examples" / "large"), 60)
    greedy = optimize(system, solver="greedy", unlimited=False)
    milp = optimize(system, solver="milp", unlimited=False, time_limit=4.0)
    assert milp.solver == "milp", milp.message
    assert milp.timings["solve"] < 4.0 + 2.0
    g, m = greedy.served_by_priority(), milp.served_by_priority()
    for level in sorted(g):
        if abs(m[level] - g[level]) > 1e-6:
            assert m[level] > g[level]
            break
