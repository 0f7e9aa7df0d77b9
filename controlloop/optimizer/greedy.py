"""Greedy solvers of docs/model-spec.md section 5: unlimited, and limited with priorities,
regret ordering and the best-effort (saturation) policies.

Ties are broken deterministically: candidates by value, then accelerator name in
reverse order (the order that reproduces the reference's published totals);
servers by (priority, regret descending, value descending, server name).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controlloop.optimizer.solution import Candidate
from controlloop.specs import SaturationPolicy


@dataclass
class ServerEntry:
    """A server in the greedy queue: its candidates best first and where it stands."""

    server: str
    priority: int
    candidates: Sequence[Candidate]  # sorted by value, ties by reverse accelerator name
    index: int = 0
    regret: float = math.inf  # value gap to the next candidate
    attempts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._update_regret()

    def _update_regret(self) -> None:
        nxt = self.index + 1
        if nxt < len(self.candidates):
            self.regret = self.candidates[nxt].value - self.candidates[self.index].value
        else:
            self.regret = math.inf

    @property
    def current(self) -> Candidate:
        return self.candidates[self.index]

    def order_key(self) -> tuple[int, float, float, str]:
        # high priority (small number) first, then larger regret, then larger value
        value = self.current.value if self.index < len(self.candidates) else 0.0
        return (self.priority, -self.regret, -value, self.server)

    def advance(self) -> bool:
        """Move to the next candidate; False when all are exhausted."""
        self.index += 1
        if self.index >= len(self.candidates):
            return False
        self._update_regret()
        return True


@dataclass
class Assignment:
    candidate: Candidate
    replicas: int  # may be fewer than candidate.replicas (best effort)
    how: str  # "full" | "best-effort"


@dataclass
class GreedyResult:
    assigned: dict[str, Assignment]
    unallocated: dict[str, str]  # server -> reason
    available: dict[str, int]  # cards left per type


def solve_unlimited(candidates: Mapping[str, Sequence[Candidate]]) -> GreedyResult:
    assigned = {
        name: Assignment(cands[0], cands[0].replicas, "full")
        for name, cands in candidates.items()
        if cands
    }
    return GreedyResult(assigned=assigned, unallocated={}, available={})


def solve_greedy(
    candidates: Mapping[str, Sequence[Candidate]],
    priorities: Mapping[str, int],
    capacity: Mapping[str, int],
    *,
    policy: SaturationPolicy,
    delayed_best_effort: bool,
) -> GreedyResult:
    available = dict(capacity)
    entries = [
        ServerEntry(name, priorities[name], cands) for name, cands in candidates.items() if cands
    ]
    entries.sort(key=ServerEntry.order_key)
    result = GreedyResult(assigned={}, unallocated={}, available=available)

    groups: list[list[ServerEntry]] = []
    for entry in entries:
        if groups and groups[-1][0].priority == entry.priority:
            groups[-1].append(entry)
        else:
            groups.append([entry])

    waiting: list[ServerEntry] = []
    for group in groups:
        short = _allocate(group, available, result)
        if delayed_best_effort:
            waiting += short
        else:
            _best_effort(short, available, result, policy)
    if delayed_best_effort:
        _best_effort(waiting, available, result, policy)
    return result


def _allocate(
    group: list[ServerEntry], available: dict[str, int], result: GreedyResult
) -> list[ServerEntry]:
    """Full allocations in regret order; returns the servers left without one."""
    queue = list(group)
    keys = [e.order_key() for e in queue]
    short: list[ServerEntry] = []
    while queue:
        top = queue.pop(0)
        keys.pop(0)
        cand = top.current
        need = cand.cards
        free = available.get(cand.acc_type, 0)
        if free >= need:
            available[cand.acc_type] = free - need
            result.assigned[top.server] = Assignment(cand, cand.replicas, "full")
            continue
        top.attempts.append(f"{cand.accelerator} needs {need} {cand.acc_type} cards, {free} free")
        if not top.advance():
            short.append(top)
            continue
        key = top.order_key()
        at = bisect.bisect_right(keys, key)
        keys.insert(at, key)
        queue.insert(at, top)
    for entry in short:
        entry.index = 0
        result.unallocated[entry.server] = "capacity exhausted: " + "; ".join(entry.attempts)
    return short


def _best_effort(
    short: list[ServerEntry],
    available: dict[str, int],
    result: GreedyResult,
    policy: SaturationPolicy,
) -> None:
    if not short or policy is SaturationPolicy.NONE:
        return
    if policy is SaturationPolicy.PRIORITY_EXHAUSTIVE:
        _allocate_maximally(short, available, result)
    elif policy is SaturationPolicy.ROUND_ROBIN:
        _allocate_round_robin(short, available, result)
    else:  # PriorityRoundRobin: round robin within each priority group, in order
        start = 0
        while start < len(short):
            end = start
            while end < len(short) and short[end].priority == short[start].priority:
                end += 1
            _allocate_round_robin(short[start:end], available, result)
            start = end


def _allocate_maximally(
    short: list[ServerEntry], available: dict[str, int], result: GreedyResult
) -> None:
    """Each in turn takes as many replicas as fit on its first candidate with room."""
    for entry in short:
        for cand in entry.candidates:
            fit = available.get(cand.acc_type, 0) // cand.units_per_replica
            if fit == 0:
                continue
            replicas = min(fit, cand.replicas)
            available[cand.acc_type] -= replicas * cand.units_per_replica
            _give(result, entry, cand, replicas)
            break


def _allocate_round_robin(
    short: list[ServerEntry], available: dict[str, int], result: GreedyResult
) -> None:
    """One replica at a time in turn, each on its first candidate type with room.

    As in the reference, a server picks its candidate when its turn first comes (after
    the servers before it took their first replica), not all up front: a type the
    servers before it just used up is not chosen. It then stays on that candidate until
    it has its need or the type has no room for another replica.
    """
    tickets: dict[int, Candidate] = {}
    given = [0] * len(short)
    active = [True] * len(short)
    progress = True
    while progress:
        progress = False
        for i, entry in enumerate(short):
            if not active[i]:
                continue
            cand = tickets.get(i)
            if cand is None:
                cand = next(
                    (c for c in entry.candidates
                     if available.get(c.acc_type, 0) >= c.units_per_replica),
                    None,
                )
                if cand is None:
                    active[i] = False
                    continue
                tickets[i] = cand
            if available[cand.acc_type] >= cand.units_per_replica and given[i] < cand.replicas:
                available[cand.acc_type] -= cand.units_per_replica
                given[i] += 1
                progress = True
            else:
                active[i] = False
    for i, entry in enumerate(short):
        if given[i]:
            _give(result, entry, tickets[i], given[i])


def _give(result: GreedyResult, entry: ServerEntry, cand: Candidate, replicas: int) -> None:
    result.assigned[entry.server] = Assignment(cand, replicas, "best-effort")
    reason = result.unallocated.pop(entry.server, "")
    result.assigned[entry.server].how = f"best-effort ({reason})" if reason else "best-effort"
