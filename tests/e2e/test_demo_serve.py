"""``controlloop demo --serve``: serving after the run until SIGTERM (what a container
runtime sends), then a clean exit; the API says the run is finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers.cluster import ROOT


def test_serves_after_the_run_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlloop", "demo", "--cycles", "2", "--serve", "127.0.0.1:0",
         "--pace", "0.01", "--out", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks until the run is over and the page still served
            lines.append(line.rstrip("\n"))
            if line.startswith("run finished; still serving"):
                break
        url = next(x.split()[1] for x in lines if x.startswith("dashboard: "))
        with urllib.request.urlopen(url + "api/cycles?since=0", timeout=5) as resp:
            doc = json.load(resp)
        assert doc["finished"] is True and doc["latest"] == 2 and doc["totalCycles"] == 2
        assert doc["clock"] == "sim" and [c["t"] for c in doc["cycles"]] == sorted(
            c["t"] for c in doc["cycles"])
        cycles = [json.loads(x) for x in (tmp_path / "cycles.jsonl").read_text().splitlines()]
        # the dashboard plots the regular cycles; fast-path (surge) cycles are in the log only
        cycles = [c for c in cycles if c.get("trigger", "regular") == "regular"]
        assert [c["cycleId"] for c in doc["cycles"]] == [c["cycle_id"] for c in cycles]
        time.sleep(1.0)
        assert proc.poll() is None, "stopped serving on its own"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "\n".join(lines) + rest
    assert rest.strip().endswith("dashboard stopped")
