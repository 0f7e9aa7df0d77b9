"""Human-readable renderings of a :class:`Solution`: the plan table and ``--explain``.

Pure functions from a solution to text (or plain dicts); the command does the I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controlloop.optimizer.solution import (
    Candidate,
    DecisionStatus,
    ServerDecision,
    Solution,
)

EPS = 1e-9


def render_table(rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None) -> str:
    """Plain aligned columns; the first row is the header."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    align = list(right) if right is not None else [False] * len(widths)
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if align[i] else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _against(value: float | None, target: float) -> str:
    """``37.2/40``: predicted against the SLO (``-`` for no target)."""
    slo = f"{target:g}" if target > 0 else "-"
    return f"{_num(value)}/{slo}"


def _arrow(before: str, after: str) -> str:
    """``from->to``; just ``to`` when nothing changes or there was nothing before."""
    if before == after or not before:
        return after or "-"
    return f"{before}->{after or '-'}"


def _status(d: ServerDecision) -> str:
    if d.status is DecisionStatus.SATURATED:
        return f"saturated {d.replicas}/{d.needed_replicas} ({d.served_fraction:.0%})"
    return d.status.value


def plan_rows(solution: Solution) -> list[list[str]]:
    """One row per server, by priority then name."""
    header = [
        "SERVER", "CLASS", "PRI", "MODEL", "ACCELERATOR", "REPLICAS", "BATCH",
        "ITL ms", "TTFT ms", "COST", "STATUS",
    ]
    rows = [header]
    for d in sorted(solution.decisions.values(), key=lambda d: (d.priority, d.server)):
        rows.append([
            d.server,
            d.service_class,
            str(d.priority),
            d.model,
            _arrow(d.change.from_accelerator, d.change.to_accelerator),
            _arrow(str(d.change.from_replicas), str(d.change.to_replicas)),
            str(d.batch) if d.batch else "-",
            _against(d.itl_ms, d.slo_itl_ms),
            _against(d.ttft_ms, d.slo_ttft_ms),
            f"{d.cost:.2f}",
            _status(d),
        ])
    return rows


def format_solution(solution: Solution) -> str:
    """The whole plan for people: servers, usage per type, totals."""
    out = [render_table(plan_rows(solution), right=[False] * 5 + [True] * 5 + [False])]
    usage = [["TYPE", "CARDS", "COST"]]
    for t, u in sorted(solution.usage_by_type.items()):
        if u.cards_used == 0 and not u.capacity:
            continue
        cap = "unlimited" if u.capacity is None else str(u.capacity)
        usage.append([t, f"{u.cards_used}/{cap}", f"{u.cost:.2f}"])
    out += ["", render_table(usage, right=[False, True, True])]
    n = len(solution.decisions)
    short = len(solution.saturated) + len(solution.unallocated)
    gap = "" if solution.gap is None else f", gap {solution.gap:.2%}"
    timings = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in solution.timings.items())
    out += [
        "",
        f"total cost: {solution.total_cost:.2f} cents/h ({n} servers, {n - short} served fully, "
        f"{len(solution.saturated)} saturated, {len(solution.unallocated)} unallocated)",
        f"solver: {solution.solver}, status {solution.status.value}{gap}",
        f"message: {solution.message}",
        f"timings: {timings}",
    ]
    return "\n".join(out) + "\n"


# --- --explain --------------------------------------------------------------------------------


class UnknownServer(LookupError):
    """``--explain`` named a server the solution does not have."""

    def __init__(self, name: str, known: Sequence[str]):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown server '{name}'{hint}")


@dataclass(frozen=True)
class CandidateLine:
    accelerator: str
    rate_per_replica: float | None  # req/s; None for a rejected accelerator
    replicas: int | None
    cost: float | None
    value: float | None
    itl_ms: float | None
    ttft_ms: float | None
    limited_by: str
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {
            "accelerator": self.accelerator,
            "ratePerReplica": self.rate_per_replica,
            "replicas": self.replicas,
            "cost": self.cost,
            "value": self.value,
            "itlAverage": self.itl_ms,
            "ttftAverage": self.ttft_ms,
            "limitedBy": self.limited_by,
            "verdict": self.verdict,
        }


def _free_cards(solution: Solution, acc_type: str, d: ServerDecision) -> int | None:
    """Cards of ``acc_type`` free for this server in the final plan (its own given back)."""
    usage = solution.usage_by_type.get(acc_type)
    if usage is None or usage.capacity is None:
        return None
    own = sum(
        c.units_per_replica * d.replicas
        for c in solution.candidates.get(d.server, [])
        if c.accelerator == d.accelerator and c.acc_type == acc_type
    )
    return usage.capacity - usage.cards_used + own


def _verdict(solution: Solution, d: ServerDecision, cand: Candidate) -> str:
    chosen = d.accelerator
    if cand.accelerator == chosen:
        if d.status is DecisionStatus.SATURATED:
            return f"chosen (best effort: {d.replicas} of {cand.replicas} replicas)"
        return "chosen"
    chosen_cand = next(
        (c for c in solution.candidates.get(d.server, []) if c.accelerator == chosen), None
    )
    if chosen_cand is not None and cand.value > chosen_cand.value + EPS:
        return f"higher value than the chosen (+{cand.value - chosen_cand.value:.2f})"
    free = _free_cards(solution, cand.acc_type, d)
    if free is not None and cand.cards > free:
        return f"did not fit capacity: needs {cand.cards} {cand.acc_type} cards, {free} free"
    if chosen_cand is not None and cand.value >= chosen_cand.value - EPS:
        return "same value as the chosen; the tie goes to the later accelerator name"
    if chosen_cand is not None:
        return "fits alone, but the solver's plan is better overall with the chosen one"
    return "not chosen"


def explain_lines(solution: Solution, server: str) -> list[CandidateLine]:
    """Every candidate of ``server`` (best value first), then the rejected accelerators."""
    if server not in solution.decisions:
        raise UnknownServer(server, sorted(solution.decisions))
    d = solution.decisions[server]
    lines = [
        CandidateLine(
            accelerator=c.accelerator,
            rate_per_replica=c.rate_per_replica,
            replicas=c.replicas,
            cost=c.cost,
            value=c.value,
            itl_ms=c.itl_ms,
            ttft_ms=c.ttft_ms,
            limited_by=c.limited_by,
            verdict=_verdict(solution, d, c),
        )
        for c in solution.candidates.get(server, [])
    ]
    for r in solution.rejected.get(server, []):
        lines.append(
            CandidateLine(r.accelerator, None, None, None, None, None, None, "-",
                          f"rejected: {r.reason}")
        )
    return lines


def explain_json(solution: Solution, server: str) -> dict[str, Any]:
    lines = explain_lines(solution, server)
    d = solution.decisions[server]
    return {
        "server": server,
        "status": d.status.value,
        "accelerator": d.accelerator,
        "replicas": d.replicas,
        "reason": d.reason,
        "candidates": [line.to_json() for line in lines],
    }


def format_explain(solution: Solution, server: str) -> str:
    lines = explain_lines(solution, server)
    d = solution.decisions[server]
    slo = ", ".join(
        f"{name} {v:g}"
        for name, v in (("ITL", d.slo_itl_ms), ("TTFT", d.slo_ttft_ms), ("TPS", d.slo_tps))
        if v > 0
    )
    head = [
        f"server {d.server}: class {d.service_class} (priority {d.priority}), model {d.model}",
        f"  load {d.load.arrival_rate:g} req/min, {d.load.avg_in_tokens:g} in / "
        f"{d.load.avg_out_tokens:g} out tokens; demand {d.demand:.4g} req/s; "
        f"SLO {slo or 'none'}",
        f"  decision: {_status(d)}, {d.accelerator or 'no accelerator'} x{d.replicas}: "
        f"{d.reason}",
        "",
    ]
    rows = [["ACCELERATOR", "RATE req/s", "REPLICAS", "COST", "VALUE", "ITL ms", "TTFT ms",
             "BOUND", "VERDICT"]]
    for ln in lines:
        rows.append([
            ln.accelerator,
            "-" if ln.rate_per_replica is None else f"{ln.rate_per_replica:.4g}",
            "-" if ln.replicas is None else str(ln.replicas),
            _num(ln.cost, 2),
            _num(ln.value, 2),
            _num(ln.itl_ms),
            _num(ln.ttft_ms),
            ln.limited_by,
            ln.verdict,
        ])
    if len(rows) == 1:
        rows.append(["(none)", "-", "-", "-", "-", "-", "-", "-", d.reason])
    table = render_table(rows, right=[False] + [True] * 6 + [False, False])
    return "\n".join(head) + table + "\n"
