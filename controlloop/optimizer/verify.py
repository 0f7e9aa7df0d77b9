"""``verify: simulate``: check each chosen allocation in token-level simulation and repair.

The chain of section 2 under-estimates TTFT at high load and with small
batches (docs/model-spec.md section 7), so a plan sized on it can miss targets once
served token by token. After the solver has chosen, every chosen candidate is
simulated at its per-replica load ``demand / replicas``; a candidate that
misses gets the fewest extra replicas with which the simulated means meet the
targets (a galloping search, then bisection). The repaired candidates replace
the originals and the solver runs again, so capacity and priorities are
respected exactly as before (a repaired candidate that no longer fits moves
the server to its next candidate or to best effort). This repeats until every
chosen candidate has been checked; each candidate is checked once, so it ends.

Simulations are seeded and cached across calls (module-level
:data:`DEFAULT_ORACLE`), so a daemon re-checking a stable plan runs none.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from controlloop.optimizer.calibrate import (
    SimOracle,
    SimSettings,
    replace_candidates,
    replica_params,
    resize_candidate,
)
from controlloop.optimizer.candidates import CandidateSet
from controlloop.optimizer.greedy import Assignment
from controlloop.optimizer.solution import Candidate, DecisionStatus, Solution
from controlloop.optimizer.solve import build_solution, compare_plans, solve
from controlloop.sim import ReplicaParams
from controlloop.specs import OptimizerSpec, SystemSpec

DEFAULT_ORACLE = SimOracle(SimSettings())
"""Shared by every call in the process: results are keyed by all simulation inputs."""

MAX_ROUNDS = 10
MAX_GROWTH = 8  # a candidate needing more than 8x (+8) its replicas is dropped


@dataclass
class _Repair:
    """Search for the fewest replicas ``n >= start`` meeting the targets in simulation."""

    cand: Candidate
    params: ReplicaParams
    demand: float
    ttft: float
    itl: float
    fail: int  # most replicas known to fail (start - 1 before any probe)
    ok: int = 0  # fewest replicas known to pass (0: none yet)
    probe: int = 0
    step: int = 1

    def __post_init__(self) -> None:
        self.probe = self.fail + 1
        self.limit = MAX_GROWTH * max(self.probe, 1) + MAX_GROWTH

    @property
    def done(self) -> bool:
        return (self.ok > 0 and self.ok - self.fail <= 1) or self.fail >= self.limit

    def update(self, passed: bool) -> None:
        if passed:
            self.ok = self.probe
        else:
            self.fail = self.probe
        if self.done:
            return
        if self.ok == 0:  # gallop: n+1, n+2, n+4, ...
            self.probe = min(self.fail + self.step, self.limit)
            self.step *= 2
        else:
            self.probe = (self.fail + self.ok) // 2


def verify_by_simulation(
    system: SystemSpec,
    cset: CandidateSet,
    options: OptimizerSpec,
    solution: Solution,
    *,
    oracle: SimOracle | None = None,
    budget_s: float | None = None,
) -> Solution:
    """Return a plan whose chosen allocations meet their targets in simulation.

    Saturated servers are checked at their full need (the candidate), so the
    shortfall they report is honest. Servers without decode/prefill data are
    not checked (the simulator runs on those parameters).

    ``budget_s`` bounds the wall time: no simulation starts after it; allocations whose
    check did not finish keep their model-sized candidate and are named in the message.
    """
    oracle = DEFAULT_ORACLE if oracle is None else oracle
    t0 = time.perf_counter()
    deadline = None if budget_s is None else t0 + budget_s
    sims0, hits0 = oracle.misses, oracle.hits
    checked: set[tuple[str, str]] = set()
    unverified: set[str] = set()
    repaired = dropped = rounds = 0
    for rounds in range(1, MAX_ROUNDS + 1):  # noqa: B007 (reported below)
        todo = _unchecked(system, cset, solution, checked)
        if not todo:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            unverified.update(n for n, _, _ in todo)
            break
        updates, unfinished = _repair_all(oracle, cset, todo, deadline)
        unverified.update(unfinished)
        checked.update((cset.candidates[n][j].server, cset.candidates[n][j].accelerator)
                       for n, j, _ in todo)
        if not updates:
            break
        repaired += sum(1 for c in updates.values() if c is not None)
        dropped += sum(1 for c in updates.values() if c is None)
        cset = replace_candidates(cset, updates, reason="misses a target in simulation "
                                  f"with up to {MAX_GROWTH}x the replicas")
        solution = _better(_in_place(system, cset, options, solution), solve(system, cset, options))
    note = (f"verified in simulation: {len(checked) - len(unverified)} allocations checked, "
            f"{repaired} given more replicas, {dropped} dropped, {rounds} rounds, "
            f"{oracle.misses - sims0} simulations ({oracle.hits - hits0} cached)")
    if unverified:
        shown = ", ".join(sorted(unverified)[:5]) + (", ..." if len(unverified) > 5 else "")
        note += (f"; NOT verified within the {budget_s:g} s budget: {len(unverified)} "
                 f"allocation(s) kept as sized by the model ({shown})")
    solution.unverified = tuple(sorted(unverified))
    solution.message = f"{solution.message}; {note}" if solution.message else note
    solution.timings["verify_sim"] = time.perf_counter() - t0
    return solution


def _in_place(
    system: SystemSpec, cset: CandidateSet, options: OptimizerSpec, solution: Solution
) -> Solution | None:
    """The same choices with the repaired candidates, if the extra replicas fit.

    A greedy re-solve with costlier candidates can reorder the servers and
    serve fewer of them although the repaired plan fits; this keeps that plan
    as an option. None for mixed placements or when it does not fit.
    """

    assigned: dict[str, object] = {}
    cards: dict[str, int] = {}
    for name, d in solution.decisions.items():
        if d.replicas <= 0:
            continue
        cand = next((c for c in cset.candidates.get(name, []) if c.accelerator == d.accelerator),
                    None)
        full = d.status in (DecisionStatus.MEETS_SLO, DecisionStatus.ZERO_LOAD)
        if cand is None or (full and d.needed_replicas != d.replicas):
            return None  # dropped candidate, or a mixed (heterogeneous) placement
        n = cand.replicas if full else min(d.replicas, cand.replicas)
        assigned[name] = Assignment(cand, n, "full" if n >= cand.replicas else "best-effort")
        cards[cand.acc_type] = cards.get(cand.acc_type, 0) + n * cand.units_per_replica
    if not options.unlimited:
        capacity = system.capacity_by_type()
        if any(used > capacity.get(t, 0) for t, used in cards.items()):
            return None
    return build_solution(system, cset, assigned, {}, solution.solver, options,
                          message=solution.message, gap=solution.gap)


def _better(a: Solution | None, b: Solution) -> Solution:
    """More demand served (priority by priority), then cheaper; ``b`` on a tie."""

    return a if a is not None and compare_plans(a, b) < 0 else b


def _unchecked(
    system: SystemSpec, cset: CandidateSet, solution: Solution, checked: set[tuple[str, str]]
) -> list[tuple[str, int, ReplicaParams]]:
    """Chosen candidates (server, index, sim params) not checked yet."""
    out = []
    for name, d in solution.decisions.items():
        ctx = cset.servers.get(name)
        if d.replicas <= 0 or ctx is None or ctx.zero_load or ctx.target is None:
            continue
        if (name, d.accelerator) in checked:
            continue
        j = next((i for i, c in enumerate(cset.candidates.get(name, []))
                  if c.accelerator == d.accelerator), None)
        perf = system.perf(d.model, d.accelerator)
        if j is None or perf is None:
            continue
        params = replica_params(perf, ctx.spec, cset.candidates[name][j].batch)
        if params is not None:
            out.append((name, j, params))
    return out


VERIFY_CHUNK = 16  # simulations between two looks at the deadline


def _repair_all(
    oracle: SimOracle, cset: CandidateSet, todo: list[tuple[str, int, ReplicaParams]],
    deadline: float | None = None,
) -> tuple[dict[tuple[str, int], Candidate | None], set[str]]:
    """Search all candidates together, one simulation each per round; searches the
    deadline cut short are left out of the updates and returned by server name."""
    searches: dict[tuple[str, int], _Repair] = {}
    for name, j, params in todo:
        ctx = cset.servers[name]
        cand = cset.candidates[name][j]
        assert ctx.target is not None
        searches[(name, j)] = _Repair(cand, params, ctx.demand, ctx.target.slo_ttft,
                                      ctx.target.slo_itl, fail=cand.replicas - 1)
    cut = False
    while not cut:
        active = [s for s in searches.values() if not s.done]
        if not active:
            break
        for i in range(0, len(active), VERIFY_CHUNK if deadline is not None else len(active)):
            if deadline is not None and time.perf_counter() >= deadline:
                cut = True
                break
            chunk = active[i:i + (VERIFY_CHUNK if deadline is not None else len(active))]
            # with a budget (the daemon) rates are quantised so later cycles hit the cache
            step = quantised if deadline is not None else float
            results = oracle.run([(s.params, step(s.demand / s.probe)) for s in chunk])
            for s, res in zip(chunk, results, strict=True):
                s.update(oracle.meets(res, ttft=s.ttft, itl=s.itl))
    unfinished = {name for (name, _), s in searches.items() if not s.done}
    updates: dict[tuple[str, int], Candidate | None] = {}
    for key, s in searches.items():
        if not s.done or s.ok == s.cand.replicas:
            continue  # holds as sized
        updates[key] = (
            resize_candidate(cset, s.cand, s.params, s.demand / s.ok, limited_by="simulation",
                             replicas=s.ok)
            if s.ok > 0 else None
        )
    return updates, unfinished


RATE_GRID = 1.02  # per-replica rates are simulated at the next point of this grid above


def quantised(rate: float) -> float:
    """``rate`` rounded up to a 2 % geometric grid: a slightly higher rate is the safe
    side (latency grows with load), and loads that drift a little between cycles map to
    the same key of the oracle's cache, so a daemon re-uses last cycle's simulations."""
    if rate <= 0:
        return rate
    return float(f"{RATE_GRID ** math.ceil(math.log(rate) / math.log(RATE_GRID) - 1e-9):.12g}")
