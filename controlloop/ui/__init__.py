"""The web dashboard: a bounded history of cycle reports, a JSON API over it, a static page.

``ReportStore`` keeps the last cycles (a ring buffer); ``UiApp`` answers ``/ui`` requests
(page, vendored uPlot, ``/ui/api/cycles``) for any HTTP server: the daemon's and the
demo's (``controlloop demo --serve``). See docs/dashboard.md.
"""

from controlloop.ui.app import Response, UiApp, make_ui_server
from controlloop.ui.store import ReportStore, gpu_usage

__all__ = ["ReportStore", "Response", "UiApp", "gpu_usage", "make_ui_server"]
