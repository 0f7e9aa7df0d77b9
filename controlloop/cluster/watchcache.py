"""Deployments and pods kept by watches between cycles (client-go's reflector, reduced).

A fleet of 3,000 servers lists 6,000 pods and 3,000 Deployments every cycle: 20 list
requests of 500 items, and with real objects some 60 MB of JSON for the API server to
serve each minute. With ``controller.watch.enabled`` each (kind, namespace, label
selector) the collector asks for is listed once, then kept current by a watch from the
list's resourceVersion; a cycle reads the copy and issues no list at all.

What keeps a copy from going silently stale (docs/reliability.md):

* A watch asks the server to end it after ``timeoutSeconds`` and is then re-opened from
  the last resourceVersion; the client's read timeout is a little longer, so a dead
  connection (no bytes, no end) fails within ``timeoutSeconds`` + 15 s.
* The copy is served only while its watch is *live*: listed, no error since, and the
  stream opened, an event received or a stream ended normally within ``timeoutSeconds``
  + 30 s. Otherwise :meth:`WatchCache.items` says None and the caller lists, as without
  watches; a failed list then fails the collection, and a failed collection never acts.
* 410 Gone (the resourceVersion was compacted) and every other error re-list; the copy is
  also re-listed every ``resyncSeconds`` whatever happened.
* A scope not asked for in ``resyncSeconds`` (namespaces or selectors changed) is stopped.

The stored items are what a list keeps (``slim_pod``, ``slim_deployment``), with
``kind`` and ``apiVersion`` set as the list's items get them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Obj = dict[str, Any]
# (items, resourceVersion of the list): one paginated list
Lister = Callable[[], tuple[list[Obj], str]]
# the events after a resourceVersion, the first {"type": "OPEN", "stop": fn} once the
# stream is open (fn ends it from another thread)
Watcher = Callable[[str, float], Iterator[Obj]]

# a copy is served while its watch was heard from within its timeout plus this
FRESH_GRACE_S = 30.0


def requirements(selector: str) -> list[str]:
    """The requirements of a label selector (commas inside ``in (...)`` kept)."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(selector[start:i].strip())
            start = i + 1
    parts.append(selector[start:].strip())
    return [p for p in parts if p]


def watch_selector(selector: str) -> str:
    """The selector a watch keeps for ``selector``: each ``key in (...)`` as ``key``
    (exists), so that the scope does not change with the set of Deployments (the
    collector's pod selector lists their values); :func:`selects` filters the copy."""
    out = []
    for req in requirements(selector):
        key, sep, _ = req.partition(" in ")
        out.append(key.strip() if sep else req)
    return ",".join(out)


def selects(selector: str, labels: dict[str, str]) -> bool:
    """Whether ``labels`` match ``selector`` (equality, ``in``, ``notin``, exists, ``!``)."""
    for req in requirements(selector):
        for op in (" notin ", " in "):
            key, sep, values = req.partition(op)
            if sep:
                allowed = {v.strip() for v in values.strip().strip("()").split(",")}
                present = key.strip() in labels and labels[key.strip()] in allowed
                if present == (op == " notin "):
                    return False
                break
        else:
            if "!=" in req:
                key, _, value = req.partition("!=")
                if labels.get(key.strip()) == value.strip():
                    return False
            elif "=" in req:
                key, _, value = req.replace("==", "=").partition("=")
                if labels.get(key.strip()) != value.strip():
                    return False
            elif req.startswith("!"):
                if req[1:].strip() in labels:
                    return False
            elif req not in labels:
                return False
    return True


@dataclass(frozen=True)
class Scope:
    kind: str  # "Deployment" or "Pod"
    namespace: str | None  # None: all namespaces
    label_selector: str

    def describe(self) -> str:
        where = "all namespaces" if self.namespace is None else f"namespace {self.namespace}"
        selector = f", {self.label_selector}" if self.label_selector else ""
        return f"{self.kind}s ({where}{selector})"


class Expired(Exception):
    """The watch's resourceVersion is gone (410): the copy must be listed again."""


@dataclass
class WatchStats:
    lists: int = 0  # list calls made by the watches (first lists, re-lists, resyncs)
    watches: int = 0  # watch requests opened
    events: int = 0
    failures: int = 0
    served: int = 0  # items() answered from a copy
    missed: int = 0  # items() answered None (not live yet or any more)


@dataclass
class _Copy:
    scope: Scope
    lister: Lister
    watcher: Watcher
    keep: Callable[[Obj], Obj]
    api_version: str
    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    rv: str = ""  # where the next watch starts
    live: bool = False
    heard: float = 0.0  # monotonic time the watch was last heard from
    asked: float = 0.0  # last items() call
    synced: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    end_stream: Callable[[], Any] | None = None  # the open watch's "stop"


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class WatchCache:
    """The copies, one per scope, each kept by a thread of its own."""

    def __init__(self, *, timeout_s: float = 60.0, resync_s: float = 600.0,
                 first_sync_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0 or resync_s <= 0:
            raise ValueError("watch timeout and resync must be > 0")
        self.timeout_s = timeout_s
        self.resync_s = resync_s
        self.first_sync_s = first_sync_s  # how long a first items() waits for the list
        self.clock = clock
        self.stats = WatchStats()
        self._copies: dict[Scope, _Copy] = {}
        self._lock = threading.Lock()

    def items(self, scope: Scope, lister: Lister, watcher: Watcher,
              keep: Callable[[Obj], Obj], api_version: str) -> list[Obj] | None:
        """The scope's objects from its live copy; None when there is none (the caller
        lists itself). The first call starts the copy and waits for its list."""
        now = self.clock()
        with self._lock:
            self._sweep(now)
            copy = self._copies.get(scope)
            if copy is None:
                copy = _Copy(scope, lister, watcher, keep, api_version)
                copy.thread = threading.Thread(target=self._run, args=(copy,), daemon=True,
                                               name=f"watch-{scope.kind.lower()}s")
                self._copies[scope] = copy
                copy.thread.start()
            copy.asked = now
        copy.synced.wait(self.first_sync_s)
        with self._lock:
            quiet = self.clock() - copy.heard
            if not copy.live or quiet > self.timeout_s + FRESH_GRACE_S:
                self.stats.missed += 1
                why = "its watch failed" if not copy.live else f"not heard from in {quiet:.0f}s"
                log.info("watched %s not used (%s): listing", scope.describe(), why)
                return None
            self.stats.served += 1
            return list(copy.objects.values())

    def live_copies(self) -> int:
        with self._lock:
            return sum(1 for c in self._copies.values() if c.live)

    def close(self, wait_s: float = 5.0) -> None:
        """Stop every watch: the open streams are ended, the threads joined (a thread
        left reading a socket at interpreter exit can abort the process)."""
        with self._lock:
            copies, self._copies = list(self._copies.values()), {}
        for copy in copies:
            self._stop(copy)
        deadline = time.monotonic() + wait_s
        for copy in copies:
            if copy.thread is not None:
                copy.thread.join(max(0.0, deadline - time.monotonic()))

    def _stop(self, copy: _Copy) -> None:
        copy.stop.set()
        end = copy.end_stream
        if end is not None:
            try:
                end()
            except Exception:  # noqa: BLE001 - already closed
                pass

    def _sweep(self, now: float) -> None:
        for scope, copy in list(self._copies.items()):
            if now - copy.asked > self.resync_s:
                log.info("watch of %s stopped: not asked for in %.0fs", scope.describe(),
                         self.resync_s)
                self._stop(copy)
                del self._copies[scope]

    # -- the thread -------------------------------------------------------------------

    def _run(self, copy: _Copy) -> None:
        backoff = 1.0
        while not copy.stop.is_set():
            try:
                self._list(copy)
                backoff = 1.0
                self._watch_until_resync(copy)
            except Expired:
                with self._lock:
                    copy.live = False
                log.info("watch of %s expired (410): listing again", copy.scope.describe())
            except Exception as exc:  # noqa: BLE001 - any failure: not live, list again
                with self._lock:
                    copy.live = False
                    self.stats.failures += 1
                copy.synced.set()  # a first items() waiting for the list gets None now
                if copy.stop.is_set():
                    return
                log.warning("watch of %s failed, listing again in %.0fs: %s",
                            copy.scope.describe(), backoff, exc)
                copy.stop.wait(backoff)
                backoff = min(30.0, backoff * 2)

    def _list(self, copy: _Copy) -> None:
        items, rv = copy.lister()
        objects = {_key(item): item for item in items}
        with self._lock:
            self.stats.lists += 1
            copy.objects = objects
            copy.rv = rv
            copy.live = True
            copy.heard = self.clock()
        copy.synced.set()

    def _watch_until_resync(self, copy: _Copy) -> None:
        listed = self.clock()
        while not copy.stop.is_set() and self.clock() - listed < self.resync_s:
            with self._lock:
                self.stats.watches += 1
            try:
                for event in copy.watcher(copy.rv, self.timeout_s):
                    if copy.stop.is_set():
                        return
                    self._apply(copy, event)
            finally:
                copy.end_stream = None
            with self._lock:  # the server ended the watch at its timeout: open the next
                copy.heard = self.clock()

    def _apply(self, copy: _Copy, event: Obj) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise Expired()
            raise RuntimeError(f"watch error event: {obj}")
        with self._lock:
            copy.heard = self.clock()
            if kind == "OPEN":
                copy.end_stream = event.get("stop")
                return
            meta = obj.get("metadata") or {}
            if meta.get("resourceVersion"):
                copy.rv = str(meta["resourceVersion"])
            if kind == "BOOKMARK":
                return
            self.stats.events += 1
            key = _key(obj)
            if kind == "DELETED":
                copy.objects.pop(key, None)
            elif kind in ("ADDED", "MODIFIED"):
                item = copy.keep(obj)
                item.setdefault("kind", copy.scope.kind)
                item.setdefault("apiVersion", copy.api_version)
                copy.objects[key] = item
