"""Property tests of the token-level engine on small random cases."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from controlloop.sim import ReplicaParams, ReplicaSimulator


@st.composite
def cases(draw: st.DrawFn) -> tuple[ReplicaParams, np.ndarray, list[float]]:
    params = ReplicaParams(
        alpha=draw(st.floats(0.5, 20)),
        beta=draw(st.floats(0, 2)),
        gamma=draw(st.floats(0, 50)),
        delta=draw(st.floats(0, 0.5)),
        batch=draw(st.integers(1, 5)),
        in_tokens=draw(st.integers(0, 64)),
        out_tokens=draw(st.integers(1, 12)),
        queue=draw(st.integers(0, 6)),
    )
    # Integer-ms arrivals make ties with boundaries and each other likely.
    times = np.sort(np.array(draw(st.lists(st.integers(0, 400), max_size=40)), dtype=float))
    cuts = sorted(set(draw(st.lists(st.integers(1, 2000), max_size=8))) | {2000})
    return params, times, [float(c) for c in cuts]


@settings(max_examples=150, deadline=None)
@given(cases())
def test_conservation_bounds_and_piecewise(case: tuple) -> None:
    params, times, cuts = case
    whole_sim = ReplicaSimulator(params)
    whole = whole_sim.run_until(2000.0, times)
    # 400 ms of arrivals, at most 40 * 12 iterations of at most ~90 ms each: not all done,
    # so conservation counts what is still inside.
    inside = whole.queue_len + whole.in_service
    assert whole.arrivals == len(times)
    assert whole.completed + whole.lost + inside == whole.arrivals
    assert whole.lost == 0 or len(times) > params.capacity - 1
    first_min = max(
        params.gamma + params.delta * params.in_tokens if params.in_tokens else 0.0,
        params.alpha + params.beta,
    )
    assert np.all(whole.ttft_ms >= first_min - 1e-9)
    assert np.all(whole.wait_ms >= 0)
    assert whole.in_service_area <= params.batch * whole.busy_ms + 1e-6
    if whole.decode_tokens:
        decode_max = params.alpha + params.beta * params.batch
        prefill_max = params.gamma + params.delta * params.in_tokens * params.batch
        assert params.alpha + params.beta - 1e-9 <= whole.itl_mean_ms
        assert whole.itl_mean_ms <= max(decode_max, prefill_max) + 1e-9

    sim = ReplicaSimulator(params)
    parts = []
    lo = 0.0
    for hi in cuts:
        sim.offer(times[(times >= lo) & (times < hi)])
        sim.advance(hi)
        parts.append(sim.drain_stats())
        lo = hi
    assert np.array_equal(np.concatenate([p.ttft_ms for p in parts]), whole.ttft_ms)
    assert sum(p.completed for p in parts) == whole.completed
    assert sum(p.lost for p in parts) == whole.lost
    assert sum(p.decode_tokens for p in parts) == whole.decode_tokens
