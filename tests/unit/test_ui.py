"""The dashboard's store, API and demo wiring (controlloop.ui), without a browser."""

from __future__ import annotations

import argparse
import json
import math
import urllib.error
import urllib.request
from typing import Any

import pytest

from controlloop.cli import main
from controlloop.demo.cluster import EmulatedCluster
from controlloop.demo.command import build_system, controller_settings
from controlloop.demo.loadscript import parse_scenario
from controlloop.loop.controller import Controller, CycleReport, StaticSpecs
from controlloop.loop.cycle import ServerReport
from controlloop.ui import ReportStore, UiApp, gpu_usage, make_ui_server
from controlloop.ui.app import STATIC
from controlloop.ui.listen import serve_address
from controlloop.ui.store import slo_met

SCENARIO = """
name: cards
system: large
interval: 60
cycles: 2
servers: [Bronze-granite_13b, Premium-llama_7b]
capacity: {L4: 64, G2: 16, A100: 8}
load:
  "*": {phases: [{duration: 600, rate: x1}]}
"""


def row(name: str = "s1", **kw: Any) -> ServerReport:
    base: dict[str, Any] = dict(
        server=name, namespace="llm", deployment=name, model="granite_13b",
        service_class="Premium", current_accelerator="A100", current_replicas=2,
        ready_replicas=2, pending_pods=0,
        load={"status": "ok", "arrivalRate": 60.0, "itlMs": 20.0, "ttftMs": 150.0},
        slo_itl_ms=40.0, slo_ttft_ms=500.0,
    )
    base.update(kw)
    return ServerReport(**base)


def report(i: int, servers: list[ServerReport] | None = None) -> CycleReport:
    return CycleReport(cycle_id=f"c{i}", started_at=1000.0 + 60 * i,
                       servers=servers if servers is not None else [row()], total_cost=12.5)


# --- store --------------------------------------------------------------------------------


def test_history_is_bounded_and_polled_by_sequence() -> None:
    store = ReportStore(maxlen=3)
    seqs = [store.publish(report(i)) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5] and len(store) == 3
    everything = store.since(0)
    assert [c["cycleId"] for c in everything["cycles"]] == ["c2", "c3", "c4"]
    assert everything["latest"] == 5 and everything["history"] == 3
    assert [c["seq"] for c in store.since(4)["cycles"]] == [5]
    assert store.since(5)["cycles"] == []
    with pytest.raises(ValueError, match="at least one cycle"):
        ReportStore(maxlen=0)


def test_history_is_bounded_in_server_rows_oldest_first() -> None:
    """A big fleet keeps fewer cycles: at most max_rows rows in all, the newest cycle
    always, and the API says how many cycles it holds so the page trims its copy."""
    store = ReportStore(maxlen=10, max_rows=7)
    fleet = [row(f"s{k}") for k in range(3)]
    for i in range(5):
        store.publish(report(i, fleet))
    doc = store.since(0)
    # 3 rows a cycle: two cycles fit in 7 rows, the three oldest are dropped
    assert [c["cycleId"] for c in doc["cycles"]] == ["c3", "c4"]
    assert doc["history"] == 2 and doc["historyRows"] == 7 and doc["droppedForRows"] == 3
    assert sum(len(c["servers"]) for c in doc["cycles"]) <= 7
    # a cycle bigger than the cap on its own is still kept (alone)
    store.publish(report(5, [row(f"b{k}") for k in range(9)]))
    doc = store.since(0)
    assert [c["cycleId"] for c in doc["cycles"]] == ["c5"] and doc["history"] == 1
    # the fleet shrinks: more cycles fit again, and maxlen still binds
    for i in range(6, 20):
        store.publish(report(i, [row()]))
    doc = store.since(0)
    assert len(doc["cycles"]) == 7 and doc["history"] == 7
    assert [c["seq"] for c in doc["cycles"]] == list(range(14, 21))
    unbounded = ReportStore(maxlen=4, max_rows=None)
    for i in range(6):
        unbounded.publish(report(i, fleet))
    assert len(unbounded) == 4 and unbounded.since(0)["history"] == 4
    with pytest.raises(ValueError, match="at least one server row"):
        ReportStore(max_rows=0)


def test_stored_rows_keep_every_field_of_a_server_row() -> None:
    """Rows are stored packed; the API gives back exactly server_row's fields + sloMet."""
    from controlloop.ui.store import server_row

    r = row(reason="scaled up", predicted_itl_ms=31.5)
    store = ReportStore()
    store.publish(report(0, [r]))
    (got,) = store.since(0)["cycles"][0]["servers"]
    want = server_row(r)
    assert got == {**want, "sloMet": True} and list(got) == [*want, "sloMet"]


def test_snapshot_has_no_nan_and_keeps_the_reason() -> None:
    store = ReportStore()
    bad = row(load={"status": "ok", "arrivalRate": math.nan, "itlMs": math.inf},
              predicted_itl_ms=math.nan, reason="scaled up: load rising")
    store.publish(report(0, [bad]))
    doc = json.loads(UiApp(store).handle("/ui/api/cycles").body)
    (srv,) = doc["cycles"][0]["servers"]
    assert srv["arrivalRpm"] is None and srv["observedItlMs"] is None
    assert srv["predictedItlMs"] is None and srv["reason"] == "scaled up: load rising"
    errored = row(reason="", error="409 Conflict", verdict="error")
    store.publish(report(1, [errored]))
    assert store.since(1)["cycles"][0]["servers"][0]["reason"] == "409 Conflict"


def test_tuning_estimates_pass_through_json_safe() -> None:
    store = ReportStore()
    rep = report(0)
    assert store.since(0)["cycles"] == [] and store.publish(rep) == 1
    assert store.since(0)["cycles"][0]["tuning"] == []  # a controller that does not tune
    rep = report(1)
    rep.tuning = {"mode": "on", "pairs": [  # type: ignore[attr-defined]
        {"pair": "m/A100", "params": {"alpha": 1.5}, "applied": {"alpha": 1.1},
         "sigma": {"alpha": math.nan}, "warmedUp": False, "observations": 3, "rejected": 0,
         "profile": {"alpha": 1.0}},
    ]}
    rep.servers[0].model_error = {"itlError": math.inf, "tuned": True}  # type: ignore[attr-defined]
    store.publish(rep)
    doc = json.loads(UiApp(store).handle("/ui/api/cycles?since=1").body)
    (pair,) = doc["cycles"][0]["tuning"]
    assert pair["params"] == {"alpha": 1.5} and pair["sigma"] == {"alpha": None}
    assert "profile" not in pair  # only what the page shows
    assert doc["cycles"][0]["servers"][0]["modelError"] == {"itlError": None, "tuned": True}


@pytest.mark.parametrize("itl,ttft,slo_itl,slo_ttft,expected", [
    (20.0, 150.0, 40.0, 500.0, True),
    (41.0, 150.0, 40.0, 500.0, False),
    (20.0, 501.0, 40.0, 500.0, False),
    (None, None, 40.0, 500.0, None),  # no observation
    (20.0, 150.0, None, None, None),  # no target
    (20.0, None, 40.0, 500.0, True),  # only what is known counts
])
def test_slo_met(itl: float | None, ttft: float | None, slo_itl: float | None,
                 slo_ttft: float | None, expected: bool | None) -> None:
    r = {"observedItlMs": itl, "observedTtftMs": ttft, "sloItlMs": slo_itl, "sloTtftMs": slo_ttft}
    assert slo_met(r) is expected


def test_gpu_usage_counts_cards_as_the_emulated_cluster_does() -> None:
    """granite_13b on L4 takes 2 cards a replica (accCount 2): the emulated cluster's own
    scheduler is the independent count."""
    scenario = parse_scenario(SCENARIO, where="cards.yaml")
    system, capacity = build_system(scenario)
    cluster = EmulatedCluster(
        system, {s.name: scenario.profile(s.name) for s in system.servers},
        capacity=capacity, seed=1,
    )
    cluster.place("Bronze-granite_13b", "L4", 3)
    cluster.place("Premium-llama_7b", "G2", 2)
    cluster.advance(60)
    before = cluster.used_cards()
    assert before["L4"] == 6  # the point of the test: not 3
    controller = Controller(specs=StaticSpecs(system, controller_settings(scenario)),
                            collector=cluster, actuator=cluster, clock=cluster.now_s)
    rep = controller.run_cycle()
    usage = gpu_usage(system, rep)
    assert {t: u["used"] for t, u in usage.items() if u["used"]} == before
    assert capacity is not None
    assert {t: u["capacity"] for t, u in usage.items()} == {t: capacity.get(t) for t in usage}
    after_plan = {t: u["desired"] for t, u in usage.items() if u["desired"]}
    cluster.advance(600)  # everything the controller asked for has started
    assert after_plan == {t: n for t, n in cluster.used_cards().items() if n}


# --- HTTP ---------------------------------------------------------------------------------


def test_routes() -> None:
    store = ReportStore()
    store.publish(report(0))
    app = UiApp(store)
    assert app.handle("/ui").status == 308 and app.handle("/ui").headers["Location"] == "/ui/"
    page = app.handle("/ui/")
    assert page.status == 200 and b"static/dashboard.js" in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for name, ctype in STATIC.items():
        resp = app.handle(f"/ui/static/{name}")
        assert resp.status == 200 and resp.content_type == ctype and resp.body, name
    assert b"MIT License" in app.handle("/ui/static/uPlot.LICENSE").body
    for path in ("/ui/static/../app.py", "/ui/static/store.py", "/ui/nope", "/ui/api/other"):
        assert app.handle(path).status == 404, path
    bad = app.handle("/ui/api/cycles?since=abc")
    assert bad.status == 400 and b"since: expected an integer" in bad.body
    assert json.loads(app.handle("/ui/api/cycles?since=0").body)["latest"] == 1
    assert UiApp.owns("/ui") and UiApp.owns("/ui/api/cycles?since=1")
    assert not UiApp.owns("/uix") and not UiApp.owns("/metrics")


def test_gzip_when_accepted() -> None:
    import gzip

    store = ReportStore()
    for i in range(20):
        store.publish(report(i))
    app = UiApp(store)
    plain = app.handle("/ui/api/cycles")
    assert "Content-Encoding" not in plain.headers
    for header in ("gzip", "deflate, gzip;q=0.8", "br, *"):
        packed = app.handle("/ui/api/cycles", accept_encoding=header)
        assert packed.headers["Content-Encoding"] == "gzip", header
        assert gzip.decompress(packed.body) == plain.body
        assert len(packed.body) < len(plain.body) / 3
    for header in ("", "br", "gzip;q=0", "identity"):
        assert "Content-Encoding" not in (
            app.handle("/ui/api/cycles", accept_encoding=header).headers
        )
    small = app.handle("/ui/api/cycles?since=999", accept_encoding="gzip")  # not worth it
    assert "Content-Encoding" not in small.headers


def test_page_references_only_served_files() -> None:
    """No CDN: every src/href of the page is one of ours."""
    import re

    page = UiApp(ReportStore()).handle("/ui/").body.decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all(r.startswith("static/") and r[7:] in STATIC for r in refs), refs


def test_server_over_loopback() -> None:
    store = ReportStore(title="t")
    server = make_ui_server("127.0.0.1", 0, UiApp(store))
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        store.publish(report(0))
        with urllib.request.urlopen(f"{base}/") as resp:  # redirected to the page
            assert resp.url.endswith("/ui/") and b"<title>" in resp.read()
        with urllib.request.urlopen(f"{base}/ui/api/cycles?since=0") as resp:
            assert resp.headers["Content-Type"] == "application/json"
            assert json.load(resp)["cycles"][0]["cycleId"] == "c0"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/metrics")
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


# --- --serve -------------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("8080", ("127.0.0.1", 8080)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9000", ("::1", 9000)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_serve_address(value: str, expected: tuple[str, int]) -> None:
    assert serve_address(value) == expected


@pytest.mark.parametrize("value", ["", "x", ":80", "host:", "host:70000", "1.2.3.4:port"])
def test_bad_serve_address(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[HOST:\]PORT"):
        serve_address(value)


def test_bad_serve_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--serve", "nope"]) == 2
    assert "--serve: expected [HOST:]PORT" in capsys.readouterr().err


def test_serve_on_a_taken_port_is_a_clear_error(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["demo", "--cycles", "1", "--out", str(tmp_path),
                     "--serve", f"127.0.0.1:{port}"])
    assert code == 1  # the environment (a port taken), not bad input
    assert f"--serve 127.0.0.1:{port}: cannot listen" in capsys.readouterr().err
