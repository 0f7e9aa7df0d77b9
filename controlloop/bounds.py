"""Physical bounds on every number the optimizer accepts, with the reason for each.

One table shared by every entry point: spec files and REST bodies (through the
pydantic models of :mod:`controlloop.specs`), Deployment labels and annotations
and Prometheus readings (through :func:`check`).  A value outside its bound is
a typo, a broken exporter or a hostile caller, never a real deployment, and
each bound keeps the sizing's memory and time small: the chain of one pair has
``11*N`` states (``N`` = batch size), replicas are ``ceil(demand/lam*)``.

Every bound is generous (at least ~8x beyond the largest real deployments we
know of) so that no real input is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# --- the bounds -----------------------------------------------------------------

# Requests in one replica's batch (vLLM max_num_seqs). Engines default to 256-1024
# and the largest published configurations run ~2048; the chain then has 11*N states.
MAX_BATCH = 4096
# Tokens of one request (prompt or output, also atTokens and the per-iteration token
# budget). The longest context windows offered are ~10M tokens.
MAX_TOKENS = 10_000_000
# Offered load of one server, req/min: 1e9 req/min = 16.7M req/s, ~100x the busiest
# public LLM APIs' whole traffic.
MAX_ARRIVAL_RPM = 1e9
# Token throughput target, tokens/s: 1e9 is 1e9 req/min of ~60 tokens.
MAX_TPS = 1e9
# Replicas of one server: Kubernetes' Deployment.spec.replicas is an int32.
MAX_REPLICAS = 2**31 - 1
# Cards of one accelerator type: the largest clusters run ~2e5 GPUs.
MAX_CARDS = 10_000_000
# Cards in one allocatable unit (multiplicity) and units per replica (accCount):
# the largest scale-up domains (NVL72/NVL576) hold 72-576 GPUs.
MAX_UNITS = 1024
# Latency targets and observed latencies, ms: one hour. No SLO is looser; a TTFT of an
# hour is a stuck server, not a target.
MAX_LATENCY_MS = 3_600_000.0
# Perf parameters (ms per token / per batch slot): one iteration cannot take longer
# than a minute on any accelerator; alpha (the fixed per-iteration overhead) cannot
# be below a microsecond (a kernel launch).
MAX_PERF_MS = 60_000.0
MIN_ALPHA_MS = 1e-3
# Costs, cents/hour per unit: $10M/hour.
MAX_COST = 1e9
# Memory size (GB) and bandwidth (GB/s), power (W): far above any accelerator.
MAX_PHYSICAL = 1e9
# Names become Kubernetes object names (DNS subdomain: 253 characters).
MAX_NAME = 253
# Priorities: 1 (highest) .. 100; out of range is mapped to 100 with a warning
# (the reference format's rule).
PRIORITY_RANGE = (1, 100)
# MILP time limit, seconds.
MAX_TIME_LIMIT_S = 3600.0


@dataclass(frozen=True)
class Bound:
    """``low <= value <= high`` (``low`` exclusive when ``low_open``), finite."""

    high: float
    low: float = 0.0
    low_open: bool = False
    integer: bool = False
    unit: str = ""

    def problem(self, value: float) -> str | None:
        """Why ``value`` is outside, or ``None`` when it is inside."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
        if self.integer and value != int(value):
            return "must be a whole number"
        unit = f" {self.unit}" if self.unit else ""
        if self.low_open and value <= self.low:
            return f"must be > {_fmt(self.low)}{unit}"
        if value < self.low:
            return f"must be >= {_fmt(self.low)}{unit}"
        if value > self.high:
            return f"must be <= {_fmt(self.high)}{unit}"
        return None


def _fmt(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"


# Bounds of the values read outside spec files (labels, annotations, Prometheus).
BATCH = Bound(MAX_BATCH, integer=True)
TOKENS = Bound(MAX_TOKENS, unit="tokens")
ARRIVAL_RPM = Bound(MAX_ARRIVAL_RPM, unit="req/min")
LATENCY_MS = Bound(MAX_LATENCY_MS, unit="ms")
REPLICAS = Bound(MAX_REPLICAS, integer=True)
CARDS = Bound(MAX_CARDS, integer=True)


def check(name: str, value: float, bound: Bound) -> str | None:
    """``"name: must be <= 4096, got 100000000"`` when ``value`` is outside ``bound``."""
    why = bound.problem(value)
    return None if why is None else f"{name}: {why}, got {value!r}"
