"""The control loop's side of tuning: observations from the cluster, one estimator per pair,
the tuned system for sizing, model error per server, persistence.

Pure apart from the :class:`TuningStore` it is given (a ConfigMap in the daemon,
memory in tests and the demo).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from controlloop.model.perf import batch_size
from controlloop.specs import ModelPerfSpec, SystemSpec
from controlloop.tuning.estimator import Observation, PerfEstimator, TunerSettings
from controlloop.tuning.params import OperatingPoint, predict, profile_params, with_params

log = logging.getLogger(__name__)

MODES = ("off", "observe", "apply")


class TuningStore(Protocol):
    """Where the learnt state survives a restart or a leader change."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, doc: dict[str, Any]) -> None: ...


class MemoryStore:
    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        self.doc = doc
        self.saves = 0

    def load(self) -> dict[str, Any] | None:
        return json.loads(json.dumps(self.doc)) if self.doc is not None else None

    def save(self, doc: dict[str, Any]) -> None:
        self.doc = json.loads(json.dumps(doc))
        self.saves += 1


class ServerView(Protocol):
    """What the tuner reads of a managed server (controlloop's ManagedServer)."""

    @property
    def key(self) -> str: ...  # namespace/deployment
    @property
    def name(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def accelerator(self) -> str: ...
    @property
    def replicas(self) -> int: ...
    @property
    def ready_replicas(self) -> int: ...
    @property
    def pending_pods(self) -> int: ...
    @property
    def max_batch(self) -> int: ...
    @property
    def annotations(self) -> dict[str, str]: ...
    @property
    def load(self) -> Any: ...


@dataclass(frozen=True)
class ModelError:
    """Predicted (with the values sizing used) vs observed at one server's operating point."""

    pair: str
    tuned: bool  # predicted with tuned values
    itl_pred_ms: float
    ttft_pred_ms: float
    itl_obs_ms: float | None
    ttft_obs_ms: float | None

    @property
    def itl_error(self) -> float | None:
        return _rel(self.itl_pred_ms, self.itl_obs_ms)

    @property
    def ttft_error(self) -> float | None:
        return _rel(self.ttft_pred_ms, self.ttft_obs_ms)


def _rel(pred: float, obs: float | None) -> float | None:
    if obs is None or not obs > 0 or not math.isfinite(pred):
        return None
    return (pred - obs) / obs


def prefill_share(system: SystemSpec) -> float:
    """The TTFT prefill form sizing uses (OptimizerSpec.ttft_prefill) as a batch share."""
    return 0.0 if system.optimizer.ttft_prefill == "joiner" else 1.0


def pair_key(model: str, accelerator: str) -> str:
    return f"{model}/{accelerator}"


@dataclass
class Tuner:
    """Estimators per (model, accelerator), fed once per cycle."""

    store: TuningStore | None = None
    settings: TunerSettings = field(default_factory=TunerSettings)
    estimators: dict[str, PerfEstimator] = field(default_factory=dict)
    _last: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # key -> placement
    _saved: dict[str, Any] = field(default_factory=dict)  # loaded, not yet matched to a profile
    # Annotations of a server whose window is not one placement's (the controller sets its
    # move annotation: a move's window mixes two accelerators).
    skip_annotations: tuple[str, ...] = ()
    loaded: bool = False

    def forget(self) -> None:
        """Drop what is in memory; the next use reads the store again (a new leader's)."""
        if self.store is None:
            return  # nothing to re-read: keep the in-memory state
        self.estimators.clear()
        self._saved.clear()
        self._last.clear()
        self.loaded = False

    def _load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        if self.store is None:
            return
        try:
            doc = self.store.load()
        except Exception as exc:  # noqa: BLE001 - a missing store never stops the loop
            log.warning("tuning: cannot read the saved state (%s); starting from the profile", exc)
            return
        pairs = (doc or {}).get("pairs", {})
        if isinstance(pairs, dict):
            self._saved = dict(pairs)

    def estimator(self, system: SystemSpec, model: str, acc: str) -> PerfEstimator | None:
        """The pair's estimator (restored from the store the first time), None without data."""
        self._load()
        key = pair_key(model, acc)
        est = self.estimators.get(key)
        service_model = system.optimizer.service_model
        perf = system.perf(model, acc)
        profile = profile_params(perf, service_model) if perf is not None else None
        if profile is None:
            return None
        share = prefill_share(system)
        if est is not None and est.service_model == service_model and np.allclose(
                est.profile, profile, rtol=1e-12) and est.prefill_share == share:
            return est
        est = None
        if key in self._saved:
            try:
                est = PerfEstimator.from_dict(self._saved.pop(key), profile, service_model,
                                              self.settings, share)
                log.info("tuning: %s restored (%d observations)", key, est.accepted_total)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("tuning: saved state of %s discarded: %s", key, exc)
        if est is None:  # new pair, or the profile changed: learn again from it
            est = PerfEstimator(profile, service_model, self.settings, share)
        self.estimators[key] = est
        return est

    # --- one cycle ----------------------------------------------------------------------------

    def observe(self, system: SystemSpec, servers: Sequence[ServerView], mode: str
                ) -> dict[str, ModelError]:
        """Feed this cycle's windows to the estimators (not when ``off``); the model error of
        each server (by ``namespace/deployment``) whose window ran on one placement, with
        the values sizing used."""
        pooled: dict[str, list[Observation]] = {}
        errors: dict[str, ModelError] = {}
        last = dict(self._last)
        self._last = {}
        sm = system.optimizer.service_model
        for ms in servers:
            got = self._observation(system, ms)
            if got is None:
                continue
            obs, placement = got
            self._last[ms.key] = placement
            if last.get(ms.key) != placement:
                continue  # the window began under another placement or replica count
            key = pair_key(ms.model, ms.accelerator)
            est = self.estimator(system, ms.model, ms.accelerator) if mode != "off" else None
            perf = system.perf(ms.model, ms.accelerator)
            profile = profile_params(perf, sm) if perf is not None else None
            if profile is None:
                continue
            tuned = est is not None and mode == "apply" and est.warmed_up
            theta = est.params(applied=True) if tuned and est is not None else profile
            pred = predict(sm, theta, [obs.point], prefill_share(system))[0]
            errors[ms.key] = ModelError(key, tuned, float(pred[0]), float(pred[1]),
                                         obs.itl_ms, obs.ttft_ms)
            if est is not None:
                pooled.setdefault(key, []).append(obs)
        for key, observations in sorted(pooled.items()):
            est = self.estimators[key]
            res = est.update(observations)
            if res.rejected:
                log.info("tuning: %s rejected %d of %d observations (NIS %s)", key,
                         res.rejected, len(observations),
                         ", ".join(f"{v:.1f}" for v in res.nis if math.isfinite(v)))
        if pooled:
            self.save()
        return errors

    def _observation(self, system: SystemSpec, ms: ServerView
                     ) -> tuple[Observation, tuple[str, int, int]] | None:
        load = ms.load
        if (not ms.accelerator or ms.ready_replicas <= 0 or ms.ready_replicas != ms.replicas
                or ms.pending_pods or any(a in ms.annotations for a in self.skip_annotations)
                or not getattr(load, "known", False) or load.source == "labels"
                or not load.arrival_rate_rpm or not load.avg_out_tokens):
            return None
        perf = system.perf(ms.model, ms.accelerator)
        if perf is None:
            return None
        batch = ms.max_batch or int(batch_size(perf.max_batch_size, perf.at_tokens,
                                                load.avg_out_tokens)[0])
        n = ms.ready_replicas
        point = OperatingPoint(
            rate_rpm=load.arrival_rate_rpm / n, in_tokens=load.avg_in_tokens or 0.0,
            out_tokens=load.avg_out_tokens, batch=batch,
            token_budget=float(perf.max_num_batched_tokens),
        )
        running = load.running / n if load.running is not None else None
        # A backlog (more than half a batch queued per replica) is a transient the
        # steady-state chain does not describe: its TTFT is the queue's age, not the model's.
        # Its ITL (a full batch) still is.
        backlog = load.waiting is not None and load.waiting / n > 0.5 * batch
        obs = Observation(point, itl_ms=load.itl_ms, ttft_ms=None if backlog else load.ttft_ms,
                          running=running, server=ms.name)
        return obs, (ms.accelerator, n, batch)

    # --- sizing -------------------------------------------------------------------------------

    def tuned_system(self, system: SystemSpec) -> tuple[SystemSpec, dict[str, str]]:
        """A copy of ``system`` with tuned parameters; a note per tuned pair.

        A warmed-up pair uses its own fit.  A pair without one (never run, or still
        warming up) borrows the geometric mean of the perf multipliers learnt on the same
        model's other accelerators (not their waitScale): a model's drift (another vLLM,
        other prompts) usually shows on every accelerator, and a pair left at an
        optimistic profile would look cheapest and attract the server to it.
        """
        notes: dict[str, str] = {}
        models: list[ModelPerfSpec] = []
        sm = system.optimizer.service_model
        self._load()
        warmed: dict[str, list[tuple[str, PerfEstimator]]] = {}  # model -> (acc, fit)
        for perf in system.models:
            key = pair_key(perf.name, perf.acc)
            est = self.estimator(system, perf.name, perf.acc) if (
                key in self.estimators or key in self._saved) else None
            if est is not None and est.warmed_up and est.service_model == sm:
                warmed.setdefault(perf.name, []).append((perf.acc, est))
        for perf in system.models:
            key = pair_key(perf.name, perf.acc)
            est = self.estimators.get(key)
            own = est is not None and est.warmed_up and est.service_model == sm
            if own:
                assert est is not None
                mult, names, source = est.applied_multipliers(), est.names, ""
            else:
                others = [(a, e) for a, e in warmed.get(perf.name, []) if a != perf.acc]
                profile = profile_params(perf, sm)
                if not others or profile is None:
                    models.append(perf)
                    continue
                names = others[0][1].names
                mult = np.exp(np.mean([np.log(e.applied_multipliers()) for _, e in others],
                                      axis=0))
                mult[-1] = 1.0  # the wait scale is the pair's own
                source = f" (borrowed from {', '.join(sorted(a for a, _ in others))})"
            if np.allclose(mult, 1.0, rtol=1e-6):
                models.append(perf)
                continue
            profile = profile_params(perf, sm)
            assert profile is not None
            models.append(with_params(perf, sm, profile * mult))
            notes[key] = "tuned perf " + ", ".join(
                f"{n} x{m:.2f}" for n, m in zip(names, mult, strict=True)) + source
        if not notes:
            return system, notes
        return system.model_copy(update={"models": models}), notes

    # --- persistence and display ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        pairs = {k: e.to_dict() for k, e in sorted(self.estimators.items())}
        pairs.update({k: v for k, v in self._saved.items() if k not in pairs})
        return {"version": 1, "pairs": pairs}

    def save(self) -> None:
        if self.store is None:
            return
        try:
            self.store.save(self.to_dict())
        except Exception as exc:  # noqa: BLE001 - persistence is best effort, never fatal
            log.warning("tuning: cannot save the learnt state: %s", exc)

    def rows(self) -> list[dict[str, Any]]:
        """One summary per pair: parameters, uncertainty, warm-up, conditioning, NIS."""
        out = []
        for key, est in sorted(self.estimators.items()):
            out.append({
                "pair": key, "serviceModel": est.service_model,
                "params": dict(zip(est.names, est.params(applied=True).tolist(), strict=True)),
                "profile": dict(zip(est.names, est.profile.tolist(), strict=True)),
                "multipliers": dict(zip(est.names, est.multipliers().tolist(), strict=True)),
                "applied": dict(zip(est.names, est.applied_multipliers().tolist(), strict=True)),
                "sigma": dict(zip(est.names, est.sigma().tolist(), strict=True)),
                "warmedUp": est.warmed_up, "observations": est.accepted_total,
                "rejected": est.rejected_total, "conditioning": est.conditioning,
                "nis": est.last_nis,
            })
        return out
