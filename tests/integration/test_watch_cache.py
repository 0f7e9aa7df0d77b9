"""Deployments and pods kept by watches (controller.watch): a cycle lists nothing once the
copies are live, sees every change the cluster made since, and lists again whenever a copy
cannot be trusted.

Real parts: the official Kubernetes client against the loopback fake API, whose watches
behave like the API server's (resourceVersion cursors, 410 on a compacted history, a
selector's leavers as DELETED, the server ending a watch after ``timeoutSeconds``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from controlloop.cluster.collector import KubeCollector
from controlloop.cluster.kube import KubeClient
from controlloop.cluster.watchcache import WatchCache
from controlloop.loop.settings import ControllerSettings
from controlloop.loop.state import ClusterState
from tests.fakekube import FakeKubeServer
from tests.fakekube.store import find_resource
from tests.helpers.cluster import FakeLoadSource, add_server, reading

pytestmark = pytest.mark.integration

SETTINGS = ControllerSettings.model_validate({"namespaces": ["llm"]})


@pytest.fixture
def watched(fake_kube: FakeKubeServer) -> Iterator[KubeClient]:
    kube = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=5)
    kube.watches = WatchCache(timeout_s=2, resync_s=600, first_sync_s=5)
    yield kube
    kube.watches.close()
    kube.close()


def fleet(fake: FakeKubeServer, n: int = 3) -> None:
    for i in range(n):
        add_server(fake, "llm", f"srv-{i}", model="granite_13b", cls="Premium", replicas=2,
                   sidecar=False)


def collect(kube: KubeClient) -> ClusterState:
    load = FakeLoadSource({f"srv-{i}": reading(60.0) for i in range(10)})
    return KubeCollector(kube, load, SETTINGS).collect()


def lists(fake: FakeKubeServer, kind: str) -> int:
    """List requests (not watches) for ``kind`` (deployments, pods) since the last clear."""
    return sum(1 for r in fake.requests_for("GET", rf"/{kind}$")
               if r.query.get("watch") not in ("true", "1"))


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def servers(state: ClusterState) -> dict[str, tuple[int, tuple[str, ...]]]:
    return {s.deployment: (s.replicas, s.running_pods, s.resource_version) for s in state.servers}


def test_later_cycles_list_nothing_and_see_every_change(fake_kube: FakeKubeServer,
                                                        watched: KubeClient) -> None:
    fleet(fake_kube)
    first = collect(watched)
    assert len(first.servers) == 3 and not first.errors
    assert lists(fake_kube, "deployments") == 1 and lists(fake_kube, "pods") == 1
    fake_kube.clear_requests()

    # the cluster changes between cycles: a scale, a pod gone, a server added, one removed
    dep = find_resource("Deployment")
    cur = fake_kube.store.get(dep, "llm", "srv-0")
    cur["spec"]["replicas"] = 5
    fake_kube.store.update(dep, "llm", "srv-0", cur)
    fake_kube.store.delete(find_resource("Pod"), "llm", "srv-1-1")
    add_server(fake_kube, "llm", "srv-3", model="granite_13b", cls="Premium", sidecar=False)
    fake_kube.store.delete(dep, "llm", "srv-2")

    plain = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=5)
    try:
        truth = servers(collect(plain))  # what a fresh list says
    finally:
        plain.close()
    assert truth["srv-0"][0] == 5 and "srv-2" not in truth and "srv-3" in truth
    assert truth["srv-1"][1] == ("srv-1-0",)
    fake_kube.clear_requests()
    eventually(lambda: servers(collect(watched)) == truth)
    assert lists(fake_kube, "deployments") == 0 and lists(fake_kube, "pods") == 0
    assert watched.watches is not None and watched.watches.stats.lists == 2


def test_a_deployment_that_leaves_the_selector_is_gone(fake_kube: FakeKubeServer,
                                                       watched: KubeClient) -> None:
    fleet(fake_kube, 2)
    assert len(collect(watched).servers) == 2
    dep = find_resource("Deployment")
    cur = fake_kube.store.get(dep, "llm", "srv-1")
    cur["metadata"]["labels"] = {"app": "unmanaged"}
    fake_kube.store.update(dep, "llm", "srv-1", cur)
    eventually(lambda: [s.deployment for s in collect(watched).servers] == ["srv-0"])


def test_a_compacted_history_lists_again(fake_kube: FakeKubeServer,
                                         watched: KubeClient) -> None:
    fleet(fake_kube, 2)
    collect(watched)
    assert watched.watches is not None
    listed = watched.watches.stats.lists
    fake_kube.store.compact()  # the open watches' next re-open (or a lag) gets 410
    dep = find_resource("Deployment")
    for _ in range(3):  # changes the open watch sees; then it times out and re-opens
        cur = fake_kube.store.get(dep, "llm", "srv-0")
        cur["spec"]["replicas"] = cur["spec"]["replicas"] + 1
        fake_kube.store.update(dep, "llm", "srv-0", cur)
    fake_kube.store.compact()
    eventually(lambda: servers(collect(watched))["srv-0"][0] == 5)
    eventually(lambda: watched.watches is not None and watched.watches.stats.lists > listed,
               timeout_s=10)
    assert servers(collect(watched))["srv-0"][0] == 5


def test_a_broken_watch_is_not_trusted(fake_kube: FakeKubeServer,
                                       watched: KubeClient) -> None:
    fleet(fake_kube, 2)
    collect(watched)
    assert watched.watches is not None
    # every watch and list from now fails: a copy whose watch failed is not used, the
    # cycle's own list fails too, and that is a failed collection (nothing is acted on)
    fake_kube.inject("GET", r"/(deployments|pods)$", status=500, times=None)
    dep = find_resource("Deployment")
    cur = fake_kube.store.get(dep, "llm", "srv-0")
    cur["spec"]["replicas"] = 4
    fake_kube.store.update(dep, "llm", "srv-0", cur)

    def unknown_pods() -> bool:  # the pods watch fails at once (its re-open after the event)
        state = collect(watched)
        return not state.complete or all(
            s.load.status == "unknown" and "listing pods" in s.load.reason
            for s in state.servers)

    eventually(unknown_pods)
    # the Deployments watch fails when it next re-opens (its timeout, 2 s)
    eventually(lambda: not collect(watched).complete, timeout_s=10)
    state = collect(watched)
    assert state.errors and "listing Deployments" in state.errors[0] and not state.servers
    fake_kube.clear_faults()
    # healthy again: the next cycles read the current state
    eventually(lambda: servers(collect(watched)).get("srv-0", (0,))[0] == 4, timeout_s=15)
    assert all(s.load.status == "ok" for s in collect(watched).servers)


def test_a_stale_copy_is_not_served(fake_kube: FakeKubeServer) -> None:
    now = [0.0]
    kube = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=5)
    cache = WatchCache(timeout_s=2, resync_s=600, first_sync_s=5, clock=lambda: now[0])
    kube.watches = cache
    try:
        fleet(fake_kube, 1)
        collect(kube)
        fake_kube.clear_requests()
        collect(kube)
        assert lists(fake_kube, "deployments") == 0
        # not heard from for longer than the timeout + grace (a connection that hangs):
        # the copy is not used, the cycle lists
        now[0] += 2 + 31
        state = collect(kube)
        assert len(state.servers) == 1 and lists(fake_kube, "deployments") == 1
        assert cache.stats.missed >= 1
    finally:
        cache.close()
        kube.close()


def test_without_watches_every_cycle_lists(fake_kube: FakeKubeServer) -> None:
    fleet(fake_kube, 2)
    kube = KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=5)
    try:
        collect(kube)
        collect(kube)
    finally:
        kube.close()
    assert lists(fake_kube, "deployments") == 2 and lists(fake_kube, "pods") == 2
    assert not fake_kube.requests_for("GET", r"/pods$") or all(
        r.query.get("watch") is None for r in fake_kube.requests_for("GET", r"/pods$"))
