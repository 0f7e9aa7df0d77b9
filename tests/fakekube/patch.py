"""The three PATCH flavours of the API server: strategic merge, JSON merge, JSON patch.

Strategic merge is implemented for what a Deployment / Pod template needs: the merge
keys below are those declared by ``patchMergeKey`` in k8s.io/api (containers merge by
``name``, container ports by ``containerPort``, volume mounts by ``mountPath``...);
lists without a merge key are replaced, as are lists of scalars.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
}


class PatchError(ValueError):
    """The patch cannot be applied; the server answers 422 (or 400 for bad JSON)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, val in patch.items():
        if val is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), val)
    return out


def strategic_merge(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch of ``patch`` onto ``target`` (both JSON values)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive is not None:
        raise PatchError(f"unknown $patch directive {directive!r}")
    out = dict(target) if isinstance(target, dict) else {}
    for key, val in patch.items():
        if key.startswith("$setElementOrder/") or key == "$retainKeys":
            continue  # ordering hints only; ordering is not observable in our tests
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            out[field] = [x for x in out.get(field) or [] if x not in (val or [])]
            continue
        if val is None:
            out.pop(key, None)
        elif isinstance(val, list):
            out[key] = _merge_list(key, out.get(key), val)
        elif isinstance(val, dict):
            merged = strategic_merge(out.get(key), val)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        else:
            out[key] = copy.deepcopy(val)
    return out


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and "$patch" in x)]
    merge_key = MERGE_KEYS.get(field)
    if merge_key is None or not all(isinstance(x, dict) for x in patch):
        return copy.deepcopy(patch)
    out: list[Any] = list(current) if isinstance(current, list) else []
    for item in patch:
        if merge_key not in item:
            raise PatchError(f"{field}: element lacks merge key {merge_key!r}")
        idx = next((i for i, cur in enumerate(out)
                    if isinstance(cur, dict) and cur.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"path element {part!r} not found")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        idx = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= idx <= len(parent):
            raise PatchError(f"index {last!r} out of range")
        parent.insert(idx, value)
    else:
        raise PatchError(f"cannot add under a scalar at {last!r}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"path element {last!r} not found")


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test; all-or-nothing."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"malformed operation {op!r}")
        parts = _pointer(op["path"])
        kind = op["op"]
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _walk(doc, parts)  # must exist
            if parts:
                _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            val = _remove(doc, src) if kind == "move" else copy.deepcopy(_walk(doc, src))
            doc = _add(doc, parts, val)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"test failed at {op['path']!r}")
        else:
            raise PatchError(f"unknown op {kind!r}")
    return doc
