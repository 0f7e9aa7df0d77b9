"""Online estimate of one (model, accelerator) pair's perf parameters from what its servers show.

State ``x``: log-multipliers of the profile's parameters (``theta = profile *
exp(x)``, :mod:`controlloop.tuning.params`), Gaussian ``N(x, P)``, prior
``N(0, s0^2 I)``: the profile is the prior mean.  Each cycle is one step of an
*iterated* extended Kalman filter:

1. predict: ``P += q^2 I`` (the servers may drift: vLLM upgrade, other prompts);
2. gate: each observation's innovation ``y = z - h(x)`` (log ITL, log TTFT, log
   requests in service at its operating point) has ``S = H P H' + R``; one with
   ``NIS = y' S^-1 y`` above the chi-square quantile ``gate`` is an outlier and
   is dropped (a transient window, a replica still warming up);
3. update: the MAP of ``N(x, P)`` and the accepted observations, solved with
   bounds by ``scipy.optimize.least_squares`` (Gauss-Newton from the prior mean
   is the iterated EKF; the trust-region solver keeps ``x`` inside the bounds,
   which a plain EKF step cannot), and ``P = (P^-1 + sum H'R^-1 H)^-1`` there.

``h`` is the model the optimizer sizes with (the chain, MODEL.md sections 2/8),
so what is learnt is exactly what sizing needs, whatever the model's own bias
against real replicas.

Warm-up: the fit is used only after ``warmup`` accepted observations; after
``reset_after`` updates in a row whose observations were all rejected, the
data and the estimate disagree for good (a new regime): ``P`` is widened back
to the prior's so that the next windows move the fit.

Conditioning: the (forgetting) data information ``F = sum H'R^-1 H``, in
prior-whitened coordinates, tells which parameter directions the data
determine (eigenvalue >= ``determined_ratio``: the data know it that many times
better than the prior).
The applied multipliers keep the fit in those directions and the profile in
the others: with one operating point only, e.g. the split between ``alpha``
and ``beta`` at a fixed ITL is not determined, and stays the profile's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import chi2

from controlloop.model.queue import FloatArray
from controlloop.tuning.params import PARAM_NAMES, OperatingPoint, predict

METRICS = ("itl", "ttft", "running")
_FD_STEP = 1e-4  # forward-difference step of the Jacobian, in log-multiplier


@dataclass(frozen=True)
class TunerSettings:
    """Noise, bounds and gates of the estimator (all in log space unless said)."""

    prior_sigma: float = 0.35  # the profile is right within about x0.7..x1.4 (1 sigma)
    min_multiplier: float = 0.2
    max_multiplier: float = 5.0
    # waitScale: the chain's wait may be far off a real batch's (docs/fidelity.md).
    wait_prior_sigma: float = 1.0
    wait_min: float = 0.02
    wait_max: float = 5.0
    # Relative noise of one window's figure: ITL is a mean over thousands of tokens;
    # a window's mean TTFT is heavy-tailed (docs/fidelity.md), running in between.
    sigma_itl: float = 0.08  # noise plus the chain's own bias against a real batch (~10 %)
    sigma_ttft: float = 0.3
    sigma_running: float = 0.10
    # The chain's batch is ~10 % below a token-level replica's (it omits the other
    # requests' prefills, docs/fidelity.md): fitting it too would bend alpha/beta.
    use_running: bool = False
    drift_sigma: float = 0.03  # per update: keeps the filter from over-trusting a biased fit
    gate: float = 0.999  # NIS gate: chi-square quantile
    warmup: int = 5  # accepted observations before the fit is used
    reset_after: int = 3  # updates in a row with every observation rejected -> re-learn
    memory: float = 0.95  # forgetting of the information the conditioning check uses
    # A direction is determined when the data know it this many times better than the prior.
    determined_ratio: float = 4.0

    def sigmas(self) -> FloatArray:
        return np.array([self.sigma_itl, self.sigma_ttft, self.sigma_running])

    def prior(self, f: int) -> FloatArray:
        """Prior std-dev per state entry (the perf parameters, then waitScale)."""
        return np.array([self.prior_sigma] * (f - 1) + [self.wait_prior_sigma])

    def bounds(self, f: int) -> tuple[FloatArray, FloatArray]:
        """Bounds of the log-multipliers."""
        lo = [math.log(self.min_multiplier)] * (f - 1) + [math.log(self.wait_min)]
        hi = [math.log(self.max_multiplier)] * (f - 1) + [math.log(self.wait_max)]
        return np.array(lo), np.array(hi)


@dataclass(frozen=True)
class Observation:
    """One server's window, per replica: where it ran and what it showed."""

    point: OperatingPoint
    itl_ms: float | None = None
    ttft_ms: float | None = None
    running: float | None = None  # mean requests in service per replica
    server: str = ""

    def values(self) -> FloatArray:
        """``[ITL, TTFT, running]`` with NaN where unknown or not positive."""
        raw = [self.itl_ms, self.ttft_ms, self.running]
        return np.array([v if v is not None and v > 0 and math.isfinite(v) else np.nan
                         for v in raw], np.float64)


@dataclass(frozen=True)
class UpdateResult:
    accepted: int
    rejected: int
    nis: tuple[float, ...]  # per observation, in order (NaN: no usable figure)


@dataclass
class PerfEstimator:
    """The iterated EKF of one (model, accelerator) pair."""

    profile: FloatArray
    service_model: str = "decode-prefill"
    settings: TunerSettings = field(default_factory=TunerSettings)
    prefill_share: float = 1.0  # TTFT's prefill form, as sizing uses it (optimizer.ttftPrefill)
    x: FloatArray = field(init=False)
    cov: FloatArray = field(init=False)
    info: FloatArray = field(init=False)
    accepted: int = 0  # since the last (re)start of warm-up
    rejected_total: int = 0
    accepted_total: int = 0
    rejected_run: int = 0  # updates in a row with everything rejected
    updates: int = 0
    last_nis: float = math.nan  # mean NIS of the last update's observations
    resets: int = 0

    def __post_init__(self) -> None:
        self.profile = np.asarray(self.profile, np.float64).reshape(-1)
        names = PARAM_NAMES.get(self.service_model)
        if names is None:
            raise ValueError(f"service_model: unknown {self.service_model!r}")
        if self.profile.shape != (len(names),) or not np.all(self.profile >= 0):
            raise ValueError(f"profile: need {len(names)} parameters >= 0 ({', '.join(names)}), "
                             f"got {self.profile.tolist()}")
        f = len(names)
        self.x = np.zeros(f)
        self.cov = np.diag(self.settings.prior(f) ** 2)
        self.info = np.zeros((f, f))

    # --- what it knows --------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return PARAM_NAMES[self.service_model]

    @property
    def warmed_up(self) -> bool:
        return self.accepted >= self.settings.warmup

    def determined(self) -> FloatArray:
        """Orthonormal basis (columns, whitened coordinates) of the directions the data fix."""
        vals, vecs = np.linalg.eigh((self.info + self.info.T) / 2)
        return np.asarray(vecs[:, vals >= self.settings.determined_ratio], np.float64)

    @property
    def conditioning(self) -> str:
        """``ok`` (every direction determined), ``partial`` or ``ill-conditioned`` (none)."""
        k = self.determined().shape[1]
        return "ok" if k == len(self.names) else "partial" if k else "ill-conditioned"

    def multipliers(self) -> FloatArray:
        """The fit's multipliers of the profile (all directions)."""
        return np.asarray(np.exp(self.x), np.float64)

    def applied_multipliers(self) -> FloatArray:
        """What sizing uses: the fit in the determined directions, the profile elsewhere,
        and the profile until warmed up."""
        if not self.warmed_up:
            return np.ones_like(self.x)
        u = self.determined()
        s0 = self.settings.prior(len(self.x))
        return np.asarray(np.exp(s0 * (u @ (u.T @ (self.x / s0)))), np.float64)

    def params(self, *, applied: bool = True) -> FloatArray:
        mult = self.applied_multipliers() if applied else self.multipliers()
        return np.asarray(self.profile * mult, np.float64)

    def sigma(self) -> FloatArray:
        """Posterior std-dev of each log-multiplier (relative uncertainty of each parameter)."""
        return np.asarray(np.sqrt(np.clip(np.diag(self.cov), 0, None)), np.float64)

    def predict(self, points: list[OperatingPoint], *, applied: bool = True) -> FloatArray:
        return predict(self.service_model, self.params(applied=applied), points,
                       self.prefill_share)

    # --- the filter ---------------------------------------------------------------------------

    def _h(self, x: FloatArray, points: list[OperatingPoint]) -> tuple[FloatArray, FloatArray]:
        """``log [ITL, TTFT, running]`` at ``x`` per point ``(P, 3)`` and the Jacobian
        ``(P, 3, F)``, by forward differences in one vectorised chain evaluation."""
        f, p = len(x), len(points)
        xs = np.vstack([x, x + _FD_STEP * np.eye(f)])  # (F+1, F)
        theta = np.repeat(self.profile * np.exp(xs), p, axis=0)  # (F+1)*P rows
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(predict(self.service_model, theta, points * (f + 1),
                                 self.prefill_share))
        out = out.reshape(f + 1, p, 3)
        jac = (out[1:] - out[0]) / _FD_STEP  # (F, P, 3)
        return out[0], np.transpose(jac, (1, 2, 0))

    def update(self, observations: list[Observation]) -> UpdateResult:
        """One cycle: predict, gate and update with the pooled observations of the pair."""
        s = self.settings
        f = len(self.x)
        self.updates += 1
        self.cov = self.cov + np.eye(f) * s.drift_sigma**2
        self.info = self.info * s.memory
        usable = [(o, o.values()) for o in observations]
        usable = [(o, v) for o, v in usable if np.isfinite(v).any() and o.point.rate_rpm > 0]
        nis_all = [math.nan] * len(observations)
        if not usable:
            return UpdateResult(0, 0, tuple(nis_all))
        points = [o.point for o, _ in usable]
        z = np.log(np.vstack([v for _, v in usable]))  # (P, 3), NaN where unknown
        if not s.use_running:
            z[:, 2] = np.nan
        hx, jac = self._h(self.x, points)
        sig = s.sigmas()
        keep: list[int] = []
        nis_used: list[float] = []
        for i in range(len(usable)):
            m = np.isfinite(z[i]) & np.isfinite(hx[i])
            if not m.any():
                continue
            y = z[i, m] - hx[i, m]
            h = jac[i][m]
            cov_s = h @ self.cov @ h.T + np.diag(sig[m] ** 2)
            nis = float(y @ np.linalg.solve(cov_s, y))
            idx = observations.index(usable[i][0])
            nis_all[idx] = nis
            nis_used.append(nis)
            if nis <= chi2.ppf(s.gate, int(m.sum())):
                keep.append(i)
        self.last_nis = float(np.mean(nis_used)) if nis_used else math.nan
        rejected = len(nis_used) - len(keep)
        self.rejected_total += rejected
        if not keep:
            if nis_used:
                self.rejected_run += 1
                if self.rejected_run >= s.reset_after:
                    self._relearn()
            return UpdateResult(0, rejected, tuple(nis_all))
        self.rejected_run = 0
        self._map_update([points[i] for i in keep], z[keep])
        self.accepted += len(keep)
        self.accepted_total += len(keep)
        return UpdateResult(len(keep), rejected, tuple(nis_all))

    def _relearn(self) -> None:
        """The data contradict the estimate for good (a new regime): widen ``P`` back to the
        prior's so that the next windows are accepted and move the fit.  The current fit
        stays in use meanwhile: it is still closer than the profile it was learnt from."""
        f = len(self.x)
        self.cov = np.maximum(self.cov, np.diag(self.settings.prior(f) ** 2))
        self.rejected_run = 0
        self.resets += 1

    def _map_update(self, points: list[OperatingPoint], z: FloatArray) -> None:
        s = self.settings
        sig = s.sigmas()
        mask = np.isfinite(z)
        chol = np.linalg.cholesky(self.cov)
        x0 = self.x.copy()
        lo, hi = s.bounds(len(x0))

        def split(x: FloatArray) -> tuple[FloatArray, FloatArray]:
            hx, jac = self._h(x, points)
            ok = mask & np.isfinite(hx)
            r_data = np.where(ok, (hx - np.where(ok, z, 0)) / sig, 0.0)  # (P, 3)
            j_data = np.where(ok[..., None], jac / sig[None, :, None], 0.0)  # (P, 3, F)
            r_prior = np.linalg.solve(chol, x - x0)
            return (np.concatenate([r_data.ravel(), r_prior]),
                    np.vstack([j_data.reshape(-1, len(x)), np.linalg.inv(chol)]))

        cache: dict[bytes, tuple[FloatArray, FloatArray]] = {}

        def get(x: FloatArray) -> tuple[FloatArray, FloatArray]:
            key = x.tobytes()
            if key not in cache:
                cache.clear()
                cache[key] = split(x)
            return cache[key]

        sol = least_squares(lambda x: get(x)[0], np.clip(x0, lo + 1e-9, hi - 1e-9),
                            jac=lambda x: get(x)[1], bounds=(lo, hi), method="trf",
                            x_scale=s.prior(len(x0)), max_nfev=50)
        x = np.asarray(sol.x, np.float64)
        jd = get(x)[1][: -len(x)]  # whitened data Jacobian (rows: measurements)
        fisher = jd.T @ jd
        self.x = x
        cov = np.linalg.inv(np.linalg.inv(self.cov) + fisher)
        self.cov = np.asarray((cov + cov.T) / 2, np.float64)
        s0 = s.prior(len(x))
        self.info = self.info + fisher * np.outer(s0, s0)  # whitened by the prior

    # --- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "serviceModel": self.service_model, "params": list(self.names),
            "profile": self.profile.tolist(), "x": self.x.tolist(), "cov": self.cov.tolist(),
            "info": self.info.tolist(), "accepted": self.accepted,
            "acceptedTotal": self.accepted_total, "rejectedTotal": self.rejected_total,
            "updates": self.updates, "resets": self.resets, "prefillShare": self.prefill_share,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], profile: FloatArray, service_model: str,
                  settings: TunerSettings | None = None,
                  prefill_share: float | None = None) -> PerfEstimator:
        """Restore a saved state; a state learnt on another profile or model is refused
        (ValueError), since its multipliers would mean something else."""
        saved_share = float(doc.get("prefillShare", 1.0))
        share = saved_share if prefill_share is None else prefill_share
        est = cls(profile, service_model, settings or TunerSettings(), share)
        if doc.get("serviceModel") != service_model:
            raise ValueError(f"saved for serviceModel {doc.get('serviceModel')!r}")
        if saved_share != share:
            raise ValueError(f"saved for another ttftPrefill (prefill share {saved_share:g})")
        saved = np.asarray(doc.get("profile", []), np.float64)
        if saved.shape != est.profile.shape or not np.allclose(saved, est.profile, rtol=1e-9):
            raise ValueError("saved for another profile")
        f = len(est.x)
        x = np.asarray(doc["x"], np.float64)
        cov = np.asarray(doc["cov"], np.float64)
        info = np.asarray(doc["info"], np.float64)
        if x.shape != (f,) or cov.shape != (f, f) or info.shape != (f, f):
            raise ValueError("saved state has the wrong shape")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(cov)) and np.all(np.isfinite(info))):
            raise ValueError("saved state is not finite")
        est.x, est.cov, est.info = x, cov, info
        est.accepted = int(doc.get("accepted", 0))
        est.accepted_total = int(doc.get("acceptedTotal", 0))
        est.rejected_total = int(doc.get("rejectedTotal", 0))
        est.updates = int(doc.get("updates", 0))
        est.resets = int(doc.get("resets", 0))
        return est
