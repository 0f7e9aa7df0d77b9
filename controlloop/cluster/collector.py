"""Collector: managed Deployments (Kubernetes) + their load (Prometheus) -> ClusterState.

Missing data is not zero load: a server whose metrics are absent, NaN, stale
or unreachable gets an ``unknown`` load (or the fallback labels' load), and
the controller leaves it as it is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from controlloop import bounds
from controlloop.cluster.kube_errors import KubeError
from controlloop.cluster.prom import LoadReading, LoadRequest, LoadSource, read_all
from controlloop.loop.settings import (
    LABEL_ACCELERATOR,
    LABEL_CLASS,
    LABEL_LOAD_IN,
    LABEL_LOAD_OUT,
    LABEL_LOAD_RPM,
    LABEL_MAX_BATCH,
    LABEL_MODEL,
    LABEL_NAME,
    ControllerSettings,
)
from controlloop.loop.state import (
    ClusterState,
    ManagedServer,
    ObservedLoad,
    Rollout,
    SkippedDeployment,
)
from controlloop.loop.surge import SurgeSignal, signal_of

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class ClusterReader(Protocol):
    """The read side of :class:`controlloop.cluster.kube.KubeClient` the collector uses."""

    def list_deployments(
        self, namespaces: Sequence[str] | None, label_selector: str = ""
    ) -> list[Obj]: ...

    def list_pods(
        self, ns: str | None, label_selector: str = "", field_selector: str = ""
    ) -> list[Obj]: ...

    def list_hpas(self, ns: str | None = None) -> list[Obj]: ...

    def list_scaled_objects(self, ns: str | None = None) -> list[Obj]: ...

    def list_nodes(self, label_selector: str | None = None) -> list[Obj]: ...


def selector_string(match_labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


MAX_SELECTOR_VALUES = 200  # beyond this a `key in (...)` list is left out (URL length)


def common_selector(selectors: Sequence[dict[str, str]]) -> str:
    """A label selector matching every pod of these ``matchLabels``: the requirements
    they all agree on, plus ``key in (...)`` on a shared key whose values differ (when
    there are at most MAX_SELECTOR_VALUES of them); "" (all pods of the namespace) when
    they share no key."""
    if not selectors:
        return ""
    shared = set(selectors[0]).intersection(*selectors[1:])
    fixed = sorted(k for k in shared if len({m[k] for m in selectors}) == 1)
    parts = [f"{k}={selectors[0][k]}" for k in fixed]
    varying = sorted(shared - set(fixed))
    if varying:
        values = sorted({m[varying[0]] for m in selectors})
        if len(values) <= MAX_SELECTOR_VALUES:
            parts.append(f"{varying[0]} in ({','.join(values)})")
    return ",".join(parts)


def match_pods(
    pods: Sequence[Obj], selectors: Sequence[tuple[str, dict[str, str]]]
) -> dict[str, list[Obj]]:
    """Pods per Deployment key: a pod belongs to every Deployment whose ``matchLabels``
    its labels contain (as the ReplicaSet controller selects them). Deployments are
    indexed by the value of their most distinctive shared selector key, so matching
    costs O(pods) when selectors differ in that key."""
    out: dict[str, list[Obj]] = {key: [] for key, _ in selectors}
    if not selectors:
        return out
    shared = set(selectors[0][1]).intersection(*(m for _, m in selectors[1:]))
    index_key = max(sorted(shared), key=lambda k: len({m[k] for _, m in selectors}),
                    default=None)
    index: dict[str | None, list[tuple[str, dict[str, str]]]] = {}
    for key, match in selectors:
        index.setdefault(match[index_key] if index_key else None, []).append((key, match))
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        for key, match in index.get(labels.get(index_key) if index_key else None, ()):
            if all(labels.get(k) == v for k, v in match.items()):
                out[key].append(pod)
    return out


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) and x >= 0 else None


def load_bound_problem(rpm: float | None, in_tok: float | None, out_tok: float | None) -> str:
    """Why a load is beyond the physical bounds of :mod:`controlloop.bounds` ("" if not):
    sizing for it would be a wrong answer, so such a load counts as unknown."""
    checks = (("arrival rate", rpm, bounds.ARRIVAL_RPM), ("input tokens", in_tok, bounds.TOKENS),
              ("output tokens", out_tok, bounds.TOKENS))
    problems = [bounds.check(name, value, bound) for name, value, bound in checks
                if value is not None]
    return "; ".join(p for p in problems if p)


def _at_least_one_token(out_tok: float | None) -> float | None:
    # a request yields at least one token; a ratio of rates over a window can dip below
    return 1.0 if out_tok is not None and 0 < out_tok < 1 else out_tok


def fallback_load(labels: dict[str, str], why_unknown: str) -> ObservedLoad | None:
    """The load labels of a Deployment, when Prometheus could not tell us."""
    rpm = _number(labels.get(LABEL_LOAD_RPM))
    if rpm is None:
        return None
    in_tok = _number(labels.get(LABEL_LOAD_IN))
    out_tok = _at_least_one_token(_number(labels.get(LABEL_LOAD_OUT)))
    if rpm > 0 and (in_tok is None or out_tok is None or out_tok <= 0):
        return None
    if load_bound_problem(rpm, in_tok, out_tok):
        return None  # reported as a bad label by the collector
    return ObservedLoad(
        status="fallback",
        reason=f"{why_unknown}; using load labels",
        arrival_rate_rpm=rpm,
        avg_in_tokens=in_tok or 0.0,
        avg_out_tokens=out_tok or 0.0,
        source="labels",
    )


def observed_from_reading(reading: LoadReading) -> ObservedLoad:
    """The reading as an observed load; one beyond the physical bounds is ``unknown``."""
    out_tok = _at_least_one_token(reading.avg_out_tokens)
    problem = load_bound_problem(reading.arrival_rate_rpm, reading.avg_in_tokens, out_tok)
    if problem and reading.status != "unknown":
        return ObservedLoad("unknown", f"prometheus reading out of bounds: {problem}",
                            source="prometheus")
    latency = [v if v is None or bounds.LATENCY_MS.problem(v) is None else None
               for v in (reading.itl_ms, reading.ttft_ms)]  # observed only: drop nonsense
    return ObservedLoad(
        status=reading.status,
        reason=reading.reason,
        arrival_rate_rpm=reading.arrival_rate_rpm,
        avg_in_tokens=reading.avg_in_tokens,
        avg_out_tokens=out_tok,
        itl_ms=latency[0],
        ttft_ms=latency[1],
        running=reading.running,
        waiting=reading.waiting,
        kv_cache_usage=reading.kv_cache_usage,
        source="prometheus",
    )


def label_problems(labels: dict[str, str]) -> list[str]:
    """Labels whose value is a number beyond its bound (the server is then held)."""
    problems = []
    raw = labels.get(LABEL_MAX_BATCH, "").strip()
    if raw.isdigit():
        why = bounds.check(f"label {LABEL_MAX_BATCH}", int(raw), bounds.BATCH)
        if why:
            problems.append(why)
    for label, bound in ((LABEL_LOAD_RPM, bounds.ARRIVAL_RPM), (LABEL_LOAD_IN, bounds.TOKENS),
                         (LABEL_LOAD_OUT, bounds.TOKENS)):
        value = _number(labels.get(label))
        if value is not None:
            why = bounds.check(f"label {label}", value, bound)
            if why:
                problems.append(why)
    return problems


def _pod_counts(pods: list[Obj]) -> tuple[tuple[str, ...], int, int, dict[str, int]]:
    """Running pod names, Pending and Unschedulable counts, and Unschedulable pods by
    their accelerator label (a move's new pods carry the new one)."""
    running: list[str] = []
    pending = unschedulable = 0
    by_accelerator: dict[str, int] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        phase = status.get("phase")
        if phase == "Running":
            running.append(str(meta.get("name", "")))
        elif phase == "Pending":
            pending += 1
            for cond in status.get("conditions") or []:
                if (
                    cond.get("type") == "PodScheduled"
                    and cond.get("status") == "False"
                    and cond.get("reason") == "Unschedulable"
                ):
                    unschedulable += 1
                    acc = str((meta.get("labels") or {}).get(LABEL_ACCELERATOR, ""))
                    by_accelerator[acc] = by_accelerator.get(acc, 0) + 1
                    break
    return tuple(sorted(running)), pending, unschedulable, by_accelerator


def _rollout(replicas: int, meta: Obj, status: Obj) -> Rollout | None:
    try:
        return Rollout(
            replicas=replicas,
            generation=int(meta.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            status_replicas=int(status.get("replicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            available_replicas=int(status.get("availableReplicas") or 0),
        )
    except (TypeError, ValueError):
        return None  # a status we cannot read: treated as a rollout in progress


class KubeCollector:
    """The real Collector: Deployments and pods from the API, load from Prometheus."""

    def __init__(
        self,
        kube: ClusterReader,
        load_source: LoadSource,
        settings: ControllerSettings | Callable[[], ControllerSettings],
    ) -> None:
        self.kube = kube
        self.load_source = load_source
        # A callable gives the current settings (the daemon's reloaded controller.yaml), so
        # namespaces, labelSelector, defaultClass, capacity and ownership apply per cycle.
        self._settings = settings
        self.settings = settings() if callable(settings) else settings

    def collect(self) -> ClusterState:
        if callable(self._settings):
            self.settings = self._settings()

        namespaces = self.settings.namespaces or None
        try:
            deployments = self.kube.list_deployments(namespaces, self.settings.label_selector)
        except KubeError as exc:
            return ClusterState(servers=(), errors=(f"listing Deployments: {exc}",), complete=False)
        errors: list[str] = []
        autoscaled = self._autoscaler_targets(namespaces, errors)
        ordered = sorted(
            deployments, key=lambda d: (d["metadata"]["namespace"], d["metadata"]["name"])
        )
        pods_of = self._pods_by_deployment(ordered)
        drafts: list[tuple[dict[str, Any], dict[str, str], LoadRequest | ObservedLoad]] = []
        skipped: list[SkippedDeployment] = []
        for dep in ordered:
            result = self._server(dep, autoscaled, pods_of)
            if isinstance(result, SkippedDeployment):
                skipped.append(result)
                log.warning("skipping %s/%s: %s", result.namespace, result.deployment,
                            result.reason)
            else:
                drafts.append(result)
        # One batch for all servers: a Prometheus source reads it in a fixed number of
        # queries (grouped by namespace and pod), whatever the number of servers.
        wanted = [need for _, _, need in drafts if isinstance(need, LoadRequest)]
        readings = iter(read_all(self.load_source, wanted))
        servers: list[ManagedServer] = []
        for base, labels, need in drafts:
            load = need if isinstance(need, ObservedLoad) else self._load(base, next(readings))
            if not load.known:
                load = fallback_load(labels, load.reason) or load
            servers.append(ManagedServer(**base, load=load))
        node_capacity = None
        if self.settings.capacity.source == "nodes":
            node_capacity = self._node_capacity(errors)
        return ClusterState(
            servers=tuple(servers),
            skipped=tuple(skipped),
            node_capacity=node_capacity,
            errors=tuple(errors),
        )

    def probe(self) -> dict[str, SurgeSignal]:
        """The surge check's read (Controller.check_surge): each server's signal, from one
        collection -- no optimization, no patch; far cheaper than a cycle. Servers whose
        load is unknown give no signal (never a reason to act)."""
        state = self.collect()
        return {ms.key: sig for ms in state.servers if (sig := signal_of(ms)) is not None}

    def _autoscaler_targets(
        self, namespaces: list[str] | None, errors: list[str]
    ) -> dict[str, str]:
        """Deployment key -> the HPA / ScaledObject that scales it."""
        if not self.settings.ownership.respect_autoscalers:
            return {}
        targets: dict[str, str] = {}
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        for ns in scopes:
            try:
                for hpa in self.kube.list_hpas(ns):
                    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
                    if ref.get("kind") == "Deployment":
                        meta = hpa["metadata"]
                        targets[f"{meta['namespace']}/{ref.get('name')}"] = (
                            f"HorizontalPodAutoscaler {meta['namespace']}/{meta['name']}"
                        )
                for so in self.kube.list_scaled_objects(ns):
                    ref = (so.get("spec") or {}).get("scaleTargetRef") or {}
                    if ref.get("kind", "Deployment") == "Deployment":
                        meta = so["metadata"]
                        targets[f"{meta['namespace']}/{ref.get('name')}"] = (
                            f"KEDA ScaledObject {meta['namespace']}/{meta['name']}"
                        )
            except KubeError as exc:
                # Unknown ownership is treated as "owned" by the controller (safe side).
                errors.append(f"listing autoscalers: {exc}")
                targets["*"] = f"autoscalers unknown ({exc.reason or exc})"
        return targets

    def _pods_by_deployment(self, deployments: list[Obj]) -> dict[str, list[Obj] | KubeError]:
        """Pods of every Deployment (key ``ns/name``), from one paginated list per
        namespace (label selector on a key all their selectors share), matched in memory
        by each Deployment's ``matchLabels``. A failed list: the error, for each of them."""
        by_ns: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for dep in deployments:
            meta = dep.get("metadata") or {}
            match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if match:
                by_ns.setdefault(str(meta.get("namespace", "")), []).append(
                    (f"{meta.get('namespace', '')}/{meta.get('name', '')}",
                     {str(k): str(v) for k, v in match.items()})
                )
        out: dict[str, list[Obj] | KubeError] = {}
        for ns, selectors in by_ns.items():
            try:
                pods = self.kube.list_pods(ns, common_selector([m for _, m in selectors]))
            except KubeError as exc:
                out.update({key: exc for key, _ in selectors})
                continue
            out.update(match_pods(pods, selectors))
        return out

    def _server(
        self, dep: Obj, autoscaled: dict[str, str], pods_of: dict[str, list[Obj] | KubeError]
    ) -> tuple[dict[str, Any], dict[str, str], LoadRequest | ObservedLoad] | SkippedDeployment:
        """The server's fields, its labels and what its load needs: a reading to make
        (:class:`LoadRequest`) or an already known outcome."""
        meta = dep.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        labels: dict[str, str] = dict(meta.get("labels") or {})
        annotations: dict[str, str] = dict(meta.get("annotations") or {})
        model = labels.get(LABEL_MODEL, "").strip()
        if not model:
            return SkippedDeployment(ns, name, f"managed but has no '{LABEL_MODEL}' label")
        spec = dep.get("spec") or {}
        status = dep.get("status") or {}
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            return SkippedDeployment(ns, name, f"spec.replicas is not a count: {replicas!r}")
        max_batch_label = labels.get(LABEL_MAX_BATCH, "").strip()
        bad_labels = tuple(label_problems(labels))
        max_batch = int(max_batch_label) if max_batch_label.isdigit() else 0
        if max_batch > bounds.MAX_BATCH:
            max_batch = 0  # held for the label (bad_labels); never sized with it
        match = ((spec.get("selector") or {}).get("matchLabels")) or {}
        key = f"{ns}/{name}"
        autoscaler = autoscaled.get(key) or autoscaled.get("*", "")
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        node_selector = dict(pod_spec.get("nodeSelector") or {})
        base: dict[str, Any] = dict(
            namespace=ns,
            deployment=name,
            name=labels.get(LABEL_NAME, "").strip() or name,
            model=model,
            service_class=labels.get(LABEL_CLASS, "").strip() or self.settings.default_class,
            accelerator=labels.get(LABEL_ACCELERATOR, "").strip(),
            max_batch=max_batch,
            bad_labels=bad_labels,
            replicas=replicas,
            ready_replicas=int(status.get("readyReplicas") or 0),
            labels=labels,
            annotations=annotations,
            resource_version=str(meta.get("resourceVersion", "")),
            generation=int(meta.get("generation") or 0),
            autoscaler=autoscaler,
            node_selector=node_selector,
            rollout=_rollout(replicas, meta, status),
            strategy=spec.get("strategy") if isinstance(spec.get("strategy"), dict) else None,
        )
        if not match:
            return base, labels, ObservedLoad(
                "unknown", "Deployment has no spec.selector.matchLabels", source="none")
        pods = pods_of.get(key, [])
        if isinstance(pods, KubeError):
            return base, labels, ObservedLoad("unknown", f"listing pods: {pods}", source="none")
        running, pending, unschedulable, by_accelerator = _pod_counts(pods)
        base.update(running_pods=running, pending_pods=pending, unschedulable_pods=unschedulable,
                    unschedulable_by_accelerator=by_accelerator)
        return base, labels, LoadRequest(ns, running, model)

    @staticmethod
    def _load(base: dict[str, Any], reading: LoadReading) -> ObservedLoad:
        load = observed_from_reading(reading)
        # per-pod running requests (optional): orders a scale-down's pods (loop/drain.py)
        running = set(base.get("running_pods", ()))
        base["pod_running"] = {p: n for p, n in reading.pod_running.items() if p in running}
        if not base["running_pods"] and not load.known:
            # Pod-independent queries (e.g. a gateway's metrics) still tell the load, which
            # is how a server scaled to zero comes back; otherwise it is unknown.
            why = "scaled to zero" if base["replicas"] == 0 else "no running pods"
            load = ObservedLoad("unknown", f"{why}: no pods to read load from", source="none")
        return load

    def _node_capacity(self, errors: list[str]) -> dict[str, int] | None:
        cfg = self.settings.capacity
        try:
            nodes = self.kube.list_nodes(None)
        except KubeError as exc:
            errors.append(f"listing nodes: {exc}")
            return None
        return count_node_capacity(nodes, node_label=cfg.node_label,
                                   type_by_label=cfg.type_by_label, resources=cfg.resources)


def count_node_capacity(
    nodes: list[Obj], *, node_label: str, type_by_label: dict[str, str], resources: Sequence[str]
) -> dict[str, int]:
    """Allocatable accelerator cards per type, from schedulable Nodes."""
    capacity: dict[str, int] = {}
    for node in nodes:
        if (node.get("spec") or {}).get("unschedulable"):
            continue
        labels = (node.get("metadata") or {}).get("labels") or {}
        value = labels.get(node_label)
        if not value:
            continue
        acc_type = type_by_label.get(value, value)
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        cards = 0
        for res in resources:
            raw = allocatable.get(res)
            if raw is None:
                continue
            try:
                count = int(str(raw))
            except ValueError:
                continue
            if bounds.CARDS.problem(count) is None:  # negative or absurd: not a count
                cards += count
        if cards:
            capacity[acc_type] = min(bounds.MAX_CARDS, capacity.get(acc_type, 0) + cards)
    return capacity
