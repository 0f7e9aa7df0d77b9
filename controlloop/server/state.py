"""The server's system: an immutable snapshot swapped under a lock (copy-on-write).

Readers (get*, optimize) take ``store.snapshot`` and work on it without locking;
writers build a new snapshot from the current one, cross-check it with
:func:`controlloop.config.cross_check` and swap it in only when it is
consistent. So the stored system is always valid and optimize always sees one
whole version of it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controlloop.config import SECTIONS, cross_check
from controlloop.server.errors import ApiError
from controlloop.specs import (
    AcceleratorData,
    AcceleratorSpec,
    CapacityEntry,
    CapacitySpec,
    ModelData,
    ModelPerfSpec,
    ServerData,
    ServerSpec,
    ServiceClassData,
    ServiceClassSpec,
    Spec,
    SystemSpec,
)

EMPTY_SYSTEM = SystemSpec(accelerators=[], models=[], service_classes=[])


@dataclass(frozen=True)
class Snapshot:
    system: SystemSpec = EMPTY_SYSTEM
    # Models added by name (addModel) that may not have perf data yet.
    declared_models: frozenset[str] = frozenset()
    version: int = 0

    def model_names(self) -> set[str]:
        return {m.name for m in self.system.models} | set(self.declared_models)


@dataclass(frozen=True)
class Collection:
    """One named list of the system, as the set*/get*/add*/remove* verbs see it."""

    what: str  # "accelerator", for messages
    section: str  # config section the list lives in (cross_check's key)
    wrapper: str  # JSON key of the list in set*/get* bodies
    list_model: type[Spec]  # body of set*: {"<wrapper>": [...]}
    item_model: type[Spec]  # body of add*: one item
    list_attr: str  # attribute of ``list_model`` holding the items
    key: Callable[[Any], tuple[str, ...]]
    get: Callable[[SystemSpec], Sequence[Any]]
    put: Callable[[SystemSpec, list[Any]], SystemSpec]


def _put(attr: str) -> Callable[[SystemSpec, list[Any]], SystemSpec]:
    return lambda system, items: system.model_copy(update={attr: items})


ACCELERATORS = Collection(
    "accelerator",
    "acceleratorData",
    "accelerators",
    AcceleratorData,
    AcceleratorSpec,
    "accelerators",
    key=lambda a: (a.name,),
    get=lambda s: s.accelerators,
    put=_put("accelerators"),
)
CAPACITIES = Collection(
    "capacity type",
    "capacityData",
    "count",
    CapacitySpec,
    CapacityEntry,
    "count",
    key=lambda c: (c.type,),
    get=lambda s: s.capacity.count,
    put=lambda s, items: s.model_copy(update={"capacity": CapacitySpec(count=items)}),
)
MODELS = Collection(
    "model/accelerator perf entry",
    "modelData",
    "models",
    ModelData,
    ModelPerfSpec,
    "models",
    key=lambda m: (m.name, m.acc),
    get=lambda s: s.models,
    put=_put("models"),
)
SERVICE_CLASSES = Collection(
    "service class",
    "serviceClassData",
    "serviceClasses",
    ServiceClassData,
    ServiceClassSpec,
    "service_classes",
    key=lambda c: (c.name,),
    get=lambda s: s.service_classes,
    put=_put("service_classes"),
)
SERVERS = Collection(
    "server",
    "serverData",
    "servers",
    ServerData,
    ServerSpec,
    "servers",
    key=lambda s: (s.name,),
    get=lambda s: s.servers,
    put=_put("servers"),
)


@dataclass
class Change:
    """What a writer produced: the new snapshot and how to word problems."""

    snapshot: Snapshot
    section: str | None = None  # section the request body went into ("body" in messages)
    item_index: int | None = None  # index of a single added item (paths become relative)
    action: str = "change"


@dataclass
class Store:
    """The current snapshot plus a lock serialising writers."""

    _current: Snapshot = field(default_factory=Snapshot)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def snapshot(self) -> Snapshot:
        return self._current  # one attribute read: atomic, no lock needed

    def replace_system(self, system: SystemSpec) -> Snapshot:
        """Install an already validated system (preload, or optimizeOne in stateless mode)."""
        with self._lock:
            self._current = Snapshot(system=system, version=self._current.version + 1)
            return self._current

    def update(self, writer: Callable[[Snapshot], Change]) -> tuple[Snapshot, list[str]]:
        """Apply ``writer`` to the current snapshot; swap if consistent. Returns warnings."""
        with self._lock:
            change = writer(self._current)
            warnings = check(change)
            new = replace(change.snapshot, version=self._current.version + 1)
            self._current = new
            return new, warnings


def check(change: Change) -> list[str]:
    """Cross-check a new snapshot; raise 400 for the body's problems, 409 for orphans."""
    where = {s.key: ("body" if s.key == change.section else "state") for s in SECTIONS}
    problems, warnings = cross_check(change.snapshot.system, where, {})
    declared = change.snapshot.declared_models
    kept = []
    for problem in problems:
        # Servers may name a model added by name before its perf data arrives.
        if any(f": unknown model '{m}'" in problem for m in declared):
            warnings.append(problem.replace("unknown model", "no perf data yet for model", 1))
        else:
            kept.append(problem)
    section = next((s for s in SECTIONS if s.key == change.section), None)
    if change.item_index is not None and section is not None:
        wrapper = _wrapper(change.section)
        kept = [_relative(p, wrapper, change.item_index) for p in kept]
        warnings = [_relative(w, wrapper, change.item_index) for w in warnings]
    if not kept:
        return warnings
    if any(p.startswith("state:") for p in kept):
        raise ApiError(
            409,
            f"{change.action} would leave the stored system inconsistent; "
            "change or remove the entries named below first",
            kept,
        )
    raise ApiError(400, f"{change.action}: invalid references", kept)


def _wrapper(section: str | None) -> str:
    for coll in (ACCELERATORS, CAPACITIES, MODELS, SERVICE_CLASSES, SERVERS):
        if coll.section == section:
            return coll.wrapper
    return ""


def _relative(problem: str, wrapper: str, index: int) -> str:
    """``body: servers[3].model: …`` -> ``body: model: …`` for a single-item body."""
    pattern = rf"^body: {re.escape(wrapper)}\[{index}\](\.|:)"
    match = re.match(pattern, problem)
    if not match:
        return problem
    rest = problem[match.end() :]
    return f"body:{rest}" if match.group(1) == ":" else f"body: {rest}"


# --- writers ------------------------------------------------------------------------


def set_all(coll: Collection, items: list[Any]) -> Callable[[Snapshot], Change]:
    def write(snap: Snapshot) -> Change:
        system = coll.put(snap.system, list(items))
        return Change(replace(snap, system=system), coll.section, action=f"set {coll.wrapper}")

    return write


def upsert(coll: Collection, item: Any) -> Callable[[Snapshot], Change]:
    """Add ``item``, or replace the one with the same key in place (order is kept)."""

    def write(snap: Snapshot) -> Change:
        items = list(coll.get(snap.system))
        key = coll.key(item)
        index = next((i for i, old in enumerate(items) if coll.key(old) == key), None)
        if index is None:
            items.append(item)
            index = len(items) - 1
        else:
            items[index] = item
        system = coll.put(snap.system, items)
        return Change(replace(snap, system=system), coll.section, index, action=f"add {coll.what}")

    return write


def remove(coll: Collection, key: tuple[str, ...]) -> Callable[[Snapshot], Change]:
    def write(snap: Snapshot) -> Change:
        items = list(coll.get(snap.system))
        kept = [item for item in items if coll.key(item) != key]
        if len(kept) == len(items):
            raise ApiError(404, f"unknown {coll.what} '{'/'.join(key)}'")
        system = coll.put(snap.system, kept)
        return Change(
            replace(snap, system=system), action=f"removing {coll.what} '{'/'.join(key)}'"
        )

    return write


def find(coll: Collection, system: SystemSpec, key: tuple[str, ...]) -> Any:
    for item in coll.get(system):
        if coll.key(item) == key:
            return item
    raise ApiError(404, f"unknown {coll.what} '{'/'.join(key)}'")


def add_model(name: str) -> Callable[[Snapshot], Change]:
    def write(snap: Snapshot) -> Change:
        return Change(replace(snap, declared_models=snap.declared_models | {name}))

    return write


def remove_model(name: str) -> Callable[[Snapshot], Change]:
    """Remove a model: its name and all its perf entries."""

    def write(snap: Snapshot) -> Change:
        if name not in snap.model_names():
            raise ApiError(404, f"unknown model '{name}'")
        models = [m for m in snap.system.models if m.name != name]
        return Change(
            Snapshot(
                system=snap.system.model_copy(update={"models": models}),
                declared_models=snap.declared_models - {name},
                version=snap.version,
            ),
            action=f"removing model '{name}'",
        )

    return write


def add_class_targets(spec: ServiceClassSpec) -> Callable[[Snapshot], Change]:
    """Add or replace ``spec``'s targets in its class (created if missing)."""

    def write(snap: Snapshot) -> Change:
        old = snap.system.service_class(spec.name)
        if old is None:
            return upsert(SERVICE_CLASSES, spec)(snap)
        new_models = {t.model for t in spec.model_targets}
        targets = [t for t in old.model_targets if t.model not in new_models]
        update: dict[str, Any] = {"model_targets": [*targets, *spec.model_targets]}
        if "priority" in spec.model_fields_set:
            update["priority"] = spec.priority
        return upsert(SERVICE_CLASSES, old.model_copy(update=update))(snap)

    return write


def remove_class_target(cls_name: str, model: str) -> Callable[[Snapshot], Change]:
    def write(snap: Snapshot) -> Change:
        cls = snap.system.service_class(cls_name)
        if cls is None:
            raise ApiError(404, f"unknown service class '{cls_name}'")
        if cls.target(model) is None:
            raise ApiError(404, f"unknown model target '{model}' in service class '{cls_name}'")
        targets = [t for t in cls.model_targets if t.model != model]
        change = upsert(SERVICE_CLASSES, cls.model_copy(update={"model_targets": targets}))(snap)
        change.section, change.item_index = None, None
        change.action = f"removing target '{model}' of class '{cls_name}'"
        return change

    return write
