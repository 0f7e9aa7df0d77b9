"""Derive iteration-model ``perfParms`` (docs/model-spec.md section 8) from decode/prefill parameters.

Reads ``config/examples/large``, writes this directory: the same system with
``perfParms`` added to every model entry (decode/prefill parameters kept, so
the token-level simulator can still evaluate plans) and ``serviceModel:
iteration``.

Fit, per (model, accelerator), at the sample's token mix ``I = 128``, ``K = 1024``
(every server of the large sample has it; ``c = 1`` prefill chunk there):

- ``alpha_it = alpha`` (decode's fixed per-iteration overhead);
- decode: the extra time per request in an iteration,
  ``beta_it + gamma_it * (I + (K+1)/2)`` (compute one token, read the mean KV
  cache), equals decode's ``beta``;
- prefill alone (batch 1, one chunk): ``alpha_it + (beta_it + gamma_it) * I``
  equals ``gamma + delta * I``.

Two linear equations in ``beta_it, gamma_it``, solved with non-negativity
(NNLS on relative residuals) where the exact solution is negative.

    .venv/bin/python config/examples/iteration/derive.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "large"
I_TOKENS, K_TOKENS = 128, 1024


def fit(decode: dict[str, float], prefill: dict[str, float]) -> dict[str, float]:
    alpha, beta = decode["alpha"], decode["beta"]
    gamma, delta = prefill["gamma"], prefill["delta"]
    ctx = I_TOKENS + (K_TOKENS + 1) / 2
    per_token = max(0.0, (gamma + delta * I_TOKENS - alpha) / I_TOKENS)
    a = np.array([[1.0, ctx], [1.0, 1.0]])
    b = np.array([beta, per_token])
    sol = np.linalg.solve(a, b)
    if (sol < 0).any():  # relative residuals, so both equations weigh alike
        scale = 1.0 / np.maximum(b, 1e-12)
        sol, _ = nnls(a * scale[:, None], b * scale)
    return {"alpha": alpha, "beta": float(sol[0]), "gamma": float(sol[1])}


def main() -> None:
    for src in SOURCE.glob("*.json"):
        shutil.copy(src, HERE / src.name)
    path = HERE / "model-data.json"
    doc = json.loads(path.read_text())
    for m in doc["models"]:
        m["perfParms"] = fit(m["decodeParms"], m["prefillParms"])
    path.write_text(json.dumps(doc, indent=2) + "\n")
    opt_path = HERE / "optimizer-data.json"
    opt = json.loads(opt_path.read_text())
    opt["optimizer"]["serviceModel"] = "iteration"
    opt_path.write_text(json.dumps(opt, indent=2) + "\n")


if __name__ == "__main__":
    main()
