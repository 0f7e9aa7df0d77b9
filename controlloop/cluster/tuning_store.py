"""The tuner's learnt state in a ConfigMap the controller owns, so that a restart or a new
leader starts from what was learnt (one JSON document under ``data["tuning.json"]``)."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

DATA_KEY = "tuning.json"
MANAGED_BY = {"app.kubernetes.io/managed-by": "controlloop"}


class ConfigMapClient(Protocol):
    """What the store needs of controlloop.cluster.kube.KubeClient."""

    def get_config_map(self, ns: str, name: str) -> dict[str, Any]: ...

    def create_config_map(self, ns: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace_config_map(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


class ConfigMapStore:
    """``load``/``save`` of the tuning state in ConfigMap ``namespace/name``."""

    def __init__(self, kube: ConfigMapClient, namespace: str,
                 name: str = "controlloop-tuning", *, read_only: bool = False) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.read_only = read_only  # dry-run: read what was learnt, never write

    def _get(self) -> dict[str, Any] | None:
        from controlloop.cluster.kube_errors import NotFound

        try:
            return self.kube.get_config_map(self.namespace, self.name)
        except NotFound:
            return None

    def load(self) -> dict[str, Any] | None:
        cm = self._get()
        if cm is None:
            return None
        raw = (cm.get("data") or {}).get(DATA_KEY)
        if not raw:
            return None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            log.warning("tuning: configmap %s/%s: %s is not JSON (%s); ignoring it",
                        self.namespace, self.name, DATA_KEY, exc)
            return None
        return doc if isinstance(doc, dict) else None

    def save(self, doc: dict[str, Any]) -> None:
        if self.read_only:
            return
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": dict(MANAGED_BY)},
            "data": {DATA_KEY: json.dumps(doc, sort_keys=True)},
        }
        cm = self._get()
        if cm is None:
            self.kube.create_config_map(self.namespace, body)
            return
        rv = (cm.get("metadata") or {}).get("resourceVersion")
        if rv:
            body["metadata"]["resourceVersion"] = rv
        self.kube.replace_config_map(self.namespace, self.name, body)
