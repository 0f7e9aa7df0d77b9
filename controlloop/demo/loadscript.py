"""Demo scenarios: which system, which servers, and the load each one gets over time.

A scenario is one YAML document (see docs/demo.md). Rates are requests per
minute, either absolute numbers or ``xF`` = F times the server's rate in the
system file. Every problem is reported as ``file: field: message (got value)``
through :class:`controlloop.config.ConfigError` (exit code 2).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from controlloop.config import ConfigError

SCENARIO_PACKAGE = "controlloop.demo"
SCENARIO_DIR = "scenarios"
_FACTOR = re.compile(r"^\s*x\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
_TOP_KEYS = {
    "name", "description", "system", "unlimited", "solver", "saturationPolicy", "capacity",
    "interval", "cycles", "startupSeconds", "servers", "load", "initial", "controller",
    "report", "termination", "truth", "tuning", "optimizer",
}
_TERMINATION_KEYS = {"preStopSeconds", "drainSeconds", "gracePeriodSeconds"}
# termination presets: the example vLLM Deployments (manifests/examples: a preStop hook that
# waits up to 600 s for the running requests, grace 630 s) and the defaults of Kubernetes and
# vLLM (no preStop, --shutdown-timeout 0, grace 30 s: running requests are dropped).
TERMINATION_PRESETS = {
    "example": {"preStopSeconds": 600.0, "drainSeconds": 0.0, "gracePeriodSeconds": 630.0},
    "default": {"preStopSeconds": 0.0, "drainSeconds": 0.0, "gracePeriodSeconds": 30.0},
}
TRUTH_PARAMS = ("alpha", "beta", "gamma", "delta")  # the emulated replicas' perf parameters
_LOAD_KEYS = {"phases", "noise", "inTokens", "outTokens"}
_PHASE_KEYS = {"duration", "rate", "shape"}


@dataclass(frozen=True)
class Rate:
    """An absolute rate (req/min) or a factor of the server's nominal rate."""

    value: float
    relative: bool

    def resolve(self, nominal: float) -> float:
        return self.value * nominal if self.relative else self.value

    def __str__(self) -> str:
        return f"x{self.value:g}" if self.relative else f"{self.value:g}"


@dataclass(frozen=True)
class Phase:
    duration: float  # seconds
    rate: Rate
    shape: str = "step"  # step: jump at the start; ramp: linear from the previous rate


@dataclass(frozen=True)
class LoadProfile:
    phases: tuple[Phase, ...]
    noise: float = 0.0  # relative standard deviation of the rate, per sample
    in_tokens: float | None = None  # overrides of the system file's token mix
    out_tokens: float | None = None

    def rate_at(self, t_s: float, nominal: float) -> float:
        """Noise-free scripted rate (req/min) at ``t_s``; the last phase's rate holds after."""
        if not self.phases:
            return nominal
        start = 0.0
        prev = self.phases[0].rate.resolve(nominal)
        for phase in self.phases:
            target = phase.rate.resolve(nominal)
            if t_s < start + phase.duration:
                if phase.shape == "ramp" and phase.duration > 0:
                    return prev + (target - prev) * (t_s - start) / phase.duration
                return target
            start += phase.duration
            prev = target
        return prev

    def change_times(self) -> list[float]:
        """Phase boundaries (seconds), for marking plots."""
        out, t = [], 0.0
        for phase in self.phases:
            t += phase.duration
            out.append(t)
        return out[:-1]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    system: str  # "large", "small" or a path
    source: str  # where the scenario came from (file or builtin:name)
    interval: float = 60.0
    cycles: int = 40
    startup_seconds: float = 120.0
    servers: tuple[str, ...] | None = None  # None = all
    load: dict[str, LoadProfile] = field(default_factory=dict)  # name/pattern -> profile
    unlimited: bool | None = None
    solver: str | None = None  # greedy | milp
    saturation_policy: str | None = None
    capacity: dict[str, int] | None = None
    initial: str = "plan"  # plan: start from the optimizer's plan; none: 0 replicas
    controller: dict[str, Any] = field(default_factory=dict)  # ControllerSettings overrides
    report: str = "timeline"  # timeline | assignment (the classic examples' tables)
    # How removed pods end: preStopSeconds, drainSeconds, gracePeriodSeconds (seconds).
    termination: dict[str, float] = field(
        default_factory=lambda: dict(TERMINATION_PRESETS["example"])
    )
    # Multipliers of the emulated replicas' perf parameters (the controller still reads the
    # profile): "model/acc" > "model/*" > "*/acc" > "*"; missing parameters are 1.
    truth: dict[str, dict[str, float]] = field(default_factory=dict)
    tuning: str | None = None  # off | observe | apply: the system's optimizer.tuning
    optimizer: dict[str, Any] = field(default_factory=dict)  # other optimizer overrides

    def truth_for(self, model: str, accelerator: str) -> dict[str, float]:
        """The multipliers of the most specific matching ``truth:`` key (1 for the rest)."""
        for key in (f"{model}/{accelerator}", f"{model}/*", f"*/{accelerator}", "*"):
            if key in self.truth:
                return {p: self.truth[key].get(p, 1.0) for p in TRUTH_PARAMS}
        return dict.fromkeys(TRUTH_PARAMS, 1.0)

    def profile(self, server: str) -> LoadProfile:
        """Exact name first, then the first matching glob pattern, then ``*``."""
        if server in self.load:
            return self.load[server]
        for pattern, profile in self.load.items():
            if pattern != "*" and fnmatch.fnmatchcase(server, pattern):
                return profile
        return self.load.get("*", LoadProfile(phases=()))

    @property
    def duration_s(self) -> float:
        return self.cycles * self.interval


def builtin_names() -> list[str]:
    root = resources.files(SCENARIO_PACKAGE).joinpath(SCENARIO_DIR)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_scenario(ref: str) -> Scenario:
    """A built-in scenario by name, or a YAML file by path."""
    path = Path(ref)
    if ref in builtin_names() and not path.is_file():
        res = resources.files(SCENARIO_PACKAGE).joinpath(SCENARIO_DIR, f"{ref}.yaml")
        return parse_scenario(res.read_text(encoding="utf-8"), where=f"builtin:{ref}")
    if not path.is_file():
        known = ", ".join(builtin_names())
        raise ConfigError(
            [f"{ref}: no such scenario file or built-in scenario (built-in: {known})"]
        )
    return parse_scenario(path.read_text(encoding="utf-8"), where=str(path))


def parse_scenario(text: str, *, where: str) -> Scenario:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{where}: not valid YAML: {exc}"]) from exc
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"{where}: expected a mapping at the top level, got {_show(raw)}"])

    def bad(fld: str, msg: str, value: Any = ...) -> None:
        problems.append(
            f"{where}: {fld}: {msg}" + ("" if value is ... else f" (got {_show(value)})")
        )

    for key in raw:
        if key not in _TOP_KEYS:
            bad(str(key), f"unknown field; expected one of {', '.join(sorted(_TOP_KEYS))}")

    def num(
        fld: str, value: Any, *, least: float, integer: bool = False, strict: bool = False
    ) -> Any:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok and integer and float(value) != int(value):
            ok = False
        if ok and (value <= least if strict else value < least):
            ok = False
        if not ok:
            kind = "an integer" if integer else "a number"
            bad(fld, f"must be {kind} {'>' if strict else '>='} {least:g}", value)
            return None
        return int(value) if integer else float(value)

    name = raw.get("name", Path(where).stem)
    if not isinstance(name, str) or not name:
        bad("name", "must be a non-empty string", name)
        name = "scenario"
    description = raw.get("description", "")
    if not isinstance(description, str):
        bad("description", "must be a string", description)
        description = ""
    system = raw.get("system", "large")
    if not isinstance(system, str) or not system:
        bad("system", "must be 'large', 'small' or a path to a config", system)
        system = "large"
    interval = num("interval", raw.get("interval", 60), least=0, strict=True)
    cycles = num("cycles", raw.get("cycles", 40), least=1, integer=True)
    startup = num("startupSeconds", raw.get("startupSeconds", 120), least=0)

    servers: tuple[str, ...] | None = None
    sv = raw.get("servers", "all")
    if isinstance(sv, list) and sv and all(isinstance(s, str) and s for s in sv):
        servers = tuple(sv)
    elif sv != "all":
        bad("servers", "must be 'all' or a non-empty list of server names", sv)

    unlimited = raw.get("unlimited")
    if unlimited is not None and not isinstance(unlimited, bool):
        bad("unlimited", "must be true or false", unlimited)
        unlimited = None
    solver = raw.get("solver")
    if solver is not None and solver not in ("greedy", "milp"):
        bad("solver", "must be 'greedy' or 'milp'", solver)
        solver = None
    policies = ("None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin")
    policy = raw.get("saturationPolicy")
    if policy is not None and policy not in policies:
        bad("saturationPolicy", f"must be one of {', '.join(policies)}", policy)
        policy = None
    capacity: dict[str, int] | None = None
    cap = raw.get("capacity")
    if cap is not None:
        if not isinstance(cap, dict):
            bad("capacity", "must map accelerator types to card counts", cap)
        else:
            capacity = {}
            for typ, count in cap.items():
                value = num(f"capacity.{typ}", count, least=0, integer=True)
                if value is not None:
                    capacity[str(typ)] = value
    initial = raw.get("initial", "plan")
    if initial not in ("plan", "none"):
        bad("initial", "must be 'plan' (start from the optimizer's plan) or 'none'", initial)
        initial = "plan"
    controller = raw.get("controller", {})
    if not isinstance(controller, dict):
        bad("controller", "must be a mapping of controller.yaml settings", controller)
        controller = {}
    report = raw.get("report", "timeline")
    if report not in ("timeline", "assignment"):
        bad("report", "must be 'timeline' or 'assignment'", report)
        report = "timeline"

    termination = _termination(raw.get("termination", "example"), bad, num)

    load: dict[str, LoadProfile] = {}
    raw_load = raw.get("load", {})
    if not isinstance(raw_load, dict):
        bad("load", "must map server names (or patterns, or '*') to load profiles", raw_load)
        raw_load = {}
    for key, prof in raw_load.items():
        profile = _profile(f"load.{key}", prof, bad, num)
        if profile is not None:
            load[str(key)] = profile

    truth = _truth(raw.get("truth", {}), bad, num)
    tuning = raw.get("tuning")
    if tuning is not None and tuning not in ("off", "observe", "apply"):
        bad("tuning", "must be 'off', 'observe' or 'apply'", tuning)
        tuning = None
    optimizer = raw.get("optimizer", {})
    if not isinstance(optimizer, dict):
        bad("optimizer", "must be a mapping of optimizer options (e.g. ttftPrefill)", optimizer)
        optimizer = {}

    if problems:
        raise ConfigError(problems)
    return Scenario(
        name=name, description=description.strip(), system=system, source=where,
        interval=interval, cycles=cycles, startup_seconds=startup, servers=servers, load=load,
        unlimited=unlimited, solver=solver, saturation_policy=policy, capacity=capacity,
        initial=initial, controller=controller, report=report, truth=truth,
        tuning=tuning, optimizer=optimizer, termination=termination,
    )


def _termination(raw: Any, bad: Any, num: Any) -> dict[str, float]:
    """A preset name or a mapping over the example preset."""
    presets = ", ".join(sorted(TERMINATION_PRESETS))
    if isinstance(raw, str):
        if raw in TERMINATION_PRESETS:
            return dict(TERMINATION_PRESETS[raw])
        bad("termination", f"must be one of {presets} or a mapping of "
            f"{', '.join(sorted(_TERMINATION_KEYS))}", raw)
        return dict(TERMINATION_PRESETS["example"])
    if not isinstance(raw, dict):
        bad("termination", f"must be one of {presets} or a mapping of "
            f"{', '.join(sorted(_TERMINATION_KEYS))}", raw)
        return dict(TERMINATION_PRESETS["example"])
    out = dict(TERMINATION_PRESETS["example"])
    for key, value in raw.items():
        if key not in _TERMINATION_KEYS:
            bad(f"termination.{key}",
                f"unknown field; expected one of {', '.join(sorted(_TERMINATION_KEYS))}")
            continue
        got = num(f"termination.{key}", value, least=0)
        if got is not None:
            out[str(key)] = got
    return out


def _truth(raw: Any, bad: Any, num: Any) -> dict[str, dict[str, float]]:
    if not isinstance(raw, dict):
        bad("truth", "must map 'model/accelerator' keys (or 'model/*', '*') to multipliers", raw)
        return {}
    out: dict[str, dict[str, float]] = {}
    for key, mults in raw.items():
        fld = f"truth.{key}"
        parts = str(key).split("/")
        if str(key) != "*" and (len(parts) != 2 or not all(parts)):
            bad(fld, "key must be 'model/accelerator', 'model/*', '*/accelerator' or '*'", key)
            continue
        if not isinstance(mults, dict):
            bad(fld, f"must map perf parameters ({', '.join(TRUTH_PARAMS)}) to multipliers", mults)
            continue
        entry: dict[str, float] = {}
        for name, value in mults.items():
            if name not in TRUTH_PARAMS:
                bad(
                    f"{fld}.{name}",
                    f"unknown parameter; expected one of {', '.join(TRUTH_PARAMS)}",
                )
                continue
            v = num(f"{fld}.{name}", value, least=0, strict=True)
            if v is not None:
                entry[str(name)] = v
        out[str(key)] = entry
    return out


def _profile(fld: str, raw: Any, bad: Any, num: Any) -> LoadProfile | None:
    if not isinstance(raw, dict):
        bad(fld, "must be a mapping with 'phases' (and optional noise, inTokens, outTokens)", raw)
        return None
    ok = True
    for key in raw:
        if key not in _LOAD_KEYS:
            bad(f"{fld}.{key}", f"unknown field; expected one of {', '.join(sorted(_LOAD_KEYS))}")
            ok = False
    phases: list[Phase] = []
    raw_phases = raw.get("phases", [])
    if not isinstance(raw_phases, list):
        bad(f"{fld}.phases", "must be a list of {duration, rate, shape}", raw_phases)
        raw_phases, ok = [], False
    for i, ph in enumerate(raw_phases):
        where = f"{fld}.phases[{i}]"
        if not isinstance(ph, dict):
            bad(where, "must be a mapping {duration, rate, shape}", ph)
            ok = False
            continue
        for key in ph:
            if key not in _PHASE_KEYS:
                bad(
                    f"{where}.{key}",
                    f"unknown field; expected one of {', '.join(sorted(_PHASE_KEYS))}",
                )
                ok = False
        duration = num(f"{where}.duration", ph.get("duration"), least=0, strict=True)
        rate = _rate(f"{where}.rate", ph.get("rate"), bad)
        shape = ph.get("shape", "step")
        if shape not in ("step", "ramp"):
            bad(f"{where}.shape", "must be 'step' or 'ramp'", shape)
            shape = None
        if duration is None or rate is None or shape is None:
            ok = False
            continue
        phases.append(Phase(duration=duration, rate=rate, shape=shape))
    noise = num(f"{fld}.noise", raw.get("noise", 0.0), least=0)
    if noise is not None and noise >= 1:
        bad(f"{fld}.noise", "must be < 1 (a relative standard deviation)", noise)
        noise = None
    tokens: dict[str, float | None] = {}
    for key in ("inTokens", "outTokens"):
        tokens[key] = None
        if key in raw:
            tokens[key] = num(f"{fld}.{key}", raw[key], least=0 if key == "inTokens" else 1)
            ok = ok and tokens[key] is not None
    if not ok or noise is None:
        return None
    return LoadProfile(
        phases=tuple(phases),
        noise=noise,
        in_tokens=tokens["inTokens"],
        out_tokens=tokens["outTokens"],
    )


def _rate(fld: str, value: Any, bad: Any) -> Rate | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return Rate(float(value), relative=False)
    elif isinstance(value, str):
        m = _FACTOR.match(value)
        if m:
            return Rate(float(m.group(1)), relative=True)
    bad(fld, "must be a rate in req/min >= 0 or 'xF' (F times the server's rate)", value)
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
