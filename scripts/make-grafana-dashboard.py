#!/usr/bin/env python3
"""Writes manifests/components/monitoring/controlloop-dashboard.json (Grafana).

The dashboard is generated so that panels stay uniform; edit this file and re-run
``python scripts/make-grafana-dashboard.py``. tests/unit/test_grafana_dashboard.py checks
that the committed JSON is what this script writes and that every series it queries
is in the controller's /metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = (
    Path(__file__).resolve().parents[1]
    / "manifests/components/monitoring/controlloop-dashboard.json"
)
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", server=~"$server"'

def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


def panel(
    kind: str, title: str, targets: list[dict[str, Any]], x: int, y: int, w: int, h: int,
    *, unit: str = "", description: str = "", **extra: Any,
) -> dict[str, Any]:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p: dict[str, Any] = {
        "type": kind, "title": title, "description": description,
        "datasource": DS, "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
        "options": {},
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi"}}
    p.update(extra)
    return p


def row(title: str, y: int) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": f"var-{name}"}, "definition": query,
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": "All", "value": "$__all"}, "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    y = 0
    panels: list[dict[str, Any]] = [row("Fleet", y)]
    y += 1
    stat = {"options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}}
    panels += [
        panel(
            "stat",
            "Cost of the desired allocation",
            [target("max(controlloop_total_cost_cents_per_hour) / 100")],
            0,
            y,
            4,
            4,
            unit="currencyUSD",
            description="controlloop_total_cost_cents_per_hour, in dollars per hour",
            **stat,
        ),
        panel(
            "stat",
            "Managed servers",
            [target("count(max by (namespace, deployment) (controlloop_server_current_replicas))")],
            4,
            y,
            4,
            4,
            **stat,
        ),
        panel(
            "stat",
            "Servers meeting their ITL SLO",
            [
                target(
                    "count(max by (server) (controlloop_server_observed_itl_ms) "
                    "<= max by (server) (controlloop_server_slo_itl_ms))"
                    " / count(max by (server) (controlloop_server_slo_itl_ms))"
                )
            ],
            8,
            y,
            4,
            4,
            unit="percentunit",
            description="observed average ITL within the "
            "service class target, share of servers with a target",
            **stat,
        ),
        panel(
            "stat",
            "Servers held (last 10 min)",
            [
                target(
                    'count(sum by (server) (increase(controlloop_decisions_total{verdict="held"}'
                    "[10m])) > 0) or vector(0)"
                )
            ],
            12,
            y,
            4,
            4,
            **stat,
        ),
        panel(
            "stat",
            "Seconds since the last cycle",
            [target("time() - max(controlloop_last_cycle_timestamp_seconds)")],
            16,
            y,
            4,
            4,
            unit="s",
            **stat,
        ),
        panel(
            "stat",
            "Leader / config valid",
            [
                target("max(controlloop_is_leader)", "leader"),
                target("min(controlloop_specs_valid)", "config valid"),
            ],
            20,
            y,
            4,
            4,
            **stat,
        ),
    ]
    y += 4
    panels += [
        panel(
            "timeseries",
            "Cost per server",
            [
                target(
                    f"sum by (server) (controlloop_server_cost_cents_per_hour{{{SEL}}}) / 100",
                    "{{server}}",
                )
            ],
            0,
            y,
            12,
            8,
            unit="currencyUSD",
            fieldConfig={
                "defaults": {
                    "unit": "currencyUSD",
                    "custom": {"stacking": {"mode": "normal"}, "fillOpacity": 30},
                },
                "overrides": [],
            },
        ),
        panel(
            "timeseries",
            "Replicas by accelerator",
            [
                target(
                    "sum by (accelerator) (controlloop_server_accelerator_info * on (server, "
                    "namespace, deployment) group_left controlloop_server_current_replicas)",
                    "{{accelerator}}",
                )
            ],
            12,
            y,
            12,
            8,
            description="spec.replicas of the managed servers, by the accelerator "
            "they are on (desired, else current)",
        ),
    ]
    y += 8
    panels.append(row("Servers", y))
    y += 1
    panels += [
        panel("table", "Last decision per server", [
            # decisions_total has no namespace/deployment labels (server, verdict, reason)
            target('sum by (server, verdict, reason) '
                   '(increase(controlloop_decisions_total{server=~"$server"}[$__range])) > 0',
                   instant=True)],
            0, y, 24, 7, description="decisions in the selected time range, by verdict and "
            "reason (held reasons: docs/operations.md)"),
    ]
    y += 7
    panels += [
        panel(
            "timeseries",
            "Load",
            [
                target(
                    f"max by (server) (controlloop_server_arrival_rate_rpm{{{SEL}}})", "{{server}}"
                )
            ],
            0,
            y,
            8,
            8,
            unit="reqpm",
        ),
        panel(
            "timeseries",
            "Replicas: desired vs current",
            [
                target(
                    f"max by (server) (controlloop_server_desired_replicas{{{SEL}}})",
                    "{{server}} desired",
                ),
                target(
                    f"max by (server) (controlloop_server_current_replicas{{{SEL}}})",
                    "{{server}} current",
                ),
            ],
            8,
            y,
            8,
            8,
        ),
        panel(
            "state-timeline",
            "Accelerator",
            [
                target(
                    f"max by (server, accelerator) (controlloop_server_accelerator_info{{{SEL}}})"
                    " > 0",
                    "{{server}} {{accelerator}}",
                )
            ],
            16,
            y,
            8,
            8,
        ),
    ]
    y += 8
    panels += [
        panel("timeseries", "ITL: predicted, observed, target", [
            target(f"max by (server) (controlloop_server_predicted_itl_ms{{{SEL}}})",
                   "{{server}} predicted"),
            target(f"max by (server) (controlloop_server_observed_itl_ms{{{SEL}}})",
                   "{{server}} observed"),
            target(f"max by (server) (controlloop_server_slo_itl_ms{{{SEL}}})",
                   "{{server}} target")],
            0, y, 12, 8, unit="ms"),
        panel("timeseries", "TTFT: predicted, observed, target", [
            target(f"max by (server) (controlloop_server_predicted_ttft_ms{{{SEL}}})",
                   "{{server}} predicted"),
            target(f"max by (server) (controlloop_server_observed_ttft_ms{{{SEL}}})",
                   "{{server}} observed"),
            target(f"max by (server) (controlloop_server_slo_ttft_ms{{{SEL}}})",
                   "{{server}} target")],
            12, y, 12, 8, unit="ms"),
    ]
    y += 8
    panels += [
        panel("timeseries", "Decisions by verdict", [
            target("sum by (verdict) (increase(controlloop_decisions_total{server=~\"$server\"}"
                   "[$__rate_interval]))", "{{verdict}}")],
            0, y, 8, 8),
        panel("timeseries", "Held, by reason", [
            target('sum by (reason) (increase(controlloop_decisions_total{verdict="held", '
                   'server=~"$server"}[$__rate_interval]))', "{{reason}}")],
            8, y, 8, 8),
        panel("timeseries", "Load known", [
            target(f"min by (server) (controlloop_server_load_known{{{SEL}}})", "{{server}}")],
            16, y, 8, 8, description="0: no usable metrics this cycle; the server is held"),
    ]
    y += 8
    panels.append(row("Controller health", y))
    y += 1
    panels += [
        panel(
            "timeseries",
            "Cycles by outcome",
            [
                target(
                    "sum by (outcome) (rate(controlloop_cycles_total[$__rate_interval])) * 60",
                    "{{outcome}}",
                )
            ],
            0,
            y,
            8,
            8,
            unit="cpm",
        ),
        panel(
            "timeseries",
            "Cycle duration",
            [
                target(
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(controlloop_cycle_duration_seconds_bucket[$__rate_interval])))",
                    "p50",
                ),
                target(
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(controlloop_cycle_duration_seconds_bucket[$__rate_interval])))",
                    "p95",
                ),
                target(
                    "sum(rate(controlloop_cycle_duration_seconds_sum[$__rate_interval])) / "
                    "sum(rate(controlloop_cycle_duration_seconds_count[$__rate_interval]))",
                    "mean",
                ),
            ],
            8,
            y,
            8,
            8,
            unit="s",
        ),
        panel(
            "timeseries",
            "Errors by kind",
            [
                target(
                    "sum by (kind) (increase(controlloop_errors_total[$__rate_interval]))",
                    "{{kind}}",
                ),
                target(
                    "sum(increase(controlloop_spec_reload_errors_total[$__rate_interval]))",
                    "invalid config edits",
                ),
            ],
            16,
            y,
            8,
            8,
        ),
    ]
    for i, p in enumerate(panels, 1):
        p["id"] = i
    return {
        "uid": "controlloop", "title": "controlloop: SLO-driven autoscaling",
        "description": "The controller's own /metrics (docs/metrics.md)",
        "tags": ["controlloop", "autoscaling", "vllm"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            variable("namespace", "Namespace",
                     "label_values(controlloop_server_current_replicas, namespace)"),
            variable("server", "Server",
                     'label_values(controlloop_server_current_replicas{namespace=~"$namespace"}, '
                     "server)"),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
