"""PrometheusLoadSource against a real Prometheus scraping a fake vLLM exporter."""

from __future__ import annotations

import time

import pytest

from controlloop.cluster.prom import PrometheusLoadSource, PrometheusSettings
from tests.promharness import PromStack, expected_load, wait_until
from tests.promharness.fixtures import DEPLOYMENT_A, IDLE, NEIGHBOURS, WINDOW

pytestmark = pytest.mark.integration

PODS_A = [p.pod for p in DEPLOYMENT_A]


def source(url: str, **kw: float) -> PrometheusLoadSource:
    return PrometheusLoadSource(PrometheusSettings(url=url, window=WINDOW, retries=0, **kw))


def test_recovers_rate_tokens_and_latencies(vllm_prom: PromStack):
    reading = source(vllm_prom.url).read_load(namespace="llm", pods=PODS_A)
    assert reading.status == "ok", reading.reason
    want = expected_load(DEPLOYMENT_A)
    for name in ("arrival_rate_rpm", "avg_in_tokens", "avg_out_tokens", "ttft_ms", "itl_ms"):
        assert getattr(reading, name) == pytest.approx(want[name], rel=0.05), name
    assert (reading.running, reading.waiting) == (want["running"], want["waiting"])
    assert reading.pods_reporting == 2
    assert reading.sample_age_s is not None and reading.sample_age_s < 3


def test_running_per_pod_and_the_fullest_kv_cache(vllm_prom: PromStack):
    reading = source(vllm_prom.url).read_load(namespace="llm", pods=PODS_A)
    assert reading.pod_running == {p.pod: p.running for p in DEPLOYMENT_A}
    assert reading.kv_cache_usage == max(p.kv_cache or 0 for p in DEPLOYMENT_A)
    idle = source(vllm_prom.url).read_load(namespace="llm", pods=[IDLE.pod])
    assert idle.kv_cache_usage is None  # not exported: unknown, the reading still idle
    assert idle.status == "idle" and idle.pod_running == {IDLE.pod: 0.0}


def test_pod_regex_excludes_other_deployments_and_namespaces(vllm_prom: PromStack):
    src = source(vllm_prom.url)
    one = src.read_load(namespace="llm", pods=["vllm-a-1"])
    assert one.status == "ok", one.reason
    assert one.arrival_rate_rpm == pytest.approx(60 * DEPLOYMENT_A[0].rps, rel=0.05)
    assert one.pods_reporting == 1
    neighbour = NEIGHBOURS[1]
    other = src.read_load(namespace="llm", pods=[neighbour.pod])
    assert other.arrival_rate_rpm == pytest.approx(60 * neighbour.rps, rel=0.05)
    missing = src.read_load(namespace="llm", pods=["vllm-a-3"])
    assert missing.status == "unknown"
    assert missing.reason == "no series for vllm:request_success_total in llm/{vllm-a-3}"


def test_idle_server_reads_zero_rate_not_unknown(vllm_prom: PromStack):
    reading = source(vllm_prom.url).read_load(namespace="llm", pods=[IDLE.pod])
    assert reading.status == "idle" and reading.reason == f"idle: no requests in {WINDOW}"
    assert reading.arrival_rate_rpm == 0.0
    assert (reading.avg_in_tokens, reading.ttft_ms) == (None, None)  # 0/0 and no histogram


def test_check_is_ready(vllm_prom: PromStack):
    assert source(vllm_prom.url).check() == (True, f"prometheus reachable at {vllm_prom.url}")


def test_stopped_exporter_goes_stale_then_stopped_prometheus_is_unreachable(prom_stack_factory):
    stack = prom_stack_factory(DEPLOYMENT_A)
    src = source(stack.url, staleness_s=5.0)
    wait_until(
        lambda: src.read_load(namespace="llm", pods=PODS_A).status == "ok",
        timeout_s=20,
        what="a first ok reading",
    )
    stack.exporter.stop()
    stopped = time.monotonic()
    reading = wait_until(
        lambda: (r := src.read_load(namespace="llm", pods=PODS_A)).status == "unknown" and r,
        timeout_s=5.0 + 5,
        what="an unknown reading after the exporter stopped",
        every_s=0.5,
    )
    assert time.monotonic() - stopped <= 5.0 + 3  # within the staleness bound (+ a scrape)
    # Prometheus marks the series of a failed scrape stale at once, so the
    # freshness query empties before the rate window does.
    assert reading.reason.startswith(("stale:", "no series")), reading.reason
    print(f"after exporter stop: {time.monotonic() - stopped:.1f}s -> {reading.reason}")

    stack.prometheus.stop()
    down = src.read_load(namespace="llm", pods=PODS_A)
    assert down.status == "unknown"
    assert down.reason.startswith(f"prometheus unreachable at {stack.url}")
    ok, why = src.check()
    assert not ok and why.startswith("prometheus unreachable")
