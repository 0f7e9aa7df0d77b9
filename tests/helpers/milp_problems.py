"""Tiny random MILP problems for the exact tests (``test_milp_exact``, ``test_milp_dw``):
3 servers, 2 card types, same-type candidates with 1, 2 and 4 cards per replica whose
per-card rate and price are equal or worse, so that dominance pruning has work to do."""

from __future__ import annotations

import math

import numpy as np

from controlloop.optimizer.milp import MilpServer
from controlloop.optimizer.solution import Candidate

TYPES = ("A", "B")


def candidate(server: str, acc: str, acc_type: str, units: int, rate: float, price: float,
               demand: float) -> Candidate:
    need = max(1, math.ceil(demand / rate - 1e-9))
    return Candidate(server=server, accelerator=acc, acc_type=acc_type, batch=8,
                     replicas=need, cost=need * price, value=need * price,
                     units_per_replica=units, rate_per_replica=rate, itl_ms=1.0, ttft_ms=1.0,
                     rho=0.5, limited_by="stability")


def problem(seed: int) -> tuple[list[MilpServer], dict[str, list[Candidate]], dict[str, int]]:
    rng = np.random.default_rng(seed)
    servers, candidates = [], {}
    for i in range(3):
        name = f"s{i}"
        demand = float(rng.uniform(1.0, 6.0))
        cands = []
        for t in TYPES:
            per_card_rate = float(rng.uniform(0.4, 2.0))
            per_card_price = float(rng.integers(2, 9))
            for units in (1, 2, 4):
                if rng.random() < 0.3:
                    continue
                # bigger replicas: mostly the same or a worse per-card rate and price; some cheaper
                # per card (then only the card count keeps them from dominating)
                rate = units * per_card_rate * float(rng.choice([1.0, 1.0, 0.8, 1.1, 1.5]))
                price = units * per_card_price * float(rng.choice([1.0, 1.0, 0.9, 1.2, 0.5, 0.2]))
                cands.append(candidate(name, f"{units}x{t}", t, units, rate, price, demand))
        current = cands[int(rng.integers(len(cands)))] if rng.random() < 0.7 else None
        servers.append(MilpServer(name, int(rng.integers(1, 3)), demand,
                                  current.accelerator if current else "",
                                  current.cost if current else 0.0))
        candidates[name] = cands
    capacity = {t: int(rng.integers(2, 9)) for t in TYPES}
    return servers, candidates, capacity
