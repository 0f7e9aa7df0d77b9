"""TokenBucket: a burst, then qps on average (against a simulated clock)."""

from __future__ import annotations

import pytest

from controlloop.cluster.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_burst_then_qps() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock=clock, sleep=clock.sleep)
    waits = [bucket.take() for _ in range(25)]
    assert waits[:5] == [0.0] * 5  # the burst goes out at once
    assert all(w == pytest.approx(0.1) for w in waits[5:])  # then one per 1/qps
    assert clock.t == pytest.approx(2.0)  # 20 requests beyond the burst at 10/s


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.take()
    clock.t += 100.0  # long idle: at most `burst` tokens saved
    assert [bucket.take() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)]


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        TokenBucket(0, 1)
