"""The fake server's label-selector parser, and selectors sent by the official client."""

from __future__ import annotations

import pytest

from controlloop.cluster.kube import KubeClient
from tests.fakekube import FakeKubeServer, SelectorError, parse_label_selector
from tests.fakekube.selectors import Requirement, match_labels

LABELS = {"app": "granite", "tier": "gold", "controlloop.io/managed": "true", "empty": ""}


@pytest.mark.parametrize(("selector", "expected"), [
    ("", True),
    ("app=granite", True),
    ("app==granite", True),
    ("app=llama", False),
    ("app!=llama", True),
    ("missing!=x", True),  # != matches objects without the key
    ("app", True),
    ("!app", False),
    ("!missing", True),
    ("tier in (gold, silver)", True),
    ("tier in (silver)", False),
    ("tier notin (silver,bronze)", True),
    ("missing notin (x)", True),
    ("missing in (x)", False),
    ("controlloop.io/managed=true,tier=gold", True),
    ("controlloop.io/managed=true, tier=bronze", False),
    ("empty=", True),
    ("app in ()", False),
])
def test_label_selector_matching(selector: str, expected: bool) -> None:
    assert match_labels(parse_label_selector(selector), LABELS) is expected


def test_parse_structure() -> None:
    assert parse_label_selector("a=b,!c,d notin (x,y)") == [
        Requirement("a", "=", ("b",)), Requirement("c", "!exists"),
        Requirement("d", "notin", ("x", "y"))]


@pytest.mark.parametrize("bad", ["a=b,", "a in (x", "a in x", ",a", "a b", "a=b=c", "-a=b",
                                 "a=(b)", "!", "a==!b"])
def test_invalid_selectors(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


@pytest.mark.integration
def test_selectors_through_client(fake_kube: FakeKubeServer, kube_client: KubeClient) -> None:
    fake_kube.add_pod("llm", "a", {"app": "granite", "variant": "a100"})
    fake_kube.add_pod("llm", "b", {"app": "granite", "variant": "h100"})
    fake_kube.add_pod("llm", "c", {"app": "llama"})

    def names(sel: str) -> list[str]:
        return sorted(p["metadata"]["name"] for p in kube_client.list_pods("llm", sel))

    assert names("app=granite,variant notin (h100)") == ["a"]
    assert names("!variant") == ["c"]
    assert names("variant in (a100,h100)") == ["a", "b"]
    assert names("app!=granite") == ["c"]
