"""A bounded, thread-safe history of compact cycle snapshots for the dashboard."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from controlloop.loop.cycle import CycleReport, ServerReport
from controlloop.specs import SystemSpec

DEFAULT_HISTORY = 720  # cycles: 12 h at the default 60 s interval
# server rows over all kept cycles: a row is ~1.5 KB in memory, so 720 cycles of a
# 3,000-server fleet would be ~3 GB; 20,000 rows are ~30 MB (720 cycles up to 27 servers,
# 6 cycles at 3,000). The oldest cycles go first; the newest is always kept.
DEFAULT_MAX_ROWS = 20_000


def _num(value: Any) -> float | None:
    """A finite float or None (JSON has no NaN/inf; the page draws None as a gap)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None and tuples as lists, for ``json.dumps(allow_nan=False)``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def tuning_rows(report: CycleReport) -> list[dict[str, Any]]:
    """The online tuning's per-(model, accelerator) estimates of this cycle, when the
    controller tunes (``CycleReport.tuning["pairs"]``: pair, params, applied multipliers,
    sigma, warm-up, observations); [] otherwise."""
    tuning = getattr(report, "tuning", None) or {}
    pairs = tuning.get("pairs") if isinstance(tuning, dict) else None
    if not isinstance(pairs, list):
        return []
    keep = ("pair", "params", "applied", "sigma", "warmedUp", "observations", "rejected")
    return [json_safe({k: p.get(k) for k in keep}) for p in pairs if isinstance(p, dict)]


def server_row(s: ServerReport) -> dict[str, Any]:
    """What the page shows of one server in one cycle."""
    return {
        "server": s.server,
        "namespace": s.namespace,
        "deployment": s.deployment,
        "model": s.model,
        "serviceClass": s.service_class,
        "verdict": s.verdict,
        "heldReason": s.held_reason,
        "reason": s.reason or s.error,
        "loadStatus": str(s.load.get("status", "")),
        "currentAccelerator": s.current_accelerator,
        "currentReplicas": s.current_replicas,
        "readyReplicas": s.ready_replicas,
        "desiredAccelerator": s.desired_accelerator or s.current_accelerator,
        "desiredReplicas": s.desired_replicas,
        "arrivalRpm": _num(s.load.get("arrivalRate")),
        "observedItlMs": _num(s.load.get("itlMs")),
        "observedTtftMs": _num(s.load.get("ttftMs")),
        "predictedItlMs": _num(s.predicted_itl_ms),
        "predictedTtftMs": _num(s.predicted_ttft_ms),
        "sloItlMs": _num(s.slo_itl_ms),
        "sloTtftMs": _num(s.slo_ttft_ms),
        "costCentsPerHour": _num(s.cost),
        # the tuning's predicted-vs-observed error at this cycle's operating point
        "modelError": json_safe(getattr(s, "model_error", None)),
    }


# the fields of a stored row: server_row's, then sloMet (publish raises on a missing one)
ROW_KEYS = (
    "server", "namespace", "deployment", "model", "serviceClass", "verdict", "heldReason",
    "reason", "loadStatus", "currentAccelerator", "currentReplicas", "readyReplicas",
    "desiredAccelerator", "desiredReplicas", "arrivalRpm", "observedItlMs", "observedTtftMs",
    "predictedItlMs", "predictedTtftMs", "sloItlMs", "sloTtftMs", "costCentsPerHour",
    "modelError", "sloMet",
)


def slo_met(row: dict[str, Any]) -> bool | None:
    """Observed ITL and TTFT within their targets; None without an observation or a target."""
    checks = [
        (row["observedItlMs"], row["sloItlMs"]),
        (row["observedTtftMs"], row["sloTtftMs"]),
    ]
    known = [(obs, slo) for obs, slo in checks if obs is not None and slo]
    if not known:
        return None
    return all(obs <= slo for obs, slo in known)


def gpu_usage(system: SystemSpec, report: CycleReport) -> dict[str, dict[str, int | None]]:
    """Cards per type: what the servers run (``used``), what they were told to run
    (``desired``) and the spec's capacity (None when unlimited or not listed)."""
    accs = {a.name: a for a in system.accelerators}
    capacity = {} if system.optimizer.unlimited else system.capacity_by_type()
    out: dict[str, dict[str, int | None]] = {}

    def add(model: str, acc_name: str, replicas: int | None, key: str) -> None:
        acc = accs.get(acc_name)
        if acc is None or not replicas:
            return
        # accCount x multiplicity cards a replica; unknown perf: one unit (still counted)
        cards = system.cards_per_replica(model, acc_name) or acc.multiplicity
        entry = out.setdefault(acc.type, {"used": 0, "desired": 0, "capacity": None})
        entry[key] = int(entry[key] or 0) + replicas * cards

    for s in report.servers:
        add(s.model, s.current_accelerator, s.current_replicas, "used")
        desired = s.desired_replicas if s.desired_replicas is not None else s.current_replicas
        add(s.model, s.desired_accelerator or s.current_accelerator, desired, "desired")
    for type_, count in capacity.items():
        out.setdefault(type_, {"used": 0, "desired": 0, "capacity": None})["capacity"] = count
    return dict(sorted(out.items()))


def publisher(
    store: ReportStore, system_of: Callable[[], SystemSpec]
) -> Callable[[CycleReport], None]:
    """A Controller ``on_report`` hook for the daemon: cards per type from the current specs."""

    def hook(report: CycleReport) -> None:
        store.publish(report, gpus=gpu_usage(system_of(), report))

    return hook


class ReportStore:
    """The last ``maxlen`` cycles, and no more than ``max_rows`` server rows in all (None:
    no row limit), each with a sequence number the page polls from.

    ``publish`` is a Controller ``on_report`` hook (cheap: copies a few fields);
    ``since`` returns the cycles after a sequence number, oldest first, and how many cycles
    the history holds at the fleet's current size (the page trims its own copy to that).
    """

    def __init__(
        self,
        maxlen: int = DEFAULT_HISTORY,
        *,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        clock: str = "unix",
        title: str = "controlloop",
    ) -> None:
        if maxlen < 1:
            raise ValueError(f"history must hold at least one cycle, got {maxlen}")
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"history must hold at least one server row, got {max_rows}")
        self._cycles: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._seq = 0
        self._rows = 0  # server rows in self._cycles
        self.maxlen = maxlen
        self.max_rows = max_rows
        self.dropped_for_rows = 0  # cycles dropped before maxlen because of max_rows
        self.clock = clock  # "unix": wall time; "sim": simulated seconds (the demo)
        self.title = title
        self.total_cycles: int | None = None  # known in the demo: the page shows progress
        self.finished = False

    def publish(
        self,
        report: CycleReport,
        *,
        t_s: float | None = None,
        gpus: dict[str, dict[str, int | None]] | None = None,
    ) -> int:
        rows = [server_row(s) for s in report.servers]
        for row in rows:
            row["sloMet"] = slo_met(row)
        # kept as tuples in ROW_KEYS order (a 23-key dict is ~5x the size), dicts again in
        # since(): at 3,000 servers the history is most of the daemon's memory
        packed = [tuple(row[k] for k in ROW_KEYS) for row in rows]
        snapshot: dict[str, Any] = {
            "cycleId": report.cycle_id,
            "t": report.started_at if t_s is None else t_s,
            "outcome": report.outcome,
            "dryRun": report.dry_run,
            "durationS": report.duration_s,
            "totalCostCentsPerHour": _num(report.total_cost),
            "errors": list(report.errors),
            "servers": packed,
            "gpus": gpus or {},
            "tuning": tuning_rows(report),
        }
        with self._lock:
            self._seq += 1
            snapshot["seq"] = self._seq
            if len(self._cycles) == self.maxlen:
                self._rows -= len(self._cycles[0]["servers"])
            self._cycles.append(snapshot)
            self._rows += len(rows)
            while (self.max_rows is not None and self._rows > self.max_rows
                   and len(self._cycles) > 1):
                self._rows -= len(self._cycles.popleft()["servers"])
                self.dropped_for_rows += 1
            return self._seq

    def __call__(self, report: CycleReport) -> None:
        self.publish(report)

    def since(self, seq: int = 0) -> dict[str, Any]:
        with self._lock:
            cycles = [c for c in self._cycles if c["seq"] > seq]
            latest = self._seq
            history = self.history_cycles()
            dropped = self.dropped_for_rows
        cycles = [
            {**c, "servers": [dict(zip(ROW_KEYS, t, strict=True)) for t in c["servers"]]}
            for c in cycles
        ]
        return {
            "title": self.title,
            "clock": self.clock,
            "history": history,
            "historyRows": self.max_rows,
            "droppedForRows": dropped,
            "latest": latest,
            "totalCycles": self.total_cycles,
            "finished": self.finished,
            "cycles": cycles,
        }

    def history_cycles(self) -> int:
        """Cycles the history holds at the newest cycle's fleet size: ``maxlen``, or fewer
        where ``max_rows`` binds (at least 1)."""
        if self.max_rows is None or not self._cycles:
            return self.maxlen
        per_cycle = max(1, len(self._cycles[-1]["servers"]))
        return max(1, min(self.maxlen, self.max_rows // per_cycle))

    def __len__(self) -> int:
        with self._lock:
            return len(self._cycles)
