"""Servers whose window shows what replicas of known perf would show (tuning tests)."""

from __future__ import annotations

from functools import cache

import numpy as np

from controlloop.config import load_system
from controlloop.demo.command import REPO_CONFIG
from controlloop.loop.state import ManagedServer, ObservedLoad
from controlloop.specs import SystemSpec
from controlloop.tuning import predict
from controlloop.tuning.params import OperatingPoint, profile_params

MODEL, ACC = "llama_13b", "G2"
TRUTH = np.array([1.4, 1.3, 1.0, 1.0, 1.0])


@cache
def system() -> SystemSpec:
    return load_system(REPO_CONFIG)


def server(rate_rpm: float, replicas: int, *, truth: np.ndarray = TRUTH, name: str = "s1",
            waiting: float = 0.0, ready: int | None = None, acc: str = ACC) -> ManagedServer:
    """A server whose window shows what replicas ``truth`` x the profile would show (the
    chain's figures: an independent check of the plumbing, not of the model)."""
    perf = system().perf(MODEL, acc)
    assert perf is not None
    theta = profile_params(perf, "decode-prefill")
    assert theta is not None
    point = OperatingPoint(rate_rpm / replicas, 128, 1024, 19)
    itl, ttft, running = predict("decode-prefill", theta * truth, [point])[0]
    load = ObservedLoad("ok", arrival_rate_rpm=rate_rpm, avg_in_tokens=128, avg_out_tokens=1024,
                        itl_ms=float(itl), ttft_ms=float(ttft), running=float(running) * replicas,
                        waiting=waiting, source="emulator")
    return ManagedServer(namespace="ns", deployment=name, name=name, model=MODEL,
                         service_class="Premium", accelerator=acc, max_batch=19,
                         replicas=replicas, ready_replicas=replicas if ready is None else ready,
                         load=load)
