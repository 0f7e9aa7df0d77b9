"""The one module that talks to the Kubernetes API.

Everything else in controlloop sees plain ``dict`` objects shaped like the JSON the
API server returns, and the typed errors below; never ``kubernetes`` model classes
or ``ApiException``. That keeps the rest of the code testable with fakes and lets
us swap the client library without touching callers.

Every call is made with ``_preload_content=False`` and the body is decoded with
``orjson``: the generated models drop unknown fields (KEDA objects, newer API
fields) and validate strictly, neither of which we want for a read-mostly daemon;
orjson decodes a page of pods several times faster than ``json`` and shares the
repeated keys of its items.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from controlloop.cluster.kube_errors import (  # re-exported: callers may import them from here
    Conflict,
    Forbidden,
    KubeConfigError,
    KubeError,
    KubeTimeout,
    NotFound,
    ServerError,
    Unauthorized,
)

if TYPE_CHECKING:
    from controlloop.cluster.watchcache import WatchCache

log = logging.getLogger(__name__)

Obj = dict[str, Any]

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"

KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL = "keda.sh", "v1alpha1", "scaledobjects"

_BY_STATUS: dict[int, type[KubeError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}



# What a list keeps of each item, applied page by page as it arrives, so that a cycle
# holds a few hundred bytes per object rather than the whole of it: a real pod is 5-20 KB
# of JSON (spec, managedFields, containerStatuses) and a Node's status lists every image
# it has pulled, none of which controlloop reads. A fleet of 3,000 servers lists some
# 10,000 pods per cycle.
DEFAULT_PAGE_SIZE = 500
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_POD_META = ("name", "namespace", "uid", "resourceVersion", "labels", "annotations",
             "deletionTimestamp", "ownerReferences")


def _slim_metadata(meta: Any, keys: Sequence[str] | None = None) -> Obj:
    """``metadata`` without managedFields (server-side apply's bookkeeping, often half an
    object) and kubectl's last-applied copy of the object; only ``keys`` when given."""
    if not isinstance(meta, dict):
        return {}
    out = {k: v for k, v in meta.items() if k != "managedFields"} if keys is None else {
        k: meta[k] for k in keys if k in meta}
    annotations = out.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        out["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return out


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


_DEPLOYMENT_SPEC = ("replicas", "selector", "strategy", "paused")


def _patched_pod_spec(pod_spec: Obj) -> Obj:
    """Of a pod template's spec, what a patch reads or names: the nodeSelector and the
    containers' names and resources."""
    out: Obj = {k: pod_spec[k] for k in ("nodeSelector",) if k in pod_spec}
    if isinstance(pod_spec.get("containers"), list):
        out["containers"] = [{k: c[k] for k in ("name", "resources") if k in c}
                             for c in pod_spec["containers"] if isinstance(c, dict)]
    return out


def slim_deployment(dep: Obj) -> Obj:
    """A listed Deployment as the collector and the actuator read it: metadata minus its
    bulk, status, and of the spec the replicas, selector, strategy and the pod template's
    labels, nodeSelector and containers' names and resources (a patch names containers).
    The rest of the pod template (env, args, probes, volumes) is most of an applied
    Deployment and nothing here reads it."""
    spec = _dict(dep.get("spec"))
    template = _dict(spec.get("template"))
    out: Obj = {k: v for k, v in dep.items() if k not in ("metadata", "spec")}
    out["metadata"] = _slim_metadata(dep.get("metadata"))
    out["spec"] = {k: spec[k] for k in _DEPLOYMENT_SPEC if k in spec}
    out["spec"]["template"] = {
        "metadata": {k: v for k, v in _dict(template.get("metadata")).items()
                     if k in ("labels", "annotations")},
        "spec": _patched_pod_spec(_dict(template.get("spec")))}
    return out


def patch_basis(dep: Obj) -> Obj:
    """What the actuator builds a patch from, kept per listed Deployment from the list
    to the cycle's patches: identity and resourceVersion, replicas, the pod template's
    nodeSelector and its containers' names and resources."""
    meta, spec = _dict(dep.get("metadata")), _dict(dep.get("spec"))
    template = _patched_pod_spec(_dict(_dict(spec.get("template")).get("spec")))
    out: Obj = {k: dep[k] for k in ("kind", "apiVersion") if k in dep}
    out["metadata"] = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                            "generation") if k in meta}
    out["spec"] = {**{k: spec[k] for k in ("replicas",) if k in spec},
                   "template": {"spec": template}}
    return out


def slim_pod(pod: Obj) -> Obj:
    """A listed pod as the collector reads it: identity, labels, annotations, phase and
    conditions (Unschedulable), the node it runs on."""
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    out: Obj = {"metadata": _slim_metadata(pod.get("metadata"), _POD_META),
                "spec": {k: spec[k] for k in ("nodeName",) if k in spec},
                "status": {k: status[k] for k in ("phase", "conditions", "reason")
                           if k in status}}
    for key in ("kind", "apiVersion"):
        if key in pod:
            out[key] = pod[key]
    return out


def slim_node(node: Obj) -> Obj:
    """A listed Node as capacity counting reads it: labels, schedulability, allocatable."""
    spec, status = _dict(node.get("spec")), _dict(node.get("status"))
    out: Obj = {"metadata": _slim_metadata(node.get("metadata"), ("name", "uid", "labels")),
                "spec": {k: spec[k] for k in ("unschedulable", "taints") if k in spec},
                "status": {k: status[k] for k in ("allocatable", "capacity") if k in status}}
    for key in ("kind", "apiVersion"):
        if key in node:
            out[key] = node[key]
    return out


def _error_from_api(exc: ApiException, obj: str) -> KubeError:
    status = int(exc.status or 0)
    reason, message = str(exc.reason or ""), ""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if body:
        try:
            st = json.loads(body)
        except ValueError:
            message = body[:200]
        else:
            if isinstance(st, dict):
                reason = st.get("reason") or reason
                message = st.get("message") or ""
    if status == 0:
        return KubeTimeout(message or reason or "no response", reason=reason, obj=obj)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else KubeError)
    return cls(message or reason or f"HTTP {status}", status=status, reason=reason, obj=obj)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeClient:
    """Typed facade over the official client; returns plain dicts.

    Parameters
    ----------
    api_client:
        A configured ``kubernetes.client.ApiClient``.
    timeout_s:
        Total timeout of one request in seconds (connect + read).
    retries:
        urllib3 retries on connection errors. 0 by default: the control loop owns
        retry policy, and hidden retries would multiply the effective timeout.
    page_size:
        ``limit`` of every list request; the rest comes by ``continue`` tokens, so a
        big cluster is read in bounded pages (500 items, as ``kubectl``: a page of real
        pods is some 5 MB of JSON, decoded whole before it is slimmed).
    """

    def __init__(self, api_client: k8s.ApiClient, *, timeout_s: float = 10.0,
                 retries: int = 0, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if page_size <= 0:
            raise ValueError(f"page_size must be > 0, got {page_size}")
        self.page_size = page_size
        # Deployments of the last list, by (namespace, name): the actuator builds its
        # patches from them instead of one GET per Deployment (see cached_deployment).
        self._listed: dict[tuple[str, str], Obj] = {}
        # With watches (controller.watch.enabled, the daemon), Deployments and pods come
        # from copies kept by watches between cycles (controlloop.cluster.watchcache).
        self.watches: WatchCache | None = None
        api_client.configuration.retries = retries
        # The REST client reads `retries` when it builds its pool; rebuild it.
        api_client.rest_client = type(api_client.rest_client)(api_client.configuration)
        self.api_client = api_client
        self.timeout_s = timeout_s
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._autoscaling = k8s.AutoscalingV2Api(api_client)
        self._coord = k8s.CoordinationV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str] | None = None,
                        context: str | None = None, *, timeout_s: float = 10.0,
                        retries: int = 0, page_size: int = DEFAULT_PAGE_SIZE) -> KubeClient:
        """Load like kubectl: ``path``, else ``$KUBECONFIG``, else ``~/.kube/config``."""
        if path is None:
            # Read at call time; the library snapshots $KUBECONFIG at import.
            path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        files = [p for p in os.fspath(path).split(os.pathsep) if p]
        if files and not any(os.path.isfile(p) for p in files):
            raise KubeConfigError(f"kubeconfig {os.fspath(path)} does not exist",
                                  obj=os.fspath(path))
        try:
            api = k8s_config.new_client_from_config(config_file=os.fspath(path), context=context,
                                                    persist_config=False)
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            raise KubeConfigError(f"cannot load kubeconfig: {exc}", obj=os.fspath(path)) from exc
        return cls(api, timeout_s=timeout_s, retries=retries, page_size=page_size)

    @classmethod
    def in_cluster(cls, *, timeout_s: float = 10.0, retries: int = 0,
                   page_size: int = DEFAULT_PAGE_SIZE) -> KubeClient:
        """Use the pod's service account (token and CA are re-read on rotation)."""
        conf = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=conf)
        except ConfigException as exc:
            raise KubeConfigError(f"not running in a cluster: {exc}") from exc
        return cls(k8s.ApiClient(conf), timeout_s=timeout_s, retries=retries, page_size=page_size)

    def close(self) -> None:
        self.api_client.close()

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call, decode the JSON body, map every failure to a KubeError."""
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self.timeout_s, **kwargs)
            data = resp.data  # reading may itself time out, so keep it inside the try
        except ApiException as exc:
            raise _error_from_api(exc, what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeTimeout(f"{type(exc).__name__}: {exc}", reason="Timeout", obj=what) from exc
        if not data:
            return {}
        try:
            return orjson.loads(data)
        except ValueError as exc:  # orjson.JSONDecodeError is one
            raise KubeError(f"invalid JSON in response: {exc}", reason="BadResponse",
                            obj=what) from exc

    def _list(self, what: str, kind: str, api_version: str, namespaces: Sequence[str] | None,
              cluster_fn: Callable[..., Any], ns_fn: Callable[..., Any],
              keep: Callable[[Obj], Obj] | None = None, versions: list[str] | None = None,
              **kwargs: Any) -> list[Obj]:
        """List across all namespaces (None) or each given one; items get kind/apiVersion.

        The API omits kind/apiVersion on list items; we add them (as ``kubectl get -o
        json`` does) so an item can be used as an Event's involvedObject as is.
        """
        items: list[Obj] = []
        if namespaces is None:
            scopes: list[tuple[str, tuple[str, ...]]] = [(f"{what} (all namespaces)", ())]
        else:
            scopes = [(f"{what} {ns}/", (ns,)) for ns in namespaces]
        for label, args in scopes:
            fn = cluster_fn if not args else ns_fn
            for item in self._pages(label, fn, *args, keep=keep, versions=versions, **kwargs):
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
                items.append(item)
        return items

    def _pages(self, what: str, fn: Callable[..., Any], *args: Any,
               keep: Callable[[Obj], Obj] | None = None, versions: list[str] | None = None,
               **kwargs: Any) -> list[Obj]:
        """All items of a list call, ``page_size`` at a time (``limit``/``continue``),
        each passed through ``keep`` as its page arrives (one page decoded at a time).

        An expired continue token (410 Gone: the snapshot was compacted) restarts the
        list from the beginning once, as client-go's pager falls back to a full list.
        ``versions`` gets the list's resourceVersion (its first page's: the snapshot's, from
        which a watch sees every later change).
        """
        items: list[Obj] = []
        token: str | None = None
        restarted = False
        while True:
            extra = {"_continue": token} if token else {}
            try:
                page = self._call(what, fn, *args, limit=self.page_size, **extra, **kwargs)
            except KubeError as exc:
                if exc.status == 410 and token and not restarted:
                    items, token, restarted = [], None, True
                    if versions is not None:
                        versions.clear()
                    continue
                raise
            if versions is not None and not versions:
                versions.append(str((page.get("metadata") or {}).get("resourceVersion", "")))
            got = page.get("items") or []
            items.extend(got if keep is None else
                         [keep(i) if isinstance(i, dict) else i for i in got])
            token = (page.get("metadata") or {}).get("continue") or None
            del page, got
            if not token:
                return items

    def _watched(self, kind: str, api_version: str, what: str, ns: str | None,
                 cluster_fn: Callable[..., Any], ns_fn: Callable[..., Any],
                 keep: Callable[[Obj], Obj], label_selector: str) -> list[Obj] | None:
        """The scope's objects from its watch's copy, or None (no watches, or not live:
        the caller lists)."""
        if self.watches is None:
            return None
        from controlloop.cluster.watchcache import Scope

        def lister() -> tuple[list[Obj], str]:
            versions: list[str] = []
            items = self._list(what, kind, api_version, None if ns is None else [ns],
                               cluster_fn, ns_fn, keep=keep, versions=versions,
                               label_selector=label_selector or None)
            return items, versions[0] if versions else ""

        def watcher(rv: str, timeout_s: float) -> Iterator[Obj]:
            args = () if ns is None else (ns,)
            return self._watch(f"{what} {ns or '(all namespaces)'} (watch)",
                               cluster_fn if ns is None else ns_fn, *args, rv=rv,
                               timeout_s=timeout_s, label_selector=label_selector or None)

        return self.watches.items(Scope(kind, ns, label_selector), lister, watcher, keep,
                                  api_version)

    def _watch(self, what: str, fn: Callable[..., Any], *args: Any, rv: str,
               timeout_s: float, **kwargs: Any) -> Iterator[Obj]:
        """The events of one watch request from ``rv``, which the server ends after
        ``timeout_s``; first ``{"type": "OPEN", "stop": fn}`` once it answered. A read
        timeout a little longer than that catches a connection that died without ending."""
        from kubernetes.watch.watch import iter_resp_lines

        try:
            resp = fn(*args, watch=True, resource_version=rv or None,
                      timeout_seconds=max(1, int(timeout_s)), allow_watch_bookmarks=True,
                      _preload_content=False,
                      _request_timeout=(self.timeout_s, timeout_s + 15), **kwargs)
        except ApiException as exc:
            raise _error_from_api(exc, what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeTimeout(f"{type(exc).__name__}: {exc}", reason="Timeout", obj=what) from exc
        try:
            # "stop": what ends the watch from another thread (a read blocked on a quiet
            # stream returns), for WatchCache.close
            stop = getattr(resp, "shutdown", None) or resp.close
            yield {"type": "OPEN", "stop": stop}
            for line in iter_resp_lines(resp):
                if line.strip():
                    yield orjson.loads(line)
        finally:
            resp.close()
            resp.release_conn()

    # -- apps/v1 Deployments --------------------------------------------------------------

    def list_deployments(self, namespaces: Sequence[str] | None,
                         label_selector: str = "") -> list[Obj]:
        """Deployments matching ``label_selector`` in ``namespaces`` (None = all), without
        their bulk (:func:`slim_deployment`)."""
        self._listed = {}  # not two fleets' worth at once; a failed list reads on demand
        items: list[Obj] = []
        for ns in [None] if namespaces is None else list(namespaces):
            got = self._watched("Deployment", "apps/v1", "deployments", ns,
                                self._apps.list_deployment_for_all_namespaces,
                                self._apps.list_namespaced_deployment, slim_deployment,
                                label_selector)
            if got is None:
                got = self._list("deployments", "Deployment", "apps/v1",
                                 None if ns is None else [ns],
                                 self._apps.list_deployment_for_all_namespaces,
                                 self._apps.list_namespaced_deployment, keep=slim_deployment,
                                 label_selector=label_selector or None)
            items.extend(got)
        self._listed = {((d.get("metadata") or {}).get("namespace", ""),
                         (d.get("metadata") or {}).get("name", "")): patch_basis(d)
                        for d in items}
        return items

    def cached_deployment(self, ns: str, name: str, resource_version: str = "") -> Obj | None:
        """The Deployment as the last list returned it (its :func:`patch_basis`: what a
        patch is built from), if it is still at ``resource_version`` (when given); None:
        read it. A patch built from it carries that resourceVersion, so a stale copy fails
        with 409 and is re-read then."""
        obj = self._listed.get((ns, name))
        if obj is None:
            return None
        if resource_version and (obj.get("metadata") or {}).get("resourceVersion") != (
                resource_version):
            return None
        return obj

    def get_deployment(self, ns: str, name: str) -> Obj:
        return self._call(f"deployments {ns}/{name}", self._apps.read_namespaced_deployment,
                          name, ns)  # type: ignore[no-any-return]

    def patch_deployment(self, ns: str, name: str, patch: Obj, *,
                         strategic: bool = True) -> Obj:
        """Patch a Deployment; strategic merge (default) merges containers by name.

        Put ``metadata.resourceVersion`` in ``patch`` to make it conditional (409 if stale).
        """
        ctype = STRATEGIC_MERGE if strategic else MERGE_PATCH
        return self._call(f"deployments {ns}/{name}", self._apps.patch_namespaced_deployment,
                          name, ns, patch, _content_type=ctype)  # type: ignore[no-any-return]

    def create_deployment(self, ns: str, body: Obj) -> Obj:
        name = (body.get("metadata") or {}).get("name", "")
        return self._call(f"deployments {ns}/{name}", self._apps.create_namespaced_deployment,
                          ns, body)  # type: ignore[no-any-return]

    def delete_deployment(self, ns: str, name: str) -> Obj:
        """Delete with background propagation; returns the API's Status object."""
        return self._call(f"deployments {ns}/{name}", self._apps.delete_namespaced_deployment,
                          name, ns, propagation_policy="Background")  # type: ignore[no-any-return]

    # -- core/v1 --------------------------------------------------------------------------

    def list_pods(self, ns: str | None, label_selector: str = "",
                  field_selector: str = "") -> list[Obj]:
        """Pods in ``ns`` (None = all namespaces), e.g.
        ``field_selector="status.phase=Pending"``, as :func:`slim_pod` keeps them."""
        if not field_selector and self.watches is not None:
            from controlloop.cluster.watchcache import selects, watch_selector

            got = self._watched("Pod", "v1", "pods", ns, self._core.list_pod_for_all_namespaces,
                                self._core.list_namespaced_pod, slim_pod,
                                watch_selector(label_selector))
            if got is not None:
                return [p for p in got if selects(
                    label_selector, (p.get("metadata") or {}).get("labels") or {})]
        return self._list("pods", "Pod", "v1", None if ns is None else [ns],
                          self._core.list_pod_for_all_namespaces,
                          self._core.list_namespaced_pod, keep=slim_pod,
                          label_selector=label_selector or None,
                          field_selector=field_selector or None)

    def patch_pod(self, ns: str, name: str, patch: Obj) -> Obj:
        """Merge-patch a pod (the controller only sets annotations)."""
        return self._call(f"pods {ns}/{name}", self._core.patch_namespaced_pod,
                          name, ns, patch, _content_type=MERGE_PATCH)  # type: ignore[no-any-return]

    def list_nodes(self, label_selector: str | None = None) -> list[Obj]:
        items = self._pages("nodes", self._core.list_node, keep=slim_node,
                            label_selector=label_selector or None)
        for item in items:
            item.setdefault("kind", "Node")
            item.setdefault("apiVersion", "v1")
        return items

    def create_event(self, ns: str, involved_object: Obj, *, reason: str, message: str,
                     type: str = "Normal", action: str = "Scale",
                     component: str = "controlloop") -> Obj:
        """Record a core/v1 Event about ``involved_object`` (a full object or a reference).

        ``type`` is ``Normal`` or ``Warning``; ``message`` is cut to the API's 1 KiB limit.
        """
        if type not in ("Normal", "Warning"):
            raise ValueError(f"event type must be Normal or Warning, got {type!r}")
        meta = involved_object.get("metadata") or {}
        ref = {
            "apiVersion": involved_object.get("apiVersion", ""),
            "kind": involved_object.get("kind", ""),
            "name": meta.get("name", involved_object.get("name", "")),
            "namespace": meta.get("namespace", involved_object.get("namespace", ns)),
            "uid": meta.get("uid", involved_object.get("uid", "")),
            "resourceVersion": meta.get("resourceVersion",
                                        involved_object.get("resourceVersion", "")),
        }
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                # Unique name, as client-go's recorder does: <object>.<hex>.
                "name": f"{ref['name'] or 'controlloop'}.{uuid.uuid4().hex[:16]}",
                "namespace": ns,
            },
            "involvedObject": {k: v for k, v in ref.items() if v},
            "reason": reason,
            "message": message[:1024],
            "type": type,
            "action": action,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": os.environ.get("HOSTNAME", component),
            "firstTimestamp": now,
            "lastTimestamp": now,
            # No eventTime: with it set, the API validates the event as new-style
            # (series, reportingController rules); client-go's legacy recorder omits it too.
            "count": 1,
        }
        return self._call(f"events {ns}/{ref['name']}", self._core.create_namespaced_event,
                          ns, body)  # type: ignore[no-any-return]

    # -- autoscalers that would fight us --------------------------------------------------

    def list_hpas(self, ns: str | None = None) -> list[Obj]:
        """autoscaling/v2 HorizontalPodAutoscalers in ``ns`` (None = all namespaces)."""
        return self._list("horizontalpodautoscalers", "HorizontalPodAutoscaler",
                          "autoscaling/v2", None if ns is None else [ns],
                          self._autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces,
                          self._autoscaling.list_namespaced_horizontal_pod_autoscaler)

    def list_scaled_objects(self, ns: str | None = None) -> list[Obj]:
        """KEDA ScaledObjects; ``[]`` when the KEDA CRD is not installed (404 on the path)."""
        api_version = f"{KEDA_GROUP}/{KEDA_VERSION}"
        try:
            if ns is None:
                items = self._pages("scaledobjects (all namespaces)",
                                    self._custom.list_cluster_custom_object,
                                    KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL)
            else:
                items = self._pages(f"scaledobjects {ns}/",
                                    self._custom.list_namespaced_custom_object,
                                    KEDA_GROUP, KEDA_VERSION, ns, KEDA_PLURAL)
        except NotFound:
            return []
        for item in items:
            item.setdefault("kind", "ScaledObject")
            item.setdefault("apiVersion", api_version)
        return items

    # -- v1 ConfigMaps (the tuner's learnt state) ----------------------------------------

    def get_config_map(self, ns: str, name: str) -> Obj:
        return self._call(f"configmaps {ns}/{name}", self._core.read_namespaced_config_map,
                          name, ns)  # type: ignore[no-any-return]

    def create_config_map(self, ns: str, body: Obj) -> Obj:
        name = (body.get("metadata") or {}).get("name", "")
        return self._call(f"configmaps {ns}/{name}", self._core.create_namespaced_config_map,
                          ns, body)  # type: ignore[no-any-return]

    def replace_config_map(self, ns: str, name: str, body: Obj) -> Obj:
        return self._call(f"configmaps {ns}/{name}", self._core.replace_namespaced_config_map,
                          name, ns, body)  # type: ignore[no-any-return]

    # -- coordination.k8s.io/v1 Leases (leader election) ----------------------------------

    def get_lease(self, ns: str, name: str) -> Obj:
        return self._call(f"leases {ns}/{name}", self._coord.read_namespaced_lease,
                          name, ns)  # type: ignore[no-any-return]

    def create_lease(self, ns: str, body: Obj) -> Obj:
        """Create; raises Conflict if another replica created it first."""
        name = (body.get("metadata") or {}).get("name", "")
        return self._call(f"leases {ns}/{name}", self._coord.create_namespaced_lease,
                          ns, body)  # type: ignore[no-any-return]

    def replace_lease(self, ns: str, name: str, body: Obj) -> Obj:
        """PUT the lease; ``body.metadata.resourceVersion`` is required so that a
        concurrent writer makes this fail with Conflict instead of being overwritten."""
        if not (body.get("metadata") or {}).get("resourceVersion"):
            raise ValueError("replace_lease: body.metadata.resourceVersion is required")
        return self._call(f"leases {ns}/{name}", self._coord.replace_namespaced_lease,
                          name, ns, body)  # type: ignore[no-any-return]
