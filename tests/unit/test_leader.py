"""LeaderElector against the loopback API: one leader, take-over, races, API faults.

Round-by-round tests drive ``try_acquire_or_renew`` with an injected monotonic
clock (deterministic); the threaded tests use a 1 s lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controlloop.cluster.kube import KubeClient
from controlloop.cluster.leader import LeaderElector
from controlloop.loop.settings import LeaderElectionConfig
from tests.fakekube import FakeKubeServer

NS, NAME = "controlloop-system", "controlloop-leader"
FAST = LeaderElectionConfig(
    enabled=True, lease_duration_seconds=1.0, renew_deadline_seconds=0.7,
    retry_period_seconds=0.05,
)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clients(fake_kube: FakeKubeServer) -> Iterator[Callable[[], KubeClient]]:
    made: list[KubeClient] = []

    def make() -> KubeClient:
        made.append(KubeClient.from_kubeconfig(fake_kube.kubeconfig, timeout_s=1.0))
        return made[-1]

    yield make
    for c in made:
        c.close()


def lease(fake: FakeKubeServer) -> dict[str, Any]:
    return fake.get("Lease", NS, NAME)["spec"]  # type: ignore[no-any-return]


def test_first_round_creates_the_lease(fake_kube: FakeKubeServer, clients: Any) -> None:
    changes: list[bool] = []
    a = LeaderElector(clients(), FAST, identity="a", on_change=changes.append,
                      monotonic=Clock())
    assert a.try_acquire_or_renew() and a.is_leader()
    spec = lease(fake_kube)
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0
    assert spec["leaseDurationSeconds"] == 1
    assert spec["acquireTime"] == spec["renewTime"]
    assert changes == [True]


def test_follower_waits_for_expiry_on_its_own_clock(fake_kube: FakeKubeServer,
                                                    clients: Any) -> None:
    ca, cb = Clock(), Clock()
    cb.t = 1e6  # clocks need not agree: only elapsed local time counts
    a = LeaderElector(clients(), FAST, identity="a", monotonic=ca)
    b = LeaderElector(clients(), FAST, identity="b", monotonic=cb)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # first sight of a's record starts b's timer
    cb.t += 0.9
    assert not b.try_acquire_or_renew()
    ca.t += 0.5
    assert a.try_acquire_or_renew()  # a renews: a new record, b's timer restarts
    cb.t += 0.5
    assert not b.try_acquire_or_renew()
    cb.t += 1.0  # a stopped renewing
    assert b.try_acquire_or_renew() and b.is_leader()
    spec = lease(fake_kube)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    ca.t += 0.8  # a's renew deadline (0.7 s) passed without a renewal
    assert not a.is_leader()
    assert not a.try_acquire_or_renew()  # b holds a fresh record now


def test_write_race_409_means_lost(fake_kube: FakeKubeServer, clients: Any) -> None:
    a = LeaderElector(clients(), FAST, identity="a", monotonic=Clock())
    assert a.try_acquire_or_renew()
    fake_kube.inject("PUT", f"/leases/{NAME}$", status=409)
    assert not a.try_acquire_or_renew() and not a.is_leader()
    assert a.try_acquire_or_renew()  # next round re-reads and renews


def test_api_errors_keep_leading_until_the_renew_deadline(fake_kube: FakeKubeServer,
                                                          clients: Any) -> None:
    clock = Clock()
    a = LeaderElector(clients(), FAST, identity="a", monotonic=clock)
    assert a.try_acquire_or_renew()
    fault = fake_kube.inject(None, "/leases/", status=500, times=None)
    clock.t += 0.3
    assert a.try_acquire_or_renew()  # still inside the deadline
    clock.t += 0.5
    assert not a.try_acquire_or_renew() and not a.is_leader()
    fault.times = 0  # API back
    assert a.try_acquire_or_renew() and a.is_leader()


def test_api_timeout_on_create_is_not_leading(fake_kube: FakeKubeServer, clients: Any) -> None:
    fake_kube.inject("POST", "/leases", delay_s=1.5)
    a = LeaderElector(clients(), FAST, identity="a", monotonic=Clock())
    assert not a.try_acquire_or_renew()


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_two_electors_exactly_one_leads_then_take_over(fake_kube: FakeKubeServer,
                                                       clients: Any) -> None:
    a = LeaderElector(clients(), FAST, identity="a")
    b = LeaderElector(clients(), FAST, identity="b")
    a.start()
    b.start()
    try:
        assert _wait(lambda: a.is_leader() or b.is_leader())
        for _ in range(20):  # never two at once while both run
            assert a.is_leader() + b.is_leader() == 1
            time.sleep(0.02)
        leader, follower = (a, b) if a.is_leader() else (b, a)
        assert lease(fake_kube)["holderIdentity"] == leader.identity
        t0 = time.monotonic()
        leader.stop(release=False)  # crash: stops renewing, keeps the lease record
        assert not leader.is_leader()
        assert _wait(follower.is_leader, timeout=3.0)
        took = time.monotonic() - t0
        assert 0.9 <= took < 2.5, took  # about one lease duration
        assert lease(fake_kube)["holderIdentity"] == follower.identity
        assert lease(fake_kube)["leaseTransitions"] == 1
    finally:
        a.stop()
        b.stop()


def test_release_on_stop_hands_over_at_once(fake_kube: FakeKubeServer, clients: Any) -> None:
    slow = FAST.model_copy(update={"lease_duration_seconds": 30.0,
                                   "renew_deadline_seconds": 20.0})
    a = LeaderElector(clients(), slow, identity="a")
    b = LeaderElector(clients(), slow, identity="b")
    a.start()
    assert _wait(a.is_leader)
    b.start()
    try:
        time.sleep(0.2)
        assert not b.is_leader()
        a.stop()  # releases: empty holder
        assert _wait(b.is_leader, timeout=1.0)
    finally:
        b.stop()
    assert lease(fake_kube)["holderIdentity"] == ""
