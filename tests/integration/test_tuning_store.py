"""The tuner's state in a ConfigMap through the official client against the fake API: a new
controller (restart, new leader) starts from what the last one learnt; ``tuning show``."""

from __future__ import annotations

import io
import json
from argparse import Namespace
from pathlib import Path

import pytest

from controlloop.cluster.kube import KubeClient
from controlloop.cluster.tuning_store import DATA_KEY, ConfigMapStore
from controlloop.config import ConfigError, load_system
from controlloop.demo.command import REPO_CONFIG
from controlloop.tuning import Tuner
from controlloop.tuning_show import cmd_tuning_show
from tests.fakekube import FakeKubeServer
from tests.helpers.tuning import ACC, MODEL
from tests.helpers.tuning import server as _server

pytestmark = pytest.mark.integration
NS = "controlloop-system"


def test_state_survives_a_restart_in_a_configmap(fake_kube: FakeKubeServer,
                                                 kube_client: KubeClient) -> None:
    system = load_system(REPO_CONFIG)
    store = ConfigMapStore(kube_client, NS)
    assert store.load() is None  # nothing yet: the profile
    first = Tuner(store=store)
    for rate in (60, 90, 120, 150, 80, 110, 140, 70):
        first.observe(system, [_server(rate, 5)], "apply")
    (post,) = fake_kube.requests_for("POST", "/configmaps$")
    assert post.body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "controlloop"}
    assert len(fake_kube.requests_for("PUT", "/configmaps/controlloop-tuning$")) >= 6
    cm = kube_client.get_config_map(NS, "controlloop-tuning")
    assert f"{MODEL}/{ACC}" in json.loads(cm["data"][DATA_KEY])["pairs"]
    tuned_before = first.tuned_system(system)[0].perf(MODEL, ACC)
    assert tuned_before != system.perf(MODEL, ACC)

    second = Tuner(store=ConfigMapStore(kube_client, NS))  # a new process
    assert second.tuned_system(system)[0].perf(MODEL, ACC) == tuned_before

    # A dry run reads the state but never writes it.
    puts = len(fake_kube.requests_for("PUT", "/configmaps/"))
    dry = Tuner(store=ConfigMapStore(kube_client, NS, read_only=True))
    dry.observe(system, [_server(100, 5)], "apply")
    dry.observe(system, [_server(100, 5)], "apply")
    assert len(fake_kube.requests_for("PUT", "/configmaps/")) == puts

    out = io.StringIO()
    args = Namespace(file=None, kubeconfig=str(fake_kube.kubeconfig), context=None,
                     namespace=NS, name="controlloop-tuning", format="table")
    assert cmd_tuning_show(args, out) == 0
    text = out.getvalue()
    assert f"{MODEL}/{ACC}" in text and "warm " in text and "alpha 16.78->" in text


def test_tuning_show_from_a_file_and_bad_files(tmp_path: Path) -> None:
    system = load_system(REPO_CONFIG)
    tuner = Tuner()
    for rate in (60, 90, 120):
        tuner.observe(system, [_server(rate, 5)], "apply")
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(tuner.to_dict()))
    out = io.StringIO()
    assert cmd_tuning_show(Namespace(file=path, format="json"), out) == 0
    rows = json.loads(out.getvalue())
    assert rows[0]["pair"] == f"{MODEL}/{ACC}" and rows[0]["warmedUp"] is False
    path.write_text("{")
    with pytest.raises(ConfigError, match="tuning.json: not JSON"):
        cmd_tuning_show(Namespace(file=path, format="table"), io.StringIO())
    path.write_text(json.dumps({"pairs": {"a/b": {"serviceModel": "decode-prefill"}}}))
    with pytest.raises(ConfigError, match="pairs.a/b"):
        cmd_tuning_show(Namespace(file=path, format="table"), io.StringIO())
