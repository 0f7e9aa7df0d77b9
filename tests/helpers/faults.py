"""A Prometheus stand-in whose answers and failures a test sets, and a loop over the fake API."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from controlloop.cluster.actuator import KubeActuator
from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.kube import KubeClient
from controlloop.cluster.prom import PrometheusLoadSource, PrometheusSettings
from controlloop.config import load_system
from controlloop.loop.controller import Controller, CycleReport, StaticSpecs
from controlloop.loop.settings import ControllerSettings
from controlloop.metrics import ControllerMetrics
from controlloop.specs import SystemSpec
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import CONFIG, add_server


class FakeProm:
    """Answers the default vLLM queries; ``mode``: ok, down, slow, empty, nan, stale."""

    VALUES = (  # (substring of the query, value); first match wins
        ("timestamp(", None), ("prompt_tokens_total", 128.0), ("generation_tokens_total", 1024.0),
        ("time_to_first_token", 200.0), ("time_per_output_token", 30.0),
        ("num_requests_running", 3.0), ("num_requests_waiting", 0.0),
        ("request_success_total", 600.0),
    )

    def __init__(self, kube: FakeKubeServer | None = None) -> None:
        self.mode = "ok"
        self.rpm = 600.0
        self.calls = 0
        self.kube = kube  # whose Running pods the grouped (per-pod) answers list
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                fake.calls += 1
                query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
                code, body = fake.answer(query)
                if code == 0:
                    time.sleep(1.0)  # longer than the client's timeout
                    code = 200
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, query: str) -> tuple[int, Any]:
        if self.mode == "down":
            return 503, {"status": "error", "errorType": "unavailable", "error": "down"}
        now = time.time()
        ok = {"status": "success", "data": {"resultType": "vector", "result": []}}
        if self.mode == "empty":
            return 200, ok
        if "by (namespace, pod)" in query:
            ok["data"]["result"] = self._per_pod(query, now)
            return (0 if self.mode == "slow" else 200), ok
        needle, value = next((n, v) for n, v in self.VALUES if n in query)
        if needle == "timestamp(":
            age = 900.0 if self.mode == "stale" else 2.0
            ok["data"]["result"] = [{"metric": {"pod": "p"}, "value": [now, str(now - age)]}]
        else:
            if needle == "request_success_total":
                value = math.nan if self.mode == "nan" else self.rpm
            text = "NaN" if value is not None and math.isnan(value) else repr(value)
            ok["data"]["result"] = [{"metric": {}, "value": [now, text]}]
        return (0 if self.mode == "slow" else 200), ok

    def _per_pod(self, query: str, now: float) -> list[Any]:
        """A grouped query's series: the per-server figures above, split evenly over the
        Running pods of each Deployment (label ``app``), so a server's totals are the same."""
        pods = [p for p in (self.kube.list_objects("Pod") if self.kube else [])
                if (p.get("status") or {}).get("phase") == "Running"
                and self.mode_of(p["metadata"]["namespace"]) not in ("down", "slow", "empty")]
        per_app: dict[tuple[str, str], int] = {}
        for p in pods:
            meta = p["metadata"]
            app = (meta["namespace"], (meta.get("labels") or {}).get("app", ""))
            per_app[app] = per_app.get(app, 0) + 1
        out = []
        for p in pods:
            meta = p["metadata"]
            mode = self.mode_of(meta["namespace"])
            req = math.nan if mode == "nan" else self.rpm_of(meta["namespace"]) / 60
            if "timestamp(" in query:
                value = now - (900.0 if mode == "stale" else 2.0)
            else:
                value = next(v for n, v in (
                    ("prompt_tokens", 128.0 * req), ("generation_tokens", 1024.0 * req),
                    ("seconds_count", 1.0), ("time_to_first_token_seconds_sum", 0.2),
                    ("time_per_output_token_seconds_sum", 0.03), ("num_requests_running", 3.0),
                    ("num_requests_waiting", 0.0), ("request_success_total", req)) if n in query)
            n = per_app[(meta["namespace"], (meta.get("labels") or {}).get("app", ""))]
            share = value if "timestamp(" in query else value / n
            text = "NaN" if math.isnan(share) else repr(share)
            out.append({"metric": {"namespace": meta["namespace"], "pod": meta["name"]},
                        "value": [now, text]})
        return out

    def mode_of(self, namespace: str) -> str:
        """The fault mode of a namespace's pods in grouped answers (one for all here)."""
        return self.mode

    def rpm_of(self, namespace: str) -> float:
        return self.rpm

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def without_tuning(system: SystemSpec) -> SystemSpec:
    """The system with ``optimizer.tuning: off``: FakeProm's ITL/TTFT are fixed numbers that
    no replica at the test's load would show, and the tuner would learn them."""
    return system.model_copy(update={
        "optimizer": system.optimizer.model_copy(update={"tuning": "off"})})


class Loop:
    def __init__(self, kube: KubeClient, prom_url: str, settings: ControllerSettings | None = None,
                 **kw: Any) -> None:
        self.settings = settings or ControllerSettings()
        self.metrics = ControllerMetrics()
        self.now = 1_000_000.0
        source = PrometheusLoadSource(PrometheusSettings(url=prom_url, timeout_s=0.3, retries=0))
        self.controller = Controller(
            specs=kw.pop("specs", None) or StaticSpecs(without_tuning(load_system(CONFIG)),
                                                       self.settings),
            collector=KubeCollector(kube, source, self.settings),
            actuator=KubeActuator(kube, self.settings.actuation, sleep=lambda s: None),
            clock=lambda: self.now,
            **kw,
        )
        self.controller.on_report.append(self.metrics.observe)

    def cycle(self, dt: float = 60.0) -> CycleReport:
        self.now += dt
        return self.controller.run_cycle()

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def granite(fake: FakeKubeServer, replicas: int = 1) -> None:
    add_server(fake, "llm", "granite", model="granite_13b", cls="Premium", replicas=replicas)


def patches(fake: FakeKubeServer) -> list[Any]:
    return fake.requests_for("PATCH", "/deployments/")


def assert_recovers(loop: Loop, fake: FakeKubeServer) -> None:
    fake.clear_faults()
    fake.clear_requests()
    report = loop.cycle()
    (row,) = [s for s in report.servers if s.deployment == "granite"]
    assert row.verdict in ("scaled", "moved"), (row.verdict, row.reason, report.errors)
    assert len(patches(fake)) == 1
