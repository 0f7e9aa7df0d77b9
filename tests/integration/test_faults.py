"""Fault matrix: the production Controller (KubeCollector + KubeActuator) against the
loopback Kubernetes API and a scriptable fake Prometheus (real PrometheusLoadSource).

Each fault: no destructive action, a clear log line, a metric, and the next
cycle recovers. docs/reliability.md summarises the table.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.kube import KubeClient
from controlloop.cluster.prom import PrometheusLoadSource, PrometheusSettings
from controlloop.loop.controller import CycleReport
from controlloop.loop.settings import ControllerSettings
from controlloop.metrics import ControllerMetrics
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import CONFIG, add_server
from tests.helpers.faults import FakeProm, Loop, assert_recovers, granite, patches

pytestmark = pytest.mark.integration


# --- a scriptable Prometheus ------------------------------------------------------------------






# --- the loop under test ------------------------------------------------------------------------








# --- Prometheus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,why", [
    ("down", "prometheus HTTP 503"),
    ("slow", "prometheus timed out after 0.3s"),
    ("empty", "no series for vllm:request_success_total"),
    ("nan", "arrival rate is nan"),
    ("stale", "stale: newest sample"),
])
def test_prometheus_fault_holds_with_reason(
    mode: str, why: str, fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm,
    caplog: Any,
) -> None:
    granite(fake_kube, replicas=1)
    loop = Loop(kube, prom.url)
    prom.mode = mode
    caplog.set_level(logging.INFO)
    report = loop.cycle()
    (row,) = report.servers
    assert row.verdict == "held" and row.held_reason == "unknown-load"
    assert why in row.reason, row.reason
    assert patches(fake_kube) == []
    assert loop.metric("controlloop_decisions_total", server="granite", verdict="held",
                       reason="unknown-load") == 1
    assert loop.metric("controlloop_server_load_known", server="granite", namespace="llm",
                       deployment="granite") == 0
    assert any("llm/granite: load unknown (" in r.getMessage() and why in r.getMessage()
               for r in caplog.records)
    prom.mode = "ok"
    assert_recovers(loop, fake_kube)


def test_prometheus_unreachable(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube)
    loop = Loop(kube, "http://127.0.0.1:9")  # nothing listens there
    (row,) = loop.cycle().servers
    assert row.held_reason == "unknown-load" and "unreachable" in row.reason
    assert patches(fake_kube) == []


def test_unknown_load_never_scales_down_a_busy_server(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube, replicas=12)
    b = ControllerSettings().behavior
    down = b.scale_down.model_copy(update={"stabilization_window_seconds": 0})
    settings = ControllerSettings().model_copy(
        update={"behavior": b.model_copy(update={"scale_down": down})}
    )
    loop = Loop(kube, prom.url, settings)
    for mode in ("down", "empty", "nan", "stale"):
        prom.mode = mode
        loop.cycle()
    assert patches(fake_kube) == []
    assert fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == 12


# --- Kubernetes API: listing ------------------------------------------------------------------


# drop: the connection closes before a response (what a dropped watch/list stream
# looks like to a client; we list every cycle instead of watching).
@pytest.mark.parametrize("status,delay,drop", [
    (401, 0.0, False), (403, 0.0, False), (500, 0.0, False), (None, 1.0, False), (None, 0.0, True),
])
def test_list_deployments_fault_fails_the_cycle_safely(
    status: int | None, delay: float, drop: bool, fake_kube: FakeKubeServer, kube: KubeClient,
    prom: FakeProm, caplog: Any,
) -> None:
    granite(fake_kube)
    loop = Loop(kube, prom.url)
    fake_kube.inject("GET", "/deployments$", status=status, delay_s=delay, drop=drop)
    caplog.set_level(logging.INFO)
    report = loop.cycle()
    assert report.outcome == "failed" and report.servers == []
    assert report.error_kinds == {"collect": 1}
    assert patches(fake_kube) == []
    assert any("collection failed, no action" in r.getMessage() for r in caplog.records)
    assert loop.metric("controlloop_cycles_total", outcome="failed") == 1
    assert loop.metric("controlloop_errors_total", kind="collect") == 1
    assert_recovers(loop, fake_kube)


@pytest.mark.parametrize("status,delay,drop", [
    (403, 0.0, False), (500, 0.0, False), (None, 1.0, False), (None, 0.0, True),
])
def test_list_pods_fault_holds_the_server(
    status: int | None, delay: float, drop: bool, fake_kube: FakeKubeServer, kube: KubeClient,
    prom: FakeProm,
) -> None:
    granite(fake_kube)
    loop = Loop(kube, prom.url)
    fake_kube.inject("GET", "/pods$", status=status, delay_s=delay, drop=drop)
    (row,) = loop.cycle().servers
    assert row.held_reason == "unknown-load" and "listing pods" in row.reason
    assert patches(fake_kube) == []
    assert_recovers(loop, fake_kube)


def test_list_autoscalers_fault_treats_everything_as_owned(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube)
    loop = Loop(kube, prom.url)
    fake_kube.inject("GET", "/horizontalpodautoscalers$", status=500)
    report = loop.cycle()
    (row,) = report.servers
    assert row.held_reason == "autoscaler" and "autoscalers unknown" in row.reason
    assert report.outcome == "partial" and loop.metric("controlloop_errors_total",
                                                       kind="collect") == 1
    assert patches(fake_kube) == []
    assert_recovers(loop, fake_kube)


# --- Kubernetes API: patching ---------------------------------------------------------------


@pytest.mark.parametrize("status,times,drop,delay,kind", [
    (401, 1, False, 0.0, "unauthorized"),
    (403, 1, False, 0.0, "forbidden"),
    (404, 1, False, 0.0, "not-found"),
    (409, None, False, 0.0, "conflict"),
    (500, None, False, 0.0, "server-error"),
    (None, None, True, 0.0, "timeout"),
])
def test_patch_fault_is_an_error_without_harm(
    status: int | None, times: int | None, drop: bool, delay: float, kind: str,
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm, caplog: Any,
) -> None:
    granite(fake_kube)
    loop = Loop(kube, prom.url)
    fake_kube.inject("PATCH", "/deployments/granite$", status=status, times=times, drop=drop)
    caplog.set_level(logging.INFO)
    report = loop.cycle()
    (row,) = report.servers
    assert row.verdict == "error" and row.error_kind == kind, (row.error_kind, row.error)
    assert report.outcome == "partial"
    assert fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == 1
    assert loop.metric("controlloop_errors_total", kind=kind) == 1
    assert loop.metric("controlloop_decisions_total", server="granite", verdict="error",
                       reason=kind) == 1
    assert any("1 errors" in r.getMessage() for r in caplog.records)
    assert_recovers(loop, fake_kube)


@pytest.mark.parametrize("status", [409, 500])
def test_transient_patch_fault_is_retried(
    status: int, fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube)
    loop = Loop(kube, prom.url)
    fake_kube.inject("PATCH", "/deployments/granite$", status=status, times=1)
    (row,) = loop.cycle().servers
    assert row.verdict in ("scaled", "moved") and row.sent
    assert len(patches(fake_kube)) == 2


def test_patch_that_timed_out_but_landed_is_not_an_external_change(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube)
    settings = ControllerSettings().model_copy(
        update={"actuation": ControllerSettings().actuation.model_copy(update={"retries": 0})}
    )
    loop = Loop(kube, prom.url, settings)
    fake_kube.inject("PATCH", "/deployments/granite$", delay_s=0.8)  # served after the timeout
    (row,) = loop.cycle().servers
    assert row.error_kind == "timeout"
    deadline = time.monotonic() + 3
    while fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (row,) = loop.cycle().servers
    assert row.held_reason != "external-change", row.reason


def test_conflict_after_someone_else_scaled_leaves_it(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube)
    loop = Loop(kube, prom.url)
    original = loop.controller.collector.collect

    def collect_then_kubectl_scale() -> Any:
        state = original()
        kube.patch_deployment("llm", "granite", {"spec": {"replicas": 3}}, strategic=False)
        return state

    loop.controller.collector.collect = collect_then_kubectl_scale  # type: ignore[method-assign]
    (row,) = loop.cycle().servers
    assert row.verdict == "held" and row.error_kind == "changed-externally"
    assert row.held_reason == "changed-externally" and "someone else" in row.reason
    assert fake_kube.get("Deployment", "llm", "granite")["spec"]["replicas"] == 3


# --- specs, labels, optimizer ---------------------------------------------------------------------


def test_invalid_spec_edit_keeps_last_good(
    tmp_path: Path, fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm, caplog: Any
) -> None:
    from controlloop.daemon import FileSpecSource

    cfg = tmp_path / "config"
    shutil.copytree(CONFIG, cfg, ignore=shutil.ignore_patterns("examples"))
    granite(fake_kube)
    metrics = ControllerMetrics()
    source = FileSpecSource(cfg, metrics=metrics)
    loop = Loop(kube, prom.url, specs=source)
    loop.metrics = metrics
    loop.controller.on_report = [metrics.observe]
    good = (cfg / "models.yaml").read_text()
    caplog.set_level(logging.INFO)
    (cfg / "models.yaml").write_text(good + "\n  - this: [is not valid\n")
    report = loop.cycle()
    assert report.outcome == "ok" and report.servers[0].verdict in ("scaled", "moved")
    assert loop.metric("controlloop_specs_valid") == 0
    assert loop.metric("controlloop_spec_reload_errors_total") == 1
    assert any("keeping the last good specs" in r.getMessage() for r in caplog.records)
    (cfg / "models.yaml").write_text(good + "\n")
    loop.cycle()
    assert loop.metric("controlloop_specs_valid") == 1 and source.last_error == ""


def test_garbage_labels_are_skipped_or_held_and_reported(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube)
    fake_kube.add_deployment("llm", "nomodel", labels={"inferno.server.managed": "true",
                                                       "app": "nomodel"})
    add_server(fake_kube, "llm", "badacc", model="granite_13b", cls="Premium",
               accelerator="Z9000", extra_labels={"inferno.server.allocation.maxbatchsize": "x"})
    add_server(fake_kube, "llm", "badmodel", model="no_such_model", cls="Premium")
    add_server(fake_kube, "llm", "badclass", model="granite_13b", cls="Gold+++")
    loop = Loop(kube, prom.url)
    report = loop.cycle()
    assert [s["deployment"] for s in report.skipped] == ["nomodel"]
    held = {s.deployment: s.held_reason for s in report.servers if s.verdict == "held"}
    assert held == {"badacc": "unknown-accelerator", "badmodel": "unknown-model",
                    "badclass": "unknown-class"}
    assert [p.path.rsplit("/", 1)[1] for p in patches(fake_kube)] == ["granite"]
    assert loop.metric("controlloop_decisions_total", server="badacc", verdict="held",
                       reason="unknown-accelerator") == 1


def test_infeasible_optimizer_keeps_current(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube, replicas=2)
    settings = ControllerSettings().model_copy(
        update={"capacity": ControllerSettings().capacity.model_copy(update={"source": "nodes"})}
    )
    loop = Loop(kube, prom.url, settings)  # no Nodes: no cards anywhere
    report = loop.cycle()
    (row,) = report.servers
    assert row.verdict == "held" and row.held_reason == "unallocated", row.reason
    assert report.solver_status and report.solver_status != "optimal"
    assert patches(fake_kube) == []
    assert loop.metric("controlloop_decisions_total", server="granite", verdict="held",
                       reason="unallocated") == 1
    fake_kube.add_node("gpu-1", labels={"nvidia.com/gpu.product": "A100"},
                       allocatable={"nvidia.com/gpu": "64"})
    assert_recovers(loop, fake_kube)


# --- scheduling and shutdown ----------------------------------------------------------------------


class SlowCollector:
    """Wraps a collector; each collect takes ``delay`` s and records overlap."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.active = self.max_active = self.calls = 0
        self.lock = threading.Lock()

    def collect(self) -> Any:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            return self.inner.collect()
        finally:
            with self.lock:
                self.active -= 1


def test_cycle_longer_than_the_interval_never_overlaps(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    import os
    import signal

    from controlloop.daemon import run_scheduler

    granite(fake_kube)
    loop = Loop(kube, prom.url)
    slow = SlowCollector(loop.controller.collector, delay=0.4)
    loop.controller.collector = slow
    reports: list[CycleReport] = []
    loop.controller.on_report.append(reports.append)
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    t0 = time.monotonic()
    try:
        run_scheduler(loop.controller, 0.05)  # 8x shorter than a cycle
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])
    elapsed = time.monotonic() - t0
    assert slow.max_active == 1
    assert 2 <= slow.calls <= elapsed / 0.4 + 1  # coalesced, not queued up
    assert all(r.outcome != "failed" for r in reports)
    assert len(reports) == slow.calls  # the running cycle finished before exit


def test_sigterm_mid_cycle_finishes_the_cycle_and_exits_0(
    tmp_path: Path, fake_kube: FakeKubeServer, prom: FakeProm
) -> None:
    import signal
    import subprocess
    import sys

    granite(fake_kube)
    cycle_log = tmp_path / "cycles.jsonl"
    fake_kube.inject("GET", "/deployments$", delay_s=1.5)  # a slow first cycle
    assert fake_kube.kubeconfig is not None
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlloop", "run", "--config", str(CONFIG),
         "--kubeconfig", str(fake_kube.kubeconfig), "--prometheus-url", prom.url,
         "--interval", "60", "--listen", "off", "--cycle-log", str(cycle_log)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not fake_kube.requests_for("GET", "/deployments$"):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # inside the slow list call
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "received SIGTERM" in out
    lines = cycle_log.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["outcome"] in ("ok", "partial"), out
    assert out.index("received SIGTERM") < out.index("cycle 1-")  # the cycle ended after it


def test_a_hold_is_recorded_as_one_event_per_reason(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    from functools import partial

    from controlloop.cluster.actuator import note_held

    granite(fake_kube)
    loop = Loop(kube, prom.url)
    loop.controller.on_held = partial(note_held, kube)

    def held_events() -> list[Any]:
        return [e for e in fake_kube.list_objects("Event", "llm") if e["reason"] == "Held"]

    prom.mode = "down"
    loop.cycle()
    loop.cycle()  # still held for the same reason: no second event
    (event,) = held_events()
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == "granite"
    assert event["message"].startswith("unknown-load: load unknown (prometheus HTTP 503")
    prom.mode = "ok"
    assert loop.cycle().servers[0].verdict != "held"
    prom.mode = "nan"
    loop.cycle()  # held again: a new event
    assert len(held_events()) == 2
    assert any("arrival rate is nan" in e["message"] for e in held_events())


def test_a_standby_exports_no_stale_per_server_series(
    fake_kube: FakeKubeServer, kube: KubeClient, prom: FakeProm
) -> None:
    granite(fake_kube)
    loop = Loop(kube, prom.url)
    loop.cycle()
    assert loop.metric("controlloop_server_current_replicas", server="granite",
                       namespace="llm", deployment="granite") == 1
    loop.controller.is_leader = lambda: False  # lost the lease
    loop.cycle()
    exposition = loop.metrics.exposition().decode()
    assert "controlloop_server_current_replicas{" not in exposition
    assert "controlloop_total_cost_cents_per_hour 0.0" in exposition


GATEWAY_QUERIES = {  # pod-independent, as from a gateway in front of the server
    "arrival_rpm": 'sum(rate(vllm:request_success_total{namespace="$namespace"}[$window])) * 60',
    "avg_in_tokens": 'sum(rate(vllm:prompt_tokens_total{namespace="$namespace"}[$window]))',
    "avg_out_tokens": 'sum(rate(vllm:generation_tokens_total{namespace="$namespace"}[$window]))',
    "freshness": 'max(timestamp(vllm:request_success_total{namespace="$namespace"}))',
}


@pytest.mark.parametrize("queries,known", [({}, False), (GATEWAY_QUERIES, True)])
def test_a_server_at_zero_replicas_comes_back_on_pod_independent_queries(
    queries: dict[str, str], known: bool, fake_kube: FakeKubeServer, kube: KubeClient,
    prom: FakeProm,
) -> None:
    from controlloop.cluster.prom import QueryTemplates

    add_server(fake_kube, "llm", "granite", model="granite_13b", cls="Premium", replicas=0)
    settings = ControllerSettings(verify="none")
    source = PrometheusLoadSource(PrometheusSettings(
        url=prom.url, timeout_s=0.5, retries=0, queries=QueryTemplates(**queries)))
    loop = Loop(kube, prom.url, settings)
    loop.controller.collector = KubeCollector(kube, source, settings)
    (row,) = loop.cycle().servers
    if not known:
        assert row.held_reason == "unknown-load" and "scaled to zero" in row.reason
        assert patches(fake_kube) == []
    else:
        assert row.load["status"] == "ok" and row.verdict in ("scaled", "moved"), row.reason
        (patch,) = patches(fake_kube)
        assert patch.body["spec"]["replicas"] >= 1
