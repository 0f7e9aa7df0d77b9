"""A real Prometheus scraping a fake vLLM exporter, for integration tests.

``VllmExporter`` serves vLLM's metric names from a private registry at a known
request rate and token mix per pod; ``PrometheusProcess`` runs the real
``prometheus`` binary on a free loopback port with a 1 s scrape interval.
``start_stack`` wires both and waits until the rate window is filled.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import requests
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

T = TypeVar("T")

LABELS = ("namespace", "pod", "model_name")
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"  # what Prometheus 2.x knows
STOP_SHARE = 0.8  # share of requests finished with reason "stop"; the rest "length"


def prometheus_binary() -> str | None:
    """``$PROMETHEUS_BIN`` or ``/usr/bin/prometheus`` or ``prometheus`` on PATH, if present."""
    path = os.environ.get("PROMETHEUS_BIN") or "/usr/bin/prometheus"
    if Path(path).is_file() and os.access(path, os.X_OK):
        return path
    return None if os.environ.get("PROMETHEUS_BIN") else shutil.which("prometheus")


def promtool_binary() -> str | None:
    """``$PROMTOOL_BIN``, else ``promtool`` beside the Prometheus binary or on PATH.
    (Debian's ``prometheus`` package ships both.)"""
    if os.environ.get("PROMTOOL_BIN"):
        path = os.environ["PROMTOOL_BIN"]
        return path if Path(path).is_file() and os.access(path, os.X_OK) else None
    prom = prometheus_binary()
    if prom is not None:
        beside = Path(prom).with_name("promtool")
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("promtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    probe: Callable[[], T | None], *, timeout_s: float, what: str, every_s: float = 0.2
) -> T:
    """Poll ``probe`` until it returns something truthy; ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, KeyError, ValueError) as e:  # not up yet: keep polling
            last_error = e
        time.sleep(every_s)
    raise TimeoutError(
        f"timed out after {timeout_s:g}s waiting for {what} (last error: {last_error})"
    )


@dataclass(frozen=True)
class PodLoad:
    """Steady load of one fake vLLM pod. Rates per second, times in seconds."""

    pod: str
    namespace: str = "llm"
    model: str = "granite-8b"
    rps: float = 2.0
    in_tokens: float = 400.0
    out_tokens: float = 100.0
    ttft_s: float = 0.05
    itl_s: float = 0.02
    running: float = 3.0
    waiting: float = 1.0
    kv_cache: float | None = None  # vllm:gpu_cache_usage_perc (0..1); None: not exported


def expected_load(pods: Sequence[PodLoad]) -> dict[str, float]:
    """What a perfect load source reports for these pods together.

    TTFT is observed once per request, ITL once per output token after the
    first (as vLLM does), so their means are weighted accordingly.
    """
    rps = sum(p.rps for p in pods)
    itl_obs = sum(p.rps * (p.out_tokens - 1) for p in pods)
    return {
        "arrival_rate_rpm": 60 * rps,
        "avg_in_tokens": sum(p.rps * p.in_tokens for p in pods) / rps,
        "avg_out_tokens": sum(p.rps * p.out_tokens for p in pods) / rps,
        "ttft_ms": 1000 * sum(p.rps * p.ttft_s for p in pods) / rps,
        "itl_ms": 1000 * sum(p.rps * (p.out_tokens - 1) * p.itl_s for p in pods) / itl_obs,
        "running": sum(p.running for p in pods),
        "waiting": sum(p.waiting for p in pods),
    }


def _text_handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    """Always answer in the classic text format.

    prometheus_client's OpenMetrics output (which Prometheus asks for first)
    escapes ``:`` in metric names to ``_`` by default, turning
    ``vllm:request_success_total`` into ``vllm_request_success_total``.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", TEXT_FORMAT)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


class VllmExporter:
    """Serves vLLM metrics for ``pods`` on a free loopback port.

    Counters grow continuously (so the token ratios are exact at any scrape);
    histograms get one observation per whole request (ITL: per output token).
    """

    def __init__(self, pods: Sequence[PodLoad], *, tick_s: float = 0.02) -> None:
        self.pods = tuple(pods)
        self.tick_s = tick_s
        self.registry = CollectorRegistry()
        r = self.registry
        self.success = Counter(
            "vllm:request_success", "Finished requests", [*LABELS, "finished_reason"], registry=r
        )
        self.prompt = Counter("vllm:prompt_tokens", "Prefill tokens", LABELS, registry=r)
        self.generation = Counter("vllm:generation_tokens", "Decode tokens", LABELS, registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", LABELS, registry=r)
        self.itl = Histogram("vllm:time_per_output_token_seconds", "ITL", LABELS, registry=r)
        self.running = Gauge("vllm:num_requests_running", "Running", LABELS, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Waiting", LABELS, registry=r)
        self.kv_cache = Gauge("vllm:gpu_cache_usage_perc", "KV cache usage", LABELS, registry=r)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-exporter", daemon=True)
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> VllmExporter:
        for p in self.pods:
            labels = (p.namespace, p.pod, p.model)
            self.running.labels(*labels).set(p.running)
            self.waiting.labels(*labels).set(p.waiting)
            if p.kv_cache is not None:
                self.kv_cache.labels(*labels).set(p.kv_cache)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _text_handler(self.registry))
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, name="vllm-http", daemon=True).start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        owed = [0.0] * len(self.pods)  # requests not yet put into the histograms
        last = time.monotonic()
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            dt, last = now - last, now
            for i, p in enumerate(self.pods):
                labels = (p.namespace, p.pod, p.model)
                n = p.rps * dt
                self.success.labels(*labels, "stop").inc(n * STOP_SHARE)
                self.success.labels(*labels, "length").inc(n * (1 - STOP_SHARE))
                self.prompt.labels(*labels).inc(n * p.in_tokens)
                self.generation.labels(*labels).inc(n * p.out_tokens)
                owed[i] += n
                while owed[i] >= 1:
                    owed[i] -= 1
                    self.ttft.labels(*labels).observe(p.ttft_s)
                    itl = self.itl.labels(*labels)
                    for _ in range(int(p.out_tokens) - 1):
                        itl.observe(p.itl_s)


class PrometheusProcess:
    """The real Prometheus binary on a free loopback port, data in ``workdir``."""

    def __init__(
        self, binary: str, targets: Sequence[str], *, workdir: Path, scrape_interval: str = "1s"
    ) -> None:
        self.binary = binary
        self.targets = tuple(targets)
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.port = 0
        self.log_path = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        # honor_labels: keep the exporter's namespace/pod labels as they are, as a
        # Kubernetes scrape config would after relabeling from pod metadata.
        targets = ", ".join(f'"{t}"' for t in self.targets)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {self.scrape_interval}\n"
            f"  scrape_timeout: {self.scrape_interval}\n"
            f"  evaluation_interval: {self.scrape_interval}\n"
            "scrape_configs:\n  - job_name: vllm\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: [{targets}]\n"
        )
        return config

    def start(self, *, timeout_s: float = 30.0, attempts: int = 3) -> PrometheusProcess:
        config = self._write_config()
        atexit.register(self.stop)  # no orphan Prometheus if the test run dies early
        for attempt in range(attempts):  # a free port can be taken before we bind it
            self.port = free_port()
            data = self.workdir / f"data-{attempt}"
            cmd = [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info",
            ]
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            try:
                wait_until(self._ready, timeout_s=timeout_s, what=f"{self.url}/-/ready")
                return self
            except (TimeoutError, RuntimeError) as e:
                self.stop()
                if "address already in use" not in self.log() or attempt == attempts - 1:
                    raise RuntimeError(
                        f"prometheus did not start: {e}\n--- log ---\n{self.log()}"
                    ) from e
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {self._proc.returncode}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def query(self, promql: str) -> list[Any]:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        result: list[Any] = r.json()["data"]["result"]
        return result

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class PromStack:
    """A fake vLLM exporter and the Prometheus scraping it."""

    exporter: VllmExporter
    prometheus: PrometheusProcess
    pods: tuple[PodLoad, ...] = field(default=())

    @property
    def url(self) -> str:
        return self.prometheus.url

    def stop(self) -> None:
        self.exporter.stop()
        self.prometheus.stop()


def start_stack(
    pods: Sequence[PodLoad],
    *,
    binary: str,
    workdir: Path,
    fill_window_s: float = 0.0,
    timeout_s: float = 30.0,
) -> PromStack:
    """Start exporter and Prometheus; return once every pod has samples spanning
    ``fill_window_s`` seconds (so ``rate()`` over that window is not truncated)."""
    exporter = VllmExporter(pods).start()
    prom = PrometheusProcess(binary, [exporter.target], workdir=workdir)
    try:
        prom.start()
        need = max(2, int(fill_window_s) + 1)  # samples at a 1 s scrape interval
        series = f'count_over_time(vllm:num_requests_running{{job="vllm"}}[{need + 1}s]) >= {need}'
        wait_until(
            lambda: len(prom.query(series)) == len(pods),
            timeout_s=timeout_s,
            what=f"{need} samples of every pod in {prom.url}",
        )
    except BaseException:
        exporter.stop()
        prom.stop()
        raise
    return PromStack(exporter, prom, tuple(pods))


class CountingProxy:
    """A loopback HTTP proxy in front of Prometheus that counts the queries it passes on,
    so tests and benchmarks can check how many queries a cycle makes."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.paths: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.paths.append(self.path)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "accept")}
                r = requests.request(method, proxy.target + self.path, data=body,
                                     headers=headers, timeout=60)
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="prom-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def queries(self) -> int:
        """Instant and range queries passed on so far."""
        with self._lock:
            return sum(1 for p in self.paths if p.startswith("/api/v1/query"))

    def reset(self) -> None:
        with self._lock:
            self.paths.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
