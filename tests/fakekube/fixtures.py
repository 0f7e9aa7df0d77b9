"""pytest plugin: ``pytest_plugins = ["tests.fakekube.fixtures"]`` in tests/conftest.py.

Fixtures
--------
fake_kube_factory
    ``make(token=None, keda_installed=True) -> FakeKubeServer``; every server made is
    started, has ``.kubeconfig`` written under tmp_path, and is stopped at teardown.
fake_kube
    One started server without auth, KEDA installed; ``fake_kube.kubeconfig`` is its
    kubeconfig path and ``fake_kube.url`` its base URL.
kube_client
    ``controlloop.cluster.kube.KubeClient`` on ``fake_kube`` with a 2 s request timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import FakeKubeServer


@pytest.fixture
def fake_kube_factory(tmp_path: Path) -> Iterator[Callable[..., FakeKubeServer]]:
    servers: list[FakeKubeServer] = []

    def make(*, token: str | None = None, keda_installed: bool = True) -> FakeKubeServer:
        srv = FakeKubeServer(token=token, keda_installed=keda_installed).start()
        servers.append(srv)
        srv.write_kubeconfig(tmp_path / f"kubeconfig-{len(servers)}")
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def fake_kube(fake_kube_factory: Callable[..., FakeKubeServer]) -> FakeKubeServer:
    return fake_kube_factory()


@pytest.fixture
def kube_client(fake_kube: FakeKubeServer) -> Iterator[Any]:
    from controlloop.cluster.kube import (
        KubeClient,  # imported late: the plugin loads before the app
    )

    client = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=2.0)
    yield client
    client.close()
