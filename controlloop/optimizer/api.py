"""``optimize(system) -> Solution``: the one entry point of the optimizer."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from controlloop.gcpause import gc_paused
from controlloop.model.sizing import SizingCache
from controlloop.optimizer.candidates import (
    build_candidates,
)
from controlloop.optimizer.solution import (
    Solution,
)
from controlloop.optimizer.solve import solve
from controlloop.specs import OptimizerSpec, SaturationPolicy, SystemSpec

MILP_FINISH_S = 0.3  # measured: greedy + solution building at 1,000 servers ~0.15 s


def optimize(
    system: SystemSpec,
    *,
    solver: str | None = None,
    unlimited: bool | None = None,
    saturation_policy: SaturationPolicy | str | None = None,
    service_model: str | None = None,
    verify: str | None = None,
    time_limit: float | None = None,
    cache: SizingCache | None = None,
    margin: str | None = None,  # [fidelity] "none" | "calibrated"
    verify_budget: float | None = None,  # seconds for verify: simulate (None: no limit)
    saturated_latency: str | None = None,  # "sized" (reference) | "offered"
) -> Solution:
    """Decide accelerator, replicas and batch size for every server of ``system``.

    Keyword arguments override the system's optimizer options. Deterministic:
    the same input always gives the same output.
    """
    options = effective_options(
        system.optimizer,
        solver=solver,
        unlimited=unlimited,
        saturation_policy=saturation_policy,
        service_model=service_model,
        verify=verify,
        time_limit=time_limit,
        margin=margin,
        saturated_latency=saturated_latency,
    )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with gc_paused():
        cset = build_candidates(system, service_model=options.service_model, cache=cache)
    if options.margin == "calibrated":  # [fidelity] cap lam* at simulated safe rates
        from controlloop.optimizer.calibrate import calibrate_candidates, calibrator_for

        cset = calibrate_candidates(system, cset, calibrator_for(options.calibration_cache))
    timings["sizing"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    if options.milp_solver:
        # timeLimit bounds the whole call: sizing is spent, keep a little for greedy's
        # plan and building the solution.
        spent = t1 - t0 + MILP_FINISH_S
        options = options.model_copy(update={"time_limit": max(0.5, options.time_limit - spent)})
    with contextlib.nullcontext() if options.milp_solver else gc_paused():
        solution = solve(system, cset, options)
    timings["solve"] = time.perf_counter() - t1
    if options.verify == "simulate":
        # Imported here, like the MILP: the simulator is not needed by most runs.
        from controlloop.optimizer.verify import verify_by_simulation

        t2 = time.perf_counter()
        solution = verify_by_simulation(system, cset, options, solution, budget_s=verify_budget)
        timings["verify"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    solution.timings = {
        **timings, **{k: v for k, v in solution.timings.items() if k not in timings}
    }
    return solution


def effective_options(base: OptimizerSpec, **overrides: Any) -> OptimizerSpec:
    update: dict[str, Any] = {}
    if overrides.get("solver") is not None:
        update["milp_solver"] = overrides["solver"] == "milp"
    for key in ("unlimited", "service_model", "verify", "time_limit", "margin",
                "saturated_latency"):
        if overrides.get(key) is not None:
            update[key] = overrides[key]
    if overrides.get("saturation_policy") is not None:
        update["saturation_policy"] = SaturationPolicy(str(overrides["saturation_policy"]))
    return base.model_copy(update=update)
