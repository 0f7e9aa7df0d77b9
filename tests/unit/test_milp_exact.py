"""The MILP against exhaustive enumeration on tiny random problems.

Independent truth: every plan (one candidate and a replica count per server, or none)
is enumerated, its served fractions and cost recounted from the candidates' raw fields,
and the lexicographic optimum (served fraction per priority level, best level first,
then cost plus move penalty) is taken. The problems are built so that the dominance
pruning (``prune_dominated``) has work to do: same-type candidates with 1, 2 and 4 cards
per replica whose per-card rate and price are equal or worse.
"""

from __future__ import annotations

import itertools

import pytest

from controlloop.optimizer import milp, milp_dw
from controlloop.optimizer.candidates import move_penalty
from controlloop.optimizer.milp import MilpServer, solve_milp
from controlloop.optimizer.milp_model import max_replicas, prune_dominated
from controlloop.optimizer.solution import Candidate
from tests.helpers.milp_problems import TYPES
from tests.helpers.milp_problems import problem as _problem


def _score(plan: dict[str, tuple[Candidate, int]], servers: list[MilpServer]
           ) -> tuple[dict[int, float], float]:
    served: dict[int, float] = {}
    cost = 0.0
    for s in servers:
        served.setdefault(s.priority, 0.0)
        if s.name not in plan:
            continue
        cand, n = plan[s.name]
        served[s.priority] += min(1.0, cand.rate_per_replica * n / s.demand)
        cost += cand.cost / cand.replicas * n
        if cand.accelerator != s.current_accelerator:
            cost += move_penalty(s.current_cost, cand.cost)
    return served, cost


def _brute_force(servers: list[MilpServer], candidates: dict[str, list[Candidate]],
                 capacity: dict[str, int], partial: bool
                 ) -> tuple[dict[int, float], float]:
    options = []
    for s in servers:
        opts: list[tuple[Candidate, int] | None] = [None]
        for c in candidates[s.name]:
            fit = capacity[c.acc_type] // c.units_per_replica
            counts = range(1, min(c.replicas, fit) + 1) if partial else (
                [c.replicas] if c.replicas <= fit else [])
            opts += [(c, n) for n in counts]
        options.append(opts)
    best: tuple[tuple[float, ...], float] | None = None
    levels = sorted({s.priority for s in servers})
    for combo in itertools.product(*options):
        used = dict.fromkeys(TYPES, 0)
        for o in combo:
            if o is not None:
                used[o[0].acc_type] += o[0].units_per_replica * o[1]
        if any(used[t] > capacity[t] for t in TYPES):
            continue
        plan = {s.name: o for s, o in zip(servers, combo, strict=True) if o is not None}
        served, cost = _score(plan, servers)
        key = (tuple(-round(served[p], 9) for p in levels), cost)
        if best is None or key < best:
            best = key
    assert best is not None
    return {p: -v for p, v in zip(levels, best[0], strict=True)}, best[1]


@pytest.mark.parametrize("bounded", ["trial", "always", "unconverged"])
@pytest.mark.parametrize("partial", [True, False])
@pytest.mark.parametrize("seed", range(25))
def test_milp_reaches_the_enumerated_optimum(
    seed: int, partial: bool, bounded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``always``: the per-type packing bound, its cut and its fixings run in every level
    stage (HiGHS settles these tiny problems within its trial, which otherwise skips them);
    ``unconverged``: the bound also stops after 2 rounds, so some stages' bounds converge
    and others' do not."""
    if bounded != "trial":
        monkeypatch.setattr(milp, "PACKING_TRIAL", 0.0)
    if bounded == "unconverged":
        monkeypatch.setattr(milp_dw, "MAX_ROUNDS", 2)
    servers, candidates, capacity = _problem(seed)
    want_served, want_cost = _brute_force(servers, candidates, capacity, partial)
    result = solve_milp(servers, candidates, capacity, heterogeneous=False,
                        allow_partial=partial, time_limit=10.0, mip_gap=1e-9)
    plan = {name: parts[0] for name, parts in result.assigned.items()}
    assert all(len(parts) == 1 for parts in result.assigned.values())
    served, cost = _score(plan, servers)
    for level, want in want_served.items():
        assert served[level] == pytest.approx(want, rel=1e-5, abs=1e-6), (level, result.message)
    assert cost == pytest.approx(want_cost, rel=1e-6), result.message


@pytest.mark.parametrize("seed", range(25))
def test_pruning_drops_candidates_yet_loses_no_plan(seed: int) -> None:
    """Every dropped candidate's every use is matched by its replacement: no more cards,
    at least the service, no more cost (checked use by use, from the raw fields)."""
    servers, candidates, capacity = _problem(seed)
    for s in servers:
        kept, dropped = prune_dominated(candidates[s.name], s, capacity, True)
        assert len(kept) + len(dropped) == len(candidates[s.name])
        for b, a in dropped.items():
            assert a.acc_type == b.acc_type
            for n in range(1, max_replicas(b, capacity, True) + 1):
                served_b = min(1.0, b.rate_per_replica * n / s.demand)
                # the fewest replicas of a that serve as much
                m = next(m for m in range(1, max_replicas(a, capacity, True) + 1)
                         if min(1.0, a.rate_per_replica * m / s.demand) >= served_b - 1e-9)
                assert m * a.units_per_replica <= n * b.units_per_replica
                _, cost_a = _score({s.name: (a, m)}, [s])
                _, cost_b = _score({s.name: (b, n)}, [s])
                assert cost_a <= cost_b + 1e-9


def test_pruning_finds_something_to_drop() -> None:
    """The generator does produce dominated candidates (else the test above is empty)."""
    dropped = 0
    for seed in range(25):
        servers, candidates, capacity = _problem(seed)
        dropped += sum(len(prune_dominated(candidates[s.name], s, capacity, True)[1])
                       for s in servers)
    assert dropped >= 20
