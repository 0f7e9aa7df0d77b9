"""Hand-made systems whose optimal plans can be derived on paper (shared by the tests).

The workhorse is a model with ``alpha=10, beta=1`` ms, no prefill (``I=0``),
``K=101`` output tokens and batch ``N=10`` (``maxBatchSize 10`` at ``atTokens 101``):
``T(N) = (K-1)*(alpha + beta*N) = 2000`` ms, so ``mu(N) = 10/2000`` per ms = 5 req/s
and ``lam_max = 0.999*mu(N) = 4.995`` req/s. An ITL target of 100 ms is above
``alpha + beta*N = 20``, so ``lam* = lam_max`` ("stability"-bound) and a server of
``r`` req/min needs ``ceil(r/60/4.995)`` replicas. Accelerator ``Q`` runs the same
model at ``alpha=20`` (``T = 3000`` ms, ``lam* = 0.999*10/3 = 3.33`` req/s).
"""

from __future__ import annotations

from typing import Any

from controlloop.config import parse_system_document
from controlloop.specs import SystemSpec

LAM_P = 4.995  # req/s per replica on P
LAM_Q = 0.999 * 10 / 3.0  # req/s per replica on Q
K = 101


def per_min(replicas_worth: float, lam: float = LAM_P) -> float:
    """An arrival rate (req/min) that is ``replicas_worth`` replicas' worth of load."""
    return replicas_worth * lam * 60.0


def accelerator(name: str, cost: float, acc_type: str | None = None, mult: int = 1) -> dict:
    return {"name": name, "type": acc_type or name, "multiplicity": mult, "cost": cost}


def perf(acc: str, *, alpha: float = 10.0, beta: float = 1.0, model: str = "m",
         max_batch: int = 10, acc_count: int = 1) -> dict:
    return {
        "name": model, "acc": acc, "accCount": acc_count, "maxBatchSize": max_batch,
        "atTokens": K, "decodeParms": {"alpha": alpha, "beta": beta},
        "prefillParms": {"gamma": 0.0, "delta": 0.0},
    }


def server(name: str, rate: float, cls: str = "hi", *, model: str = "m",
           out_tokens: float = K, **extra: Any) -> dict:
    current = extra.pop("current", {})
    return {
        "name": name, "class": cls, "model": model, **extra,
        "currentAlloc": {
            **current,
            "load": {"arrivalRate": rate, "avgInTokens": 0, "avgOutTokens": out_tokens},
        },
    }


def classes(targets: dict[str, Any] | None = None, models: tuple[str, ...] = ("m",)) -> list:
    slo = targets if targets is not None else {"slo-itl": 100}
    return [
        {"name": name, "priority": prio,
         "modelTargets": [{"model": m, **slo} for m in models]}
        for name, prio in (("hi", 1), ("lo", 2), ("low", 3))
    ]


def system(
    servers: list[dict],
    *,
    accelerators: list[dict] | None = None,
    models: list[dict] | None = None,
    capacity: dict[str, int] | None = None,
    service_classes: list[dict] | None = None,
    **optimizer: Any,
) -> SystemSpec:
    accs = accelerators if accelerators is not None else [accelerator("P", 10.0)]
    doc = {
        "system": {
            "acceleratorData": {"accelerators": accs},
            "capacityData": {
                "count": [{"type": t, "count": n} for t, n in (capacity or {}).items()]
            },
            "modelData": {"models": models if models is not None else [perf("P")]},
            "serviceClassData": {"serviceClasses": service_classes or classes()},
            "serverData": {"servers": servers},
            "optimizerData": {"optimizer": optimizer},
        }
    }
    return parse_system_document(doc, where="test").system


def replicas(solution: Any) -> dict[str, int]:
    return {name: d.replicas for name, d in solution.decisions.items()}


def stable_json(solution: Any) -> dict:
    """``to_json`` without what depends on the wall clock."""
    out = solution.to_json()
    out.pop("timings")
    return out
