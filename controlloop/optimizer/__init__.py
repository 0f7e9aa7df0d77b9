"""The optimizer: candidates per server, greedy and MILP solvers, the solution."""

from controlloop.optimizer.api import optimize
from controlloop.optimizer.solution import (
    Candidate,
    DecisionStatus,
    ServerDecision,
    Solution,
    SolveStatus,
)

__all__ = [
    "Candidate",
    "DecisionStatus",
    "ServerDecision",
    "Solution",
    "SolveStatus",
    "optimize",
]
