"""Specs <-> custom resources (see the package docstring)."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controlloop.config import (
    SECTIONS,
    ConfigError,
    LoadedConfig,
    Section,
    _fix_priorities,
    cross_check,
    validate_section,
)
from controlloop.crds.schema import API_VERSION, DEFAULT_OPTIMIZER, KIND_BY_NAME, KINDS
from controlloop.loop.settings import ControllerSettings
from controlloop.specs import (
    AcceleratorSpec,
    CapacitySpec,
    ModelPerfSpec,
    OptimizerSpec,
    ServerSpec,
    ServiceClassSpec,
    Spec,
    SystemSpec,
)

Obj = dict[str, Any]


# --- names ------------------------------------------------------------------------------------

_DNS_BAD = re.compile(r"[^a-z0-9.-]+")


def dns_name(name: str) -> str:
    """A DNS-1123 subdomain close to ``name`` (``granite_13b`` -> ``granite-13b``)."""
    out = _DNS_BAD.sub("-", name.lower()).strip("-.")
    out = re.sub(r"-{2,}", "-", out)[:253].rstrip("-.")
    return out or "x" + hashlib.sha256(name.encode()).hexdigest()[:8]


def _unique_names(names: list[str]) -> list[str]:
    """DNS names for ``names``, made unique with a hash suffix where two fold together."""
    first = [dns_name(n) for n in names]
    counts: dict[str, int] = {}
    for n in first:
        counts[n] = counts.get(n, 0) + 1
    return [
        d if counts[d] == 1 else f"{d[:240]}-{hashlib.sha256(n.encode()).hexdigest()[:8]}"
        for n, d in zip(names, first, strict=True)
    ]


# --- system -> resources ----------------------------------------------------------------------


def _resource(kind: str, name: str, namespace: str, spec: Obj) -> Obj:
    meta: Obj = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def _lean(spec: Spec) -> Obj:
    """Fields that differ from their defaults (the loader puts the defaults back)."""
    return spec.model_dump(by_alias=True, exclude_defaults=True, exclude_none=True, mode="json")


def _named_spec(spec: Spec, name: str, k8s_name: str) -> Obj:
    body = _lean(spec)
    body.pop("name", None)
    return ({"name": name} if name != k8s_name else {}) | body


def system_to_crs(
    system: SystemSpec,
    *,
    namespace: str = "",
    settings: ControllerSettings | None = None,
    optimizer_name: str = DEFAULT_OPTIMIZER,
    include_servers: bool = True,
) -> list[Obj]:
    """Resources for ``system``: Accelerators, one Capacity, Models (one per model name, its
    perf rows in file order), ServiceClasses, Servers and one Optimizer."""
    out: list[Obj] = []
    for acc, k8s in zip(system.accelerators, _unique_names([a.name for a in system.accelerators]),
                        strict=True):
        out.append(_resource("Accelerator", k8s, namespace, _named_spec(acc, acc.name, k8s)))
    if system.capacity.count:
        out.append(_resource("Capacity", "default", namespace, _lean(system.capacity)))
    perf_by_model: dict[str, list[Obj]] = {}
    for perf in system.models:
        row = _lean(perf)
        row.pop("name")
        perf_by_model.setdefault(perf.name, []).append(row)
    for (model, rows), k8s in zip(perf_by_model.items(), _unique_names(list(perf_by_model)),
                                  strict=True):
        spec = ({"name": model} if model != k8s else {}) | {"perf": rows}
        out.append(_resource("Model", k8s, namespace, spec))
    for cls, k8s in zip(system.service_classes,
                        _unique_names([c.name for c in system.service_classes]), strict=True):
        out.append(_resource("ServiceClass", k8s, namespace, _named_spec(cls, cls.name, k8s)))
    if include_servers:
        for srv, k8s in zip(system.servers, _unique_names([s.name for s in system.servers]),
                            strict=True):
            out.append(_resource("Server", k8s, namespace, _named_spec(srv, srv.name, k8s)))
    opt_spec: Obj = {"optimizer": _lean(system.optimizer)}
    if settings is not None:
        opt_spec["controller"] = _lean(settings)
    out.append(_resource("Optimizer", optimizer_name, namespace, opt_spec))
    return out



# --- resources -> system ----------------------------------------------------------------------


@dataclass
class CrSpecs:
    """What :func:`crs_to_system` read: the system, the Optimizer's loop settings (None when
    its spec has none) and the problems of each resource by ``Kind/name``."""

    loaded: LoadedConfig
    settings: ControllerSettings | None = None
    optimizer: Obj | None = None  # the Optimizer resource used


class CrConfigError(ConfigError):
    """Invalid resources; ``invalid`` maps ``Kind/name`` to its own problems (for its status)."""

    def __init__(self, problems: list[str], invalid: dict[str, list[str]]) -> None:
        super().__init__(problems)
        self.invalid = invalid


def ref(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


_ITEM_SECTIONS = {
    "Accelerator": Section("accelerator", AcceleratorSpec, (), True),
    "ServiceClass": Section("serviceClass", ServiceClassSpec, (), True),
    "Server": Section("server", ServerSpec, (), True),
    "Capacity": Section("capacity", CapacitySpec, (), True),
}
_PERF_SECTION = Section("perf", ModelPerfSpec, (), True)
_OPTIMIZER_SECTION = Section("optimizer", OptimizerSpec, (), False)
_SETTINGS_SECTION = Section("controller", ControllerSettings, (), False)


def _spec_of(obj: Mapping[str, Any], problems: list[str]) -> Obj | None:
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        problems.append(f"{ref(obj)}: spec: expected a mapping, got {type(spec).__name__}")
        return None
    return dict(copy.deepcopy(spec))


def _with_name(obj: Mapping[str, Any], spec: Obj) -> Obj:
    if "name" not in spec:
        spec = {"name": (obj.get("metadata") or {}).get("name", "")} | spec
    return spec


def crs_to_system(
    objs: Iterable[Mapping[str, Any]], *, optimizer_name: str = DEFAULT_OPTIMIZER
) -> CrSpecs:
    """The system the resources describe; raises :class:`ConfigError` naming each bad resource
    (``Kind/name: spec.field: ...``); :attr:`ConfigError.problems` lines start with the ref.

    Resources are taken in name order within a kind (an API server lists them so), Capacity
    entries add up across resources; the Optimizer named ``optimizer_name`` is used (or the only
    one); unknown kinds are an error."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {k.kind: [] for k in KINDS}
    problems: list[str] = []
    invalid: dict[str, list[str]] = {}

    def bad(obj: Mapping[str, Any], lines: list[str]) -> None:
        if lines:
            problems.extend(lines)
            invalid.setdefault(ref(obj), []).extend(lines)

    for obj in objs:
        if obj.get("apiVersion") != API_VERSION or obj.get("kind") not in by_kind:
            bad(obj, [f"{ref(obj)}: not a {API_VERSION} kind we know "
                      f"({', '.join(by_kind)}), apiVersion {obj.get('apiVersion')!r}"])
            continue
        by_kind[str(obj["kind"])].append(obj)
    for items in by_kind.values():
        items.sort(key=lambda o: str((o.get("metadata") or {}).get("name", "")))

    # (ref, path) of each item, to name the resource in cross-reference problems
    origins: dict[str, list[tuple[str, str]]] = {k: [] for k in by_kind}
    accelerators: list[Any] = []
    models: list[Any] = []
    classes: list[Any] = []
    servers: list[Any] = []
    capacity: list[Any] = []
    warnings: list[str] = []
    for kind in ("Accelerator", "ServiceClass", "Server", "Capacity"):
        for obj in by_kind[kind]:
            lines: list[str] = []
            spec = _spec_of(obj, lines)
            if spec is not None:
                if kind == "ServiceClass":
                    warnings += _fix_priorities([spec], where=ref(obj), path=("spec",))
                    warnings = [w.replace("spec[0].", "spec.") for w in warnings]
                raw = spec if kind == "Capacity" else _with_name(obj, spec)
                item, lines = validate_section(_ITEM_SECTIONS[kind], raw, where=ref(obj),
                                               prefix=("spec",))
                if item is not None:
                    target = {"Accelerator": accelerators, "ServiceClass": classes,
                              "Server": servers}.get(kind)
                    if target is not None:
                        target.append(item)
                        origins[kind].append((ref(obj), "spec"))
                    else:
                        assert isinstance(item, CapacitySpec)
                        capacity.extend(item.count)
                        origins["Capacity"] += [(ref(obj), f"spec.count[{j}]")
                                                for j in range(len(item.count))]
            bad(obj, lines)
    for obj in by_kind["Model"]:
        lines = []
        spec = _spec_of(obj, lines)
        if spec is not None:
            name = spec.pop("name", None) or (obj.get("metadata") or {}).get("name", "")
            rows = spec.pop("perf", None)
            if spec:
                lines.append(f"{ref(obj)}: spec.{next(iter(spec))}: unknown field; expected "
                             "'name', 'perf'")
            if not isinstance(rows, list) or not rows:
                lines.append(f"{ref(obj)}: spec.perf: expected a non-empty list, got "
                             f"{type(rows).__name__}")
                rows = []
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    lines.append(f"{ref(obj)}: spec.perf[{i}]: expected a mapping")
                    continue
                perf, row_problems = validate_section(
                    _PERF_SECTION, {"name": name} | dict(row), where=ref(obj),
                    prefix=("spec", "perf", i))
                lines += row_problems
                if perf is not None:
                    models.append(perf)
                    origins["Model"].append((ref(obj), f"spec.perf[{i}]"))
        bad(obj, lines)

    optimizer = OptimizerSpec()
    settings: ControllerSettings | None = None
    chosen: Mapping[str, Any] | None = None
    optimizers = by_kind["Optimizer"]
    named = [o for o in optimizers if (o.get("metadata") or {}).get("name") == optimizer_name]
    if named or len(optimizers) == 1:
        chosen = (named or optimizers)[0]
        lines = []
        spec = _spec_of(chosen, lines)
        if spec is not None:
            extra = sorted(set(spec) - {"optimizer", "controller"})
            if extra:
                lines.append(f"{ref(chosen)}: spec.{extra[0]}: unknown field; expected "
                             "'optimizer', 'controller'")
            opt, opt_problems = validate_section(_OPTIMIZER_SECTION, spec.get("optimizer"),
                                                 where=ref(chosen), prefix=("spec", "optimizer"))
            lines += opt_problems
            if isinstance(opt, OptimizerSpec):
                optimizer = opt
            if spec.get("controller") is not None:
                ctl, ctl_problems = validate_section(
                    _SETTINGS_SECTION, spec["controller"], where=ref(chosen),
                    prefix=("spec", "controller"))
                lines += ctl_problems
                if isinstance(ctl, ControllerSettings):
                    settings = ctl
        bad(chosen, lines)
    elif len(optimizers) > 1:
        names = ", ".join(str((o.get("metadata") or {}).get("name")) for o in optimizers)
        problems.append(f"Optimizer: {len(optimizers)} resources ({names}) and none named "
                        f"'{optimizer_name}'; name the one to use")

    for kind, section in (("Accelerator", "acceleratorData"), ("Model", "modelData"),
                          ("ServiceClass", "serviceClassData")):
        if not by_kind[kind]:
            problems.append(f"{kind}: no {KIND_BY_NAME[kind].plural} found (section "
                            f"'{section}' is required)")
    if problems:
        raise CrConfigError(problems, invalid)
    system = SystemSpec(accelerators=accelerators, capacity=CapacitySpec(count=capacity),
                        models=models, service_classes=classes, servers=servers,
                        optimizer=optimizer)
    where = {s.key: f"{KINDS_BY_SECTION[s.key]} resources" for s in SECTIONS}
    cross_problems, cross_warnings = cross_check(system, where, {})
    if cross_problems:
        attributed = [_attribute(p, origins) for p in cross_problems]
        for line, who in attributed:
            problems.append(line)
            if who:
                invalid.setdefault(who, []).append(line)
        raise CrConfigError(problems, invalid)
    return CrSpecs(LoadedConfig(system=system, warnings=warnings + cross_warnings),
                   settings=settings, optimizer=dict(chosen) if chosen else None)


KINDS_BY_SECTION = {k.section: k.kind for k in KINDS}
_LIST_KIND = {"accelerators": "Accelerator", "models": "Model", "serviceClasses": "ServiceClass",
              "servers": "Server", "count": "Capacity"}
_CROSS = re.compile(r"^\w+ resources: (\w+)\[(\d+)\]\.?([^:]*): (.*)$")


def _attribute(problem: str, origins: Mapping[str, list[tuple[str, str]]]) -> tuple[str, str]:
    """``Model resources: models[3].acc: ...`` -> ``Model/x: spec.perf[0].acc: ...``."""
    m = _CROSS.match(problem)
    if not m or m[1] not in _LIST_KIND:
        return problem, ""
    items = origins.get(_LIST_KIND[m[1]], [])
    index = int(m[2])
    if index >= len(items):
        return problem, ""
    who, path = items[index]
    sub = m[3].strip(".")
    return f"{who}: {path}{'.' + sub if sub else ''}: {m[4]}", who


def canonical(system: SystemSpec) -> SystemSpec:
    """``system`` in the order resources come back from an API server: by Kubernetes name within
    each kind (a Model's perf rows keep their order), capacity in resource order."""
    acc_names = dict(zip((a.name for a in system.accelerators),
                         _unique_names([a.name for a in system.accelerators]), strict=True))
    model_names = list(dict.fromkeys(m.name for m in system.models))
    model_k8s = dict(zip(model_names, _unique_names(model_names), strict=True))
    cls_k8s = dict(zip((c.name for c in system.service_classes),
                       _unique_names([c.name for c in system.service_classes]), strict=True))
    srv_k8s = dict(zip((s.name for s in system.servers),
                       _unique_names([s.name for s in system.servers]), strict=True))
    return system.model_copy(update={
        "accelerators": sorted(system.accelerators, key=lambda a: acc_names[a.name]),
        "models": sorted(system.models, key=lambda m: model_k8s[m.name]),  # stable: rows keep
        "service_classes": sorted(system.service_classes, key=lambda c: cls_k8s[c.name]),
        "servers": sorted(system.servers, key=lambda s: srv_k8s[s.name]),
    })


