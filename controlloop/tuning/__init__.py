"""Online tuning of the perf profile: learn each (model, accelerator)'s service-time
parameters from the ITL/TTFT the servers show (docs/fidelity.md, "Tuning").

- :class:`PerfEstimator` (estimator.py): the iterated EKF of one pair, pure.
- :class:`Tuner` (tuner.py): observations from the cluster, the tuned system for
  sizing, the model error per server, persistence through a :class:`TuningStore`.
"""

from controlloop.tuning.estimator import Observation, PerfEstimator, TunerSettings, UpdateResult
from controlloop.tuning.params import PARAM_NAMES, OperatingPoint, predict
from controlloop.tuning.tuner import (
    MODES,
    MemoryStore,
    ModelError,
    Tuner,
    TuningStore,
    pair_key,
)

__all__ = [
    "MODES", "PARAM_NAMES", "MemoryStore", "ModelError", "Observation", "OperatingPoint",
    "PerfEstimator", "Tuner", "TunerSettings", "TuningStore", "UpdateResult", "pair_key",
    "predict",
]
