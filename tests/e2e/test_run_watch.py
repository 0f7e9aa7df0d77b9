"""``controlloop run`` with ``controller.watch.enabled``: after its first cycle the daemon
lists no Deployments or pods, and its cycles still see a change made in the cluster.
A real Prometheus (fake vLLM exporter), the loopback Kubernetes API, the daemon as a
subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.cluster import ROOT, add_vllm_a, daemon_config_dir
from tests.promharness import free_port

pytestmark = pytest.mark.integration


def cycles(base: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{base}/ui/api/cycles?since=0", timeout=5) as resp:
            return list(json.loads(resp.read()).get("cycles") or [])
    except OSError:
        return []


def lists(fake_kube: Any, kind: str) -> int:
    return sum(1 for r in fake_kube.requests_for("GET", rf"/{kind}$")
               if r.query.get("watch") not in ("true", "1"))


def test_the_daemon_keeps_deployments_and_pods_by_watches(
    vllm_prom: Any, fake_kube: Any, tmp_path: Path
) -> None:
    add_vllm_a(fake_kube)
    config = daemon_config_dir(tmp_path, vllm_prom.url)
    doc = yaml.safe_load((config / "controller.yaml").read_text())
    doc["controller"]["watch"] = {"enabled": True, "timeoutSeconds": 5}
    (config / "controller.yaml").write_text(yaml.safe_dump(doc))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fake_kube.clear_requests()
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlloop", "run", "--config", str(config),
         "--kubeconfig", str(fake_kube.kubeconfig), "--interval", "1", "--dry-run",
         "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(cycles(base)) < 3:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "fewer than 3 cycles"
            time.sleep(0.2)
        assert lists(fake_kube, "deployments") == 1 and lists(fake_kube, "pods") == 1
        watches = [r for r in fake_kube.requests_for("GET", r"/(deployments|pods)$")
                   if r.query.get("watch") in ("true", "1")]
        assert watches and all(r.query.get("resourceVersion") for r in watches)
        # scaled by someone else: the next cycles see 3 replicas without a list
        res = fake_kube.find_resource("Deployment")
        dep = fake_kube.store.get(res, "llm", "vllm-a")
        dep["spec"]["replicas"] = 3
        fake_kube.store.update(res, "llm", "vllm-a", dep)
        seen = len(cycles(base))
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            done = cycles(base)
            if len(done) > seen + 1 and done[-1]["servers"][0]["currentReplicas"] == 3:
                break
            assert time.monotonic() < deadline, done[-1]["servers"][0]
            time.sleep(0.2)
        assert lists(fake_kube, "deployments") == 1 and lists(fake_kube, "pods") == 1
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        served = re.search(r'^controlloop_watch_reads_total\{answer="copy"\} (\S+)$', metrics,
                           re.M)
        assert served and float(served.group(1)) >= 4
        assert re.search(r"^controlloop_watch_copies_live 2\.0$", metrics, re.M)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert "kept by watches" in out
