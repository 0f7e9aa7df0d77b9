"""Safety margins learned from the token-level simulation (docs/model-spec.md section 7).

The birth-death chain of section 2 is optimistic about queueing at high load
and with small batches, so a replica sized to its ``lam*`` can miss the TTFT
target once requests are served token by token. This module measures, per
pair (model, accelerator, ``N``, ``I``, ``K``, targets), the largest per-replica
rate at which the *simulated* mean TTFT and ITL meet their targets, and caps
``lam*`` by it.

- :class:`SimOracle`: cached, seeded simulations of one replica at a rate; the
  horizon grows at low rates so every estimate rests on enough requests.
- :class:`Calibrator`: a short monotone search on the oracle per pair, cached
  in memory and optionally in a JSON file.
- :func:`calibrate_candidates`: the candidate set with ``lam*`` capped.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from controlloop.model.perf import DecodePrefillPerf
from controlloop.model.sizing import analyze
from controlloop.optimizer.candidates import MS_PER_S, CandidateSet, transition_value
from controlloop.optimizer.solution import Candidate, Rejected
from controlloop.sim import ReplicaParams, ReplicaSimulator, poisson_arrivals
from controlloop.specs import ModelPerfSpec, ServerSpec, SystemSpec

# --- simulation settings and the cached oracle -----------------------------------------------


@dataclass(frozen=True)
class SimSettings:
    """How long and with which seed one replica is simulated, and what counts as a pass.

    The measured window is ``clamp(requests / rate, min_s, max_s)`` seconds, so
    every estimate rests on about ``requests`` arrivals (the cost of a run is
    proportional to its arrivals), after a warm-up of ``warmup`` times the
    window. It is cut into ``batches`` equal batches whose means give the
    standard error (batch means: TTFT samples are strongly correlated through
    the queue). A target holds when ``mean + z * se <= target``. The mean TTFT
    of a busy replica is heavy-tailed (an hour's estimate can be off by 40 %
    near rho 0.85), so the bound, not the bare mean, is what makes a verdict
    repeat under another seed or a longer run. A fixed seed makes every check
    repeatable, so a plan verified once verifies again.
    """

    requests: int = 2000
    min_s: float = 900.0
    max_s: float = 72 * 3600.0
    warmup: float = 0.1
    batches: int = 10
    z: float = 2.0
    seed: int = 1

    def duration_s(self, rate_per_s: float) -> float:
        if rate_per_s <= 0:
            return self.min_s
        return float(min(self.max_s, max(self.min_s, self.requests / rate_per_s)))


LOSS_TOLERANCE = 1e-3
"""Fraction of arrivals a replica may refuse (queue full) and still pass."""


@dataclass(frozen=True)
class SimEstimate:
    """Simulated means of one replica with their batch-means standard errors (ms)."""

    ttft_mean_ms: float
    ttft_se_ms: float
    itl_mean_ms: float
    itl_se_ms: float
    loss_fraction: float
    arrivals: int
    duration_s: float

    def meets(self, *, ttft: float, itl: float, z: float) -> bool:
        """Targets of 0 are ignored; no sample (NaN) or too much loss is a miss."""
        if not self.loss_fraction <= LOSS_TOLERANCE:
            return False
        ok = True
        if ttft > 0:
            ok &= bool(self.ttft_mean_ms + z * self.ttft_se_ms <= ttft)
        if itl > 0:
            ok &= bool(self.itl_mean_ms + z * self.itl_se_ms <= itl)
        return ok


def replica_params(perf: ModelPerfSpec, server: ServerSpec, batch: int) -> ReplicaParams | None:
    """Simulator parameters of ``server`` on ``perf``'s accelerator (None without
    decode/prefill data: the simulator of section 7 runs on those only).

    Token counts are the load's averages rounded to integers (``K >= 1``).
    """
    if perf.decode_parms is None or perf.prefill_parms is None:
        return None
    load = server.load
    return ReplicaParams(
        alpha=perf.decode_parms.alpha,
        beta=perf.decode_parms.beta,
        gamma=perf.prefill_parms.gamma,
        delta=perf.prefill_parms.delta,
        batch=max(1, int(batch)),
        in_tokens=max(0, round(load.avg_in_tokens)),
        out_tokens=max(1, round(load.avg_out_tokens)),
    )


SimKey = tuple[ReplicaParams, float, SimSettings]


@dataclass
class SimOracle:
    """Simulated steady state of one replica at a rate, cached by all its inputs.

    The key is ``(params, rate, settings)``: params carry ``alpha, beta, gamma,
    delta, N, I, K, Q``. Least recently used entries are dropped beyond
    ``max_entries``.
    """

    settings: SimSettings = field(default_factory=SimSettings)
    max_entries: int = 100_000
    hits: int = 0
    misses: int = 0
    simulated_s: float = 0.0  # simulated replica-seconds run (cache misses only)
    _cache: OrderedDict[SimKey, SimEstimate] = field(default_factory=OrderedDict)

    def run(self, items: Sequence[tuple[ReplicaParams, float]]) -> list[SimEstimate]:
        """Estimate each ``(params, per-replica rate in req/s)``; cached ones are not rerun."""
        out = []
        for params, rate in items:
            key = (params, float(f"{rate:.12g}"), self.settings)  # equal up to rounding
            res = self._cache.get(key)
            if res is None:
                self.misses += 1
                res = self._cache[key] = estimate(params, key[1], self.settings)
                self.simulated_s += res.duration_s * (1 + self.settings.warmup)
                if len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
            else:
                self.hits += 1
                self._cache.move_to_end(key)
            out.append(res)
        return out

    def meets(self, res: SimEstimate, *, ttft: float, itl: float) -> bool:
        return res.meets(ttft=ttft, itl=itl, z=self.settings.z)

    def __len__(self) -> int:
        return len(self._cache)


def estimate(params: ReplicaParams, rate_per_s: float, settings: SimSettings) -> SimEstimate:
    """One seeded token-level run (section 7) at Poisson ``rate_per_s``, read in batches."""
    dur = settings.duration_s(rate_per_s)
    warm = settings.warmup * dur
    rng = np.random.default_rng(settings.seed)
    end_ms = (warm + dur) * MS_PER_S
    engine = ReplicaSimulator(params)
    engine.offer(poisson_arrivals(rng, rate_per_ms=rate_per_s / MS_PER_S, start_ms=0.0,
                                  end_ms=end_ms))
    engine.advance(warm * MS_PER_S)
    engine.drain_stats()
    ttft_sum = ttft_n = tokens = arrivals = lost = 0.0
    itl_time = 0.0
    ttft_means, itl_means = [], []
    for b in range(1, settings.batches + 1):
        engine.advance((warm + dur * b / settings.batches) * MS_PER_S)
        st = engine.drain_stats()
        arrivals, lost = arrivals + st.arrivals, lost + st.lost
        ttft_sum, ttft_n = ttft_sum + float(st.ttft_ms.sum()), ttft_n + st.ttft_ms.size
        itl_time, tokens = itl_time + st.decode_time_ms, tokens + st.decode_tokens
        if st.ttft_ms.size:
            ttft_means.append(float(st.ttft_ms.mean()))
        if st.decode_tokens:
            itl_means.append(st.decode_time_ms / st.decode_tokens)
    nan = float("nan")
    return SimEstimate(
        ttft_mean_ms=ttft_sum / ttft_n if ttft_n else nan,
        ttft_se_ms=_se(ttft_means),
        itl_mean_ms=itl_time / tokens if tokens else nan,
        itl_se_ms=_se(itl_means),
        loss_fraction=lost / arrivals if arrivals else 0.0,
        arrivals=int(arrivals),
        duration_s=dur,
    )


def _se(means: list[float]) -> float:
    """Standard error of the grand mean from batch means (inf with fewer than 2)."""
    if len(means) < 2:
        return math.inf
    return float(np.std(means, ddof=1) / math.sqrt(len(means)))


# --- per-pair calibration ----------------------------------------------------------------------


CalKey = tuple[float, float, float, float, int, int, int, int, float, float]


@dataclass
class Calibrator:
    """Largest per-replica rate (req/s) meeting the targets in simulation, per pair.

    The simulated latencies grow with the rate, so a monotone search applies
    (see :class:`_Bisect`); the cap never raises ``lam*``. Results are kept in memory and, with
    ``path``, in a JSON file read on construction and written by :meth:`save`.
    """

    oracle: SimOracle = field(default_factory=SimOracle)
    path: Path | None = None
    rtol: float = 0.05
    hits: int = 0
    misses: int = 0
    _rates: dict[CalKey, float] = field(default_factory=dict)
    _dirty: bool = False

    def __post_init__(self) -> None:
        if self.path is not None and Path(self.path).is_file():
            self._load(Path(self.path))

    def key(self, params: ReplicaParams, *, ttft: float, itl: float) -> CalKey:
        p = params
        # the queue bound changes the safe rate (a short queue loses requests instead of
        # waiting): it is part of the key, -1 for unbounded
        queue = -1 if p.queue is None else int(p.queue)
        return (p.alpha, p.beta, p.gamma, p.delta, p.batch, p.in_tokens, p.out_tokens, queue,
                float(ttft), float(itl))

    def rates(
        self, pairs: Sequence[tuple[ReplicaParams, float, float, float]]
    ) -> list[float]:
        """Safe rate of each ``(params, lam* req/s, ttft target, itl target)``.

        Pairs are searched together: each round simulates one probe per
        unfinished pair, so a round is one pass over short simulations.
        """
        keys = [self.key(p, ttft=t, itl=i) for p, _, t, i in pairs]
        out: dict[CalKey, float] = {}
        todo: dict[CalKey, _Bisect] = {}
        for key, (params, lam, ttft, itl) in zip(keys, pairs, strict=True):
            if key in self._rates:
                self.hits += 1
                out[key] = self._rates[key]
            elif key in todo:
                self.hits += 1  # the same pair twice in one call is searched once
            else:
                self.misses += 1
                todo[key] = _Bisect(params, lam, ttft, itl, self.rtol)
        while todo:
            active = [b for b in todo.values() if not b.done]
            if not active:
                break
            results = self.oracle.run([(b.params, b.probe) for b in active])
            for b, res in zip(active, results, strict=True):
                b.update(self.oracle.meets(res, ttft=b.ttft, itl=b.itl))
            for key in [k for k, b in todo.items() if b.done]:
                out[key] = self._rates[key] = todo.pop(key).lo
                self._dirty = True
        return [out[k] for k in keys]

    def save(self) -> None:
        """Write the cache to ``path`` atomically (no-op without a path or changes)."""
        if self.path is None or not self._dirty:
            return
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [[*k, v] for k, v in sorted(self._rates.items())]
        doc = {"version": 1, "settings": _settings_doc(self.oracle.settings, self.rtol),
               "rates": rows}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
        self._dirty = False

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # an unreadable cache is rebuilt, not fatal
        if doc.get("settings") != _settings_doc(self.oracle.settings, self.rtol):
            return  # learned under other settings: not comparable
        for row in doc.get("rates", []):
            if not isinstance(row, list) or len(row) != 11:
                continue  # an older cache without the queue bound: re-learned
            a, b, g, d, n, i, k, q, t, itl, rate = row
            self._rates[(a, b, g, d, int(n), int(i), int(k), int(q), t, itl)] = float(rate)

    def __len__(self) -> int:
        return len(self._rates)


def _settings_doc(s: SimSettings, rtol: float) -> dict[str, float]:
    return {**asdict(s), "rtol": rtol}


_MIN_FRACTION = 1 / 16  # failing at lam*/16 a pair is treated as infeasible in simulation


@dataclass
class _Bisect:
    """Monotone search for the largest passing rate; ``lo`` passes (0: none found).

    The chain's ``lam*`` is probed first; when it fails the rate steps down by
    10 %, 20 %, 40 % ... of ``lam*`` until a probe passes, then the bracket is
    bisected (geometrically) to ``rtol``. Misses are usually within a few tens
    of percent of ``lam*``, so this takes about five probes.
    """

    params: ReplicaParams
    hi: float  # lowest rate known (or assumed) to fail
    ttft: float
    itl: float
    rtol: float
    lo: float = 0.0
    probe: float = 0.0
    done: bool = False
    _lam: float = 0.0
    _step: float = 0.1

    def __post_init__(self) -> None:
        self.probe = self._lam = self.hi

    def update(self, ok: bool) -> None:
        if ok and self.probe == self._lam:  # the chain's rate holds: never raise it
            self.lo, self.done = self.probe, True
            return
        if ok:
            self.lo = self.probe
        else:
            self.hi = self.probe
        if self.lo == 0.0:
            floor = self._lam * _MIN_FRACTION
            if self.probe <= floor:
                self.done = True  # fails even at lam*/16: no safe rate
                return
            self.probe = max(floor, self._lam * (1 - self._step))
            self._step = min(2 * self._step, 1.0)
        elif self.hi - self.lo <= self.rtol * self.hi:
            self.done = True
        else:
            self.probe = math.sqrt(self.lo * self.hi)


# --- capping the candidates -----------------------------------------------------------------


_CALIBRATORS: dict[str | None, Calibrator] = {}


def calibrator_for(path: str | Path | None) -> Calibrator:
    """The process-wide calibrator of a cache file (None: in memory only)."""
    key = None if path is None else str(path)
    if key not in _CALIBRATORS:
        _CALIBRATORS[key] = Calibrator(path=None if key is None else Path(key))
    return _CALIBRATORS[key]


def calibrate_candidates(
    system: SystemSpec, cset: CandidateSet, calibrator: Calibrator | None = None, *,
    top: int = 4,
) -> CandidateSet:
    """``cset`` with the ``lam*`` of each server's ``top`` best candidates capped at
    their simulated safe rates (the rest are left as sized: the solver reaches
    them only when capacity is short, and calibrating every pair of a large
    system takes a minute on a cold cache).

    Replicas become ``max(minNumReplicas, ceil(demand / cap))``; cost, value and
    the chain's predictions follow. A candidate with no safe rate is dropped
    (rejected with that reason). Candidates without decode/prefill data are kept.
    """
    calibrator = calibrator_for(None) if calibrator is None else calibrator
    rows: list[tuple[str, int, Candidate, ReplicaParams]] = []
    for name, cands in cset.candidates.items():
        ctx = cset.servers[name]
        if ctx.zero_load or ctx.target is None:
            continue
        for j, cand in enumerate(cands[:top]):
            perf = system.perf(ctx.spec.model, cand.accelerator)
            params = replica_params(perf, ctx.spec, cand.batch) if perf else None
            if params is not None and cand.rate_per_replica > 0:
                rows.append((name, j, cand, params))
    if not rows:
        return cset
    caps = calibrator.rates([
        (p, c.rate_per_replica, cset.servers[n].target.slo_ttft,  # type: ignore[union-attr]
         cset.servers[n].target.slo_itl)  # type: ignore[union-attr]
        for n, _, c, p in rows
    ])
    calibrator.save()
    updates: dict[tuple[str, int], Candidate | None] = {}
    for (name, j, cand, params), cap in zip(rows, caps, strict=True):
        if cap >= cand.rate_per_replica:
            continue
        updates[(name, j)] = (
            resize_candidate(cset, cand, params, cap, limited_by="sim") if cap > 0 else None
        )
    return replace_candidates(cset, updates, reason="no rate meets the targets in simulation")


def resize_candidate(
    cset: CandidateSet, cand: Candidate, params: ReplicaParams, rate_per_s: float, *,
    limited_by: str, replicas: int | None = None,
) -> Candidate:
    """``cand`` re-sized to a per-replica rate of ``rate_per_s`` (or to ``replicas``)."""
    ctx = cset.servers[cand.server]
    if replicas is None:
        replicas = max(ctx.spec.min_num_replicas, 1, math.ceil(ctx.demand / rate_per_s - 1e-9))
    cost = cand.cost_per_replica * replicas
    # the chain's figures at the new per-replica load, for the report
    f = np.array
    chain = DecodePrefillPerf(
        alpha=f([params.alpha]), beta=f([params.beta]), gamma=f([params.gamma]),
        delta=f([params.delta]), in_tokens=f([float(ctx.spec.load.avg_in_tokens)]),
        out_tokens=f([float(params.out_tokens)]), batch=f([params.batch], np.int64),
    )
    m = analyze(chain, np.array([ctx.demand / replicas / MS_PER_S]))
    return replace(
        cand, replicas=replicas, cost=cost, rate_per_replica=min(rate_per_s, cand.rate_per_replica),
        value=transition_value(
            cur_acc=ctx.current_accelerator, cur_replicas=ctx.current_replicas,
            cur_cost=ctx.current_cost, acc=cand.accelerator, replicas=replicas, cost=cost,
        ),
        itl_ms=float(m.itl[0]), ttft_ms=float(m.ttft[0]), rho=float(m.rho[0]),
        limited_by=limited_by,
    )


def replace_candidates(
    cset: CandidateSet, updates: dict[tuple[str, int], Candidate | None], *, reason: str
) -> CandidateSet:
    """A copy of ``cset`` with candidate ``j`` of server ``name`` replaced (None: dropped)."""
    if not updates:
        return cset
    candidates = {name: list(cands) for name, cands in cset.candidates.items()}
    rejected = {name: list(r) for name, r in cset.rejected.items()}
    dropped: set[tuple[str, int]] = set()
    for (name, j), new in updates.items():
        if new is None:
            old = cset.candidates[name][j]
            rejected.setdefault(name, []).append(Rejected(name, old.accelerator, reason))
            dropped.add((name, j))
        else:
            candidates[name][j] = new
    no_reason = dict(cset.no_candidate_reason)
    for name in {n for n, _ in updates}:
        kept = [c for j, c in enumerate(candidates[name]) if (name, j) not in dropped]
        kept.sort(key=lambda c: c.accelerator, reverse=True)  # the candidates' order:
        kept.sort(key=lambda c: c.value)  # value, ties by reverse name (as the reference)
        candidates[name] = kept
        if not kept:
            no_reason[name] = "; ".join(
                f"{r.accelerator}: {r.reason}" for r in rejected.get(name, [])
            ) or reason
    return CandidateSet(servers=cset.servers, candidates=candidates, rejected=rejected,
                        no_candidate_reason=no_reason, evaluations=cset.evaluations)
