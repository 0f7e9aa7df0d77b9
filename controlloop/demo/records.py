"""What a demo run keeps of each cycle, shared by the runner and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlloop.demo.loadscript import Scenario
from controlloop.loop.cycle import CycleReport
from controlloop.specs import SystemSpec


@dataclass
class CycleRecord:
    """One cycle: the Controller's report and the cluster right after it acted."""

    t_s: float
    report: CycleReport
    cluster: dict[str, dict[str, Any]]
    used_cards: dict[str, int]
    fast: bool = False  # run at once by the surge check, between two regular cycles


@dataclass
class DemoRun:
    scenario: Scenario
    system: SystemSpec
    capacity: dict[str, int] | None
    records: list[CycleRecord] = field(default_factory=list)
    wall_s: float = 0.0
    removed_running: int = 0  # pods deleted while they ran requests
    longest_drain_s: float = 0.0  # the longest deletion-to-exit of those (10 s resolution)


def slo_met(row: Any) -> bool | None:
    """Emulated ITL and TTFT of the last window within the server's SLO (None: no data)."""
    itl, ttft = row.load.get("itlMs"), row.load.get("ttftMs")
    if itl is None and ttft is None:
        return None
    ok = True
    if row.slo_itl_ms and itl is not None:
        ok = ok and itl <= row.slo_itl_ms
    if row.slo_ttft_ms and ttft is not None:
        ok = ok and ttft <= row.slo_ttft_ms
    return ok
