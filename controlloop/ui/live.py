"""``controlloop demo --serve``: the dashboard over a demo run, live in paced simulated time."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import suppress
from typing import Any, TextIO

from controlloop.config import StartupError
from controlloop.specs import SystemSpec
from controlloop.ui.app import UiApp, make_ui_server
from controlloop.ui.store import DEFAULT_HISTORY, ReportStore, gpu_usage


class LiveDashboard:
    """Serves the dashboard from the start of a demo run; each cycle is published, then the
    run waits ``pace_s`` wall seconds so that a person can watch it unfold."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        system: SystemSpec,
        capacity: dict[str, int] | None,
        total_cycles: int,
        pace_s: float,
        title: str,
        sleep: Any = time.sleep,
    ) -> None:
        self.system = system
        self.capacity = capacity
        self.pace_s = pace_s
        self._sleep = sleep
        # the whole run, whatever its fleet: the demo's cycles and servers are bounded by
        # its own (validated) scenario, and the page shows the run from its start
        self.store = ReportStore(max(total_cycles, DEFAULT_HISTORY), max_rows=None,
                                 clock="sim", title=title)
        self.store.total_cycles = total_cycles
        host, port = address
        try:
            self.server = make_ui_server(host, port, UiApp(self.store))
        except OSError as exc:
            # a port taken is the environment, not the user's input: exit 1 (as run --listen)
            raise StartupError(
                f"--serve {host}:{port}: cannot listen: {exc.strerror or exc}"
            ) from None
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="ui-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = str(self.server.server_address[0]), self.server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/ui/"

    def publish(self, rec: Any) -> None:
        """A demo ``CycleRecord``: the report, the cluster's placed cards, the demo capacity."""
        gpus = gpu_usage(self.system, rec.report)
        for type_, used in rec.used_cards.items():
            gpus.setdefault(type_, {"used": 0, "desired": 0, "capacity": None})["used"] = used
        for type_, entry in gpus.items():
            entry["capacity"] = (self.capacity or {}).get(type_)
        self.store.publish(rec.report, t_s=rec.t_s, gpus=dict(sorted(gpus.items())))
        self._sleep(self.pace_s)

    def serve_until_interrupted(self, stream: TextIO) -> None:
        """After the last cycle: keep serving until SIGINT or SIGTERM, then stop cleanly."""
        self.store.finished = True
        stop = threading.Event()
        previous = None
        with suppress(ValueError):  # not the main thread: only Ctrl-C (KeyboardInterrupt)
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(f"run finished; still serving {self.url} - press Ctrl-C to stop",
              file=stream, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.close()
        print("dashboard stopped", file=stream, flush=True)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
