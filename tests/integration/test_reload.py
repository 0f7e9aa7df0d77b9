"""Collector settings come from the current controller.yaml each cycle (no restart)."""

from __future__ import annotations

from typing import Any

import pytest

from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.kube import KubeClient
from controlloop.loop.settings import ControllerSettings
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import FakeLoadSource, add_server

pytestmark = pytest.mark.integration


def test_collector_follows_edited_settings(
    fake_kube: FakeKubeServer, kube_client: KubeClient
) -> None:
    add_server(fake_kube, "team-a", "granite", model="granite_13b", cls="Premium")
    add_server(fake_kube, "team-b", "llama", model="llama3_8b", cls="Bronze")
    current: dict[str, Any] = {"settings": ControllerSettings(namespaces=["team-a"])}
    collector = KubeCollector(kube_client, FakeLoadSource(), lambda: current["settings"])

    assert [s.namespace for s in collector.collect().servers] == ["team-a"]
    current["settings"] = ControllerSettings(namespaces=["team-b"], default_class="Free")
    state = collector.collect()
    assert [s.namespace for s in state.servers] == ["team-b"]
    current["settings"] = ControllerSettings(label_selector="app=granite")
    assert [s.deployment for s in collector.collect().servers] == ["granite"]


def test_interval_edits_reschedule_the_cycle() -> None:
    from controlloop.daemon import follow_interval

    class Scheduler:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, Any]]] = []

        def reschedule_job(self, job_id: str, **kw: Any) -> None:
            self.calls.append((job_id, kw))

    scheduler, wanted = Scheduler(), {"s": 60.0}
    hook = follow_interval(scheduler, lambda: wanted["s"], 60.0)
    hook(None)
    assert scheduler.calls == []
    wanted["s"] = 15.0
    hook(None)
    hook(None)
    assert scheduler.calls == [("cycle", {"trigger": "interval", "seconds": 15.0})]


def test_prometheus_edits_apply_at_the_next_read() -> None:
    from controlloop.daemon import ReloadingLoadSource, prometheus_settings
    from controlloop.loop.settings import PrometheusConfig
    from tests.helpers.faults import FakeProm

    first, second = FakeProm(), FakeProm()
    try:
        first.mode = "down"  # the old Prometheus fails; the edited one answers
        config = {"p": PrometheusConfig(url=first.url, timeout_seconds=0.5, retries=0)}
        source = ReloadingLoadSource(lambda: config["p"], prometheus_settings(config["p"]))
        assert source.read_load(namespace="llm", pods=["p-0"]).status == "unknown"
        config["p"] = PrometheusConfig(url=second.url, timeout_seconds=0.5, retries=0)
        reading = source.read_load(namespace="llm", pods=["p-0"])
        assert reading.status == "ok" and second.calls > 0
        config["p"] = PrometheusConfig(url=second.url, queries={"bogus_name": "up"})
        assert source.read_load(namespace="llm", pods=["p-0"]).status == "ok"  # kept last good
    finally:
        first.stop()
        second.stop()
