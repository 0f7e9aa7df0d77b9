"""The watch cache's label selectors against the fake API server's parser (which parses
like k8s.io/apimachinery/pkg/labels): a watch's wider selector must select every object
the narrow one does, and the copy filtered by the narrow one must be exactly its list."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlloop.cluster.collector import common_selector
from controlloop.cluster.watchcache import (
    Scope,
    WatchCache,
    requirements,
    selects,
    watch_selector,
)
from tests.fakekube.selectors import match_labels, parse_label_selector

KEYS = ["app", "tier", "inferno.server.managed", "example.com/team"]
VALUES = ["a", "b", "c-1", "true", "x.y"]


def random_labels(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(VALUES) for k in KEYS if rng.random() < 0.6}


def random_selector(rng: random.Random) -> str:
    parts = []
    for key in rng.sample(KEYS, rng.randint(0, 3)):
        form = rng.choice(["eq", "eqeq", "ne", "in", "notin", "exists", "not"])
        value = rng.choice(VALUES)
        many = ",".join(sorted(set(rng.choices(VALUES, k=rng.randint(1, 3)))))
        parts.append({
            "eq": f"{key}={value}", "eqeq": f"{key}=={value}", "ne": f"{key}!={value}",
            "in": f"{key} in ({many})", "notin": f"{key} notin ({many})", "exists": key,
            "not": f"!{key}"}[form])
    return ",".join(parts)


@pytest.mark.parametrize("seed", range(20))
def test_selects_as_the_api_server_does(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        selector, labels = random_selector(rng), random_labels(rng)
        want = match_labels(parse_label_selector(selector), labels)
        assert selects(selector, labels) == want, (selector, labels)
        # the watch's selector is no narrower
        if want:
            assert match_labels(parse_label_selector(watch_selector(selector)), labels)


def test_the_collectors_pod_selector_keeps_one_watch_scope() -> None:
    few = [{"app": "srv-0", "tier": "llm"}, {"app": "srv-1", "tier": "llm"}]
    more = [*few, {"app": "srv-2", "tier": "llm"}]
    assert common_selector(few) == "tier=llm,app in (srv-0,srv-1)"
    assert watch_selector(common_selector(few)) == watch_selector(common_selector(more)) \
        == "tier=llm,app"
    assert requirements("a in (x,y),b=c, d") == ["a in (x,y)", "b=c", "d"]


# --- the cache itself, with a lister and watcher of our own --------------------------------

def obj(name: str, rv: int, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": str(rv)}, **extra}


class Feed:
    """A lister of fixed items and a watcher that yields what the test puts in its queue;
    None ends the watch (the server's timeout), an Exception raises it."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.events: queue.Queue[Any] = queue.Queue()
        self.lists = 0
        self.watched_from: list[str] = []

    def lister(self) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return [dict(i) for i in self.items], "10"

    def watcher(self, rv: str, timeout_s: float) -> Iterator[dict[str, Any]]:
        self.watched_from.append(rv)
        yield {"type": "OPEN", "stop": lambda: self.events.put(None)}
        while True:
            event = self.events.get(timeout=5)
            if event is None:
                return
            if isinstance(event, Exception):
                raise event
            yield event


def names(cache: WatchCache, feed: Feed, scope: Scope) -> list[str] | None:
    got = cache.items(scope, feed.lister, feed.watcher, lambda o: dict(o), "v1")
    return None if got is None else sorted(o["metadata"]["name"] for o in got)


def until(check: Any) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_events_bookmarks_and_errors_keep_or_drop_the_copy() -> None:
    feed = Feed([obj("a", 1), obj("b", 2)])
    cache = WatchCache(timeout_s=60, resync_s=600, first_sync_s=5)
    scope = Scope("Pod", "ns", "app")
    try:
        assert names(cache, feed, scope) == ["a", "b"]
        feed.events.put({"type": "ADDED", "object": obj("c", 11)})
        feed.events.put({"type": "DELETED", "object": obj("a", 12)})
        feed.events.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}})
        until(lambda: names(cache, feed, scope) == ["b", "c"])
        got = cache.items(scope, feed.lister, feed.watcher, lambda o: dict(o), "v1")
        (added,) = [o for o in got or [] if o["metadata"]["name"] == "c"]
        assert (added["kind"], added["apiVersion"]) == ("Pod", "v1")  # as a list's items
        feed.events.put(None)  # the server ends the watch: re-opened from the bookmark's rv
        until(lambda: feed.watched_from[-1:] == ["15"])
        assert feed.lists == 1
        # a 410: listed again (the copy is the list's again: a and b)
        feed.events.put({"type": "ERROR", "object": {"code": 410}})
        until(lambda: feed.lists == 2)
        until(lambda: names(cache, feed, scope) == ["a", "b"])
        # any other failure: not served until listed again (after a 1 s backoff)
        feed.events.put(RuntimeError("connection reset"))
        until(lambda: cache.stats.failures == 1)
        assert names(cache, feed, scope) is None
        until(lambda: feed.lists == 3)
        until(lambda: names(cache, feed, scope) == ["a", "b"])
    finally:
        cache.close()
        feed.events.put(None)


def test_a_scope_not_asked_for_is_stopped() -> None:
    now = [0.0]
    cache = WatchCache(timeout_s=60, resync_s=100, first_sync_s=5, clock=lambda: now[0])
    old, new = Feed([obj("a", 1)]), Feed([obj("b", 1)])
    try:
        assert names(cache, old, Scope("Pod", "ns", "app")) == ["a"]
        threads = threading.active_count()
        now[0] += 101  # the selector changed: only the new scope is asked for
        assert names(cache, new, Scope("Pod", "ns", "tier")) == ["b"]
        assert cache.live_copies() == 1
        old.events.put(None)  # the stopped copy's watch ends and its thread with it
        until(lambda: threading.active_count() <= threads)
    finally:
        cache.close()
        old.events.put(None)
        new.events.put(None)
