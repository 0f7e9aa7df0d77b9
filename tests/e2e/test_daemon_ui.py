"""``controlloop run`` serves the dashboard at /ui: a real Prometheus (fake vLLM exporter),
the loopback Kubernetes API, the daemon as a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controlloop.config import load_system
from tests.helpers.cluster import CONFIG, ROOT, add_vllm_a, daemon_config_dir
from tests.promharness import free_port

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_daemon_serves_the_dashboard(vllm_prom: Any, fake_kube: Any, tmp_path: Path) -> None:
    add_vllm_a(fake_kube)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlloop", "run",
         "--config", str(daemon_config_dir(tmp_path, vllm_prom.url)),
         "--kubeconfig", str(fake_kube.kubeconfig), "--interval", "60", "--dry-run",
         "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        doc: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                status, _, body = get(f"{base}/ui/api/cycles?since=0")
                doc = json.loads(body) if status == 200 else {}
            except OSError:  # not listening yet
                doc = {}
            if doc.get("latest", 0) >= 1:
                break
            time.sleep(0.2)
        assert doc.get("latest", 0) >= 1, "no cycle on /ui/api/cycles"
        assert doc["clock"] == "unix" and doc["title"] == "controlloop (dry-run)"
        cycle = doc["cycles"][0]
        assert cycle["dryRun"] is True and abs(cycle["t"] - time.time()) < 60
        (server,) = cycle["servers"]
        assert server["deployment"] == "vllm-a" and server["loadStatus"] == "ok"
        assert server["arrivalRpm"] == pytest.approx(1500, rel=0.05)  # 25 req/s in Prometheus
        assert server["reason"]  # every decision explained
        cards = load_system(CONFIG).cards_per_replica("granite_13b", "A100")
        assert cycle["gpus"]["A100"]["used"] == server["currentReplicas"] * cards == 2 * cards

        status, headers, page = get(f"{base}/ui")  # redirected to /ui/
        assert status == 200 and b"static/dashboard.js" in page
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        status, _, js = get(f"{base}/ui/static/uPlot.iife.min.js")
        assert status == 200 and b"uPlot" in js
        # read-only: nothing but GET
        req = urllib.request.Request(f"{base}/ui/api/cycles", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code in (404, 405)
        status, _, metrics = get(f"{base}/metrics")  # the other endpoints as before
        assert status == 200 and b"controlloop_cycles_total" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "/ui" in out  # the log says where it is served
