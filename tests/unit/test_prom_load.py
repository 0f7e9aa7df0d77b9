"""PrometheusLoadSource against a mocked HTTP API (``responses``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from controlloop.cluster.prom import (
    LoadReading,
    PrometheusLoadSource,
    PrometheusSettings,
    QueryTemplates,
    duration_seconds,
    pods_regex,
)

URL = "http://prom.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
NOW = 1_700_000_000.0
NS = "llm"
PODS = ("vllm-a-1", "vllm-a-2")

HEALTHY: dict[str, Any] = {
    "arrival_rpm": 120.0,
    "avg_in_tokens": 512.0,
    "avg_out_tokens": 128.0,
    "ttft_ms": 50.0,
    "itl_ms": 10.0,
    "running": 3.0,
    "waiting": 1.0,
    "freshness": {"vllm-a-1": NOW - 2, "vllm-a-2": NOW - 1},
}


def _vector(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):  # per-pod series
        return [{"metric": {"pod": p}, "value": [NOW, repr(v)]} for p, v in value.items()]
    text = "NaN" if isinstance(value, float) and math.isnan(value) else repr(value)
    return [{"metric": {}, "value": [NOW, text]}]


def _ok(result: Any, kind: str = "vector") -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": kind, "result": result}}


def serve(rsps: responses.RequestsMock, answers: dict[str, Any], pods: tuple[str, ...] = PODS):
    """Answer each rendered default query with ``answers[name]`` (``None``: empty vector)."""
    by_query = {
        q: name
        for name, q in QueryTemplates()
        .render(namespace=NS, pods=pods, window="1m", model=None)
        .items()
    }

    def callback(req: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        params = req.params  # type: ignore[attr-defined]
        assert params["time"] == f"{NOW:.3f}"
        name = by_query[params["query"]]
        return 200, {}, json.dumps(_ok(_vector(answers.get(name))))

    rsps.add_callback(responses.GET, QUERY_URL, callback=callback)


def source(**kw: Any) -> PrometheusLoadSource:
    return PrometheusLoadSource(PrometheusSettings(url=URL, **kw), clock=lambda: NOW)


def read(**kw: Any) -> LoadReading:
    return source(**kw).read_load(namespace=NS, pods=PODS)


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as r:
        yield r


def test_healthy_answer_gives_exact_values(rsps):
    serve(rsps, HEALTHY)
    r = read()
    assert r.status == "ok" and r.reason == "ok: 2 pod(s) reporting"
    assert (r.arrival_rate_rpm, r.avg_in_tokens, r.avg_out_tokens) == (120.0, 512.0, 128.0)
    assert (r.ttft_ms, r.itl_ms, r.running, r.waiting) == (50.0, 10.0, 3.0, 1.0)
    assert r.sample_age_s == pytest.approx(2.0) and r.pods_reporting == 2
    assert [name for name, _ in r.queries][0] == "arrival_rpm"
    assert len(rsps.calls) == 10
    assert r.pod_running == {} and r.kv_cache_usage is None  # optional: absent is unknown


def test_running_per_pod_and_kv_cache_usage_when_exported(rsps):
    serve(rsps, {**HEALTHY, "running_by_pod": {"vllm-a-1": 2.0, "vllm-a-2": 1.0},
                 "kv_cache_usage": 0.93})
    r = read()
    assert r.status == "ok" and r.pod_running == {"vllm-a-1": 2.0, "vllm-a-2": 1.0}
    assert r.kv_cache_usage == 0.93


def test_empty_vector_is_unknown_no_series(rsps):
    serve(rsps, {})
    r = read()
    assert r.status == "unknown"
    assert r.reason == "no series for vllm:request_success_total in llm/{vllm-a-1,vllm-a-2}"
    assert r.arrival_rate_rpm is None


def test_nan_rate_is_unknown(rsps):
    serve(rsps, {**HEALTHY, "arrival_rpm": math.nan})
    r = read()
    assert r.status == "unknown" and r.reason.startswith("arrival rate is nan")


def test_idle_server_has_zero_rate_and_unknown_tokens(rsps):
    nan = math.nan
    idle = {**HEALTHY, "arrival_rpm": 0.0, "avg_in_tokens": nan, "avg_out_tokens": nan}
    serve(rsps, {**idle, "ttft_ms": nan, "itl_ms": nan, "running": 0.0, "waiting": 0.0})
    r = read()
    assert r.status == "idle" and r.reason == "idle: no requests in 1m"
    assert r.arrival_rate_rpm == 0.0 and r.known
    assert (r.avg_in_tokens, r.avg_out_tokens, r.ttft_ms, r.itl_ms) == (None, None, None, None)


def test_zero_completions_with_requests_in_flight_is_unknown(rsps):
    serve(rsps, {**HEALTHY, "arrival_rpm": 0.0, "running": 4.0, "waiting": 2.0})
    r = read()
    assert r.status == "unknown"
    assert r.reason.startswith("no request completed in 1m while 6 in flight")


def test_missing_token_counter_with_traffic_is_unknown(rsps):
    serve(rsps, {**HEALTHY, "avg_in_tokens": None})
    r = read()
    assert r.status == "unknown"
    assert r.reason.startswith("avg_in_tokens unavailable (no series or NaN for vllm:prompt_tokens")


def test_optional_figures_may_be_missing_when_ok(rsps):
    serve(rsps, {**HEALTHY, "ttft_ms": None, "itl_ms": math.nan, "waiting": None})
    r = read()
    assert r.status == "ok" and (r.ttft_ms, r.itl_ms, r.waiting) == (None, None, None)


def test_stale_samples_are_unknown(rsps):
    serve(rsps, {**HEALTHY, "freshness": {"vllm-a-1": NOW - 300, "vllm-a-2": NOW - 1}})
    r = read()
    assert r.status == "unknown" and r.reason.startswith(
        "stale: newest sample 300s old (bound 60s)"
    )
    assert r.sample_age_s == pytest.approx(300)


def test_rate_without_current_sample_is_stale(rsps):
    serve(rsps, {**HEALTHY, "freshness": None})
    r = read()
    assert r.status == "unknown"
    assert r.reason.startswith("stale: no current sample of vllm:request_success_total")


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ("upstream connect error", 503, "prometheus HTTP 503: 'upstream connect error'"),
        (
            json.dumps({"status": "error", "errorType": "unavailable", "error": "shutting down"}),
            503,
            "prometheus HTTP 503 unavailable: shutting down",
        ),
        (
            json.dumps({"status": "error", "errorType": "execution", "error": "too many samples"}),
            422,
            "prometheus HTTP 422 execution: too many samples",
        ),
        (
            json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}),
            200,
            "prometheus HTTP 200 bad_data: parse error",
        ),
        ("{not json", 200, "malformed prometheus response (not JSON): '{not json'"),
        (json.dumps({"status": "success"}), 200, "malformed prometheus response: no data.result"),
    ],
)
def test_bad_answers_are_unknown_with_reason(rsps, body, status, expected):
    rsps.add(responses.GET, QUERY_URL, body=body, status=status)
    r = read()
    assert r.status == "unknown" and r.reason.startswith(expected)
    # The first failure stops the remaining queries; 5xx is retried once (retries=1).
    assert len(rsps.calls) == (2 if status == 503 else 1)


def test_retries_zero_does_not_retry(rsps):
    rsps.add(responses.GET, QUERY_URL, body="busy", status=503)
    assert read(retries=0).reason == "prometheus HTTP 503: 'busy'"
    assert len(rsps.calls) == 1


def test_garbage_sample_value_is_unknown(rsps):
    rsps.add(responses.GET, QUERY_URL, json=_ok([{"metric": {}, "value": [NOW, "abc"]}]))
    r = read()
    assert r.status == "unknown" and r.reason.startswith("malformed prometheus response")


def test_unaggregated_query_is_unknown(rsps):
    two = [{"metric": {"pod": p}, "value": [NOW, "1"]} for p in PODS]
    rsps.add(responses.GET, QUERY_URL, json=_ok(two))
    r = read()
    assert (
        r.status == "unknown" and r.reason == "query returned 2 series, expected 1 (aggregate it)"
    )


def test_scalar_results_are_accepted(rsps):
    rsps.add(
        responses.GET,
        QUERY_URL,
        match=[responses.matchers.query_param_matcher({"query": "x"}, strict_match=False)],
        json=_ok([NOW, "7"], kind="scalar"),
    )
    serve(rsps, HEALTHY)
    s = PrometheusSettings(url=URL, queries=QueryTemplates(running="x"))
    r = PrometheusLoadSource(s, clock=lambda: NOW).read_load(namespace=NS, pods=PODS)
    assert r.status == "ok" and r.running == 7.0


def test_connection_error_is_unreachable(rsps):
    rsps.add(responses.GET, QUERY_URL, body=requests.ConnectionError("connection refused"))
    r = read()
    assert r.status == "unknown"
    assert r.reason == f"prometheus unreachable at {URL}: connection refused"


def test_read_timeout_is_unknown(rsps):
    rsps.add(responses.GET, QUERY_URL, body=requests.ReadTimeout("read timed out"))
    r = read(timeout_s=2.5)
    assert r.status == "unknown" and r.reason == "prometheus timed out after 2.5s: read timed out"


def test_bearer_token_is_sent_and_reread(rsps, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    serve(rsps, HEALTHY)
    src = source(bearer_token_file=str(token))
    assert src.read_load(namespace=NS, pods=PODS).status == "ok"
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer s3cret"
    token.write_text("rotated")  # projected tokens rotate in place
    src.read_load(namespace=NS, pods=PODS)
    assert rsps.calls[-1].request.headers["Authorization"] == "Bearer rotated"
    token.unlink()
    r = src.read_load(namespace=NS, pods=PODS)
    assert r.status == "unknown" and r.reason.startswith("cannot read bearer token file")


def test_no_auth_header_without_token_file(rsps):
    serve(rsps, HEALTHY)
    read()
    assert "Authorization" not in rsps.calls[0].request.headers


def test_pods_are_escaped_for_regex_and_promql_string():
    assert pods_regex(["vllm-b.2", "vllm-a"]) == r"vllm\-a|vllm\-b\.2"
    q = QueryTemplates(running='sum(x{pod=~"$pods",ns="$namespace",m=~"$model"})')
    rendered = q.render(namespace='we"ird', pods=["a.b", "c+d"], window="1m", model="m.1")
    assert rendered["running"] == r'sum(x{pod=~"a\\.b|c\\+d",ns="we\"ird",m=~"m\\.1"})'
    assert 'm=~".*"' in q.render(namespace="n", pods=["a"], window="1m", model=None)["running"]


def test_no_pods_is_unknown_without_querying(rsps):
    r = source().read_load(namespace=NS, pods=[])
    assert r.status == "unknown" and r.reason == "no running pods in llm"
    assert len(rsps.calls) == 0


def test_check_reports_readiness(rsps):
    rsps.add(responses.GET, QUERY_URL, json=_ok([{"metric": {}, "value": [NOW, "1"]}]))
    assert source().check() == (True, f"prometheus reachable at {URL}")
    rsps.replace(responses.GET, QUERY_URL, body="down", status=503)
    ok, why = source().check()
    assert not ok and why == "prometheus HTTP 503: 'down'"


def test_insecure_and_ca_file_set_tls_verification(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    s1, s2 = requests.Session(), requests.Session()
    PrometheusLoadSource(PrometheusSettings(url=URL, insecure=True), session=s1)
    PrometheusLoadSource(PrometheusSettings(url=URL, ca_file=str(ca)), session=s2)
    assert s1.verify is False and s2.verify == str(ca)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"window": "1 minute"}, "prometheus.window: must be a Prometheus duration"),
        ({"url": "prom:9090"}, "prometheus.url: must be an http(s) URL"),
        ({"timeout_s": 0}, "prometheus.timeout_s: must be > 0, got 0"),
        ({"staleness_s": -1}, "prometheus.staleness_s: must be > 0"),
        ({"bearer_token_file": "/nonexistent"}, "prometheus.bearer_token_file: no such file"),
    ],
)
def test_settings_are_validated(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PrometheusSettings(**kw)


def test_templates_reject_unknown_placeholders():
    with pytest.raises(
        ValueError, match=r"prometheus.queries.waiting: unknown placeholder\(s\) \$ns"
    ):
        QueryTemplates(waiting='sum(x{namespace="$ns"})')


def test_durations():
    assert duration_seconds("1m30s") == 90 and duration_seconds("10s") == 10
    assert "staleness=60.0s" in PrometheusSettings().describe()


def test_each_answer_is_decoded_once(rsps, monkeypatch):
    """The response hook validates the decoded body and hands that decoding to the client,
    which would otherwise decode it again: at fleet scale, one grouped answer is tens of
    MB of JSON, decoded per query."""
    serve(rsps, HEALTHY)
    decoded: list[int] = []
    real = requests.models.complexjson.loads

    def counting(text: Any, **kw: Any) -> Any:
        decoded.append(len(text))
        return real(text, **kw)

    monkeypatch.setattr(requests.models.complexjson, "loads", counting)
    r = read()
    assert r.status == "ok" and r.arrival_rate_rpm == 120.0
    assert len(rsps.calls) == 10 and len(decoded) == 10
