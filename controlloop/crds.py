"""Custom resources for the static specs (group ``controlloop.io``, version ``v1alpha1``).

Pure functions, no I/O:

* :func:`crd_documents` builds the CustomResourceDefinitions; their OpenAPI v3 schemas are
  generated from the same pydantic models the files are validated with, so the API server
  enforces the enums, minimums and required fields the loader does and the two cannot drift
  (``manifests/crds/`` holds the rendered copies; a unit test keeps them in sync);
* :func:`system_to_crs` turns a :class:`~controlloop.specs.SystemSpec` (any config form) into
  resources, :func:`crs_to_system` turns resources back into the same system, with every
  problem named ``Kind/name: spec.path: what, got value``.

Why our own group rather than the seed's ``inferno.platform.ai``: we do not own that domain and
our kinds differ from the seed's (a Model carries all its perf rows, the Optimizer carries the
loop settings and the solution), so clusters running both must not collide.

Kubernetes names are DNS-1123 (lower case, no ``_``), spec names are not (``granite_13b``,
``2xA100``): a resource's name is the spec name made DNS-safe, and ``spec.name`` carries the
exact name when the two differ.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from controlloop.config import (
    SECTIONS,
    ConfigError,
    LoadedConfig,
    Section,
    _fix_priorities,
    cross_check,
    validate_section,
)
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

GROUP = "controlloop.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_OPTIMIZER = "default"

Obj = dict[str, Any]


# --- OpenAPI v3 schemas from the pydantic models ---------------------------------------------


def openapi_schema(model: type[BaseModel], *, drop: Iterable[str] = ()) -> Obj:
    """A structural OpenAPI v3.0 schema (as CRDs need it) for ``model``'s aliases.

    JSON Schema 2020 -> OpenAPI 3.0: ``$ref`` inlined, ``anyOf[X, null]`` -> ``X`` +
    ``nullable``, numeric ``exclusiveMinimum: n`` -> ``minimum: n, exclusiveMinimum: true``,
    ``additionalProperties: false`` dropped (the API server prunes unknown fields; a structural
    schema may not combine it with ``properties``), titles and defaults dropped (a default would
    be written into stored objects; the loader applies ours).
    """
    raw = model.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    out = _convert(raw, defs)
    for name in drop:
        out["properties"].pop(name, None)
        if name in out.get("required", []):
            out["required"].remove(name)
            if not out["required"]:
                del out["required"]
    return out


def _convert(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} in a structural schema")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        merged = {**_convert(options[0], defs), **_convert(rest, defs)}
        if len(options) < len(node["anyOf"]):
            merged["nullable"] = True
        return merged
    out: Obj = {}
    for key, value in node.items():
        if key in ("title", "default"):
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "properties":
            out[key] = {k: _convert(v, defs) for k, v in value.items()}
            continue
        out[key] = _convert(value, defs)
    return out


def _obj(properties: Obj, required: list[str] | None = None, description: str = "") -> Obj:
    out: Obj = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


_STR: Obj = {"type": "string"}
_INT0: Obj = {"type": "integer", "minimum": 0}
_NUM0: Obj = {"type": "number", "minimum": 0}
_NULL_NUM0: Obj = {"type": "number", "minimum": 0, "nullable": True}

CONDITION: Obj = _obj(
    {
        "type": {"type": "string", "minLength": 1, "description": "Ready, Degraded or Valid"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "description": "CamelCase machine-readable cause"},
        "message": _STR,
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": _INT0,
    },
    ["type", "status"],
)
CONDITIONS: Obj = {
    "type": "array",
    "items": CONDITION,
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
SPEC_STATUS: Obj = _obj(
    {"observedGeneration": _INT0, "conditions": CONDITIONS},
    description="Whether the controller accepted this resource (condition Valid).",
)
DECISIONS = ["scaled", "moved", "unchanged", "held", "skipped", "error"]
SERVER_STATUS: Obj = _obj(
    {
        "name": _STR,
        "namespace": _STR,
        "deployment": _STR,
        "model": _STR,
        "class": _STR,
        "currentAccelerator": _STR,
        "currentReplicas": _INT0,
        "accelerator": {"type": "string", "description": "the solution's accelerator"},
        "replicas": {**_INT0, "description": "the solution's replicas"},
        "batch": {**_INT0, "nullable": True, "description": "max batch size per replica"},
        "cost": {**_NULL_NUM0, "description": "cents per hour"},
        "predictedItlMs": _NULL_NUM0,
        "predictedTtftMs": _NULL_NUM0,
        "sloItlMs": _NULL_NUM0,
        "sloTtftMs": _NULL_NUM0,
        "decision": {"type": "string", "enum": DECISIONS},
        "reason": _STR,
    },
    ["name", "decision"],
)
OPTIMIZER_STATUS: Obj = _obj(
    {
        "observedGeneration": {**_INT0, "description": "spec generation the solution used"},
        "lastCycleTime": {"type": "string", "format": "date-time"},
        "cycleId": _STR,
        "outcome": {"type": "string", "enum": ["ok", "partial", "failed"]},
        "dryRun": {"type": "boolean"},
        "solver": _STR,
        "solverStatus": _STR,
        "totals": _obj(
            {
                "servers": _INT0,
                "replicas": _INT0,
                "cost": {**_NUM0, "description": "cents per hour, held servers included"},
                "scaled": _INT0,
                "moved": _INT0,
                "held": _INT0,
                "unchanged": _INT0,
                "errors": _INT0,
            }
        ),
        "servers": {"type": "array", "items": SERVER_STATUS},
        "conditions": CONDITIONS,
    },
    description="The latest solution, written by the controller every cycle.",
)


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec_schema: Obj
    status_schema: Obj
    columns: tuple[tuple[str, str, str], ...]  # (name, type, jsonPath)
    description: str
    section: str = ""  # SECTIONS key it feeds

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


_NAME_PROP: Obj = {
    "type": "string",
    "minLength": 1,
    "description": "exact spec name when it is not a valid Kubernetes name (default: "
    "metadata.name)",
}


def _named(model: type[BaseModel]) -> Obj:
    schema = openapi_schema(model, drop=("name",))
    schema["properties"] = {"name": _NAME_PROP, **schema["properties"]}
    return schema


def _model_schema() -> Obj:
    perf = openapi_schema(ModelPerfSpec, drop=("name",))
    return _obj(
        {"name": _NAME_PROP, "perf": {"type": "array", "minItems": 1, "items": perf}},
        ["perf"],
        "Performance data of one model, one entry per accelerator it runs on.",
    )


def _optimizer_schema() -> Obj:
    controller = openapi_schema(ControllerSettings)
    controller["description"] = (
        "Loop settings, as controller.yaml's 'controller' (default: the file's, or defaults)."
    )
    return _obj(
        {"optimizer": openapi_schema(OptimizerSpec), "controller": controller},
        description="Optimizer and control-loop options.",
    )


_AGE = ("Age", "date", ".metadata.creationTimestamp")
KINDS: tuple[Kind, ...] = (
    Kind(
        "Accelerator", "accelerators", ("acc",), _named(AcceleratorSpec), SPEC_STATUS,
        (("Type", "string", ".spec.type"), ("Units", "integer", ".spec.multiplicity"),
         ("Memory", "number", ".spec.memSize"), ("Cost", "number", ".spec.cost"),
         ("Valid", "string", '.status.conditions[?(@.type=="Valid")].status'), _AGE),
        "An allocatable accelerator unit and its cost (cents/hour).", "acceleratorData",
    ),
    Kind(
        "Capacity", "capacities", ("cap",), openapi_schema(CapacitySpec), SPEC_STATUS,
        (("Types", "string", ".spec.count[*].type"), ("Counts", "string", ".spec.count[*].count"),
         ("Valid", "string", '.status.conditions[?(@.type=="Valid")].status'), _AGE),
        "Cards available per accelerator type (all Capacity resources add up).", "capacityData",
    ),
    Kind(
        "Model", "models", ("mdl",), _model_schema(), SPEC_STATUS,
        (("Accelerators", "string", ".spec.perf[*].acc"),
         ("Valid", "string", '.status.conditions[?(@.type=="Valid")].status'), _AGE),
        "Performance parameters of a model on each accelerator.", "modelData",
    ),
    Kind(
        "ServiceClass", "serviceclasses", ("sc", "svcclass"), _named(ServiceClassSpec),
        SPEC_STATUS,
        (("Priority", "integer", ".spec.priority"),
         ("Models", "string", ".spec.modelTargets[*].model"),
         ("Valid", "string", '.status.conditions[?(@.type=="Valid")].status'), _AGE),
        "SLO targets per model for one priority class.", "serviceClassData",
    ),
    Kind(
        "Server", "servers", ("srv",), _named(ServerSpec), SPEC_STATUS,
        (("Class", "string", ".spec.class"), ("Model", "string", ".spec.model"),
         ("Accelerator", "string", ".spec.currentAlloc.accelerator"),
         ("Replicas", "integer", ".spec.currentAlloc.numReplicas"), _AGE),
        "An inference server for offline optimization (the controller finds its servers "
        "from labelled Deployments).", "serverData",
    ),
    Kind(
        "Optimizer", "optimizers", ("opt",), _optimizer_schema(), OPTIMIZER_STATUS,
        (("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
         ("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason'),
         ("Servers", "integer", ".status.totals.servers"),
         ("Replicas", "integer", ".status.totals.replicas"),
         ("Cost", "number", ".status.totals.cost"),
         ("Last Cycle", "date", ".status.lastCycleTime"), _AGE),
        "Optimizer and loop options (spec) and the latest solution (status).", "optimizerData",
    ),
)
KIND_BY_NAME = {k.kind: k for k in KINDS}


def crd_document(kind: Kind) -> Obj:
    columns = [{"name": n, "type": t, "jsonPath": p} for n, t, p in kind.columns]
    schema = _obj(
        {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": {"type": "object"},
            "spec": kind.spec_schema,
            "status": kind.status_schema,
        },
        ["spec"],
        kind.description,
    )
    return copy.deepcopy({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "controlloop"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["controlloop"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    })


def crd_documents() -> list[Obj]:
    return [crd_document(k) for k in KINDS]  # fresh copies: callers may edit them


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


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # shared sub-schemas are written out, not as YAML anchors


def dump_yaml(docs: Iterable[Obj]) -> str:
    """Multi-document YAML, ready for ``kubectl create -f -``."""
    return yaml.dump_all(list(docs), Dumper=_Dumper, sort_keys=False, explicit_start=True,
                         width=100)


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


# --- status -----------------------------------------------------------------------------------


def condition(type_: str, status: bool, reason: str, message: str, *, now: str,
              generation: int, previous: Iterable[Mapping[str, Any]] = ()) -> Obj:
    """A condition; ``lastTransitionTime`` moves only when ``status`` flips."""
    value = "True" if status else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime", now) if old and old.get("status") == value else now
    return {"type": type_, "status": value, "reason": reason, "message": message[:1024],
            "lastTransitionTime": since, "observedGeneration": generation}


def _num(value: Any) -> float | None:
    """A finite number or None (JSON has no inf/NaN; the schema allows null)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def optimizer_status(report: Any, *, generation: int, now: str, specs_error: str = "",
                     previous: Iterable[Mapping[str, Any]] = ()) -> Obj:
    """The Optimizer's status for one cycle report (:class:`~controlloop.loop.cycle.CycleReport`):
    the solution per server, totals, and conditions Ready (the cycle produced a solution from
    valid specs) and Degraded (it did so only in part, or the specs are the last good ones)."""
    servers = []
    for s in report.servers:
        replicas = next((r for r in (s.desired_replicas, s.recommended_replicas)
                         if r is not None), s.current_replicas)
        servers.append({
            "name": s.server, "namespace": s.namespace, "deployment": s.deployment,
            "model": s.model, "class": s.service_class,
            "currentAccelerator": s.current_accelerator, "currentReplicas": s.current_replicas,
            "accelerator": s.desired_accelerator or s.recommended_accelerator
            or s.current_accelerator,
            "replicas": max(0, int(replicas)), "batch": s.batch, "cost": _num(s.cost),
            "predictedItlMs": _num(s.predicted_itl_ms),
            "predictedTtftMs": _num(s.predicted_ttft_ms),
            "sloItlMs": _num(s.slo_itl_ms), "sloTtftMs": _num(s.slo_ttft_ms),
            "decision": s.verdict, "reason": s.reason[:1024],
        })
    errors = sum(report.error_kinds.values()) if report.error_kinds else len(report.errors)
    totals = {"servers": len(servers), "replicas": sum(x["replicas"] for x in servers),
              "cost": round(max(0.0, _num(report.total_cost) or 0.0), 4),
              "scaled": report.count("scaled"), "moved": report.count("moved"),
              "held": report.count("held"), "unchanged": report.count("unchanged"),
              "errors": errors}
    previous = list(previous)
    if report.outcome == "failed":
        ready = condition("Ready", False, "CycleFailed",
                          "; ".join(report.errors)[:1024] or "the cycle failed", now=now,
                          generation=generation, previous=previous)
    else:
        ready = condition("Ready", True, "SolutionApplied" if not report.dry_run
                          else "SolutionComputed", report.summary(), now=now,
                          generation=generation, previous=previous)
    if specs_error:
        degraded = condition("Degraded", True, "InvalidSpecs",
                             f"using the last good specs: {specs_error}", now=now,
                             generation=generation, previous=previous)
    elif report.outcome == "partial" or errors:
        degraded = condition("Degraded", True, "PartialCycle",
                             "; ".join(report.errors)[:1024] or "some servers failed", now=now,
                             generation=generation, previous=previous)
    else:
        degraded = condition("Degraded", False, "AsExpected", "", now=now,
                             generation=generation, previous=previous)
    return {"observedGeneration": generation, "lastCycleTime": now, "cycleId": report.cycle_id,
            "outcome": report.outcome, "dryRun": bool(report.dry_run), "solver": report.solver,
            "solverStatus": report.solver_status, "totals": totals, "servers": servers,
            "conditions": [ready, degraded]}


# --- command (the only I/O here) --------------------------------------------------------------


def cmd_export_crs(args: Any) -> int:
    """``controlloop export-crs PATH``: the resources of a config on stdout."""
    import sys
    from pathlib import Path

    from controlloop.config import load_config
    from controlloop.loop.settings import controller_file, load_controller_settings

    if args.definitions:
        sys.stdout.write(dump_yaml(crd_documents()))
        return 0
    if args.path is None:
        raise ConfigError(["export-crs: give a config PATH (or --definitions)"])
    path = Path(args.path)
    loaded = load_config(path)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    settings = None
    if path.is_dir() and controller_file(path) is not None:
        settings = load_controller_settings(path)
    sys.stdout.write(dump_yaml(system_to_crs(
        loaded.system, namespace=args.namespace, settings=settings,
        optimizer_name=args.optimizer_name, include_servers=not args.no_servers)))
    return 0


HEADER = ("# Generated from the spec models by `python -m controlloop.crds manifests/crds` "
          "(controlloop/crds.py); do not edit.\n")


def write_definitions(directory: Any) -> list[Any]:
    """Write one ``<plural>.yaml`` per kind into ``directory`` (manifests/crds)."""
    from pathlib import Path

    out = []
    for kind in KINDS:
        path = Path(directory) / f"{kind.plural}.yaml"
        path.write_text(HEADER + dump_yaml([crd_document(kind)]), encoding="utf-8")
        out.append(path)
    return out


if __name__ == "__main__":
    import sys

    for written in write_definitions(sys.argv[1] if len(sys.argv) > 1 else "manifests/crds"):
        print(written)
