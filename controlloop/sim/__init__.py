"""Discrete-event simulation of continuously batching replicas (docs/model-spec.md sections 6-7).

- :class:`ReplicaSimulator`: token-level engine of one replica, advanced piecewise.
- :class:`ExponentialReplicaSimulator`: the same interface with exponential
  service, which the birth-death chain describes exactly.
- :func:`simulate_replica` / :func:`simulate` / :func:`simulate_many`: one-shot runs
  at a constant Poisson rate returning :class:`SimResult`.
"""

from controlloop.sim.base import ReplicaEngine
from controlloop.sim.exponential import ExponentialReplicaSimulator
from controlloop.sim.params import ReplicaParams, ReplicaStats, Unserved
from controlloop.sim.replica import ReplicaSimulator
from controlloop.sim.run import (
    SimCase,
    SimResult,
    poisson_arrivals,
    simulate,
    simulate_many,
    simulate_replica,
)

__all__ = [
    "ExponentialReplicaSimulator",
    "ReplicaEngine",
    "ReplicaParams",
    "ReplicaSimulator",
    "ReplicaStats",
    "SimCase",
    "SimResult",
    "Unserved",
    "poisson_arrivals",
    "simulate",
    "simulate_many",
    "simulate_replica",
]
