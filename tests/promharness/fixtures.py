"""Pytest fixtures for the Prometheus harness.

Import them from ``tests/conftest.py``::

    from tests.promharness.fixtures import prom_stack_factory, prometheus_bin, vllm_prom

or list the module in ``pytest_plugins`` there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import pytest

from .harness import PodLoad, PromStack, prometheus_binary, promtool_binary, start_stack

# The Deployment under test: two pods with different load, names that need
# regex escaping ("."), and neighbours that a sloppy pod regex would match.
# Rates are high enough that histograms (observed per whole request) get >= 100
# requests per pod in the 10 s window: +-1 request moves TTFT/ITL means ~1 %.
DEPLOYMENT_A = (
    PodLoad(
        "vllm-a-1",
        rps=10.0,
        in_tokens=400,
        out_tokens=50,
        ttft_s=0.05,
        itl_s=0.02,
        running=3,
        waiting=1,
        kv_cache=0.42,
    ),
    PodLoad(
        "vllm-a.2",
        rps=15.0,
        in_tokens=800,
        out_tokens=100,
        ttft_s=0.10,
        itl_s=0.03,
        running=5,
        waiting=0,
        kv_cache=0.87,
    ),
)
NEIGHBOURS = (
    PodLoad("vllm-a-10", rps=7.0, out_tokens=20),  # prefix of vllm-a-1: needs anchoring
    PodLoad("vllm-ax2", rps=11.0, out_tokens=20),  # matches vllm-a.2 if "." is unescaped
    PodLoad("vllm-a-1", namespace="other", rps=13.0, out_tokens=20),  # same name, other ns
)
IDLE = PodLoad("vllm-idle-1", rps=0.0, running=0, waiting=0)  # counters exist, stay at 0
WINDOW = "10s"  # short rate window keeps the suite fast; scrape interval is 1 s


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Path of the Prometheus binary. Missing: a failure under CI (which installs it via
    `make test`), a skip elsewhere."""
    path = prometheus_binary()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus binary not found under CI: `make test` should install it")
        pytest.skip(
            "prometheus binary not found ($PROMETHEUS_BIN or /usr/bin/prometheus); "
            "install it with `apt-get install prometheus`"
        )
    return path


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    """Path of ``promtool`` (Debian's prometheus package). Missing: a failure under CI, a skip
    elsewhere, as for the Prometheus binary."""
    path = promtool_binary()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not found under CI: `make test` should install prometheus")
        pytest.skip("promtool not found ($PROMTOOL_BIN or beside prometheus); "
                    "install it with `apt-get install prometheus`")
    return path


@pytest.fixture(scope="module")
def vllm_prom(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromStack]:
    """Shared stack serving (*DEPLOYMENT_A, *NEIGHBOURS, IDLE), with the WINDOW already filled."""
    stack = start_stack(
        (*DEPLOYMENT_A, *NEIGHBOURS, IDLE),
        binary=prometheus_bin,
        workdir=tmp_path_factory.mktemp("prom"),
        fill_window_s=12,
    )
    yield stack
    stack.stop()


@pytest.fixture
def prom_stack_factory(
    prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PromStack]]:
    """Start private stacks (tests may stop them); all are stopped at teardown."""
    stacks: list[PromStack] = []

    def make(pods: Sequence[PodLoad] = DEPLOYMENT_A, *, fill_window_s: float = 0) -> PromStack:
        stack = start_stack(
            pods,
            binary=prometheus_bin,
            workdir=tmp_path_factory.mktemp("prom"),
            fill_window_s=fill_window_s,
        )
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
