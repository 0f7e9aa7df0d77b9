"""The example vLLM Deployments' preStop hook, run against a real HTTP /metrics endpoint.

The hook (manifests/examples) must wait while vLLM reports running or waiting
requests and return once both gauges read 0, or when the server is gone; its
longest wait must fit in terminationGracePeriodSeconds, and the demo's
``example`` termination preset must be these settings.
"""

from __future__ import annotations

import builtins
import re
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlloop.demo.loadscript import TERMINATION_PRESETS

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
DEPLOYMENTS = sorted(EXAMPLES.glob("vllm-*.yaml"))


def _pod(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    pod: dict[str, Any] = doc["spec"]["template"]["spec"]
    return pod


def _hook(path: Path) -> str:
    (c,) = _pod(path)["containers"]
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[:2] == ["python3", "-c"], path.name
    return str(cmd[2])


class _Clock:
    """Fake ``time`` for the hook: sleep advances monotonic, and counts."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, s: float) -> None:
        self.now += s

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def vllm() -> Iterator[tuple[str, list[tuple[float, float]]]]:
    """A /metrics endpoint serving the next (running, waiting) pair per scrape (last repeats)."""
    series: list[tuple[float, float]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            running, waiting = series.pop(0) if len(series) > 1 else series[0]
            body = (
                "# TYPE vllm:num_requests_running gauge\n"
                f'vllm:num_requests_running{{engine="0",model_name="m"}} {running}\n'
                f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}\n'
                f'vllm:gpu_cache_usage_perc{{engine="0",model_name="m"}} 0.5\n'
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", series
    finally:
        server.shutdown()
        server.server_close()


def _run(src: str, url: str) -> _Clock:
    """Run the hook with a fake clock (its own ``import time`` only) against ``url``."""
    src = src.replace("http://127.0.0.1:8000/metrics", url)
    clock = _Clock()
    fake = types.ModuleType("time")
    fake.sleep = clock.sleep  # type: ignore[attr-defined]
    fake.monotonic = clock.monotonic  # type: ignore[attr-defined]

    def importer(name: str, *args: Any, **kwargs: Any) -> Any:
        return fake if name == "time" else builtins.__import__(name, *args, **kwargs)

    scope = {"__name__": "__main__", "__builtins__": {**vars(builtins), "__import__": importer}}
    exec(compile(src, "preStop", "exec"), scope)  # noqa: S102 - our own manifest's hook
    return clock


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=lambda p: p.name)
def test_hook_waits_for_running_and_waiting_requests(
    path: Path, vllm: tuple[str, list[tuple[float, float]]]
) -> None:
    url, series = vllm
    series[:] = [(3, 2), (2, 1), (1, 0), (0, 1), (0, 0)]  # busy for 4 scrapes
    clock = _run(_hook(path), url)
    assert clock.now == 5 + 4 * 2  # endpoint delay, then one 2 s sleep per busy scrape


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=lambda p: p.name)
def test_hook_gives_up_within_the_grace_period(
    path: Path, vllm: tuple[str, list[tuple[float, float]]]
) -> None:
    url, series = vllm
    series[:] = [(1, 0)]  # a generation that never ends
    clock = _run(_hook(path), url)
    grace = _pod(path)["terminationGracePeriodSeconds"]
    assert 590 <= clock.now <= grace - 20  # SIGTERM still comes before the SIGKILL
    assert grace == TERMINATION_PRESETS["example"]["gracePeriodSeconds"]
    m = re.search(r"monotonic\(\) \+ (\d+)", _hook(path))
    assert m is not None
    assert 5 + int(m.group(1)) == TERMINATION_PRESETS["example"]["preStopSeconds"]


def test_hook_returns_when_the_server_is_gone() -> None:
    clock = _run(_hook(DEPLOYMENTS[0]), "http://127.0.0.1:9/metrics")
    assert clock.now == 5
