"""An independent, literal rendering of the reference (seed) optimizer's greedy, for tests.

Written from the reference's algorithm, step by step as it does it (entries with a
current index and a delta, binary insertion, tickets made on a server's first
round-robin turn, cost scaled by replicas given / needed), not from our
``optimizer/greedy.py``. It reads only the candidates' data (accelerator, type,
replicas, cards per replica, value, cost, ITL/TTFT), so it checks the allocation
logic; the sizing is checked against the reference's published figures separately.

Two things the reference leaves to Go's map order are fixed here as the published
results need them: candidates of equal value in reverse accelerator-name order, and
servers of equal (priority, delta, value) by name.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controlloop.optimizer.solution import Candidate

BIG = 3.4028234663852886e38  # the reference's "no next candidate" delta (MaxFloat32)


@dataclass
class RefAllocation:
    accelerator: str
    replicas: int
    cost: float
    itl_ms: float
    ttft_ms: float
    full: bool


@dataclass
class _Entry:
    name: str
    priority: int
    allocs: list[Candidate]
    cur: int = 0
    delta: float = BIG
    given: int = 0
    ticket: Candidate | None = field(default=None)

    def key(self) -> tuple[int, float, float, str]:
        return (self.priority, -self.delta, -self.allocs[self.cur].value, self.name)


def solve(
    candidates: Mapping[str, Sequence[Candidate]],
    priorities: Mapping[str, int],
    capacity: Mapping[str, int],
    *,
    policy: str,
    delayed: bool,
) -> dict[str, RefAllocation]:
    available = dict(capacity)
    entries = []
    for name, cands in candidates.items():
        if not cands:
            continue
        allocs = sorted(cands, key=lambda c: c.accelerator, reverse=True)
        allocs.sort(key=lambda c: c.value)
        e = _Entry(name, priorities[name], allocs)
        e.delta = allocs[1].value - allocs[0].value if len(allocs) > 1 else BIG
        entries.append(e)
    entries.sort(key=_Entry.key)
    out: dict[str, RefAllocation] = {}
    groups: list[list[_Entry]] = []
    for e in entries:
        if groups and groups[-1][0].priority == e.priority:
            groups[-1].append(e)
        else:
            groups.append([e])
    pending: list[_Entry] = []
    for group in groups:
        unallocated = _full_pass(group, available, out)
        if delayed:
            pending += unallocated
        else:
            _saturated(unallocated, available, out, policy)
    if delayed:
        _saturated(pending, available, out, policy)
    return out


def _full_pass(group: list[_Entry], available: dict[str, int],
               out: dict[str, RefAllocation]) -> list[_Entry]:
    queue = list(group)
    unallocated: list[_Entry] = []
    while queue:
        top = queue.pop(0)
        alloc = top.allocs[top.cur]
        count = alloc.replicas * alloc.units_per_replica
        if available.get(alloc.acc_type, 0) >= count:
            available[alloc.acc_type] -= count
            out[top.name] = RefAllocation(alloc.accelerator, alloc.replicas, alloc.cost,
                                          alloc.itl_ms, alloc.ttft_ms, True)
            continue
        top.cur += 1
        if top.cur + 1 < len(top.allocs):
            top.delta = top.allocs[top.cur + 1].value - top.allocs[top.cur].value
        elif top.cur == len(top.allocs):
            unallocated.append(top)
            continue
        else:
            top.delta = BIG
        keys = [e.key() for e in queue]
        queue.insert(bisect.bisect_left(keys, top.key()), top)
    return unallocated


def _scaled(alloc: Candidate, n: int) -> RefAllocation:
    # cost scaled by the fraction of the needed replicas given; ITL/TTFT as sized
    return RefAllocation(alloc.accelerator, n, alloc.cost * n / alloc.replicas,
                         alloc.itl_ms, alloc.ttft_ms, n >= alloc.replicas)


def _saturated(entries: list[_Entry], available: dict[str, int],
               out: dict[str, RefAllocation], policy: str) -> None:
    if policy == "PriorityExhaustive":
        for e in entries:
            for alloc in e.allocs:
                n = min(available.get(alloc.acc_type, 0) // alloc.units_per_replica,
                        alloc.replicas)
                if n > 0:
                    available[alloc.acc_type] -= n * alloc.units_per_replica
                    out[e.name] = _scaled(alloc, n)
                    break
    elif policy == "RoundRobin":
        _round_robin(entries, available, out)
    elif policy == "PriorityRoundRobin":
        i = 0
        while i < len(entries):
            j = i
            while j < len(entries) and entries[j].priority == entries[i].priority:
                j += 1
            _round_robin(entries[i:j], available, out)
            i = j


def _round_robin(entries: list[_Entry], available: dict[str, int],
                 out: dict[str, RefAllocation]) -> None:
    live = {e.name for e in entries}
    while live:
        for e in entries:
            if e.name not in live:
                continue
            if e.ticket is None:  # chosen on the server's first turn
                e.ticket = next((a for a in e.allocs
                                 if available.get(a.acc_type, 0) >= a.units_per_replica), None)
                if e.ticket is None:
                    live.discard(e.name)
                    continue
            t = e.ticket
            # as the reference: min(replicas that fit, need) > 0 (no cap at the need: a
            # short server cannot reach it, every type it tried had less room)
            if min(available[t.acc_type] // t.units_per_replica, t.replicas) > 0:
                e.given += 1
                available[t.acc_type] -= t.units_per_replica
            else:
                live.discard(e.name)
    for e in entries:
        if e.given and e.ticket is not None:
            out[e.name] = _scaled(e.ticket, e.given)
