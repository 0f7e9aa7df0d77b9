"""Thread-safe in-memory object store with API-server write semantics.

Keyed by (apiVersion/Kind, namespace, name). Every write bumps a global
``resourceVersion`` (like etcd's revision); ``generation`` moves when anything
outside metadata/status changes; writes to a resource with a status subresource
keep the stored status, and ``/status`` writes keep everything else.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    # Custom resources (registered by a CustomResourceDefinition): the served version's
    # schema, printer columns and short names.
    custom: bool = False
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    short_names: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.api_version}/{self.kind}"

    @property
    def qualified(self) -> str:
        """``deployments.apps``, as in API error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: list[Resource] = [
    Resource("", "v1", "pods", "Pod", status_subresource=True),
    Resource("", "v1", "events", "Event"),
    Resource("", "v1", "configmaps", "ConfigMap"),
    Resource("", "v1", "nodes", "Node", namespaced=False, status_subresource=True),
    Resource("", "v1", "namespaces", "Namespace", namespaced=False),
    Resource("apps", "v1", "deployments", "Deployment", status_subresource=True),
    Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
             status_subresource=True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease"),
    Resource("events.k8s.io", "v1", "events", "Event"),
    Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", status_subresource=True),
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
             "CustomResourceDefinition", namespaced=False, status_subresource=True),
]


def find_resource(name: str) -> Resource:
    """Look a resource up by kind, plural or ``apiVersion/Kind`` (case-insensitive)."""
    low = name.lower()
    for res in RESOURCES:
        if low in (res.kind.lower(), res.plural, res.key.lower()):
            return res
    raise KeyError(f"unknown resource {name!r}")


class StoreError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details: dict[str, Any] = {}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    """One change, for watches: ``type`` is ADDED, MODIFIED or DELETED."""

    revision: int
    type: str
    key: str  # Resource.key
    namespace: str
    obj: Obj
    # the labels before a MODIFIED: a watch with a label selector sees an object that
    # leaves its selection as DELETED and one that enters it as ADDED, as the API server's
    old_labels: dict[str, str] | None = None


# Changes kept for watches. A real API server keeps a bounded window too (its watch
# cache; etcd compacts every 5 minutes): an unbounded history of deep copies grew the
# soak test's process by ~33 allocator blocks per change, which is not the controller's.
HISTORY = 1000


class Store:
    def __init__(self, history: int = HISTORY) -> None:
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.revision = 0
        self.history = history
        self.events: list[Event] = []  # the last ``history`` changes, oldest first
        self.compacted = 0  # watches from an older resourceVersion get 410 Gone
        self.changed = threading.Condition(self.lock)
        # Admission: called with each object about to be stored (create and update, after
        # status handling); returns the object to store or raises StoreError (422).
        # ``old`` is the stored object on an update, None on create.
        self.admit: Callable[[Resource, Obj, Obj | None], Obj] | None = None

    def compact(self) -> None:
        """Forget the watch history, as etcd compaction does."""
        with self.lock:
            self.events.clear()
            self.compacted = self.revision

    def _emit(self, kind: str, res: Resource, ns: str, obj: Obj,
              old_labels: dict[str, str] | None = None) -> None:
        self.events.append(Event(int(obj["metadata"]["resourceVersion"]), kind, res.key, ns,
                                 copy.deepcopy(obj), dict(old_labels or {})))
        while len(self.events) > self.history:  # the oldest go: the window's size is fixed
            self.compacted = self.events.pop(0).revision
        self.changed.notify_all()

    def _next_rv(self) -> str:
        self.revision += 1
        return str(self.revision)

    def _conflict(self, res: Resource, name: str) -> StoreError:
        return StoreError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} '
                          f'"{name}": the object has been modified; please apply your changes '
                          "to the latest version and try again")

    def not_found(self, res: Resource, name: str) -> StoreError:
        return StoreError(404, "NotFound", f'{res.qualified} "{name}" not found')

    def get(self, res: Resource, ns: str, name: str) -> Obj:
        with self.lock:
            obj = self.objects.get((res.key, ns, name))
            if obj is None:
                raise self.not_found(res, name)
            return copy.deepcopy(obj)

    def list(self, res: Resource, ns: str | None) -> list[Obj]:
        with self.lock:
            items = [copy.deepcopy(o) for (k, o_ns, _), o in sorted(self.objects.items())
                     if k == res.key and (ns is None or o_ns == ns)]
        return items

    def create(self, res: Resource, ns: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise StoreError(422, "Invalid", f"{res.kind}: metadata.name: Required value")
        with self.lock:
            key = (res.key, ns, name)
            if key in self.objects:
                raise StoreError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists')
            obj["kind"], obj["apiVersion"] = res.kind, res.api_version
            if res.namespaced:
                meta["namespace"] = ns
                self._ensure_namespace(ns)
            meta.pop("resourceVersion", None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(),
                        resourceVersion=self._next_rv(), generation=1)
            if res.kind == "Deployment":
                obj.setdefault("spec", {}).setdefault("replicas", 1)
            if self.admit is not None:
                obj = self.admit(res, obj, None)
            self.objects[key] = obj
            self._emit("ADDED", res, ns, obj)
            return copy.deepcopy(obj)

    def _ensure_namespace(self, ns: str) -> None:
        key = ("v1/Namespace", "", ns)
        if key not in self.objects:
            self.objects[key] = {
                "kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                             "resourceVersion": self._next_rv()},
                "status": {"phase": "Active"}}

    def update(self, res: Resource, ns: str, name: str, new: Obj, *,
               subresource: str = "", check_rv: str | None = None) -> Obj:
        """Store ``new`` as the object; 409 if ``check_rv`` is given and stale."""
        with self.lock:
            key = (res.key, ns, name)
            old = self.objects.get(key)
            if old is None:
                raise self.not_found(res, name)
            if check_rv and check_rv != old["metadata"]["resourceVersion"]:
                raise self._conflict(res, name)
            new_name = (new.get("metadata") or {}).get("name", name)
            if new_name != name:
                raise StoreError(400, "BadRequest", f"the name of the object ({new_name}) does "
                                 f"not match the name on the URL ({name})")
            obj = copy.deepcopy(new)
            if subresource == "status":
                # /status may only change status.
                obj = {**copy.deepcopy(old), "status": obj.get("status", {})}
            elif res.status_subresource:
                obj["status"] = copy.deepcopy(old.get("status", {}))
            meta = obj.setdefault("metadata", {})
            old_meta = old["metadata"]
            for field in ("uid", "creationTimestamp", "namespace", "name"):
                if field in old_meta:
                    meta[field] = old_meta[field]
            obj["kind"], obj["apiVersion"] = res.kind, res.api_version
            if self.admit is not None:
                obj = self.admit(res, obj, old)
                meta = obj["metadata"]

            def body(o: Obj) -> Obj:
                return {k: v for k, v in o.items() if k not in ("metadata", "status")}

            generation = int(old_meta.get("generation", 1))
            meta["generation"] = generation + 1 if body(obj) != body(old) else generation
            meta["resourceVersion"] = old_meta["resourceVersion"]
            if obj == old:
                return copy.deepcopy(old)  # a no-op write does not bump resourceVersion
            meta["resourceVersion"] = self._next_rv()
            self.objects[key] = obj
            self._emit("MODIFIED", res, ns, obj, old_meta.get("labels") or {})
            return copy.deepcopy(obj)

    def delete(self, res: Resource, ns: str, name: str) -> Obj:
        with self.lock:
            obj = self.objects.pop((res.key, ns, name), None)
            if obj is None:
                raise self.not_found(res, name)
            # The DELETED event carries the object at the deletion's revision, as etcd's does.
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._emit("DELETED", res, ns, obj)
            return obj
