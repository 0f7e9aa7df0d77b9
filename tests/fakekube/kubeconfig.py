"""Write a kubeconfig that ``kubernetes.config.load_kube_config`` accepts."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(path: str | Path, server_url: str, token: str | None = None,
                     context: str = "fake") -> Path:
    """One cluster, one user (bearer ``token`` or no credentials), one current context."""
    user: dict[str, str] = {"token": token} if token else {}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context,
                      "context": {"cluster": context, "user": context, "namespace": "default"}}],
        "current-context": context,
        "preferences": {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
