"""Actuators: decisions -> Deployment patches (real), or logged patches (dry-run).

One strategic-merge patch per Deployment per cycle, only when something
changes. Strategic merge keeps sidecars and other fields: the serving
container is matched by name and only its GPU resources change.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from controlloop.cluster.kube_errors import Conflict, KubeError, KubeTimeout, NotFound, ServerError
from controlloop.cluster.ratelimit import TokenBucket
from controlloop.loop.settings import (
    DELETION_COST,
    LABEL_ACCELERATOR,
    LABEL_MAX_BATCH,
    ActuationConfig,
)
from controlloop.loop.state import Action, ActionResult, Placement, describe, placement_for  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")


def _cached(kube: Any, action: Action) -> Obj | None:
    """The Deployment from the cycle's list (KubeClient.cached_deployment), if current."""
    cached = getattr(kube, "cached_deployment", None)
    if cached is None:
        return None
    obj: Obj | None = cached(action.namespace, action.deployment, action.resource_version)
    return obj


def in_parallel(fn: Callable[[Action], T], actions: list[Action], workers: int) -> list[T]:
    """``[fn(a) for a in actions]`` on up to ``workers`` threads, results in order."""
    if workers <= 1 or len(actions) <= 1:
        return [fn(a) for a in actions]
    with ThreadPoolExecutor(max_workers=min(workers, len(actions)),
                            thread_name_prefix="actuate") as pool:
        return list(pool.map(fn, actions))


class DeploymentWriter(Protocol):
    def get_deployment(self, ns: str, name: str) -> Obj: ...

    def patch_deployment(
        self, ns: str, name: str, patch: Obj, *, strategic: bool = True
    ) -> Obj: ...

    def patch_pod(self, ns: str, name: str, patch: Obj) -> Obj: ...

    def create_event(
        self,
        ns: str,
        involved_object: Obj,
        *,
        reason: str,
        message: str,
        type: str = "Normal",
        action: str = "Scale",
        component: str = "controlloop",
    ) -> Obj: ...


def serving_container(deployment: Obj, configured: str | None, resources: set[str]) -> str:
    """The container that gets the GPUs: configured, else the one requesting one, else the first."""
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    names = [str(c.get("name", "")) for c in containers]
    if configured and configured in names:
        return configured
    for c in containers:
        res = c.get("resources") or {}
        asked = set((res.get("limits") or {}).keys()) | set((res.get("requests") or {}).keys())
        if asked & resources:
            return str(c.get("name", ""))
    return names[0] if names else ""


def build_patch(action: Action, deployment: Obj | None, config: ActuationConfig) -> Obj:
    """The strategic-merge patch for ``action`` (``deployment`` is needed for moves only)."""
    patch: Obj = {"spec": {"replicas": action.replicas}}
    labels: dict[str, str | None] = {}
    if action.placement is not None:
        new = action.placement
        old_selector: dict[str, str] = {}
        old_resources: set[str] = set()
        container = ""
        if deployment is not None:
            pod_spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
            old_selector = dict(pod_spec.get("nodeSelector") or {})
            container = serving_container(
                deployment, config.serving_container, {new.resource} | _gpu_resources(action)
            )
            for c in pod_spec.get("containers") or []:
                if c.get("name") == container:
                    res = c.get("resources") or {}
                    old_resources = set((res.get("limits") or {}).keys()) | set(
                        (res.get("requests") or {}).keys()
                    )
        selector: dict[str, str | None] = {
            k: None for k in old_selector if k not in new.node_selector
        }
        selector.update(new.node_selector)
        gpu: dict[str, str | None] = {
            r: None for r in old_resources & _gpu_resources(action) if r != new.resource
        }
        gpu[new.resource] = str(new.count)
        template_spec: Obj = {"nodeSelector": selector}
        if container:
            template_spec["containers"] = [
                {"name": container, "resources": {"limits": dict(gpu), "requests": dict(gpu)}}
            ]
        patch["spec"]["template"] = {
            "metadata": {"labels": {LABEL_ACCELERATOR: new.accelerator}},
            "spec": template_spec,
        }
        labels[LABEL_ACCELERATOR] = new.accelerator
        labels[LABEL_MAX_BATCH] = str(new.max_batch)
    elif action.max_batch:
        labels[LABEL_MAX_BATCH] = str(action.max_batch)
    if action.strategy is not None:
        patch["spec"]["strategy"] = strategy_patch(action.strategy)
    if labels:
        patch["metadata"] = {"labels": labels}
    if action.annotations:
        patch.setdefault("metadata", {})["annotations"] = dict(action.annotations)
    return patch


def strategy_patch(strategy: dict[str, Any]) -> Obj:
    """``spec.strategy`` replacing the old one: a key it lacks is deleted (null), as
    Kubernetes' retainKeys would, so Recreate never keeps a stale rollingUpdate."""
    out: Obj = {"type": strategy.get("type", "RollingUpdate"), "rollingUpdate": None}
    if strategy.get("rollingUpdate") is not None:
        out["rollingUpdate"] = dict(strategy["rollingUpdate"])
    return out


def _gpu_resources(action: Action) -> set[str]:
    found = {"nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi", "ibm.com/aiu"}
    if action.placement is not None:
        found.add(action.placement.resource)
    if action.from_placement is not None:
        found.add(action.from_placement.resource)
    return found


class DryRunActuator:
    """Logs the exact patch it would send, per Deployment, and sends nothing."""

    def __init__(self, reader: Callable[[str, str], Obj] | None, config: ActuationConfig) -> None:
        self.reader = reader  # read-only get_deployment, to name the serving container
        self.config = config

    def apply(self, actions: list[Action]) -> list[ActionResult]:
        return in_parallel(self._one, actions, self.config.concurrency)

    def _one(self, action: Action) -> ActionResult:
        deployment = None
        if action.placement is not None and self.reader is not None:
            try:  # the daemon's reader answers from the cycle's list (no request)
                deployment = self.reader(action.namespace, action.deployment)
            except Exception as exc:  # noqa: BLE001 - dry-run never fails a cycle
                log.warning("DRY-RUN: cannot read %s/%s: %s", action.namespace,
                            action.deployment, exc)
        patch = build_patch(action, deployment, self.config)
        if action.pod_deletion_cost:
            log.info("DRY-RUN: would annotate pods of %s/%s with %s: %s", action.namespace,
                     action.deployment, DELETION_COST, _costs(action),
                     extra={"server": action.server, "dry_run": True})
        log.info(
            "DRY-RUN: would patch %s (%s): %s",
            describe(action),
            action.reason,
            json.dumps(patch, sort_keys=True),
            extra={"server": action.server, "dry_run": True},
        )
        return ActionResult(action, ok=True, sent=False, patch=patch)


class KubeActuator:
    """Patches Deployments; per-Deployment errors never fail the cycle.

    404 → skipped (gone); 409 → re-read, and retry unless someone else changed
    the replicas meanwhile (then we leave it: ownership); 5xx/timeouts →
    bounded retries with exponential backoff.
    """

    def __init__(
        self,
        kube: DeploymentWriter,
        config: ActuationConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kube = kube
        self.config = config
        self.sleep = sleep
        self.limiter = TokenBucket(config.qps, config.burst)

    def apply(self, actions: list[Action]) -> list[ActionResult]:
        """One worker per action (bounded by ``concurrency``), every request through the
        token bucket; an action's own retries stay in order on its thread."""
        if (self.limiter.qps, self.limiter.burst) != (self.config.qps, self.config.burst):
            self.limiter = TokenBucket(self.config.qps, self.config.burst)  # a reloaded config
        return in_parallel(self._apply_one, actions, self.config.concurrency)

    def _annotate_pods(self, action: Action) -> None:
        """pod-deletion-cost on the pods of a scale-down, before it: the ReplicaSet then
        removes the least-loaded. A pod that fails is only logged (kube's order applies)."""
        for pod, cost in sorted(action.pod_deletion_cost.items()):
            try:
                self.limiter.take()
                self.kube.patch_pod(action.namespace, pod,
                                    {"metadata": {"annotations": {DELETION_COST: str(cost)}}})
            except KubeError as exc:
                log.warning("could not set %s on pod %s/%s: %s", DELETION_COST,
                            action.namespace, pod, exc, extra={"server": action.server})
        log.info("annotated pods of %s/%s with %s: %s", action.namespace, action.deployment,
                 DELETION_COST, _costs(action), extra={"server": action.server})

    def _apply_one(self, action: Action) -> ActionResult:
        if self.config.mode == "metrics":
            # Published on /metrics (controlloop_target_replicas) for the HPA/ScaledObject;
            # the Deployment is never written.
            log.info("published %s/%s target %d replicas (metrics mode): %s", action.namespace,
                     action.deployment, action.replicas, action.reason,
                     extra={"server": action.server})
            return ActionResult(action, ok=True, sent=True, patch=None)
        attempts = 0
        conflicts = 0
        patch: Obj | None = None
        if action.pod_deletion_cost:
            self._annotate_pods(action)
        while True:
            attempts += 1
            try:
                deployment = None
                if action.placement is not None or conflicts:
                    deployment = None if conflicts else _cached(self.kube, action)
                    if deployment is None:
                        self.limiter.take()
                        deployment = self.kube.get_deployment(action.namespace, action.deployment)
                    if conflicts and _replicas(deployment) != action.from_replicas:
                        return ActionResult(
                            action,
                            ok=False,
                            sent=False,
                            patch=patch,
                            attempts=attempts,
                            error=f"replicas changed by someone else to {_replicas(deployment)}; "
                            "left alone",
                            error_kind="changed-externally",
                        )
                patch = build_patch(action, deployment, self.config)
                if action.resource_version and not conflicts:
                    patch.setdefault("metadata", {})["resourceVersion"] = action.resource_version
                self.limiter.take()
                self.kube.patch_deployment(action.namespace, action.deployment, patch)
                log.info("patched %s: %s", describe(action), action.reason,
                         extra={"server": action.server})
                self._event(action)
                return ActionResult(action, ok=True, sent=True, patch=patch, attempts=attempts)
            except NotFound as exc:
                return ActionResult(action, ok=False, sent=False, patch=patch, error=str(exc),
                                    error_kind="not-found", attempts=attempts)
            except Conflict as exc:
                conflicts += 1
                if conflicts > self.config.conflict_retries:
                    return ActionResult(action, ok=False, sent=False, patch=patch, error=str(exc),
                                        error_kind="conflict", attempts=attempts)
            except (ServerError, KubeTimeout) as exc:
                if attempts > self.config.retries:
                    kind = "timeout" if isinstance(exc, KubeTimeout) else "server-error"
                    return ActionResult(action, ok=False, sent=False, patch=patch, error=str(exc),
                                        error_kind=kind, attempts=attempts)
                self.sleep(self.config.backoff_seconds * 2 ** (attempts - 1))
            except KubeError as exc:
                kind = type(exc).__name__.lower()
                return ActionResult(action, ok=False, sent=False, patch=patch, error=str(exc),
                                    error_kind=kind, attempts=attempts)

    def _event(self, action: Action) -> None:
        if not self.config.emit_events:
            return
        reason = {
            "move": "AcceleratorChanging", "move-back": "AcceleratorMoveRolledBack",
            "finish-move": "AcceleratorChanged", "scale-up": "ScaledUp", "scale-down": "ScaledDown",
        }.get(action.kind, "Updated")
        if action.kind == "move" and not action.move_phase:
            reason = "AcceleratorChanged"  # in place: done in one step
        try:
            self.limiter.take()
            self.kube.create_event(
                action.namespace,
                {"kind": "Deployment", "apiVersion": "apps/v1", "name": action.deployment,
                 "namespace": action.namespace},
                reason=reason,
                message=f"{describe(action)}: {action.reason}"[:1000],
                action=action.kind,
            )
        except KubeError as exc:
            log.warning("could not record event for %s/%s: %s", action.namespace,
                        action.deployment, exc)


# Holds that need someone to look (the rest are the controller being careful on purpose).
WARNING_HOLDS = {
    "unknown-load", "unknown-model", "unknown-class", "unknown-accelerator", "capacity-unknown",
    "no-node-selector", "bad-move-annotation", "move-stalled", "unallocated", "not-optimized",
}


def note_held(kube: DeploymentWriter, namespace: str, deployment: str, code: str, why: str) -> None:
    """An Event ``Held`` on the Deployment: we leave it as it is, and why."""
    try:
        kube.create_event(
            namespace,
            {"kind": "Deployment", "apiVersion": "apps/v1", "name": deployment,
             "namespace": namespace},
            reason="Held", message=f"{code}: {why}"[:1000], action="Hold",
            type="Warning" if code in WARNING_HOLDS else "Normal",
        )
    except KubeError as exc:
        log.warning("could not record event for %s/%s: %s", namespace, deployment, exc)


def _costs(action: Action) -> str:
    return ", ".join(f"{p}={c}" for p, c in sorted(action.pod_deletion_cost.items()))


def _replicas(deployment: Obj) -> int:
    return int((deployment.get("spec") or {}).get("replicas") or 0)
