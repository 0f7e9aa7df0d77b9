"""CustomResourceDefinition semantics of the fake API server: validation of custom objects
against a version's ``openAPIV3Schema`` (OpenAPI 3.0 = JSON Schema draft 4 + ``nullable``),
pruning of unknown fields, structural-schema checks and printer-column tables.

The API server's own rules (k8s.io/apiextensions-apiserver) are followed where our CRDs use
them: ``nullable``, ``x-kubernetes-preserve-unknown-fields``, ``additionalProperties`` maps,
``metadata`` left alone, unknown fields pruned (not an error unless fieldValidation=Strict).
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

import jsonschema

Obj = dict[str, Any]


def to_draft4(schema: Any) -> Any:
    """OpenAPI v3.0 schema -> JSON Schema draft 4 (``nullable`` -> a ``null`` type)."""
    if isinstance(schema, list):
        return [to_draft4(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_draft4(v) for k, v in schema.items()
           if not k.startswith("x-kubernetes-") and k != "nullable"}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def validation_errors(obj: Obj, schema: Obj) -> list[str]:
    """``path: message`` for each way ``obj`` breaks ``schema`` (metadata is not checked)."""
    body = {k: v for k, v in obj.items() if k != "metadata"}
    validator = jsonschema.Draft4Validator(to_draft4(
        {**schema, "properties": {k: v for k, v in (schema.get("properties") or {}).items()
                                  if k != "metadata"}}))
    out = []
    for err in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]"
                        for p in err.absolute_path).replace(".[", "[")
        out.append(f"{path or '(root)'}: {err.message}")
    return out


def prune(value: Any, schema: Obj) -> Any:
    """Drop fields the schema does not know, as the API server does before storing."""
    if isinstance(value, list):
        items = schema.get("items") or {}
        return [prune(v, items) for v in value]
    if not isinstance(value, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    if props is None and isinstance(extra, dict):
        return {k: prune(v, extra) for k, v in value.items()}
    if props is None:
        return value if schema.get("type") != "object" else {}
    return {k: prune(v, props[k]) for k, v in value.items() if k in props}


def prune_object(obj: Obj, schema: Obj) -> Obj:
    """``prune`` for a whole object: apiVersion, kind and metadata are the server's."""
    keep = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    rest = prune({k: v for k, v in obj.items() if k not in keep}, schema)
    return {**keep, **rest}


def structural_problems(schema: Any, path: str = "") -> list[str]:
    """Where ``schema`` is not structural (every node typed, no $ref, no properties together
    with additionalProperties, no anyOf/oneOf carrying types)."""
    out: list[str] = []
    if not isinstance(schema, dict):
        return [f"{path}: not a schema"]
    if "$ref" in schema:
        out.append(f"{path}: $ref is not allowed")
    if "type" not in schema and not (schema.get("x-kubernetes-int-or-string")
                                     or schema.get("x-kubernetes-preserve-unknown-fields")):
        out.append(f"{path or '(root)'}: type is required")
    if "properties" in schema and "additionalProperties" in schema:
        out.append(f"{path}: properties and additionalProperties are mutually exclusive")
    if isinstance(schema.get("additionalProperties"), bool):
        out.append(f"{path}: additionalProperties must be a schema")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or []):
            if "type" in sub:
                out.append(f"{path}.{key}[{i}]: a type inside {key} is not structural")
    for name, sub in (schema.get("properties") or {}).items():
        out += structural_problems(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        out += structural_problems(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += structural_problems(schema["additionalProperties"], f"{path}.*")
    return out


# --- printer columns (server-side printing for kubectl get) -------------------------------------

_FILTER = re.compile(r'^\?\(@\.(\w+)==["\']([^"\']*)["\']\)$')


def jsonpath(obj: Any, path: str) -> list[Any]:
    """The subset of JSONPath printer columns use: ``.a.b``, ``[*]``, ``[n]``,
    ``[?(@.k=="v")]``."""
    tokens = re.findall(r"\.([^.\[\]]+)|\[([^\]]+)\]", path)
    values = [obj]
    for name, index in tokens:
        nxt: list[Any] = []
        for v in values:
            if name:
                if isinstance(v, dict) and name in v:
                    nxt.append(v[name])
            elif index == "*":
                nxt.extend(v if isinstance(v, list) else [])
            elif (m := _FILTER.match(index)) and isinstance(v, list):
                nxt.extend(x for x in v if isinstance(x, dict) and str(x.get(m[1])) == m[2])
            elif index.lstrip("-").isdigit() and isinstance(v, list):
                i = int(index)
                if -len(v) <= i < len(v):
                    nxt.append(v[i])
        values = nxt
    return values


def _age(ts: str, now: dt.datetime) -> str:
    try:
        then = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return "<invalid>"
    secs = max(0, int((now - then).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 3600 * 3:
        return f"{secs // 60}m"
    if secs < 86400 * 2:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def cell(obj: Obj, column: Obj, now: dt.datetime) -> Any:
    values = jsonpath(obj, column["jsonPath"])
    if not values:
        return None
    if column.get("type") == "date" and isinstance(values[0], str):
        return _age(values[0], now)
    if len(values) == 1:
        return values[0]
    return ",".join(str(v) for v in values)


def table(items: list[Obj], columns: list[Obj], resource_version: str) -> Obj:
    """A meta.k8s.io/v1 Table as the API server returns for ``Accept: ...;as=Table``."""
    now = dt.datetime.now(dt.UTC)
    cols = [{"name": "Name", "type": "string", "format": "name",
             "description": "Name must be unique within a namespace.", "priority": 0}]
    cols += [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
              "description": c.get("description", ""), "priority": c.get("priority", 0)}
             for c in columns]
    rows = []
    for obj in items:
        meta = copy.deepcopy(obj.get("metadata") or {})
        rows.append({
            "cells": [meta.get("name"), *(cell(obj, c, now) for c in columns)],
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": meta},
        })
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": cols, "rows": rows}


DEFAULT_COLUMNS = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
