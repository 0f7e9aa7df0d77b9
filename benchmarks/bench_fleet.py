"""One control cycle over a fleet: `controlloop run --once --dry-run` against the loopback
Kubernetes API (tests/fakekube) with N managed Deployments (2 pods each), a fake vLLM
exporter and a real Prometheus (Debian's ``prometheus``), behind a query-counting proxy.

Run: ``.venv/bin/python benchmarks/bench_fleet.py --sizes 100 1000 [3000]``
or, for the daemon's memory over many cycles,
``.venv/bin/python benchmarks/bench_fleet.py --sizes 3000 --cycles 20 --interval-s 30
[--fetch-ui]``

Prints per N: wall time of the whole `run` process, its peak RSS, the phase times of the
cycle (from its cycle log), Prometheus queries and Kubernetes API requests (lists and
others) made by the cycle. The exporter computes its counters from the elapsed time (no
per-request work) so that thousands of pods cost little to serve; it exports the series
the default queries read, labelled namespace/pod/model_name. Set-up (servers, Prometheus
filling its window) is not timed.

With ``--cycles K`` the daemon runs (``run --dry-run``, not ``--once``) every
``--interval-s`` seconds until K cycles have ended; after each cycle the benchmark reads
the daemon's VmRSS and VmHWM from /proc and prints them per cycle, then the peak.
``--real-objects`` gives the pods and Deployments the bulk a real API server returns
(tests/fakekube/bulky.py: ~9 KB of JSON per pod, ~12 KB per Deployment); without it
they are the test doubles' few hundred bytes.
``--fetch-ui`` also reads the dashboard's ``/ui/api/cycles`` after every cycle, as an open
page polling from the start would.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakekube import FakeKubeServer, objects  # noqa: E402
from tests.fakekube.bulky import deployment_bulk, merged, pod_bulk  # noqa: E402
from tests.helpers.cluster import A100_SELECTOR, CONFIG, add_server, managed_labels  # noqa: E402
from tests.promharness import CountingProxy, PrometheusProcess, wait_until  # noqa: E402

NS = "llm"
WINDOW = "30s"
SCRAPE = "5s"
MODELS = ("granite_13b", "llama3_8b", "mixtral_8_7b")
CLASSES = ("Premium", "Bronze", "Free")
DEBUG = False
PROFILE = ""  # --profile FILE: run the cycle's process under cProfile
CYCLES = 0  # --cycles K: the daemon for K cycles, memory per cycle
INTERVAL_S = 30.0
FETCH_UI = False
REAL_OBJECTS = False  # --real-objects: pods and Deployments of a real cluster's size
WATCH = False  # --watch: the daemon keeps Deployments and pods by watches


class FastExporter:
    """vLLM series for many pods, counters = rate x elapsed time (text format 0.0.4)."""

    def __init__(self, pods: list[tuple[str, str, float]]) -> None:
        self.pods = pods  # (pod, model, requests per second)
        self.t0 = time.monotonic()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def render(self) -> str:
        t = time.monotonic() - self.t0 + 1000.0
        lines = []
        for pod, model, rps in self.pods:
            lab = f'namespace="{NS}",pod="{pod}",model_name="{model}"'
            n = rps * t
            lines += [
                f"vllm:request_success_total{{{lab}}} {n:.3f}",
                f"vllm:prompt_tokens_total{{{lab}}} {n * 400:.3f}",
                f"vllm:generation_tokens_total{{{lab}}} {n * 100:.3f}",
                f"vllm:time_to_first_token_seconds_sum{{{lab}}} {n * 0.05:.3f}",
                f"vllm:time_to_first_token_seconds_count{{{lab}}} {n:.3f}",
                f"vllm:time_per_output_token_seconds_sum{{{lab}}} {n * 99 * 0.02:.3f}",
                f"vllm:time_per_output_token_seconds_count{{{lab}}} {n * 99:.3f}",
                f"vllm:num_requests_running{{{lab}}} 3",
                f"vllm:num_requests_waiting{{{lab}}} 0",
            ]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config_dir(work: Path, prom_url: str, n: int) -> Path:
    target = work / "config"
    target.mkdir()
    for name in ("accelerators.yaml", "models.yaml", "service-classes.yaml", "optimizer.yaml"):
        shutil.copy(CONFIG / name, target / name)
    capacity = yaml.safe_load((CONFIG / "capacity.yaml").read_text())
    scale = max(1, n // 25)
    for entry in capacity["count"]:
        entry["count"] *= scale
    (target / "capacity.yaml").write_text(yaml.safe_dump(capacity))
    controller: dict[str, Any] = {
        "namespaces": [NS],
        "prometheus": {"url": prom_url, "window": WINDOW, "stalenessSeconds": 60},
    }
    if WATCH:
        controller["watch"] = {"enabled": True}
    (target / "controller.yaml").write_text(yaml.safe_dump({"controller": controller}))
    return target


def add_real_server(fake: FakeKubeServer, ns: str, name: str, *, model: str, cls: str,
                    replicas: int, sidecar: bool = False) -> list[str]:
    """add_server's Deployment and pods with the bulk real ones carry (tests/fakekube/bulky.py):
    some 9 KB per pod and 12 KB per Deployment as JSON."""
    labels = {**managed_labels(model, cls, "A100"), "app": name}
    dep = objects.deployment(ns, name, labels=labels, replicas=replicas,
                             node_selector=A100_SELECTOR)
    fake.put(merged(dep, deployment_bulk(dep, model)))
    fake.set_deployment_status(ns, name, replicas=replicas)
    pods = [f"{name}-{i}" for i in range(replicas)]
    for k, pod in enumerate(pods):
        base = objects.pod(ns, pod, labels={"app": name})
        fake.put(merged(base, pod_bulk(pod, model, f"gpu-node-{k:03d}")))
    return pods


def run_case(n: int, prometheus: str, work: Path) -> dict[str, Any]:
    fake = FakeKubeServer().start()
    fake.write_kubeconfig(work / "kubeconfig")
    pods = []
    for i in range(n):
        model, cls = MODELS[i % len(MODELS)], CLASSES[i % len(CLASSES)]
        add = add_real_server if REAL_OBJECTS else add_server
        names = add(fake, NS, f"srv-{i:05d}", model=model, cls=cls, replicas=2,
                    sidecar=False)
        pods += [(pod, model, 0.5 + (i % 7) * 0.25) for pod in names]
    exporter = FastExporter(pods)
    prom = PrometheusProcess(prometheus, [exporter.target], workdir=work, scrape_interval=SCRAPE)
    prom.start(timeout_s=60)
    proxy = CountingProxy(prom.url)
    try:
        need = 'count_over_time(vllm:num_requests_running[40s]) >= 5'
        wait_until(lambda: len(prom.query(need)) == len(pods), timeout_s=120,
                   what="the rate window filled for every pod", every_s=1.0)
        cfg = config_dir(work, proxy.url, n)
        log = work / "cycles.jsonl"
        if CYCLES:
            fake.clear_requests()
            proxy.reset()
            return run_daemon(n, cfg, work, log, fake)
        prof = ["-m", "cProfile", "-o", PROFILE] if PROFILE else []
        cmd = [sys.executable, *prof, "-m", "controlloop", "run", "--config", str(cfg),
               "--kubeconfig", str(work / "kubeconfig"), "--once", "--dry-run",
               "--cycle-log", str(log)]
        fake.clear_requests()
        proxy.reset()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        record = json.loads(log.read_text().splitlines()[-1])
        if DEBUG:
            print(sorted(record), {k: v for k, v in record.items() if k != "servers"})
            for r in fake.requests:
                print(r.method, r.path, r.query)
            print(proc.stderr[-4000:])
        reqs = fake.requests
        lists = sum(1 for r in reqs if r.method == "GET" and "limit" in r.query)
        loads = [s.get("load", {}).get("status") for s in record.get("servers", [])]
        return {
            "n": n, "wall": wall, "rss_mb": after.ru_maxrss / 1024,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "queries": proxy.queries, "lists": lists, "other_requests": len(reqs) - lists,
            "ok_loads": loads.count("ok"), "servers": len(loads),
            "phases": {"cycle": record.get("duration_s", 0.0), **(record.get("durations") or {})},
        }
    finally:
        proxy.stop()
        prom.stop()
        exporter.stop()
        fake.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM (peak RSS) of a live process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_daemon(n: int, cfg: Path, work: Path, log: Path, fake: FakeKubeServer) -> dict[str, Any]:
    """The daemon for CYCLES cycles; VmRSS/VmHWM after each one (printed as it goes), and
    the Kubernetes list and watch requests since the previous cycle."""
    port = free_port()
    cmd = [sys.executable, "-m", "controlloop", "run", "--config", str(cfg),
           "--kubeconfig", str(work / "kubeconfig"), "--dry-run", "--cycle-log", str(log),
           "--interval", str(INTERVAL_S), "--listen", f"127.0.0.1:{port}",
           "--log-level", "warning"]
    stderr = (work / "daemon.err").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    samples: list[dict[str, Any]] = []
    seen = 0
    ui_bytes = 0
    deadline = time.monotonic() + CYCLES * (INTERVAL_S + 120) + 120
    try:
        print(f"{'cycle':>6} {'cycle s':>8} {'CPU s':>6} {'RSS MiB':>8} {'HWM MiB':>8} "
              f"{'UI MB':>6} {'lists':>6} {'watches':>7}", flush=True)
        cpu_before = 0.0
        counted = 0
        while len(samples) < CYCLES:
            if proc.poll() is not None:
                raise SystemExit(f"daemon exited ({proc.returncode}):\n"
                                 + (work / "daemon.err").read_text()[-3000:])
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(samples)} of {CYCLES} cycles in time")
            lines = log.read_text().splitlines() if log.exists() else []
            complete = [ln for ln in lines if ln.endswith("}")]
            if len(complete) <= seen:
                time.sleep(0.2)
                continue
            record = json.loads(complete[seen])
            seen += 1
            if FETCH_UI:
                url = f"http://127.0.0.1:{port}/ui/api/cycles?since=0"
                with urllib.request.urlopen(url, timeout=60) as resp:
                    ui_bytes = len(resp.read())
            rss, hwm = proc_status_mb(proc.pid)
            cpu = proc_cpu_s(proc.pid)  # the daemon's own work, not the fake API's
            samples.append({"cycle": seen, "duration_s": record.get("duration_s", 0.0),
                            "cpu_s": cpu - cpu_before, "rss": rss, "hwm": hwm,
                            "ui_mb": ui_bytes / 1e6})
            cpu_before = cpu
            reqs = fake.requests
            new, counted = reqs[counted:], len(reqs)
            lists = sum(1 for r in new if r.method == "GET" and "limit" in r.query)
            watches = sum(1 for r in new if r.method == "GET" and r.query.get("watch"))
            s = samples[-1]
            print(f"{seen:>6} {s['duration_s']:>8.2f} {s['cpu_s']:>6.1f} {rss:>8.0f} "
                  f"{hwm:>8.0f} {s['ui_mb']:>6.1f} {lists:>6} {watches:>7}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr.close()
    steady = [s["rss"] for s in samples[len(samples) // 2:]]
    print(f"N={n}: {CYCLES} cycles every {INTERVAL_S:g} s; RSS last {samples[-1]['rss']:.0f} "
          f"MiB, second-half range {min(steady):.0f}-{max(steady):.0f} MiB, peak (VmHWM) "
          f"{max(s['hwm'] for s in samples):.0f} MiB", flush=True)
    return {"n": n, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    parser.add_argument("--debug", action="store_true", help="print requests and the log")
    parser.add_argument("--profile", default="", help="write a cProfile of the run to this file")
    parser.add_argument("--cycles", type=int, default=0,
                        help="run the daemon for this many cycles and report its memory")
    parser.add_argument("--interval-s", type=float, default=30.0,
                        help="the daemon's interval with --cycles")
    parser.add_argument("--real-objects", action="store_true",
                        help="pods and Deployments the size of a real cluster's "
                             "(managedFields, full container spec; tests/fakekube/bulky.py)")
    parser.add_argument("--fetch-ui", action="store_true",
                        help="with --cycles: read the dashboard's cycles after every cycle")
    parser.add_argument("--watch", action="store_true",
                        help="with --cycles: controller.watch.enabled (Deployments and pods "
                             "kept by watches)")
    args = parser.parse_args()
    global DEBUG, PROFILE, CYCLES, INTERVAL_S, FETCH_UI, REAL_OBJECTS, WATCH
    DEBUG, PROFILE = args.debug, args.profile
    CYCLES, INTERVAL_S, FETCH_UI = args.cycles, args.interval_s, args.fetch_ui
    REAL_OBJECTS = args.real_objects
    WATCH = args.watch
    if CYCLES:
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                run_case(n, args.prometheus, Path(tmp))
        return
    print(f"{'N':>6} {'wall s':>7} {'cpu s':>6} {'RSS MB':>7} {'queries':>7} {'lists':>6} "
          f"{'other':>6} {'loads ok':>9}  phases (s)")
    print("(lists: Kubernetes list requests; other: GETs by name, patches, events)")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_case(n, args.prometheus, Path(tmp))
        phases = " ".join(f"{k}={v:.2f}" for k, v in r["phases"].items()
                          if isinstance(v, int | float))
        print(f"{r['n']:>6} {r['wall']:>7.2f} {r['cpu']:>6.2f} {r['rss_mb']:>7.0f} "
              f"{r['queries']:>7} {r['lists']:>6} {r['other_requests']:>6} "
              f"{r['ok_loads']:>4}/{r['servers']:<4}  {phases}", flush=True)


if __name__ == "__main__":
    main()
