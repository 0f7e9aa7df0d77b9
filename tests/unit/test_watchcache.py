"""The watch cache's label selectors against the fake API server's parser (which parses
like k8s.io/apimachinery/pkg/labels): a watch's wider selector must select every object
the narrow one does, and the copy filtered by the narrow one must be exactly its list."""

from __future__ import annotations

import random

import pytest

from controlloop.cluster.collector import common_selector
from controlloop.cluster.watchcache import requirements, selects, watch_selector
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
