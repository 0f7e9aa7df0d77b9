"""The real daemon (`controlloop run --specs crd` in a subprocess) against the loopback API:
an Optimizer edit runs a cycle at once through the scheduler (the interval is an hour), its
status shows the new solution, and POST /invoke is refused without a token RBAC allows."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from controlloop.config import load_config
from controlloop.crds import GROUP, KIND_BY_NAME, VERSION, crd_documents, system_to_crs
from controlloop.loop.settings import ControllerSettings
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import CONFIG, add_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NS = "controlloop-system"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, method="POST", data=b"",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def wait_for(check: Any, timeout: float, proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_daemon_follows_the_optimizer_and_locks_invoke(fake_kube: FakeKubeServer,
                                                       kube_client: Any) -> None:
    api = kube_client.api_client
    for doc in crd_documents():
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(doc)
    custom = k8s.CustomObjectsApi(api)
    settings = ControllerSettings.model_validate(
        {"namespaces": ["llm"], "prometheus": {"url": "http://127.0.0.1:9"}})
    for doc in system_to_crs(load_config(CONFIG).system, settings=settings,
                             include_servers=False):
        custom.create_namespaced_custom_object(GROUP, VERSION, NS,
                                               KIND_BY_NAME[doc["kind"]].plural, doc)
    # Load from the labels (no Prometheus): the decision depends only on the specs.
    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium",
               accelerator="MI300X", replicas=1, extra_labels={
                   "inferno.server.load.rpm": "600", "inferno.server.load.intokens": "128",
                   "inferno.server.load.outtokens": "1024"})
    fake_kube.add_user("ops-token", "alice")
    fake_kube.grant("alice", "/invoke", "post")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlloop", "run", "--specs", "crd", "--crd-namespace", NS,
         "--kubeconfig", str(fake_kube.kubeconfig), "--config", str(ROOT / "no-such-dir"),
         "--interval", "3600", "--debounce", "0.5", "--listen", f"127.0.0.1:{port}",
         "--http-auth", "tokenreview"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        def status() -> dict[str, Any]:
            obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "optimizers",
                                                           "default")
            return dict(obj.get("status") or {})

        first = wait_for(lambda: status().get("observedGeneration") == 1 and status(), 60, proc)
        (srv,) = first["servers"]
        before = srv["replicas"]
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "optimizers", "default", {
            "spec": {"controller": {"behavior": {"minReplicas": before + 2}}}})
        edited = time.monotonic()
        second = wait_for(lambda: status().get("observedGeneration") == 2 and status(), 30,
                          proc)
        took = time.monotonic() - edited
        assert took < 0.5 + 10, f"{took:.1f}s: not triggered by the edit"  # interval is 1 h
        assert second["cycleId"] != first["cycleId"]
        assert second["servers"][0]["replicas"] >= before + 2
        url = f"http://127.0.0.1:{port}/invoke"
        assert post(url) == 401
        assert post(url, "forged") == 401
        assert post(url, "ops-token") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "specs from controlloop.io custom resources" in out
    assert "refused POST /invoke" in out
