"""Tiny systems and by-the-book formulas for unit tests."""

from __future__ import annotations

from pathlib import Path

from controlloop.config import load_system
from controlloop.specs import CapacityEntry, CapacitySpec, SystemSpec

LARGE = Path(__file__).resolve().parents[2] / "config" / "examples" / "large"


def tiny_system(capacity: int = 64, rate: float = 120.0) -> SystemSpec:
    """One server (Premium mistral_7b, 2 req/s) on 2xG2 (N=38): the chain is optimistic here."""
    system = load_system(LARGE)
    server = next(s for s in system.servers if s.name == "Premium-mistral_7b")
    load = server.load.model_copy(update={"arrival_rate": rate})
    server = server.model_copy(
        update={"current_alloc": server.current_alloc.model_copy(update={"load": load})}
    )
    return system.model_copy(update={
        "models": [m for m in system.models if m.name == "mistral_7b" and m.acc == "2xG2"],
        "servers": [server],
        "capacity": CapacitySpec(count=[CapacityEntry(type="G2", count=capacity)]),
    })


GRANITE = {"alpha": 20.58, "beta": 0.41, "gamma": 164.64, "delta": 0.0128125}


def plain_chain(a: float, b: float, n: int, lam: float) -> dict[str, float]:
    """Section 2 by the book: p(j+1) = p(j)*lam/mu(j+1) over 0..N+10N, then the moments."""
    def mu(j: int) -> float:
        m = min(j, n)
        return m / (a + b * m)

    p = [1.0]
    for j in range(1, 11 * n + 1):
        p.append(p[-1] * lam / mu(j))
    total = sum(p)
    p = [x / total for x in p]
    big_l = sum(j * x for j, x in enumerate(p))
    big_b = sum(min(j, n) * x for j, x in enumerate(p))
    x = lam * (1 - p[-1])
    return {"L": big_l, "B": big_b, "X": x, "S": big_b / x, "W": big_l / x - big_b / x}


def one_scaling_server(name: str, accelerator: str) -> SystemSpec:
    """The repository config with one server, that can only scale: only ``accelerator``
    keeps a nodeSelector, so the controller never moves it."""
    system = load_system(LARGE.parents[2] / "config")
    return system.model_copy(update={
        "servers": [s for s in system.servers if s.name == name],
        "accelerators": [
            a if a.name == accelerator else a.model_copy(update={"node_selector": None})
            for a in system.accelerators
        ],
    })
