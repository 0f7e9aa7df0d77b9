"""Collector settings come from the current controller.yaml each cycle (no restart)."""

from __future__ import annotations

from typing import Any

import pytest

from controlloop.collector import KubeCollector
from controlloop.kube import KubeClient
from controlloop.settings import ControllerSettings
from tests.e2e.helpers import FakeLoadSource, add_server
from tests.fakekube import FakeKubeServer

pytestmark = pytest.mark.integration


def test_collector_follows_edited_settings(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
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
