"""Read the load of one inference server from Prometheus.

This is the only module that imports the Prometheus client. Everything the
collector needs goes through :class:`LoadSource`, so tests and dry runs can pass
a fake instead.

Failures of Prometheus or of the data (unreachable, timeout, HTTP 5xx, malformed
JSON, absent series, NaN, stale samples) never raise from
:meth:`PrometheusLoadSource.read_load`: they give a reading whose status is
``unknown`` and whose reason says why, so the controller can keep the current
state for that server and log the cause.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from string import Template
from typing import Any, Protocol

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from controlloop.cluster.prom_grouped import (  # re-exported
    GroupedQueries,
    GroupedQueryError,
    LoadRequest,
    by_pod,
    promql_string,
    regex_escape,
)
from controlloop.loop.state import LoadStatus

log = logging.getLogger(__name__)


_SEL = 'namespace="$namespace",pod=~"$pods"'
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_DURATION_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PLACEHOLDERS = frozenset({"namespace", "pods", "window", "model"})
_OPTIONAL = ("running_by_pod", "kv_cache_usage")  # read after the load, never fail it
_METRIC_NAME = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def _ratio(num: str, den: str, scale: str = "") -> str:
    return f"{scale}sum(rate({num}{{{_SEL}}}[$window])) / sum(rate({den}{{{_SEL}}}[$window]))"


@dataclass(frozen=True)
class QueryTemplates:
    """PromQL templates, one per quantity; each must return a single sample.

    Templates use :class:`string.Template` placeholders, all substituted already
    escaped for a double-quoted PromQL string:

    ``$namespace``
        The Deployment's namespace (use with ``=``).
    ``$pods``
        Regex alternation of the Deployment's running pod names (use with ``=~``).
    ``$window``
        The rate window, a Prometheus duration such as ``1m``.
    ``$model``
        Regex matching the served model name, ``.*`` when not given (use with ``=~``).

    The arrival rate counts *completed* requests (``vllm:request_success_total``):
    vLLM records almost every per-request metric at completion, and in steady
    state completions equal arrivals. Under overload arrivals exceed completions;
    the ``waiting`` gauge shows that backlog.

    Names assume the exporter keeps ``:``. prometheus_client's OpenMetrics
    output escapes it to ``_`` unless the scraper negotiates UTF-8 names (a
    Prometheus 2.x scrape does not), giving ``vllm_request_success_total``;
    override the templates in that case.

    ``freshness`` is special: it returns one series per pod whose value is the
    timestamp of that pod's newest sample; it drives the staleness check.
    ``running_by_pod`` (one series per pod: running requests) orders the pods of a
    scale-down, least loaded first; ``kv_cache_usage`` (0..1, the fullest pod) feeds the
    surge check. Both are optional: no series, or a failed query, leaves them unknown.
    """

    arrival_rpm: str = f"sum(rate(vllm:request_success_total{{{_SEL}}}[$window])) * 60"
    avg_in_tokens: str = _ratio("vllm:prompt_tokens_total", "vllm:request_success_total")
    avg_out_tokens: str = _ratio("vllm:generation_tokens_total", "vllm:request_success_total")
    ttft_ms: str = _ratio(
        "vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count", "1000 * "
    )
    itl_ms: str = _ratio(
        "vllm:time_per_output_token_seconds_sum",
        "vllm:time_per_output_token_seconds_count",
        "1000 * ",
    )
    running: str = f"sum(vllm:num_requests_running{{{_SEL}}})"
    waiting: str = f"sum(vllm:num_requests_waiting{{{_SEL}}})"
    freshness: str = f"max by (pod) (timestamp(vllm:request_success_total{{{_SEL}}}))"
    running_by_pod: str = f"max by (pod) (vllm:num_requests_running{{{_SEL}}})"
    # vLLM V0 exports gpu_cache_usage_perc, V1 kv_cache_usage_perc (both 0..1)
    kv_cache_usage: str = (
        f"max(vllm:kv_cache_usage_perc{{{_SEL}}} or vllm:gpu_cache_usage_perc{{{_SEL}}})"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            text = getattr(self, f.name)
            tpl = Template(text)
            if not tpl.is_valid():
                raise ValueError(f"prometheus.queries.{f.name}: invalid placeholder in {text!r}")
            unknown = set(tpl.get_identifiers()) - _PLACEHOLDERS
            if unknown:
                raise ValueError(
                    f"prometheus.queries.{f.name}: unknown placeholder(s) "
                    f"{', '.join('$' + u for u in sorted(unknown))}; "
                    f"allowed: {', '.join('$' + p for p in sorted(_PLACEHOLDERS))}"
                )

    def pod_independent(self) -> bool:
        """True when the load (arrivals, tokens, freshness) is read without pod names,
        e.g. from a gateway: then it is known even with no pod running."""
        return all(
            "$pods" not in getattr(self, name)
            for name in ("arrival_rpm", "avg_in_tokens", "avg_out_tokens", "freshness")
        )

    def render(
        self, *, namespace: str, pods: Sequence[str], window: str, model: str | None
    ) -> dict[str, str]:
        """Return ``{quantity name: PromQL}`` with every placeholder substituted."""
        values = {
            "namespace": promql_string(namespace),
            "pods": promql_string(pods_regex(pods)),
            "window": window,
            "model": promql_string(regex_escape(model)) if model else ".*",
        }
        return {f.name: Template(getattr(self, f.name)).substitute(values) for f in fields(self)}


def pods_regex(pods: Sequence[str]) -> str:
    """Regex (RE2, fully anchored by Prometheus) matching exactly these pod names."""
    return "|".join(regex_escape(p) for p in sorted(pods))


def duration_seconds(duration: str) -> float:
    """Seconds in a Prometheus duration such as ``1m30s``; ``ValueError`` if malformed."""
    if not _DURATION.match(duration):
        raise ValueError(f"must be a Prometheus duration like '1m' or '90s', got {duration!r}")
    return sum(int(n) * _DURATION_S[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


@dataclass(frozen=True)
class PrometheusSettings:
    """How to reach Prometheus and how to read the load.

    Attributes
    ----------
    url
        Base URL of the Prometheus HTTP API, e.g. ``http://prometheus:9090``.
    bearer_token_file
        File holding a bearer token, re-read on every request so rotated
        (projected service-account) tokens keep working. ``None``: no auth.
    ca_file
        PEM bundle to verify the server certificate; ``None``: system CAs.
    insecure
        Skip TLS certificate verification (tests only).
    timeout_s
        Per-request timeout, seconds.
    retries
        Retries on connection errors and HTTP 502/503/504 (not on read
        timeouts: a slow Prometheus only gets slower).
    window
        Rate window, Prometheus duration (``1m``). Longer smooths, shorter reacts.
    staleness_s
        A pod whose newest sample is older than this many seconds makes the
        reading ``unknown``. Tied to the scrape interval, not the window: the
        default 60 s is two missed scrapes at a 30 s interval.
    queries
        PromQL templates, see :class:`QueryTemplates`.
    grouped_queries
        Templates that read all pods at once (:class:`GroupedQueries`); ``None``: the
        defaults when ``queries`` are the defaults, else one query per server.
    """

    url: str = "http://localhost:9090"
    bearer_token_file: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    timeout_s: float = 5.0
    retries: int = 1
    window: str = "1m"
    staleness_s: float = 60.0
    queries: QueryTemplates = field(default_factory=QueryTemplates)
    grouped_queries: GroupedQueries | None = None

    def grouped(self) -> GroupedQueries | None:
        """The grouped templates a cycle reads with, or None: custom per-server templates
        without grouped ones keep the per-server path (their semantics are unknown)."""
        if self.grouped_queries is not None:
            return self.grouped_queries
        return GroupedQueries() if self.queries == QueryTemplates() else None

    def __post_init__(self) -> None:
        try:
            duration_seconds(self.window)
        except ValueError as e:
            raise ValueError(f"prometheus.window: {e}") from None
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"prometheus.url: must be an http(s) URL, got {self.url!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"prometheus.timeout_s: must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"prometheus.retries: must be >= 0, got {self.retries}")
        if not self.staleness_s > 0:
            raise ValueError(f"prometheus.staleness_s: must be > 0, got {self.staleness_s}")
        for name in ("bearer_token_file", "ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"prometheus.{name}: no such file: {path}")

    def describe(self) -> str:
        """One line for the start-up log (no secrets: only the token file path)."""
        auth = f"token-file={self.bearer_token_file}" if self.bearer_token_file else "no-auth"
        tls = "insecure" if self.insecure else f"ca={self.ca_file or 'system'}"
        return (
            f"prometheus url={self.url} {auth} {tls} timeout={self.timeout_s}s "
            f"retries={self.retries} window={self.window} staleness={self.staleness_s}s"
        )


@dataclass(frozen=True)
class LoadReading:
    """Load of one server over the rate window.

    ``status`` is ``ok`` (all load figures known), ``idle`` (counters present,
    nothing completed in the window and nothing in flight: rate 0, token
    averages may be ``None``) or ``unknown`` (see ``reason``). Units: requests
    per minute, tokens per request, milliseconds, request counts.
    ``sample_age_s`` is the age of the stalest pod's newest sample.
    ``queries`` holds the PromQL that was run, for the cycle log.
    """

    status: LoadStatus
    reason: str
    arrival_rate_rpm: float | None = None
    avg_in_tokens: float | None = None
    avg_out_tokens: float | None = None
    itl_ms: float | None = None
    ttft_ms: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None  # 0..1, the fullest pod
    pod_running: dict[str, float] = field(default_factory=dict)  # running requests per pod
    sample_age_s: float | None = None
    pods_reporting: int | None = None
    queries: tuple[tuple[str, str], ...] = ()

    @property
    def known(self) -> bool:
        return self.status != "unknown"


class LoadSource(Protocol):
    def read_load(
        self, *, namespace: str, pods: Sequence[str], model: str | None = None
    ) -> LoadReading: ...


class BatchLoadSource(LoadSource, Protocol):
    """A source that reads many servers in a fixed number of queries."""

    def read_loads(self, requests: Sequence[LoadRequest]) -> list[LoadReading]: ...


def read_all(source: LoadSource, requests: Sequence[LoadRequest]) -> list[LoadReading]:
    """Readings for ``requests`` in order: batched when the source can, else one by one."""
    batch = getattr(source, "read_loads", None)
    if batch is not None:
        return list(batch(requests))
    return [source.read_load(namespace=r.namespace, pods=r.pods, model=r.model) for r in requests]


class _QueryFailed(Exception):
    """A query could not be answered; the message is the reading's reason."""


class _BearerTokenFile(requests.auth.AuthBase):
    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        try:
            token = self._path.read_text().strip()
        except OSError as e:
            raise _QueryFailed(f"cannot read bearer token file {self._path}: {e}") from e
        r.headers["Authorization"] = f"Bearer {token}"
        return r


def _check_api_response(r: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Session hook: turn every bad API answer into one ``_QueryFailed``.

    The client only checks the HTTP status and then indexes into the JSON, so an
    error payload or garbage body would surface as a bare KeyError/ValueError.
    """
    if "/api/v1/" not in r.url:
        return
    try:
        body = r.json()
    except ValueError:
        snippet = r.text[:80].replace("\n", " ")
        if r.status_code != 200:
            raise _QueryFailed(f"prometheus HTTP {r.status_code}: {snippet!r}") from None
        raise _QueryFailed(f"malformed prometheus response (not JSON): {snippet!r}") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        err = body.get("error", "no error message") if isinstance(body, dict) else body
        etype = body.get("errorType", "error") if isinstance(body, dict) else "error"
        raise _QueryFailed(f"prometheus HTTP {r.status_code} {etype}: {err}")
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        raise _QueryFailed("malformed prometheus response: no data.result list")
    # The client decodes the body again (``response.json()``): hand it this decoding
    # instead, which halves the CPU and the peak memory of a big fleet's grouped query.
    r.json = lambda **_: body  # type: ignore[method-assign]


def _build_client(
    settings: PrometheusSettings, session: requests.Session | None
) -> PrometheusConnect:
    s = session or requests.Session()
    s.verify = False if settings.insecure else (settings.ca_file or True)
    s.hooks["response"].append(_check_api_response)
    retry = Retry(
        total=settings.retries,
        read=0,
        backoff_factor=0.2,
        status_forcelist=(502, 503, 504),
        allowed_methods=("GET", "POST"),
        raise_on_status=False,  # hand the last 5xx to the hook, which names it
    )
    auth = _BearerTokenFile(settings.bearer_token_file) if settings.bearer_token_file else None
    return PrometheusConnect(
        url=settings.url.rstrip("/"), session=s, retry=retry, auth=auth, timeout=None
    )


def _sample(result: list[Any]) -> float | None:
    """The single value of an instant-query result, ``None`` if it is empty."""
    if not result:
        return None
    if isinstance(result[0], int | float):  # a scalar: [timestamp, "value"]
        return float(result[1])
    if len(result) != 1:
        raise _QueryFailed(f"query returned {len(result)} series, expected 1 (aggregate it)")
    return float(result[0]["value"][1])


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _where(namespace: str, pods: Sequence[str]) -> str:
    shown = sorted(pods)[:3]
    more = f",+{len(pods) - 3} more" if len(pods) > 3 else ""
    return f"{namespace}/{{{','.join(shown)}{more}}}"


def _metric_of(promql: str) -> str:
    m = _METRIC_NAME.search(promql)
    return m.group(1) if m else promql


class PrometheusLoadSource:
    """:class:`LoadSource` backed by Prometheus instant queries.

    All queries of one reading are evaluated at the same instant ``clock()``.
    Staleness: rates only need two samples inside the window, so a pod whose
    scrapes stopped keeps a rate until the window slides past; the
    ``freshness`` query (``timestamp()`` of each pod's newest sample) catches
    that, and remote-write or federation lag, against ``staleness_s``.
    """

    def __init__(
        self,
        settings: PrometheusSettings,
        *,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._client = _build_client(settings, session)
        if settings.insecure:
            log.warning("prometheus TLS certificate verification is disabled (insecure)")

    def close(self) -> None:
        self._client.close()

    def check(self) -> tuple[bool, str]:
        """Readiness: can we run a trivial query? Returns ``(ok, message)``."""
        try:
            self._query("vector(1)", self._clock())
        except _QueryFailed as e:
            return False, str(e)
        return True, f"prometheus reachable at {self.settings.url}"

    def read_load(
        self, *, namespace: str, pods: Sequence[str], model: str | None = None
    ) -> LoadReading:
        """Read the load of the server whose running pods are ``pods``; never raises
        for Prometheus or data problems (they give status ``unknown``)."""
        st = self.settings
        rendered = st.queries.render(namespace=namespace, pods=pods, window=st.window, model=model)
        queries = tuple(rendered.items())
        if not pods and not st.queries.pod_independent():
            return LoadReading("unknown", f"no running pods in {namespace}", queries=queries)
        now = self._clock()
        optional = {name: rendered.pop(name) for name in _OPTIONAL}
        try:
            stamps = [float(s["value"][1]) for s in self._query(rendered.pop("freshness"), now)]
            values = {name: _sample(self._query(q, now)) for name, q in rendered.items()}
        except _QueryFailed as e:
            return LoadReading("unknown", str(e), queries=queries)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            return LoadReading("unknown", f"malformed prometheus response: {e!r}", queries=queries)
        where = _where(namespace, pods)
        reading = self._classify(values, stamps, now, where=where, queries=queries)
        if reading.known:
            reading = replace(reading, **self._optional(optional, now))
        return reading

    def _optional(self, rendered: dict[str, str], now: float) -> dict[str, Any]:
        """Per-pod running requests and KV-cache usage; unknown (not an error) when absent."""
        out: dict[str, Any] = {}
        try:
            per_pod = self._query(rendered["running_by_pod"], now)
            out["pod_running"] = {
                str(s["metric"]["pod"]): v for s in per_pod
                if "pod" in (s.get("metric") or {})
                and (v := _finite(float(s["value"][1]))) is not None
            }
        except (_QueryFailed, ValueError, KeyError, TypeError, IndexError) as e:
            log.debug("running_by_pod unavailable: %s", e)
        try:
            usage = _finite(_sample(self._query(rendered["kv_cache_usage"], now)))
            out["kv_cache_usage"] = usage if usage is None else min(usage, 1.0)
        except (_QueryFailed, ValueError, KeyError, TypeError, IndexError) as e:
            log.debug("kv_cache_usage unavailable: %s", e)
        return out

    def read_loads(self, requests: Sequence[LoadRequest]) -> list[LoadReading]:
        """Readings of many servers; with grouped templates one query per quantity for
        all of them (see :class:`GroupedQueries`), else :meth:`read_load` per server.

        A server none of whose pods appear in a result gets what the per-server query
        would give for it: no series (``unknown`` for arrivals, stamps), None otherwise.
        """
        grouped = self.settings.grouped()
        if grouped is None or not requests:
            return [self.read_load(namespace=r.namespace, pods=r.pods, model=r.model)
                    for r in requests]
        st = self.settings
        with_pods = [r for r in requests if r.pods]
        rendered = grouped.render(namespaces={r.namespace for r in with_pods}, window=st.window)
        queries = tuple(rendered.items())
        series: dict[str, dict[tuple[str, str], float]] = {}
        failure = ""
        now = self._clock()
        if with_pods:
            try:
                for name, promql in rendered.items():
                    series[name] = by_pod(self._query(promql, now), name)
            except (_QueryFailed, GroupedQueryError) as e:
                failure = str(e)
            except (ValueError, KeyError, TypeError, IndexError) as e:
                failure = f"malformed prometheus response: {e!r}"
        out: list[LoadReading] = []
        for r in requests:
            if not r.pods:  # the per-server answer: defaults need pods
                out.append(self.read_load(namespace=r.namespace, pods=r.pods, model=r.model))
                continue
            if failure:
                out.append(LoadReading("unknown", failure, queries=queries))
                continue
            keys = [(r.namespace, pod) for pod in r.pods]

            def total(name: str, keys: list[tuple[str, str]] = keys) -> float | None:
                found = [series[name][k] for k in keys if k in series[name]]
                return math.fsum(found) if found else None

            def ratio(num: str, den: str, scale: float = 1.0) -> float | None:
                a, b = total(num), total(den)
                if a is None or b is None:
                    return None
                return scale * a / b if b != 0 else math.nan

            req = total("requests")
            values = {
                "arrival_rpm": None if req is None else req * 60,
                "avg_in_tokens": ratio("prompt_tokens", "requests"),
                "avg_out_tokens": ratio("generation_tokens", "requests"),
                "ttft_ms": ratio("ttft_sum", "ttft_count", 1000.0),
                "itl_ms": ratio("itl_sum", "itl_count", 1000.0),
                "running": total("running"),
                "waiting": total("waiting"),
            }
            stamps = [series["freshness"][k] for k in keys if k in series["freshness"]]
            shown = {"arrival_rpm": rendered["requests"], "freshness": rendered["freshness"],
                     "avg_in_tokens": rendered["prompt_tokens"],
                     "avg_out_tokens": rendered["generation_tokens"]}
            reading = self._classify(values, stamps, now, where=_where(r.namespace, r.pods),
                                     queries=tuple(shown.items()) + queries)
            if reading.known:  # the running gauge is already by pod: the scale-down order
                per_pod = {pod: v for ns, pod in keys
                           if (v := _finite(series["running"].get((ns, pod)))) is not None}
                reading = replace(reading, pod_running=per_pod)
            out.append(reading)
        return out

    def _query(self, promql: str, now: float) -> list[Any]:
        try:
            result: list[Any] = self._client.custom_query(
                promql, params={"time": f"{now:.3f}"}, timeout=self.settings.timeout_s
            )
            return result
        except _QueryFailed:
            raise
        except requests.Timeout as e:
            raise _QueryFailed(
                f"prometheus timed out after {self.settings.timeout_s:g}s: {e}"
            ) from e
        except requests.ConnectionError as e:
            if _timed_out(e):  # urllib3's retries turn a read timeout into a ConnectionError
                raise _QueryFailed(
                    f"prometheus timed out after {self.settings.timeout_s:g}s: {e}"
                ) from e
            raise _QueryFailed(f"prometheus unreachable at {self.settings.url}: {e}") from e
        except (requests.RequestException, PrometheusApiClientException) as e:
            raise _QueryFailed(f"prometheus request failed: {e}") from e
        except (ValueError, KeyError, TypeError) as e:
            raise _QueryFailed(f"malformed prometheus response: {e!r}") from e

    def _classify(
        self,
        v: Mapping[str, float | None],
        stamps: list[float],
        now: float,
        *,
        where: str,
        queries: tuple[tuple[str, str], ...],
    ) -> LoadReading:
        q = dict(queries)
        rate = v["arrival_rpm"]

        def unknown(reason: str, **kw: Any) -> LoadReading:
            return LoadReading("unknown", reason, queries=queries, **kw)

        if rate is None:
            return unknown(f"no series for {_metric_of(q['arrival_rpm'])} in {where}")
        if not stamps:
            return unknown(
                f"stale: no current sample of {_metric_of(q['freshness'])} in {where}"
                " (targets down?)"
            )
        age = now - min(stamps)
        if age > self.settings.staleness_s:
            return unknown(
                f"stale: newest sample {age:.0f}s old "
                f"(bound {self.settings.staleness_s:g}s) in {where}",
                sample_age_s=age,
            )
        if not math.isfinite(rate) or rate < 0:
            return unknown(f"arrival rate is {rate} in {where}", sample_age_s=age)
        common: dict[str, Any] = {
            "arrival_rate_rpm": rate,
            "avg_in_tokens": _finite(v["avg_in_tokens"]),
            "avg_out_tokens": _finite(v["avg_out_tokens"]),
            "itl_ms": _finite(v["itl_ms"]),
            "ttft_ms": _finite(v["ttft_ms"]),
            "running": _finite(v["running"]),
            "waiting": _finite(v["waiting"]),
            "sample_age_s": age,
            "pods_reporting": len(stamps),
            "queries": queries,
        }
        if rate == 0:
            in_flight = (common["running"] or 0) + (common["waiting"] or 0)
            if in_flight > 0:
                # Nothing completed, yet requests are in flight: the completion
                # counter cannot tell the arrival rate (long or stuck requests).
                return unknown(
                    f"no request completed in {self.settings.window} while "
                    f"{in_flight:g} in flight in {where}",
                    sample_age_s=age,
                )
            return LoadReading("idle", f"idle: no requests in {self.settings.window}", **common)
        for name in ("avg_in_tokens", "avg_out_tokens"):
            if common[name] is None:
                return unknown(
                    f"{name} unavailable (no series or NaN for {_metric_of(q[name])}) in {where}",
                    sample_age_s=age,
                )
        return LoadReading("ok", f"ok: {len(stamps)} pod(s) reporting", **common)


def _timed_out(error: requests.ConnectionError) -> bool:
    import urllib3.exceptions

    reason = getattr(error.args[0], "reason", None) if error.args else None
    # NewConnectionError subclasses ConnectTimeoutError in urllib3: refused is not slow.
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )
