"""Collection at fleet scale: the number of Prometheus queries and Kubernetes list
requests of one cycle does not grow with the number of servers.

Real parts: the official Kubernetes client against the loopback fake API (which counts
requests and pages lists like the API server), a real Prometheus scraping a fake vLLM
exporter, behind a proxy that counts the queries.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.kube import KubeClient
from controlloop.cluster.prom import PrometheusLoadSource, PrometheusSettings
from controlloop.loop.settings import ControllerSettings
from controlloop.loop.state import ClusterState
from tests.fakekube import FakeKubeServer
from tests.fakekube.store import find_resource
from tests.helpers.cluster import add_server
from tests.promharness import CountingProxy, PodLoad, PromStack, expected_load, start_stack
from tests.promharness.fixtures import WINDOW

pytestmark = pytest.mark.integration

N_MAX = 8  # servers in the big cluster; the small one keeps the first N_MIN
N_MIN = 2


def pods_of(i: int) -> tuple[PodLoad, ...]:
    """Server i runs 1 or 2 pods with their own rates and token mixes."""
    return tuple(
        PodLoad(f"srv-{i}-{j}", namespace="llm", rps=1.0 + i + 0.5 * j,
                in_tokens=100.0 + 10 * i, out_tokens=20.0 + 5 * j, running=1.0 + j, waiting=0.0)
        for j in range(1 + i % 2)
    )


@pytest.fixture(scope="module")
def fleet_prom(
    prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PromStack]:
    # Also a pod of an unmanaged Deployment: its series must be ignored.
    pods = [p for i in range(N_MAX) for p in pods_of(i)]
    pods.append(PodLoad("web-0", namespace="llm", rps=50.0))
    stack = start_stack(pods, binary=prometheus_bin, workdir=tmp_path_factory.mktemp("fleet"),
                        fill_window_s=12)
    yield stack
    stack.stop()


@pytest.fixture
def proxy(fleet_prom: PromStack) -> Iterator[CountingProxy]:
    p = CountingProxy(fleet_prom.url)
    yield p
    p.stop()


def cluster(fake: FakeKubeServer, n: int) -> None:
    for i in range(n):
        add_server(fake, "llm", f"srv-{i}", model="granite_13b", cls="Premium",
                   replicas=len(pods_of(i)), sidecar=False)
    # add_server names the pods srv-i-0, srv-i-1, as pods_of does
    fake.add_deployment("llm", "web", labels={"app": "web"})
    fake.add_pod("llm", "web-0", {"app": "web"})


def collect(fake: FakeKubeServer, proxy: CountingProxy, *, page_size: int = 1000
            ) -> tuple[ClusterState, int, int]:
    """One collection: (state, Prometheus queries, Kubernetes list requests)."""
    kube = KubeClient.from_kubeconfig(fake.kubeconfig, timeout_s=5, page_size=page_size)
    source = PrometheusLoadSource(PrometheusSettings(url=proxy.url, window=WINDOW, retries=0))
    settings = ControllerSettings.model_validate({"namespaces": ["llm"]})
    fake.clear_requests()
    proxy.reset()
    try:
        state = KubeCollector(kube, source, settings).collect()
    finally:
        kube.close()
    lists = [r for r in fake.requests if r.method == "GET"]
    return state, proxy.queries, len(lists)


def check_loads(state: ClusterState, n: int) -> None:
    assert len(state.servers) == n, [s.deployment for s in state.servers]
    for server in state.servers:
        i = int(server.deployment.split("-")[1])
        want = expected_load(pods_of(i))
        load = server.load
        assert load.status == "ok", (server.deployment, load.reason)
        assert server.running_pods == tuple(sorted(p.pod for p in pods_of(i)))
        for name in ("arrival_rate_rpm", "avg_in_tokens", "avg_out_tokens", "ttft_ms", "itl_ms"):
            assert getattr(load, name) == pytest.approx(want[name], rel=0.05), (i, name)
        assert (load.running, load.waiting) == (want["running"], want["waiting"])


def test_queries_and_lists_do_not_grow_with_servers(fake_kube: FakeKubeServer,
                                                    proxy: CountingProxy) -> None:
    cluster(fake_kube, N_MAX)
    big, big_queries, big_lists = collect(fake_kube, proxy)
    check_loads(big, N_MAX)
    for i in range(N_MIN, N_MAX):
        fake_kube.store.delete(find_resource("Deployment"), "llm", f"srv-{i}")
    small, small_queries, small_lists = collect(fake_kube, proxy)
    check_loads(small, N_MIN)
    # one query per quantity (10) and Deployments + pods + HPAs + ScaledObjects lists
    assert big_queries == small_queries == 10
    assert big_lists == small_lists == 4


def test_paginated_lists_give_the_same_state(fake_kube: FakeKubeServer,
                                             proxy: CountingProxy) -> None:
    cluster(fake_kube, N_MAX)
    whole, _, lists = collect(fake_kube, proxy)
    paged, _, paged_lists = collect(fake_kube, proxy, page_size=3)
    assert [s.deployment for s in paged.servers] == [s.deployment for s in whole.servers]
    assert [s.running_pods for s in paged.servers] == [s.running_pods for s in whole.servers]
    # 8 managed Deployments in pages of 3 (2 continued), their 12 pods (selector
    # app in (...), not web-0) in pages of 3 (3 continued)
    continued = [r for r in fake_kube.requests if "continue" in r.query]
    assert paged_lists == lists + 2 + 3 and len(continued) == 5
    assert all(r.query.get("limit") == "3" for r in fake_kube.requests if r.method == "GET")


def test_expired_continue_token_restarts_the_list(fake_kube: FakeKubeServer,
                                                  proxy: CountingProxy) -> None:
    cluster(fake_kube, N_MAX)
    fake_kube.expire_continue = True  # the second page of the Deployments list: 410
    state, _, _ = collect(fake_kube, proxy, page_size=4)
    assert len(state.servers) == N_MAX and not state.errors
    check_loads(state, N_MAX)


def test_a_server_whose_pods_have_no_series_is_unknown(fake_kube: FakeKubeServer,
                                                       proxy: CountingProxy) -> None:
    cluster(fake_kube, N_MIN)
    add_server(fake_kube, "llm", "ghost", model="granite_13b", cls="Premium", sidecar=False)
    state, queries, _ = collect(fake_kube, proxy)
    ghost = next(s for s in state.servers if s.deployment == "ghost")
    assert ghost.load.status == "unknown"
    assert ghost.load.reason == "no series for vllm:request_success_total in llm/{ghost-0}"
    assert queries == 10
    check_loads(ClusterState(servers=tuple(s for s in state.servers if s.deployment != "ghost")),
                N_MIN)
