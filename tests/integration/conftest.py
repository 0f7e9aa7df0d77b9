"""Fixtures shared by the integration tests: a scriptable Prometheus and a client of the
loopback Kubernetes API (``fake_kube`` comes from tests/fakekube)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlloop.cluster.kube import KubeClient
from tests.fakekube import FakeKubeServer
from tests.helpers.faults import FakeProm


@pytest.fixture
def prom(fake_kube: FakeKubeServer) -> Iterator[FakeProm]:
    p = FakeProm(fake_kube)
    yield p
    p.stop()


@pytest.fixture
def kube(fake_kube: FakeKubeServer) -> Iterator[KubeClient]:
    client = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=0.5)
    yield client
    client.close()
