"""Synthetic fleets of any size, for benchmarks and scale tests.

Fleet of N servers: server i has arrivalRate = 30 + (37*i mod 571) req/min,
avgInTokens = 64 + (53*i mod 1985), avgOutTokens = 128 + (97*i mod 1921); its model
and class cycle through the base system's models and the classes Premium, Bronze and
Free. Capacity per type = the base system's x ceil(N/27) (the large sample has 27).
"""

from __future__ import annotations

import math

from controlloop.specs import CapacityEntry, CapacitySpec, LoadSpec, ServerSpec, SystemSpec

CLASSES = ("Premium", "Bronze", "Free")


def fleet(base: SystemSpec, n: int) -> SystemSpec:
    models = sorted({s.model for s in base.servers})
    servers = []
    for i in range(n):
        load = LoadSpec.model_validate({
            "arrivalRate": 30 + (37 * i) % 571,
            "avgInTokens": 64 + (53 * i) % 1985,
            "avgOutTokens": 128 + (97 * i) % 1921,
        })
        cls, model = CLASSES[i % 3], models[i % len(models)]
        servers.append(
            ServerSpec.model_validate(
                {"name": f"{cls}-{model}-{i:05d}", "class": cls, "model": model,
                 "currentAlloc": {"load": load.model_dump(by_alias=True)}}
            )
        )
    scale = math.ceil(n / 27)
    capacity = CapacitySpec(
        count=[CapacityEntry(type=e.type, count=e.count * scale) for e in base.capacity.count]
    )
    return base.model_copy(update={"servers": servers, "capacity": capacity})
