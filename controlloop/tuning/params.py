"""Which perf parameters a profile entry has, and the model's ITL/TTFT/batch at operating points.

The estimator works on *multipliers* of the profile's parameters (``theta =
profile * exp(x)``), so its state is unit-free and a bound or a prior reads the
same for every (model, accelerator) pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from controlloop.model.perf import DecodePrefillPerf, IterationPerf, PerfModel
from controlloop.model.queue import FloatArray, evaluate_chain
from controlloop.specs import DecodeParms, ModelPerfSpec, PerfParms, PrefillParms

ServiceModel = Literal["decode-prefill", "iteration"]

# The last one, ``waitScale``, is the scale of the chain's queue wait in TTFT
# (ModelPerfSpec.wait_scale): the part of TTFT no perf parameter explains.
PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "decode-prefill": ("alpha", "beta", "gamma", "delta", "waitScale"),
    "iteration": ("alpha", "beta", "gamma", "waitScale"),
}


@dataclass(frozen=True)
class OperatingPoint:
    """Where one replica ran during a window: its arrival rate and token mix, its batch."""

    rate_rpm: float  # per replica
    in_tokens: float
    out_tokens: float
    batch: int
    token_budget: float = 8192.0


def profile_params(perf: ModelPerfSpec, service_model: str) -> FloatArray | None:
    """The profile's parameters in :data:`PARAM_NAMES` order; None when the entry lacks them."""
    if service_model == "iteration":
        if perf.perf_parms is None:
            return None
        p = perf.perf_parms
        return np.array([p.alpha, p.beta, p.gamma, perf.wait_scale], np.float64)
    if perf.decode_parms is None or perf.prefill_parms is None:
        return None
    d, f = perf.decode_parms, perf.prefill_parms
    return np.array([d.alpha, d.beta, f.gamma, f.delta, perf.wait_scale], np.float64)


def with_params(perf: ModelPerfSpec, service_model: str, theta: FloatArray) -> ModelPerfSpec:
    """A copy of the profile entry with its parameters replaced by ``theta``."""
    t = [float(v) for v in theta]
    if service_model == "iteration":
        return perf.model_copy(update={
            "perf_parms": PerfParms(alpha=t[0], beta=t[1], gamma=t[2]), "wait_scale": t[3]})
    return perf.model_copy(update={
        "decode_parms": DecodeParms(alpha=t[0], beta=t[1]),
        "prefill_parms": PrefillParms(gamma=t[2], delta=t[3]), "wait_scale": t[4],
    })


def perf_model(service_model: str, theta: FloatArray, points: list[OperatingPoint],
               prefill_share: float = 1.0) -> PerfModel:
    """``theta`` of shape ``(P, F)`` (one row per point) as the sizing code's PerfModel."""
    i = np.array([p.in_tokens for p in points], np.float64)
    k = np.array([p.out_tokens for p in points], np.float64)
    n = np.array([p.batch for p in points], np.int64)
    if service_model == "iteration":
        m = np.array([p.token_budget for p in points], np.float64)
        return IterationPerf(alpha=theta[:, 0], beta=theta[:, 1], gamma=theta[:, 2],
                             in_tokens=i, out_tokens=k, batch=n, token_budget=m,
                             wait_scale=theta[:, 3])
    return DecodePrefillPerf(alpha=theta[:, 0], beta=theta[:, 1], gamma=theta[:, 2],
                             delta=theta[:, 3], in_tokens=i, out_tokens=k, batch=n,
                             wait_scale=theta[:, 4],
                             prefill_share=np.full(len(points), prefill_share))


def predict(service_model: str, theta: FloatArray, points: list[OperatingPoint],
            prefill_share: float = 1.0) -> FloatArray:
    """Model ``[ITL, TTFT, in-service]`` (ms, ms, requests) per point, shape ``(P, 3)``.

    ``theta`` is ``(F,)`` (the same parameters everywhere) or ``(P, F)``.
    """
    theta = np.broadcast_to(np.asarray(theta, np.float64), (len(points), len(theta.T)))
    # Parameters are bounded away from 0 by the estimator; alpha must stay > 0.
    theta = np.maximum(theta, 1e-12)
    model = perf_model(service_model, theta, points, prefill_share)
    rate = np.array([p.rate_rpm for p in points], np.float64) / 60000.0
    m = model.metrics(evaluate_chain(model.chain(), rate))
    return np.column_stack([m.itl, m.ttft, m.in_service])
