"""The CustomResourceDefinitions: OpenAPI v3 schemas generated from the spec models,
status schemas, printer columns (see the package docstring)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from controlloop.loop.settings import ControllerSettings
from controlloop.specs import (
    AcceleratorSpec,
    CapacitySpec,
    ModelPerfSpec,
    OptimizerSpec,
    ServerSpec,
    ServiceClassSpec,
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
        if key == "propertyNames":
            # Not in a structural schema: map-key lengths as a CEL rule (the loader checks too).
            rules = []
            if "minLength" in value:
                rules.append(f"size(k) >= {int(value['minLength'])}")
            if "maxLength" in value:
                rules.append(f"size(k) <= {int(value['maxLength'])}")
            if rules:
                out["x-kubernetes-validations"] = [{
                    "rule": f"self.all(k, {' && '.join(rules)})",
                    "message": f"keys must be {value.get('minLength', 0)}.."
                               f"{value.get('maxLength', 'any')} characters"}]
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


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # shared sub-schemas are written out, not as YAML anchors


def dump_yaml(docs: Iterable[Obj]) -> str:
    """Multi-document YAML, ready for ``kubectl create -f -``."""
    return yaml.dump_all(list(docs), Dumper=_Dumper, sort_keys=False, explicit_start=True,
                         width=100)



HEADER = ("# Generated from the spec models by `python -m controlloop.crds manifests/crds` "
          "(controlloop/crds/); do not edit.\n")


def write_definitions(directory: Any) -> list[Any]:
    """Write one ``<plural>.yaml`` per kind into ``directory`` (manifests/crds)."""
    from pathlib import Path

    out = []
    for kind in KINDS:
        path = Path(directory) / f"{kind.plural}.yaml"
        path.write_text(HEADER + dump_yaml([crd_document(kind)]), encoding="utf-8")
        out.append(path)
    return out


