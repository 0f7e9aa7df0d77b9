"""``run --specs crd``: the static specs from controlloop.io custom resources.

Reads every spec kind in one namespace through the API (list), keeps them current with one
watch per kind, and turns a change into a cycle after a debounce (a burst of ``kubectl apply``
edits is one reload, one cycle). Like the file source, an invalid edit keeps the last good
specs; the resource at fault gets condition ``Valid=False`` with the problem in its status and
a Warning Event, and recovers to ``Valid=True`` once fixed. After each cycle the Optimizer's
status gets the solution (status subresource, so spec writers and we never conflict).

Status writes bump resourceVersion and come back as watch events; only a new generation (a
spec change), an added or a deleted object counts as a change, so our own writes never loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from controlloop.config import ConfigError
from controlloop.crds import (
    DEFAULT_OPTIMIZER,
    GROUP,
    KINDS,
    VERSION,
    CrConfigError,
    condition,
    crs_to_system,
    optimizer_status,
    ref,
)
from controlloop.loop.cycle import CycleReport, SpecSource
from controlloop.loop.settings import ControllerSettings
from controlloop.specs import SystemSpec

log = logging.getLogger("controlloop.crdspecs")

Obj = dict[str, Any]
Overrides = Callable[[ControllerSettings], ControllerSettings]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CrdSpecSource(SpecSource):
    """Specs from the custom resources in ``namespace``.

    ``base_settings`` are used when the Optimizer's spec has no ``controller`` section
    (controller.yaml of --config, or the defaults); ``overrides`` apply the command-line flags.
    ``on_change`` is called (from a watch thread) after a debounced change was reloaded.
    """

    def __init__(self, api_client: Any, namespace: str, *,
                 optimizer_name: str = DEFAULT_OPTIMIZER,
                 base_settings: ControllerSettings | None = None,
                 overrides: Overrides | None = None, metrics: Any = None,
                 debounce_s: float = 2.0, events: Any = None) -> None:
        from kubernetes import client as k8s

        self.api = k8s.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.optimizer_name = optimizer_name
        self.base_settings = base_settings or ControllerSettings()
        self.overrides = overrides or (lambda s: s)
        self.metrics = metrics
        self.debounce_s = debounce_s
        self.events = events  # KubeClient (create_event) or None
        self.on_change: Callable[[], None] | None = None
        self._good: tuple[SystemSpec, ControllerSettings] | None = None
        self._optimizer: Obj | None = None
        self.last_error = ""
        self._generations: dict[tuple[str, str], int] = {}
        self._valid: dict[str, str] = {}  # ref -> last Valid status we wrote
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timer: threading.Timer | None = None
        self.reloads = 0
        self._versions = self.load(initial=True)

    # -- reading --------------------------------------------------------------------------------

    def _list(self) -> tuple[list[Obj], dict[str, str]]:
        objs: list[Obj] = []
        versions: dict[str, str] = {}
        for kind in KINDS:
            out: Any = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                         kind.plural, _request_timeout=10)
            versions[kind.plural] = str(out.get("metadata", {}).get("resourceVersion", ""))
            for item in out.get("items") or []:
                item.setdefault("kind", kind.kind)
                item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
                objs.append(item)
        return objs, versions

    def load(self, *, initial: bool = False) -> dict[str, str]:
        """List, validate and keep the specs (the last good ones on a problem); returns the
        lists' resourceVersions (where the watches start)."""
        from kubernetes.client.exceptions import ApiException

        try:
            objs, versions = self._list()
        except ApiException as exc:
            problem = (f"{self.namespace}: cannot list {GROUP} resources: {exc.status} "
                       f"{exc.reason}" + (" (are the CRDs installed? kubectl apply -k "
                                          "manifests/crds)" if exc.status == 404 else ""))
            return self._failed([problem], {}, [], initial=initial) or {}
        with self._lock:
            self._generations = {
                (o["kind"], o["metadata"]["name"]): int(o["metadata"].get("generation", 0))
                for o in objs}
        try:
            got = crs_to_system(objs, optimizer_name=self.optimizer_name)
            settings = self.overrides(got.settings or self.base_settings)
        except ConfigError as exc:
            invalid = exc.invalid if isinstance(exc, CrConfigError) else {}
            return self._failed(exc.problems, invalid, objs, initial=initial) or versions
        for warning in got.loaded.warnings:
            log.warning("%s", warning)
        with self._lock:
            first = self._good is None
            self._good = (got.loaded.system, settings)
            self._optimizer = got.optimizer
            self.last_error = ""
            self.reloads += 0 if first else 1
        if self.metrics:
            self.metrics.specs_valid.set(1)
        self._mark_valid(objs, {})
        log.info("specs %s from %d %s resources in %s", "loaded" if first else "reloaded",
                 len(objs), GROUP, self.namespace)
        return versions

    def _failed(self, problems: list[str], invalid: dict[str, list[str]], objs: list[Obj], *,
                initial: bool) -> dict[str, str] | None:
        with self._lock:
            self.last_error = "; ".join(problems)
            have_good = self._good is not None
        if self.metrics:
            self.metrics.spec_reload_errors.inc()
            self.metrics.specs_valid.set(0)
        if objs:
            self._mark_valid(objs, invalid)
        if initial and not have_good:
            raise ConfigError(problems)
        log.error("invalid spec resources, keeping the last good specs: %s", self.last_error)
        return None

    def _mark_valid(self, objs: list[Obj], invalid: dict[str, list[str]]) -> None:
        """Valid=True/False on each resource whose state changed (and a Warning Event)."""
        now = _now()
        for obj in objs:
            key = ref(obj)
            problems = invalid.get(key, [])
            state = "False:" + "; ".join(problems) if problems else "True"
            with self._lock:
                if self._valid.get(key) == state:
                    continue
            kind = next(k for k in KINDS if k.kind == obj["kind"])
            meta = obj["metadata"]
            previous = ((obj.get("status") or {}).get("conditions")) or []
            cond = condition("Valid", not problems, "Invalid" if problems else "Accepted",
                             "; ".join(problems) or "accepted by the controller", now=now,
                             generation=int(meta.get("generation", 0)), previous=previous)
            others = [c for c in previous if c.get("type") != "Valid"]
            if kind.kind == "Optimizer":
                others = [c for c in others if c.get("type") in ("Ready", "Degraded")]
            try:
                self.api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.namespace, kind.plural, meta["name"],
                    {"status": {"conditions": [*others, cond]}}, _request_timeout=10)
            except Exception as exc:  # noqa: BLE001 - a status write never stops the loop
                log.warning("cannot write the status of %s: %s", key, exc)
                continue
            with self._lock:
                self._valid[key] = state
            if problems and self.events is not None:
                try:
                    self.events.create_event(self.namespace, obj, reason="InvalidSpec",
                                             message="; ".join(problems), type="Warning",
                                             action="Validate")
                except Exception as exc:  # noqa: BLE001
                    log.warning("cannot record an Event on %s: %s", key, exc)

    def current(self) -> tuple[SystemSpec, ControllerSettings]:
        with self._lock:
            assert self._good is not None
            return self._good

    # -- watching -------------------------------------------------------------------------------

    def start(self, versions: dict[str, str] | None = None) -> None:
        """One watch thread per kind, from the resourceVersions of the last list."""
        versions = versions or self._versions
        for kind in KINDS:
            t = threading.Thread(target=self._watch, args=(kind, versions.get(kind.plural, "")),
                                 name=f"watch-{kind.plural}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _watch(self, kind: Any, rv: str) -> None:
        from kubernetes import watch

        backoff = 1.0
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(self.api.list_namespaced_custom_object, GROUP, VERSION,
                                      self.namespace, kind.plural, resource_version=rv or None,
                                      timeout_seconds=60, _request_timeout=90):
                    if self._stop.is_set():
                        w.stop()
                        return
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        rv = ""  # 410 Gone: start over from a fresh list
                        self._changed(f"{kind.kind} watch expired")
                        break
                    meta = obj.get("metadata") or {}
                    rv = str(meta.get("resourceVersion", rv))
                    self._event(kind.kind, event.get("type", ""), meta)
                backoff = 1.0
            except Exception as exc:  # noqa: BLE001 - a broken watch is re-opened
                if self._stop.is_set():
                    return
                log.warning("watch of %s failed, re-listing in %.0fs: %s", kind.plural,
                            backoff, exc)
                self._stop.wait(backoff)
                backoff = min(30.0, backoff * 2)
                rv = ""
                self._changed(f"{kind.kind} watch restarted")

    def _event(self, kind: str, type_: str, meta: Obj) -> None:
        key = (kind, str(meta.get("name", "")))
        generation = int(meta.get("generation", 0))
        with self._lock:
            known = self._generations.get(key)
            if type_ == "DELETED":
                if known is None:
                    return
                self._generations.pop(key, None)
            elif known == generation:
                return  # a status or metadata write (ours included): not a spec change
            else:
                self._generations[key] = generation
        self._changed(f"{type_.lower()} {kind}/{key[1]}")

    def _changed(self, why: str) -> None:
        """Debounce: reload and call ``on_change`` once the changes have settled."""
        log.debug("spec resources changed (%s); reload in %.1fs", why, self.debounce_s)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce_s, self._settled)
            self._timer.daemon = True
            self._timer.start()

    def _settled(self) -> None:
        if self._stop.is_set():
            return
        started = time.monotonic()
        self.load()
        log.info("spec resources changed: reloaded in %.0f ms, running a cycle now",
                 (time.monotonic() - started) * 1000)
        if self.on_change is not None:
            self.on_change()

    # -- the solution ---------------------------------------------------------------------------

    def write_status(self, report: CycleReport) -> None:
        """The cycle's solution on the Optimizer's status (a report hook)."""
        with self._lock:
            opt = self._optimizer
            error = self.last_error
        if opt is None:
            return
        name = opt["metadata"]["name"]
        try:
            cur: Any = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                        "optimizers", name, _request_timeout=10)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot read Optimizer/%s for its status: %s", name, exc)
            return
        previous = (cur.get("status") or {}).get("conditions") or []
        status = optimizer_status(report, generation=int(opt["metadata"].get("generation", 0)),
                                  now=_now(), specs_error=error, previous=previous)
        status["conditions"] += [c for c in previous if c.get("type") == "Valid"]
        try:
            self.api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, "optimizers", name, {"status": status},
                _request_timeout=10)
        except Exception as exc:  # noqa: BLE001 - the loop goes on without its status
            log.warning("cannot write the status of Optimizer/%s: %s", name, exc)
