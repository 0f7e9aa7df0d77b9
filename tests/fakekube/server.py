"""A loopback Kubernetes API server for tests of code that uses the official client.

It speaks enough of the real REST API (paths, verbs, patch content types, list and
Status shapes, resourceVersion semantics) for ``kubernetes.client`` to work against
it unchanged, plus test hooks: object builders, fault injection and a request log.

    with FakeKubeServer() as srv:
        srv.add_deployment("llm", "granite", replicas=2)
        srv.write_kubeconfig(tmp_path / "kubeconfig")
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import crd, objects
from .kubeconfig import write_kubeconfig
from .patch import PatchError, json_patch, merge_patch, strategic_merge
from .selectors import (
    SelectorError,
    match_fields,
    match_labels,
    parse_field_selector,
    parse_label_selector,
)
from .store import RESOURCES, Obj, Resource, Store, StoreError, find_resource

PATCHERS = {
    "application/strategic-merge-patch+json": strategic_merge,
    "application/merge-patch+json": merge_patch,
    "application/json-patch+json": json_patch,
}


@dataclass
class Fault:
    """One injected failure; matches requests by method and a regex searched in the path.

    ``status`` answers with that code (a Status body unless ``body`` is given);
    ``delay_s`` sleeps first (longer than the client timeout = a timeout fault);
    ``drop`` closes the connection without answering. ``times=None`` never expires.
    """

    method: str | None = None
    path_regex: str = ""
    status: int | None = None
    times: int | None = 1
    delay_s: float = 0.0
    body: Any = None
    drop: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method.upper() == method)
                and re.search(self.path_regex, path) is not None
                and (self.times is None or self.hits < self.times))


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    content_type: str
    body: Any
    query: dict[str, str] = field(default_factory=dict)


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                 "status": "Success" if code < 400 else "Failure",
                 "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 415: "UnsupportedMediaType", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}


class FakeKubeServer:
    """The fake API server; ``start()`` binds 127.0.0.1 on a free port."""

    def __init__(self, *, token: str | None = None, keda_installed: bool = True) -> None:
        self.store = Store()
        self.store.admit = self._admit
        # Built-in kinds plus those registered by CustomResourceDefinitions.
        self.resources: list[Resource] = list(RESOURCES)
        self.token = token
        self.keda_installed = keda_installed
        self.kubeconfig: Path | None = None
        self.expire_continue = False  # answer the next continue token with 410 (see _page)
        self._faults: list[Fault] = []
        # TokenReview / SubjectAccessReview: token -> user info; (subject, path, verb) grants.
        self.users: dict[str, Obj] = {}
        self.grants: set[tuple[str, str, str]] = set()
        self._forbidden: list[tuple[str, frozenset[str] | None, str | None]] = []
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeKubeServer:
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # wakes handlers sleeping in delay faults
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeKubeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(self, path: str | Path, *, token: str | None = None,
                         context: str = "fake") -> Path:
        """Write a kubeconfig for this server (``token`` defaults to the required one)."""
        self.kubeconfig = write_kubeconfig(path, self.url, token=token or self.token,
                                           context=context)
        return self.kubeconfig

    # -- test hooks -----------------------------------------------------------------------

    def inject(self, method: str | None = None, path_regex: str = "", *,
               status: int | None = None, times: int | None = 1, delay_s: float = 0.0,
               body: Any = None, drop: bool = False) -> Fault:
        fault = Fault(method, path_regex, status, times, delay_s, body, drop)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def forbid(self, plural: str, verbs: set[str] | None = None,
               namespace: str | None = None) -> None:
        """Answer 403 for ``verbs`` (get/list/create/update/patch/delete; None = all)."""
        with self._lock:
            self._forbidden.append((plural, frozenset(verbs) if verbs else None, namespace))

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, method: str, path_regex: str = "") -> list[Request]:
        return [r for r in self.requests
                if r.method == method.upper() and re.search(path_regex, r.path)]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def find_resource(self, name: str) -> Resource:
        """Like :func:`store.find_resource`, custom resources and short names included."""
        low = name.lower()
        for res in list(self.resources):
            if low in (res.kind.lower(), res.plural, res.key.lower(), *res.short_names):
                return res
        return find_resource(name)

    def add_user(self, token: str, username: str, groups: tuple[str, ...] = ()) -> None:
        """A bearer token that TokenReview authenticates as ``username``."""
        with self._lock:
            self.users[token] = {"username": username, "uid": f"uid-{username}",
                                 "groups": [*groups, "system:authenticated"]}

    def grant(self, subject: str, path: str, verb: str) -> None:
        """RBAC for a non-resource URL: ``subject`` (user or group) may ``verb`` ``path``."""
        with self._lock:
            self.grants.add((subject, path, verb))

    def _review(self, path: str, body: Any) -> tuple[int, Any] | None:
        reviews = {"/apis/authentication.k8s.io/v1/tokenreviews": ("tokenreviews", "TokenReview"),
                   "/apis/authorization.k8s.io/v1/subjectaccessreviews":
                       ("subjectaccessreviews", "SubjectAccessReview")}
        if path not in reviews:
            return None
        plural, kind = reviews[path]
        group = path.split("/")[2]
        res = Resource(group, "v1", plural, kind, namespaced=False)
        if self._is_forbidden(res, "create", ""):
            return 403, self._forbidden_body(res, "create", "", "")
        spec = (body or {}).get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            return 400, status_body(400, "BadRequest", f"{kind}: spec is required")
        if kind == "TokenReview":
            with self._lock:
                user = self.users.get(str(spec.get("token", "")))
            status: Obj = ({"authenticated": True, "user": user} if user
                           else {"authenticated": False, "error": "invalid bearer token"})
        else:
            attrs = spec.get("nonResourceAttributes") or {}
            subjects = {spec.get("user", ""), *(spec.get("groups") or [])}
            with self._lock:
                allowed = any((s, attrs.get("path"), attrs.get("verb")) in self.grants
                              for s in subjects)
            status = {"allowed": allowed}
            if not allowed:
                status["reason"] = "no RBAC policy matched"
        return 201, {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {},
                     "spec": spec, "status": status}

    def put(self, obj: Obj) -> Obj:
        """Create any object (kind/apiVersion from the body); returns the stored copy."""
        res = self.find_resource(f"{obj['apiVersion']}/{obj['kind']}")
        ns = obj["metadata"].get("namespace", "default") if res.namespaced else ""
        return self.store.create(res, ns, obj)

    def get(self, kind: str, ns: str | None, name: str) -> Obj:
        """Current stored object; ``kind`` may be a Kind, a plural or ``apiVersion/Kind``."""
        res = self.find_resource(kind)
        return self.store.get(res, ns or "" if res.namespaced else "", name)

    def list_objects(self, kind: str, ns: str | None = None) -> list[Obj]:
        return self.store.list(self.find_resource(kind), ns)

    def set_status(self, kind: str, ns: str | None, name: str, status: Obj) -> Obj:
        """Merge ``status`` into the object's status, as a controller would."""
        res = self.find_resource(kind)
        ns = ns or "" if res.namespaced else ""
        with self.store.lock:
            cur = self.store.get(res, ns, name)
            cur["status"] = merge_patch(cur.get("status") or {}, status)
            return self.store.update(res, ns, name, cur, subresource="status")

    def add_deployment(self, ns: str, name: str, *, labels: dict[str, str] | None = None,
                       replicas: int = 1, containers: list[Obj] | None = None,
                       node_selector: dict[str, str] | None = None,
                       annotations: dict[str, str] | None = None,
                       ready_replicas: int | None = None) -> Obj:
        """A Deployment whose status says all ``replicas`` are ready (unless told not)."""
        self.put(objects.deployment(ns, name, labels=labels, replicas=replicas,
                                    containers=containers, node_selector=node_selector,
                                    annotations=annotations))
        return self.set_deployment_status(ns, name, replicas=replicas,
                                          ready_replicas=ready_replicas)

    def set_deployment_status(self, ns: str, name: str, *, replicas: int,
                              ready_replicas: int | None = None,
                              available_replicas: int | None = None,
                              updated_replicas: int | None = None) -> Obj:
        gen = self.get("Deployment", ns, name)["metadata"].get("generation", 1)
        return self.set_status("Deployment", ns, name, objects.deployment_status(
            replicas, ready=ready_replicas, available=available_replicas,
            updated=updated_replicas, observed_generation=gen))

    def add_pod(self, ns: str, name: str, labels: dict[str, str] | None = None, *,
                phase: str = "Running", ready: bool = True, node_name: str | None = None,
                unschedulable: bool = False, owner: Obj | None = None) -> Obj:
        return self.put(objects.pod(ns, name, labels=labels, phase=phase, ready=ready,
                                    node_name=node_name, unschedulable=unschedulable,
                                    owner=owner))

    def add_node(self, name: str, labels: dict[str, str] | None = None,
                 allocatable: dict[str, str] | None = None, *,
                 unschedulable: bool = False) -> Obj:
        return self.put(objects.node(name, labels=labels, allocatable=allocatable,
                                     unschedulable=unschedulable))

    def add_hpa(self, ns: str, name: str, *, target: str, min_replicas: int = 1,
                max_replicas: int = 10) -> Obj:
        return self.put(objects.hpa(ns, name, target=target, min_replicas=min_replicas,
                                    max_replicas=max_replicas))

    def add_scaled_object(self, ns: str, name: str, *, target: str, min_replicas: int = 0,
                          max_replicas: int = 10) -> Obj:
        return self.put(objects.scaled_object(ns, name, target=target,
                                              min_replicas=min_replicas,
                                              max_replicas=max_replicas))

    # -- request handling (called from handler threads) -----------------------------------

    def _record(self, req: Request) -> Fault | None:
        with self._lock:
            self._requests.append(req)
            for fault in self._faults:
                if fault.matches(req.method, req.path):
                    fault.hits += 1
                    return fault
        return None

    def _is_forbidden(self, res: Resource, verb: str, ns: str) -> bool:
        with self._lock:
            return any(p == res.plural and (v is None or verb in v) and (n is None or n == ns)
                       for p, v, n in self._forbidden)

    def handle(self, method: str, path: str, query: dict[str, str], ctype: str,
               body: Any, auth: str, accept: str = "") -> tuple[int, Any]:
        if self.token is not None and auth != f"Bearer {self.token}":
            return 401, status_body(401, "Unauthorized", "Unauthorized")
        if path in ("/version", "/version/"):
            return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake",
                         "gitCommit": "0" * 40, "gitTreeState": "clean",
                         "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2",
                         "compiler": "gc", "platform": "linux/amd64"}
        if path in ("/api", "/api/"):
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": []}
        if path in ("/apis", "/apis/"):
            return 200, self._discovery()
        found = self._discover_path(path) if method == "GET" else None
        if found is not None:
            return found
        if method == "POST":
            review = self._review(path, body)
            if review is not None:
                return review
        route = self._route(path)
        if route is None:
            return 404, status_body(404, "NotFound",
                                    "the server could not find the requested resource")
        res, ns, name, sub = route
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}.get(method, "")
        if not verb or (verb == "create" and name) or (verb != "create" and verb != "list"
                                                        and not name):
            return 405, status_body(405, "MethodNotAllowed", f"{method} not allowed on {path}")
        if self._is_forbidden(res, verb, ns):
            return 403, self._forbidden_body(res, verb, ns, name)
        try:
            code, out = self._execute(res, verb, ns, name, sub, query, ctype, body)
        except StoreError as err:
            return err.code, status_body(err.code, err.reason, err.message,
                                         {"name": name, "group": res.group, "kind": res.plural,
                                          **err.details})
        except (SelectorError, PatchError) as err:
            code = 422 if isinstance(err, PatchError) else 400
            return code, status_body(code, _REASONS[code], str(err))
        if "as=Table" in accept and verb in ("get", "list") and code == 200:
            items = out["items"] if verb == "list" else [out]
            if verb == "list":
                items = [{"kind": res.kind, "apiVersion": res.api_version, **o} for o in items]
            out = crd.table(items, list(res.columns) or crd.DEFAULT_COLUMNS,
                            str(self.store.revision))
        return code, out

    def _forbidden_body(self, res: Resource, verb: str, ns: str, name: str) -> Obj:
        return status_body(403, "Forbidden", (
            f'{res.qualified} "{name}" is forbidden: User "system:serviceaccount:'
            f'controlloop:controlloop" cannot {verb} resource "{res.plural}" in API group '
            f'"{res.group}" in the namespace "{ns}"'),
            {"name": name, "group": res.group, "kind": res.plural})

    def _served(self) -> list[Resource]:
        return [r for r in list(self.resources)
                if r.group != "keda.sh" or self.keda_installed]

    def _route(self, path: str) -> tuple[Resource, str, str, str] | None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        res = next((r for r in self._served() if (r.group, r.version, r.plural)
                    == (group, version, rest[0])), None)
        if res is None or (ns and not res.namespaced):
            return None
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and (sub != "status" or not res.status_subresource):
            return None
        if name and res.namespaced and not ns:
            return None
        return res, ns, name, sub

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for r in self._served():
            if r.group:
                groups.setdefault(r.group, [])
                if r.version not in groups[r.group]:
                    groups[r.group].append(r.version)
        return groups

    @staticmethod
    def _group_body(g: str, vs: list[str]) -> Obj:
        return {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}

    def _discovery(self) -> Obj:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            self._group_body(g, vs) for g, vs in self._group_versions().items()]}

    def _discover_path(self, path: str) -> tuple[int, Any] | None:
        """``/api/v1``, ``/apis/GROUP`` and ``/apis/GROUP/VERSION`` (legacy discovery, what
        kubectl reads to map ``kubectl get optimizers`` to a path)."""
        parts = [p for p in path.split("/") if p]
        if parts == ["api", "v1"]:
            group, version = "", "v1"
        elif len(parts) == 3 and parts[0] == "apis":
            group, version = parts[1], parts[2]
        elif len(parts) == 2 and parts[0] == "apis":
            vs = self._group_versions().get(parts[1])
            if not vs:
                return 404, status_body(404, "NotFound",
                                        "the server could not find the requested resource")
            return 200, {"kind": "APIGroup", "apiVersion": "v1", **self._group_body(parts[1], vs)}
        else:
            return None
        served = [r for r in self._served() if (r.group, r.version) == (group, version)]
        if not served:
            return 404, status_body(404, "NotFound",
                                    "the server could not find the requested resource")
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        out: list[Obj] = []
        for r in served:
            entry: Obj = {"name": r.plural, "singularName": r.kind.lower(),
                          "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs}
            if r.short_names:
                entry["shortNames"] = list(r.short_names)
            out.append(entry)
            if r.status_subresource:
                out.append({"name": f"{r.plural}/status", "singularName": "",
                            "namespaced": r.namespaced, "kind": r.kind,
                            "verbs": ["get", "patch", "update"]})
        return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                     "groupVersion": f"{group}/{version}" if group else version,
                     "resources": out}

    # -- custom resources ---------------------------------------------------------------------

    def _register_crd(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        new = [Resource(spec["group"], v["name"], names["plural"], names["kind"],
                        namespaced=spec.get("scope") == "Namespaced",
                        status_subresource="status" in (v.get("subresources") or {}),
                        custom=True,
                        schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                        columns=tuple(v.get("additionalPrinterColumns") or ()),
                        short_names=tuple(names.get("shortNames") or ()))
               for v in spec.get("versions") or [] if v.get("served", True)]
        with self._lock:
            self.resources = [r for r in self.resources
                              if not (r.custom and (r.group, r.plural)
                                      == (spec["group"], names["plural"]))] + new

    def _unregister_crd(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        with self._lock:
            gone = [r for r in self.resources if r.custom and (r.group, r.plural)
                    == (group, plural)]
            self.resources = [r for r in self.resources if r not in gone]
        with self.store.lock:  # deleting a CRD deletes its objects
            keys = {r.key for r in gone}
            for key in [k for k in self.store.objects if k[0] in keys]:
                res = next(r for r in gone if r.key == key[0])
                self.store.delete(res, key[1], key[2])

    def _check_crd(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        problems = []
        for key in ("group", "scope", "versions"):
            if not spec.get(key):
                problems.append(f"spec.{key}: Required value")
        for key in ("plural", "kind"):
            if not names.get(key):
                problems.append(f"spec.names.{key}: Required value")
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            problems.append(f'spec.scope: Unsupported value: "{spec.get("scope")}"')
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if obj["metadata"].get("name") != expected:
            problems.append(f'metadata.name: Invalid value: "{obj["metadata"].get("name")}": '
                            f'must be spec.names.plural+"."+spec.group')
        versions = spec.get("versions") or []
        if sum(1 for v in versions if v.get("storage")) != 1:
            problems.append("spec.versions: Invalid value: must have exactly one version "
                            "marked as storage version")
        for i, v in enumerate(versions):
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if schema is None:
                problems.append(f"spec.versions[{i}].schema.openAPIV3Schema: Required value")
                continue
            problems += [f"spec.versions[{i}].schema.openAPIV3Schema.{p}"
                         for p in crd.structural_problems(schema)]
        if problems:
            raise _invalid("CustomResourceDefinition", obj["metadata"].get("name", ""), problems)

    def _admit(self, res: Resource, obj: Obj, old: Obj | None) -> Obj:
        """Admission of every stored object: CRDs are checked, custom objects pruned and
        validated against their schema (422 Invalid naming each field). Like the API server's
        validation ratcheting, a field left as stored is not re-judged (a status write to an
        object whose spec no longer validates goes through)."""
        if res.kind == "CustomResourceDefinition" and res.group == "apiextensions.k8s.io":
            self._check_crd(obj)
            return obj
        if not res.custom or res.schema is None:
            return obj
        obj = crd.prune_object(obj, res.schema)
        problems = crd.validation_errors(obj, res.schema)
        if old is not None:
            unchanged = [k for k in obj if k not in ("metadata",) and obj.get(k) == old.get(k)]
            problems = [p for p in problems
                        if not any(p == k or p.startswith((f"{k}.", f"{k}[", f"{k}:"))
                                   for k in unchanged)]
        if problems:
            raise _invalid(res.kind, obj["metadata"].get("name", ""), problems, res)
        return obj

    def _execute(self, res: Resource, verb: str, ns: str, name: str, sub: str,
                 query: dict[str, str], ctype: str, body: Any) -> tuple[int, Any]:
        is_crd = res.kind == "CustomResourceDefinition" and res.group == "apiextensions.k8s.io"
        doomed = self.store.get(res, ns, name) if is_crd and verb == "delete" else None
        code, out = self._execute_store(res, verb, ns, name, sub, query, ctype, body)
        if is_crd:
            if doomed is not None:
                self._unregister_crd(doomed)
            elif verb in ("create", "update", "patch") and not sub:
                self._register_crd(out)
                if verb == "create":
                    out = self._establish(out)
        return code, out

    def _establish(self, obj: Obj) -> Obj:
        res = find_resource("CustomResourceDefinition")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [{"type": t, "status": "True", "reason": r, "message": m,
                       "lastTransitionTime": now}
                      for t, r, m in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                      ("Established", "InitialNamesAccepted",
                                       "the initial names have been accepted"))]
        obj = {**obj, "status": {"conditions": conditions,
                                 "acceptedNames": obj["spec"]["names"],
                                 "storedVersions": [v["name"] for v in obj["spec"]["versions"]
                                                    if v.get("storage")]}}
        return self.store.update(res, "", obj["metadata"]["name"], obj, subresource="status")

    def _execute_store(self, res: Resource, verb: str, ns: str, name: str, sub: str,
                       query: dict[str, str], ctype: str, body: Any) -> tuple[int, Any]:
        store = self.store
        if verb == "list":
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"))
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                     for o in store.list(res, ns or None)
                     if match_labels(labels, o["metadata"].get("labels"))
                     and match_fields(fields, o)]
            meta: Obj = {"resourceVersion": str(store.revision)}
            items, meta = self._page(items, query, meta)
            return 200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                         "metadata": meta, "items": items}
        if verb == "get":
            return 200, store.get(res, ns, name)
        if verb == "delete":
            obj = store.delete(res, ns, name)
            return 200, status_body(200, "", "", {
                "name": name, "group": res.group, "kind": res.plural,
                "uid": obj["metadata"].get("uid")})
        if verb == "patch":
            return 200, self._patch(res, ns, name, sub, ctype, body)
        if not isinstance(body, dict):
            raise StoreError(400, "BadRequest", "request body must be a JSON object")
        if verb == "create":
            return 201, store.create(res, ns, body)
        rv = (body.get("metadata") or {}).get("resourceVersion")  # verb == "update"
        return 200, store.update(res, ns, name, body, subresource=sub, check_rv=rv)

    def _page(self, items: list[Obj], query: dict[str, str], meta: Obj) -> tuple[list[Obj], Obj]:
        """``limit``/``continue`` as the API server does them: items in key order
        (namespace, name), the token holds the last key served (so objects added or
        removed between pages neither repeat nor shift the rest), ``remainingItemCount``
        counts what is left. ``expire_continue`` makes the next token-bearing request
        answer 410 Expired, as after an etcd compaction."""
        token = query.get("continue")
        if token:
            if self.expire_continue:
                self.expire_continue = False
                raise StoreError(410, "Expired", "The provided continue parameter is too old")
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token.encode())))
            except (ValueError, TypeError) as exc:
                raise StoreError(400, "BadRequest", f"invalid continue token: {exc}") from None
            items = [o for o in items if _key(o) > after]
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise StoreError(400, "BadRequest", "limit must be an integer") from None
        if limit > 0 and len(items) > limit:
            last = _key(items[limit - 1])
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(list(last)).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return items, meta

    def _patch(self, res: Resource, ns: str, name: str, sub: str, ctype: str,
               body: Any) -> Obj:
        store = self.store
        if not isinstance(body, dict | list):
            raise StoreError(400, "BadRequest", "a patch must be a JSON object or list")
        patcher = PATCHERS.get(ctype.split(";")[0].strip())
        if patcher is None or (patcher is strategic_merge
                               and (res.custom or res.group == "keda.sh")):
            # Custom resources have no strategic-merge schema, like the real server.
            raise StoreError(415, "UnsupportedMediaType",
                             f"the body of the request was in an unknown format: {ctype}")
        with store.lock:  # read-modify-write must not race other writers
            cur = store.get(res, ns, name)
            new = patcher(cur, body)
            if not isinstance(new, dict):
                raise PatchError("patch result is not an object")
            # A resourceVersion that the patch set (or kept) must match the stored one.
            rv = (new.get("metadata") or {}).get("resourceVersion")
            return store.update(res, ns, name, new, subresource=sub, check_rv=rv)

    # -- watch -----------------------------------------------------------------------------------

    def watch(self, path: str, query: dict[str, str]) -> tuple[int, Any, Iterator[Obj] | None]:
        """(code, error body, events) for ``GET ...?watch=true``: with a resourceVersion the
        changes after it, without one (or "0") an ADDED per current object first; ends after
        ``timeoutSeconds`` or when the server stops; a compacted resourceVersion gets an
        ERROR event with 410 Gone, as from a real server."""
        route = self._route(path)
        if route is None:
            return 404, status_body(404, "NotFound",
                                    "the server could not find the requested resource"), None
        res, ns, name, _ = route
        if name:
            return 405, status_body(405, "MethodNotAllowed", "watch a collection"), None
        if self._is_forbidden(res, "watch", ns) or self._is_forbidden(res, "list", ns):
            return 403, self._forbidden_body(res, "watch", ns, ""), None
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"))
        except SelectorError as err:
            return 400, status_body(400, "BadRequest", str(err)), None
        timeout = float(query.get("timeoutSeconds") or 1800)

        def matches(obj: Obj) -> bool:
            return (match_labels(labels, obj["metadata"].get("labels"))
                    and match_fields(fields, obj))

        def start_of_history(cursor: int) -> int:
            return bisect.bisect_right(self.store.events, cursor, key=lambda e: e.revision)

        def events() -> Iterator[Obj]:
            store = self.store
            rv = query.get("resourceVersion") or "0"
            deadline = time.monotonic() + timeout
            with store.lock:
                if rv == "0":
                    cursor = store.revision
                    initial = [o for o in store.list(res, ns or None) if matches(o)]
                else:
                    cursor, initial = int(rv), []
                    if cursor < store.compacted:
                        gone = status_body(410, "Expired",
                                           f"too old resource version: {rv} "
                                           f"({store.compacted})")
                        initial = [{"__error__": gone}]
            for obj in initial:
                if "__error__" in obj:
                    yield {"type": "ERROR", "object": obj["__error__"]}
                    return
                yield {"type": "ADDED", "object": obj}
            while not self.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                with store.changed:
                    if start_of_history(cursor) == len(store.events):
                        store.changed.wait(min(remaining, 0.25))
                    # Fallen behind the history window: changes after the cursor are gone.
                    behind = cursor < store.compacted
                    pending = [] if behind else store.events[start_of_history(cursor):]
                if behind:  # yielded outside the lock, as every event is
                    yield {"type": "ERROR", "object": status_body(
                        410, "Expired", f"too old resource version: {cursor} "
                        f"({store.compacted})")}
                    return
                if pending:
                    cursor = pending[-1].revision
                for ev in pending:
                    if ev.key != res.key or (ns and ev.namespace != ns):
                        continue
                    now = matches(ev.obj)
                    if ev.type == "MODIFIED" and ev.old_labels is not None:
                        before = match_labels(labels, ev.old_labels) and match_fields(
                            fields, ev.obj)
                        if now != before:  # entered or left the selection
                            yield {"type": "ADDED" if now else "DELETED", "object": ev.obj}
                            continue
                    if now:
                        yield {"type": ev.type, "object": ev.obj}

        return 200, None, events()


def _invalid(kind: str, name: str, problems: list[str], res: Resource | None = None) -> StoreError:
    """422 Invalid with one cause per problem, as the API server reports validation."""
    causes = [{"reason": "FieldValueInvalid", "message": p,
               "field": p.split(":", 1)[0]} for p in problems]
    err = StoreError(422, "Invalid", f'{kind} "{name}" is invalid: ' + "; ".join(problems))
    err.details = {"causes": causes}
    return err


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKubeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or drop the connection are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY each keep-alive
    # request waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        fault = fake._record(Request(self.command, url.path, ctype, body, query))
        if fault and fault.delay_s:
            fake.stopping.wait(fault.delay_s)
        if fault and fault.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault and fault.status:
            code = fault.status
            out: Any = fault.body if fault.body is not None else status_body(
                code, _REASONS.get(code, "InternalError"), f"injected fault {code}")
        elif isinstance(body, str):
            code, out = 400, status_body(400, "BadRequest", "invalid JSON body")
        elif self.command == "GET" and query.get("watch") in ("true", "1"):
            if fake.token is not None and (self.headers.get("Authorization", "")
                                           != f"Bearer {fake.token}"):
                code, out = 401, status_body(401, "Unauthorized", "Unauthorized")
            else:
                code, out, events = fake.watch(url.path, query)
                if events is not None:
                    self._stream(events)
                    return
        else:
            code, out = fake.handle(self.command, url.path, query, ctype, body,
                                    self.headers.get("Authorization", ""),
                                    self.headers.get("Accept", ""))
        self._send(code, out)

    def _stream(self, events: Iterator[Any]) -> None:
        """A watch: one JSON event per line, chunked, until the watch ends."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _send(self, code: int, out: Any) -> None:
        data = out if isinstance(out, bytes) else json.dumps(out).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client gave up (timeout fault)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch
