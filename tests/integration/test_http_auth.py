"""The daemon's endpoints locked down: POST /invoke (and /metrics when asked) need a bearer
token that the API server authenticates (TokenReview) and RBAC allows (SubjectAccessReview),
through the official client against the loopback API; or a token from a file. Rate limit and
the off switch too."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlloop.cluster.actuator import KubeActuator
from controlloop.cluster.collector import KubeCollector
from controlloop.config import load_system
from controlloop.daemon import HttpState, daemon_ui, make_http_server
from controlloop.httpauth import EndpointPolicy, RateLimiter, build_policy
from controlloop.loop.controller import Controller, StaticSpecs
from controlloop.loop.settings import ControllerSettings
from controlloop.metrics import ControllerMetrics
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import CONFIG, FakeLoadSource

pytestmark = pytest.mark.integration


def serve(kube_client: Any, policy: EndpointPolicy) -> Iterator[str]:
    settings = ControllerSettings()
    controller = Controller(
        specs=StaticSpecs(load_system(CONFIG), settings),
        collector=KubeCollector(kube_client, FakeLoadSource({}), settings),
        actuator=KubeActuator(kube_client, settings.actuation, sleep=lambda s: None))
    metrics = ControllerMetrics()
    controller.on_report.append(metrics.observe)
    ui = daemon_ui(controller, controller.specs, dry_run=False)
    http = make_http_server("127.0.0.1", 0, HttpState(controller, metrics, policy=policy, ui=ui))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}"
    finally:
        http.shutdown()
        http.server_close()


def call(url: str, method: str = "POST", token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def reviewed(fake_kube: FakeKubeServer, kube_client: Any) -> Iterator[str]:
    fake_kube.add_user("ops-token", "alice", groups=("ops",))
    fake_kube.add_user("viewer-token", "bob")
    fake_kube.grant("ops", "/invoke", "post")
    fake_kube.grant("bob", "/metrics", "get")
    fake_kube.grant("bob", "/ui", "get")  # the dashboard: every /ui/... path is checked as /ui
    policy = build_policy(mode="auto", in_cluster=True, token_file=None, invoke=True,
                          invoke_per_minute=600, metrics_auth=True,
                          api_client=kube_client.api_client)
    assert policy.mode == "tokenreview", "in-cluster default is TokenReview"
    yield from serve(kube_client, policy)


def test_unauthenticated_invoke_is_refused(reviewed: str, fake_kube: FakeKubeServer) -> None:
    code, body = call(reviewed + "/invoke")
    assert code == 401 and b"bearer token is required" in body
    code, _ = call(reviewed + "/invoke", token="forged")
    assert code == 401
    code, body = call(reviewed + "/invoke", token="viewer-token")
    assert code == 403 and b'user \\"bob\\" may not post /invoke' in body
    assert fake_kube.requests_for("PATCH") == [], "no cycle ran"


def test_authorized_invoke_runs_a_cycle(reviewed: str, fake_kube: FakeKubeServer) -> None:
    code, body = call(reviewed + "/invoke", token="ops-token")
    assert code == 200, body
    assert json.loads(body)["outcome"] in ("ok", "partial")
    (review,) = [r for r in fake_kube.requests_for("POST", "subjectaccessreviews")]
    assert review.body["spec"]["nonResourceAttributes"] == {"path": "/invoke", "verb": "post"}
    assert set(review.body["spec"]["groups"]) >= {"ops", "system:authenticated"}
    # The decision is cached: a second call does not review again.
    assert call(reviewed + "/invoke", token="ops-token")[0] == 200
    assert len(fake_kube.requests_for("POST", "tokenreviews")) == 1


def test_metrics_behind_the_same_check(reviewed: str) -> None:
    assert call(reviewed + "/metrics", "GET")[0] == 401
    assert call(reviewed + "/metrics", "GET", token="ops-token")[0] == 403
    code, body = call(reviewed + "/metrics", "GET", token="viewer-token")
    assert code == 200 and b"# HELP" in body
    # the dashboard shows what /metrics does: the same check
    assert call(reviewed + "/ui/api/cycles", "GET")[0] == 401
    assert call(reviewed + "/ui/", "GET", token="ops-token")[0] == 403
    code, body = call(reviewed + "/ui/api/cycles", "GET", token="viewer-token")
    assert code == 200 and b'"cycles"' in body
    assert call(reviewed + "/healthz", "GET")[0] == 200, "probes stay open"
    assert call(reviewed + "/readyz", "GET")[0] == 200


def test_review_failure_denies_and_is_not_cached(fake_kube: FakeKubeServer,
                                                  kube_client: Any) -> None:
    fake_kube.add_user("ops-token", "alice")
    fake_kube.grant("alice", "/invoke", "post")
    fake_kube.forbid("tokenreviews")  # the controller lacks system:auth-delegator
    policy = build_policy(mode="tokenreview", in_cluster=True, token_file=None, invoke=True,
                          invoke_per_minute=600, metrics_auth=False,
                          api_client=kube_client.api_client)
    for url in serve(kube_client, policy):
        assert call(url + "/invoke", token="ops-token")[0] == 503
        fake_kube._forbidden.clear()
        assert call(url + "/invoke", token="ops-token")[0] == 200
        assert call(url + "/metrics", "GET")[0] == 200, "open unless --metrics-auth"


def test_token_file_rate_limit_and_off_switch(tmp_path: Path, kube_client: Any) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n", encoding="utf-8")
    policy = build_policy(mode="auto", in_cluster=True, token_file=str(token), invoke=True,
                          invoke_per_minute=1, metrics_auth=False, api_client=None)
    assert policy.mode == "token"
    for url in serve(kube_client, policy):
        assert call(url + "/invoke")[0] == 401
        assert call(url + "/invoke", token="wrong")[0] == 401
        assert call(url + "/invoke", token="s3cret")[0] == 200
        code, _ = call(url + "/invoke", token="s3cret")
        assert code == 429, "1 per minute"
        token.write_text("rotated", encoding="utf-8")
        assert call(url + "/invoke", token="s3cret")[0] == 401, "a rotated Secret applies"
        assert call(url + "/invoke", "PUT")[0] == 405
    off = build_policy(mode="none", in_cluster=False, token_file=None, invoke=False,
                       invoke_per_minute=6, metrics_auth=False)
    for url in serve(kube_client, off):
        code, body = call(url + "/invoke")
        assert code == 403 and b"disabled" in body


def test_policy_flag_errors() -> None:
    with pytest.raises(ValueError, match="--http-token-file"):
        build_policy(mode="token", in_cluster=True, token_file=None, invoke=True,
                     invoke_per_minute=6, metrics_auth=False)
    with pytest.raises(ValueError, match="--metrics-auth needs"):
        build_policy(mode="none", in_cluster=False, token_file=None, invoke=True,
                     invoke_per_minute=6, metrics_auth=True)
    assert build_policy(mode="auto", in_cluster=False, token_file=None, invoke=True,
                        invoke_per_minute=6, metrics_auth=False).mode == "none"


def test_rate_limiter_is_a_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(60, burst=2, clock=lambda: now[0])
    assert [limiter.acquire() for _ in range(3)][:2] == [0.0, 0.0]
    now[0] = 0.5
    assert limiter.acquire() == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.acquire() == 0.0
