"""The web dashboard in a real browser: ``controlloop demo --serve`` and Debian's headless
Chromium through Selenium (chromium-driver; no browser download).

What the page shows is checked against the demo's own cycle log (``cycles.jsonl``):
every server listed, its last decision's reason visible, the charts drawn with as many
points as cycles ran. Screenshots go to ``test-artifacts/`` (``$TEST_ARTIFACTS`` to
change); with ``CONTROLLOOP_UPDATE_DOCS=1`` also to docs/images/ for docs/dashboard.md.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cluster import ROOT

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = ("/usr/bin/chromedriver",)
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS") or ROOT / "test-artifacts")
DOC_IMAGES = ROOT / "docs" / "images"
CYCLES = 14
SCENARIO = f"""
name: dashboard
description: three servers, a load step up and back down
system: large
interval: 60
cycles: {CYCLES}
startupSeconds: 90
servers: [Premium-llama_7b, Free-mistral_7b, Bronze-granite_13b]
load:
  "*":
    phases:
      - {{duration: 240, rate: x1}}
      - {{duration: 360, rate: x2.5}}
      - {{duration: 600, rate: x1}}
    noise: 0.03
"""
CHARTS = ("chart-cost", "chart-gpus", "chart-slo", "chart-load", "chart-replicas",
          "chart-itl", "chart-ttft")


def first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if Path(p).is_file() and os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    browser, driver = first(CHROMIUM), first(DRIVER) or shutil.which("chromedriver")
    if browser is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing under CI: `make test` should install them")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")
    return browser, driver


class DemoServer:
    """``controlloop demo --serve 127.0.0.1:0`` in a subprocess; its stdout collected."""

    def __init__(self, tmp: Path) -> None:
        scenario = tmp / "dashboard.yaml"
        scenario.write_text(SCENARIO)
        self.out = tmp / "out"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlloop", "demo", str(scenario), "--serve", "127.0.0.1:0",
             "--pace", "0.6", "--out", str(self.out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line starting {prefix!r}; output:\n" + "\n".join(self.lines))

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    server = DemoServer(tmp_path_factory.mktemp("demo"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chromium: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1700",
                 "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def cycles_shown(drv: Any) -> int:
    return int(drv.find_element(By.TAG_NAME, "body").get_attribute("data-cycles") or 0)


def save(drv: Any, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    if full_page:  # grow the window to the document's height first
        height = drv.execute_script("return document.documentElement.scrollHeight")
        drv.set_window_size(1400, max(900, int(height)))
        time.sleep(0.3)  # charts re-size on the resize event
    drv.save_screenshot(str(path))
    if os.environ.get("CONTROLLOOP_UPDATE_DOCS"):
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOC_IMAGES / name)
    return path


# Saturated pixels inside a chart's plotting area: the series' strokes (background, grid
# and axes are white or grey).
SERIES_PIXELS = """
const chart = window.controlloopDashboard.charts[arguments[0]];
const b = chart.bbox, img = chart.ctx.getImageData(b.left, b.top, b.width, b.height).data;
let n = 0;
for (let i = 0; i < img.length; i += 4) {
  const hi = Math.max(img[i], img[i + 1], img[i + 2]);
  const lo = Math.min(img[i], img[i + 1], img[i + 2]);
  if (img[i + 3] > 0 && hi - lo > 80) n++;
}
return {pixels: n, points: chart.data[0].length, series: chart.series.length - 1};
"""


def test_dashboard_live_then_after_the_run(demo: DemoServer, browser: Any) -> None:
    url = demo.wait_for("dashboard: ").split()[1]
    browser.get(url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    # live: cycles arrive while the run goes on (paced at 0.6 s per cycle)
    wait.until(lambda d: cycles_shown(d) >= 4)
    seen_live = cycles_shown(browser)
    assert seen_live < CYCLES, "the page should be showing a run in progress"
    assert "live" in browser.find_element(By.ID, "status").get_attribute("class")
    save(browser, "dashboard-live.png", full_page=False)
    wait.until(lambda d: cycles_shown(d) == CYCLES and "run finished" in
               d.find_element(By.ID, "status").text)
    demo.wait_for("run finished; still serving")

    # the truth: the demo's own cycle log
    log = [json.loads(line) for line in (demo.out / "cycles.jsonl").read_text().splitlines()]
    # the dashboard plots the regular cycles; fast-path (surge) cycles are in the log only
    log = [c for c in log if c.get("trigger", "regular") == "regular"]
    assert len(log) == CYCLES
    last = {s["server"]: s for s in log[-1]["servers"]}
    rows = browser.find_elements(By.CSS_SELECTOR, "#servers tbody tr")
    assert sorted(r.get_attribute("data-server") for r in rows) == sorted(last)
    for row in rows:
        name = row.get_attribute("data-server")
        reason = row.find_element(By.CSS_SELECTOR, "td.reason")
        assert reason.is_displayed() and reason.text == last[name]["reason"].strip(), name
        verdict = row.find_element(By.CSS_SELECTOR, ".verdict").text
        assert verdict == last[name]["verdict"]
    cost = browser.find_element(By.ID, "cost").text
    assert cost == f"${log[-1]['total_cost'] / 100:.2f}/h"

    for chart in CHARTS:
        drawn = browser.execute_script(SERIES_PIXELS, chart)
        assert drawn["points"] == CYCLES, (chart, drawn)
        assert drawn["pixels"] > 100, f"{chart}: no series drawn ({drawn})"

    # the server shown is the one with the most changes; its decision log names them
    selected = browser.execute_script("return window.controlloopDashboard.selected")
    changes = {n: sum(1 for c in log for s in c["servers"]
                      if s["server"] == n and s["verdict"] in ("scaled", "moved")) for n in last}
    assert changes[selected] == max(changes.values()) and changes[selected] > 0, changes
    logged = browser.find_elements(By.CSS_SELECTOR, "#decision-log tbody tr")
    assert any(r.find_element(By.CSS_SELECTOR, ".verdict").text in ("scaled", "moved")
               for r in logged)
    shot = save(browser, "dashboard.png")
    assert shot.stat().st_size > 50_000

    # click another server: its time series replace the first one's
    other = next(r for r in rows if r.get_attribute("data-server") != selected)
    name = other.get_attribute("data-server")
    other.click()
    wait.until(lambda d: d.find_element(By.ID, "server-title").text == f"Server {name}")
    title = browser.execute_script(
        "return window.controlloopDashboard.charts['chart-load'].root.querySelector('.u-title')"
        ".textContent")
    assert title.startswith(name)
    assert "selected" in browser.find_element(
        By.CSS_SELECTOR, f'#servers tr[data-server="{name}"]').get_attribute("class")

    # still serving after the run, until interrupted; then a clean exit
    assert demo.proc.poll() is None
    assert demo.stop() == 0
    assert demo.lines[-1] == "dashboard stopped", demo.lines[-3:]


def test_errors_held_servers_and_unknowns_in_the_daemon_clock(browser: Any) -> None:
    """The daemon's case (wall-clock times) with what a demo rarely shows: a failed patch,
    a held server with unknown load (no observations, no opinion) and the cycle's errors."""
    from controlloop.loop.cycle import CycleReport, ServerReport
    from controlloop.ui import ReportStore, UiApp, make_ui_server

    store = ReportStore(title="controlloop (dry-run)")
    now = time.time()
    for i in range(6):
        ok = ServerReport(
            server="granite", namespace="llm", deployment="granite", model="granite_13b",
            service_class="Premium", current_accelerator="A100", current_replicas=2 + i // 2,
            ready_replicas=2, pending_pods=0, verdict="scaled" if i % 2 else "unchanged",
            reason=f"sized for load {600 + 100 * i} rpm", desired_accelerator="A100",
            desired_replicas=2 + (i + 1) // 2,
            load={"status": "ok", "arrivalRate": 600.0 + 100 * i, "itlMs": 30.0, "ttftMs": 200.0},
            predicted_itl_ms=28.0, predicted_ttft_ms=180.0, slo_itl_ms=40.0, slo_ttft_ms=500.0,
            cost=100.0 + 10 * i,
        )
        held = ServerReport(
            server="llama", namespace="llm", deployment="llama", model="llama_7b",
            service_class="Premium", current_accelerator="A100", current_replicas=4,
            ready_replicas=4, pending_pods=0, verdict="held", held_reason="unknown-load",
            reason="load unknown (no series): leaving as is", load={"status": "unknown"},
        )
        failed = ServerReport(
            server="mistral", namespace="llm", deployment="mistral", model="mistral_7b",
            service_class="Free", current_accelerator="A100", current_replicas=1,
            ready_replicas=1, pending_pods=0, verdict="error", error_kind="conflict",
            error="llm/mistral: 409 Conflict: the object has been modified",
            load={"status": "ok", "arrivalRate": 300.0},
        )
        rep = CycleReport(
            cycle_id=f"{i + 1}-abc", started_at=now - 60 * (6 - i), outcome="partial",
            servers=[ok, held, failed], total_cost=200.0, dry_run=True,
            errors=["llm/mistral: 409 Conflict: the object has been modified"],
        )
        # what the online tuning (issue of its own) adds to a report: per-pair estimates
        rep.tuning = {"mode": "on", "pairs": [{  # type: ignore[attr-defined]
            "pair": "granite_13b/A100", "params": {"alpha": 10.0 + i, "beta": 0.5},
            "applied": {"alpha": 1.0 + 0.05 * i, "beta": 1.0},
            "sigma": {"alpha": 0.1, "beta": math.nan}, "warmedUp": i >= 3,
            "observations": 10 * i, "rejected": 1,
        }]}
        store.publish(rep)
    server = make_ui_server("127.0.0.1", 0, UiApp(store))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.set_window_size(1400, 1700)
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/ui/")
        WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda d: cycles_shown(d) == 6)
        status = browser.find_element(By.ID, "status").text
        assert "dry-run" in status and "partial" in status and browser.title.startswith(
            "controlloop (dry-run)")
        errors = browser.find_element(By.ID, "cycle-errors")
        assert errors.is_displayed() and "409 Conflict" in errors.text
        row = {r.get_attribute("data-server"): r
               for r in browser.find_elements(By.CSS_SELECTOR, "#servers tbody tr")}
        assert set(row) == {"granite", "llama", "mistral"}
        held = row["llama"]
        assert held.find_element(By.CSS_SELECTOR, ".verdict").text == "held"
        assert held.find_element(By.CSS_SELECTOR, "td.reason").text.startswith("load unknown")
        cells = [td.text for td in held.find_elements(By.TAG_NAME, "td")]
        assert "unknown" in cells and "– / – / –" in cells  # no load, no latencies: no zeros
        assert "no cards in use reported" in browser.find_element(By.ID, "gpus").text
        failed = row["mistral"]
        assert failed.find_element(By.CSS_SELECTOR, ".verdict").text == "error"
        assert "409 Conflict" in failed.find_element(By.CSS_SELECTOR, "td.reason").text
        # the server with the most changes is shown: granite, scaled every other cycle
        assert browser.find_element(By.ID, "server-title").text == "Server granite"
        drawn = browser.execute_script(SERIES_PIXELS, "chart-load")
        assert drawn["points"] == 6 and drawn["pixels"] > 100
        # the tuning's estimates for granite's (model, accelerator), and their history
        tuned = browser.find_elements(By.CSS_SELECTOR, '#tuning tr[data-pair="granite_13b/A100"]')
        assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in tuned] == ["alpha", "beta"]
        alpha = [td.text for td in tuned[0].find_elements(By.TAG_NAME, "td")]
        assert alpha == [
            "granite_13b/A100", "alpha", "15.0000", "1.250", "0.100", "50 (1 rejected)"
        ]
        assert [td.text for td in tuned[1].find_elements(By.TAG_NAME, "td")][4] == "–"  # NaN
        drawn = browser.execute_script(SERIES_PIXELS, "chart-tuning")
        assert drawn["points"] == 6 and drawn["series"] == 2 and drawn["pixels"] > 100
        save(browser, "dashboard-errors.png")
    finally:
        server.shutdown()
        server.server_close()
