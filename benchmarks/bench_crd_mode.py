"""CRD mode: conversion cost and how fast an Optimizer edit reaches the status.

1. export (system -> resources -> YAML) and import (resources -> system) of the large sample;
2. on the loopback API (tests/fakekube) with the production CrdSpecSource, KubeCollector and
   KubeActuator, one managed Deployment: the time from PATCHing the Optimizer's spec to its
   status showing the new observedGeneration, for a few debounce settings (the cycle is run
   by on_change, as the daemon's scheduler does), median of --runs edits.

    .venv/bin/python benchmarks/bench_crd_mode.py [--runs 5] [--debounce 0.2 0.5 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controlloop.cluster.actuator import KubeActuator  # noqa: E402
from controlloop.cluster.collector import KubeCollector  # noqa: E402
from controlloop.cluster.crdspecs import CrdSpecSource  # noqa: E402
from controlloop.cluster.kube import KubeClient  # noqa: E402
from controlloop.config import load_config  # noqa: E402
from controlloop.crds import (  # noqa: E402
    GROUP,
    KIND_BY_NAME,
    VERSION,
    crd_documents,
    crs_to_system,
    dump_yaml,
    system_to_crs,
)
from controlloop.loop.controller import Controller  # noqa: E402
from controlloop.loop.settings import ControllerSettings  # noqa: E402
from tests.fakekube import FakeKubeServer  # noqa: E402
from tests.helpers.cluster import FakeLoadSource, add_server, reading  # noqa: E402

NS = "controlloop-system"


def conversion() -> None:
    system = load_config(ROOT / "config" / "examples" / "large").system
    t = time.perf_counter()
    text = dump_yaml(system_to_crs(system, namespace=NS))
    export_s = time.perf_counter() - t
    docs = [d for d in yaml.safe_load_all(text) if d]
    t = time.perf_counter()
    crs_to_system(docs)
    import_s = time.perf_counter() - t
    print(f"large sample: {len(docs)} resources, {len(text) / 1024:.0f} KiB YAML; "
          f"export {export_s * 1000:.0f} ms, import {import_s * 1000:.0f} ms")


def reaction(debounce: float, runs: int, tmp: Path) -> list[float]:
    from kubernetes import client as k8s

    with FakeKubeServer() as fake:
        kubeconfig = fake.write_kubeconfig(tmp / "kubeconfig")
        kube = KubeClient.from_kubeconfig(kubeconfig, timeout_s=5.0)
        api = kube.api_client
        for doc in crd_documents():
            k8s.ApiextensionsV1Api(api).create_custom_resource_definition(doc)
        settings = ControllerSettings.model_validate({"namespaces": ["llm"]})
        custom = k8s.CustomObjectsApi(api)
        for doc in system_to_crs(load_config(ROOT / "config").system, settings=settings,
                                 include_servers=False):
            custom.create_namespaced_custom_object(GROUP, VERSION, NS,
                                                   KIND_BY_NAME[doc["kind"]].plural, doc)
        add_server(fake, "llm", "granite", model="granite_13b", cls="Premium",
                   accelerator="MI300X", replicas=1)
        source = CrdSpecSource(api, NS, debounce_s=debounce)
        controller = Controller(
            specs=source,
            collector=KubeCollector(kube, FakeLoadSource({"granite": reading(600)}),
                                    lambda: source.current()[1]),
            actuator=KubeActuator(kube, source.current()[1].actuation, sleep=lambda s: None))
        controller.on_report.append(source.write_status)
        source.on_change = lambda: threading.Thread(target=controller.run_cycle,
                                                    daemon=True).start()
        source.start()
        controller.run_cycle()
        out = []
        for i in range(runs):
            gen = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "optimizers",
                                                      "default")["metadata"]["generation"]
            t = time.perf_counter()
            custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "optimizers", "default", {
                "spec": {"controller": {"backlogDrainSeconds": 100 + i}}})
            while True:
                obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS,
                                                               "optimizers", "default")
                if obj.get("status", {}).get("observedGeneration") == gen + 1:
                    break
                time.sleep(0.01)
            out.append(time.perf_counter() - t)
        source.stop()
        kube.close()
        return out


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--debounce", type=float, nargs="+", default=[0.2, 0.5, 2.0])
    args = parser.parse_args()
    conversion()
    for debounce in args.debounce:
        with tempfile.TemporaryDirectory() as tmp:
            times = reaction(debounce, args.runs, Path(tmp))
        print(f"debounce {debounce:g} s: edit -> status with the new solution: median "
              f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"({len(times)} edits)")


if __name__ == "__main__":
    main()
