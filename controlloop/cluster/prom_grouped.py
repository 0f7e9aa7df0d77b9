"""Grouped PromQL: one query per quantity per cycle for every managed pod, joined to
servers by their ``namespace`` and ``pod`` labels (see :class:`GroupedQueries`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from string import Template
from typing import Any


class GroupedQueryError(Exception):
    """A grouped query's result cannot be joined to pods; the message says why."""


def promql_string(value: str) -> str:
    """Escape ``value`` for the inside of a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def regex_escape(value: str) -> str:
    # RE2 (Prometheus) accepts a backslash before any punctuation; re.escape only
    # adds backslashes before punctuation, so its output is valid RE2.
    return re.escape(value)


_GSEL = 'namespace=~"$namespaces"'
_GROUPED_PLACEHOLDERS = frozenset({"namespaces", "window"})
GROUP_LABELS = ("namespace", "pod")


def _per_pod_rate(metric: str) -> str:
    return f"sum by (namespace, pod) (rate({metric}{{{_GSEL}}}[$window]))"


@dataclass(frozen=True)
class GroupedQueries:
    """PromQL templates that read one series per pod for every managed pod at once.

    Used instead of :class:`QueryTemplates` (one query per quantity per *server*) when
    those are the defaults, or when given (``prometheus.groupedQueries``). A cycle then
    runs one query per field below, whatever the number of servers, and the collector
    joins the series to Deployments by their ``namespace`` and ``pod`` labels.

    A template states its grouping with ``by (namespace, pod)`` (``max by (namespace,
    pod)`` for ``freshness``): every series of its result must carry both labels. Its
    placeholders are ``$namespaces`` (regex alternation of the managed Deployments'
    namespaces, use with ``=~``) and ``$window``; not ``$pods`` or ``$model``.

    Per server, with ``P`` its running pods: arrivals = 60 * sum over ``P`` of
    ``requests``; average input tokens = sum of ``prompt_tokens`` / sum of
    ``requests``; output likewise with ``generation_tokens``; TTFT = 1000 * sum of
    ``ttft_sum`` / sum of ``ttft_count``; ITL likewise; ``running``/``waiting`` summed;
    ``freshness``: each pod's newest sample time. The same figures as the per-server
    templates give (a sum of per-pod sums is the sum over the pods).
    """

    requests: str = _per_pod_rate("vllm:request_success_total")
    prompt_tokens: str = _per_pod_rate("vllm:prompt_tokens_total")
    generation_tokens: str = _per_pod_rate("vllm:generation_tokens_total")
    ttft_sum: str = _per_pod_rate("vllm:time_to_first_token_seconds_sum")
    ttft_count: str = _per_pod_rate("vllm:time_to_first_token_seconds_count")
    itl_sum: str = _per_pod_rate("vllm:time_per_output_token_seconds_sum")
    itl_count: str = _per_pod_rate("vllm:time_per_output_token_seconds_count")
    running: str = f"sum by (namespace, pod) (vllm:num_requests_running{{{_GSEL}}})"
    waiting: str = f"sum by (namespace, pod) (vllm:num_requests_waiting{{{_GSEL}}})"
    freshness: str = (
        f"max by (namespace, pod) (timestamp(vllm:request_success_total{{{_GSEL}}}))"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            text = getattr(self, f.name)
            tpl = Template(text)
            where = f"prometheus.groupedQueries.{f.name}"
            if not tpl.is_valid():
                raise ValueError(f"{where}: invalid placeholder in {text!r}")
            unknown = set(tpl.get_identifiers()) - _GROUPED_PLACEHOLDERS
            if unknown:
                raise ValueError(
                    f"{where}: unknown placeholder(s) "
                    f"{', '.join('$' + u for u in sorted(unknown))}; allowed: $namespaces, "
                    "$window (a grouped query reads all pods; it must not name them)"
                )

    def render(self, *, namespaces: Iterable[str], window: str) -> dict[str, str]:
        values = {
            "namespaces": promql_string("|".join(regex_escape(n) for n in sorted(namespaces))),
            "window": window,
        }
        return {f.name: Template(getattr(self, f.name)).substitute(values) for f in fields(self)}


@dataclass(frozen=True)
class LoadRequest:
    """One server to read: its namespace, running pods and model."""

    namespace: str
    pods: tuple[str, ...]
    model: str | None = None


def by_pod(result: list[Any], name: str) -> dict[tuple[str, str], float]:
    """``{(namespace, pod): value}`` of a grouped query's vector result."""
    out: dict[tuple[str, str], float] = {}
    for item in result:
        metric = item.get("metric") or {}
        ns, pod = metric.get("namespace"), metric.get("pod")
        if ns is None or pod is None:
            raise GroupedQueryError(
                f"grouped query {name} returned a series without namespace/pod labels "
                f"({metric}); state the grouping with 'by (namespace, pod)'"
            )
        key = (str(ns), str(pod))
        if key in out:
            raise GroupedQueryError(
                f"grouped query {name} returned two series for pod {ns}/{pod}; "
                "aggregate them 'by (namespace, pod)'"
            )
        out[key] = float(item["value"][1])
    return out
