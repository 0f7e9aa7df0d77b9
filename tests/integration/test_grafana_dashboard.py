"""The Grafana dashboard and the PrometheusRule of manifests/components/monitoring.

* every series and label the dashboard (and the alert rules) query is in the exporter's
  output after real cycles: the production Controller against the loopback Kubernetes API,
  with a scaled, a held and a failed server;
* every query parses with the real ``promtool`` (Debian's prometheus package);
* the alert rules pass ``promtool check rules``, fire in ``promtool test rules`` on
  synthetic series, and are the ones docs/metrics.md shows.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from controlloop.cluster.actuator import KubeActuator
from controlloop.cluster.collector import KubeCollector
from controlloop.config import load_system
from controlloop.loop.controller import Controller, StaticSpecs
from controlloop.loop.settings import ControllerSettings
from controlloop.metrics import ControllerMetrics
from tests.fakekube import FakeKubeServer
from tests.helpers.cluster import CONFIG, ROOT, FakeLoadSource, add_server, reading

pytestmark = pytest.mark.integration

MONITORING = ROOT / "manifests" / "components" / "monitoring"
DASHBOARD = MONITORING / "controlloop-dashboard.json"
RULES = MONITORING / "prometheusrule.yaml"
METRIC = re.compile(r"\bcontrolloop_[a-z_]+\b")
# Grafana's variables, replaced by what Grafana would send.
GRAFANA_VARS = {"$__rate_interval": "2m", "$__range": "6h", "$namespace": ".*", "$server": ".*"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable (label_values' selector)."""
    out = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"]["query"])
            assert m, f"variable {v['name']}: not a label_values(selector, label) query"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r for g in doc["spec"]["groups"] for r in g["rules"]]


def grafana_expand(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# --- the exporter's output after real cycles --------------------------------------------------


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Sample name -> label names, from /metrics after two cycles of three servers."""
    kube_server = FakeKubeServer().start()
    try:
        yield _cycles_exposition(kube_server, tmp_path_factory.mktemp("kube") / "kubeconfig")
    finally:
        kube_server.stop()


def _cycles_exposition(kube_server: FakeKubeServer, kubeconfig: Path) -> dict[str, set[str]]:
    from controlloop.cluster.kube import KubeClient

    kube_server.write_kubeconfig(kubeconfig)
    add_server(kube_server, "llm", "granite", model="granite_13b", cls="Premium", replicas=1)
    add_server(kube_server, "llm", "llama", model="llama_7b", cls="Premium", replicas=2)
    add_server(kube_server, "llm", "mistral", model="mistral_7b", cls="Free", replicas=1)
    # granite is scaled or moved, llama has no load (held), mistral's patch conflicts (error)
    load = FakeLoadSource({"granite": reading(900), "mistral": reading(900)})
    kube_server.inject("PATCH", "/deployments/mistral$", status=409, times=None)
    kube = KubeClient.from_kubeconfig(str(kubeconfig), timeout_s=2.0)
    settings = ControllerSettings()
    metrics = ControllerMetrics()
    controller = Controller(
        specs=StaticSpecs(load_system(CONFIG), settings),
        collector=KubeCollector(kube, load, settings),
        actuator=KubeActuator(kube, settings.actuation, sleep=lambda s: None),
        on_report=[metrics.observe],
    )
    reports = [controller.run_cycle() for _ in range(2)]
    kube.close()
    verdicts = {s.server: s.verdict for s in reports[0].servers}
    assert verdicts["llama"] == "held" and verdicts["mistral"] == "error", verdicts
    assert verdicts["granite"] in ("scaled", "moved"), verdicts
    assert reports[0].outcome == "partial"
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_series_the_dashboard_queries_is_exported(exposition: dict[str, set[str]]) -> None:
    used = {(where, name) for where, expr in dashboard_queries() for name in METRIC.findall(expr)}
    assert len({name for _, name in used}) >= 15  # the dashboard covers the exporter
    missing = sorted(f"{where}: {name}" for where, name in used if name not in exposition)
    assert not missing, "not in /metrics:\n" + "\n".join(missing)


def test_every_series_the_alerts_query_is_exported(exposition: dict[str, set[str]]) -> None:
    missing = sorted(
        f"{r['alert']}: {name}" for r in alert_rules() for name in METRIC.findall(r["expr"])
        if name not in exposition
    )
    assert not missing, "not in /metrics:\n" + "\n".join(missing)


def label_names(expr: str) -> set[str]:
    """Labels an expression groups, joins or matches on."""
    names: set[str] = set()
    for clause in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        names.update(n.strip() for n in clause.split(",") if n.strip())
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        names.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    return names - PROMQL_WORDS


def test_every_label_the_dashboard_uses_is_on_its_series(exposition: dict[str, set[str]]) -> None:
    problems = []
    for where, expr in [*dashboard_queries(), *[(r["alert"], r["expr"]) for r in alert_rules()]]:
        labels = set().union(*(exposition.get(n, set()) for n in METRIC.findall(expr)))
        for name in label_names(expr) - labels:
            problems.append(f"{where}: label {name!r} is on none of {METRIC.findall(expr)}")
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            labels = set().union(*(exposition.get(n, set()) for n in METRIC.findall(t["expr"])))
            for name in set(re.findall(r"\{\{(\w+)\}\}", t.get("legendFormat", ""))) - labels:
                problems.append(f"panel {p['title']!r}: legend label {name!r} not on its series")
    assert not problems, "\n".join(problems)


# --- promtool --------------------------------------------------------------------------------


def promtool(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_dashboard_queries_parse_with_promtool(promtool_bin: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_expand(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = promtool(promtool_bin, "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_a_bad_query_fails_promtool(promtool_bin: str, tmp_path: Path) -> None:
    """The check above can fail: promtool rejects an unbalanced expression."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "bad:query", "expr": "sum by (server (controlloop_server_cost_cents_per_hour)"}
    ]}]}))
    proc = promtool(promtool_bin, "check", "rules", str(path))
    assert proc.returncode != 0 and "bad:query" in proc.stdout + proc.stderr


def rules_file(tmp_path: Path) -> Path:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    path = tmp_path / "controlloop-rules.yaml"
    path.write_text(yaml.safe_dump(doc["spec"]))
    return path


def test_prometheus_rule_passes_promtool_check(promtool_bin: str, tmp_path: Path) -> None:
    proc = promtool(promtool_bin, "check", "rules", str(rules_file(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


# Synthetic series (1 m apart) and the alerts that must (and must not) fire on them.
RULE_TESTS = """
rule_files: [controlloop-rules.yaml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  # the last cycle started at t=0 and none since
  - series: controlloop_last_cycle_timestamp_seconds{instance="a"}
    values: 0x30
  - series: controlloop_is_leader{instance="a"}
    values: 1x30
  - series: controlloop_server_load_known{server="s1",namespace="llm",deployment="d1"}
    values: 0x30
  - series: controlloop_server_load_known{server="s2",namespace="llm",deployment="d2"}
    values: 1x30
  - series: controlloop_cycles_total{outcome="ok"}
    values: 0+1x30
  - series: controlloop_cycles_total{outcome="failed"}
    values: 0+0x30
  alert_rule_test:
  - eval_time: 4m
    alertname: ControlloopNotCycling
    exp_alerts: []
  - eval_time: 12m
    alertname: ControlloopNotCycling
    exp_alerts:
    - exp_labels: {severity: critical}
      exp_annotations:
        summary: the controller has not run a cycle for 5 minutes; servers are not being scaled
  - eval_time: 20m
    alertname: ControlloopLoadUnknown
    exp_alerts:
    - exp_labels: {severity: warning, namespace: llm, deployment: d1}
      exp_annotations:
        summary: llm/d1 has no usable load metrics and is held
  - eval_time: 20m
    alertname: ControlloopNoLeader
    exp_alerts: []
  - eval_time: 25m
    alertname: ControlloopCyclesFailing
    exp_alerts: []
"""


def test_alert_rules_fire_in_promtool_test(promtool_bin: str, tmp_path: Path) -> None:
    rules_file(tmp_path)
    (tmp_path / "tests.yaml").write_text(RULE_TESTS)
    proc = subprocess.run([promtool_bin, "test", "rules", "tests.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_docs_show_the_shipped_alert_rules() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"## Example alerts.*?```yaml\n(.*?)```", text, re.S)
    shown = yaml.safe_load(block)["groups"][0]["rules"]

    def key(rule: dict[str, Any]) -> tuple[str, str, str]:
        return rule["alert"], " ".join(rule["expr"].split()), rule.get("for", "")

    assert [key(r) for r in shown] == [key(r) for r in alert_rules()]


def test_committed_dashboard_is_what_the_script_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_grafana_dashboard", ROOT / "scripts" / "make-grafana-dashboard.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text(encoding="utf-8") == module.render(), (
        "run python scripts/make-grafana-dashboard.py"
    )


def test_dashboard_layout_and_variables() -> None:
    """What Grafana needs to load it: unique ids, panels on the 24-column grid without
    overlapping, a Prometheus datasource on every query, every variable used defined."""
    doc = dashboard()
    panels = doc["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
        for t in p.get("targets", []):
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    defined = {v["name"] for v in doc["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(panels))) - {"__rate_interval", "__range"}
    assert used <= defined, used - defined
    assert {v["type"] for v in doc["templating"]["list"]} == {"datasource", "query"}
