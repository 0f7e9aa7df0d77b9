"""The custom resources: definitions (offline against the apiextensions schema and the structural
rules), example resources against the definitions, and the converter's round trip to the same
system the files load."""

from __future__ import annotations

import copy
import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlloop.cli import main
from controlloop.config import ConfigError, load_config
from controlloop.crds import (
    API_VERSION,
    KINDS,
    CrConfigError,
    canonical,
    crd_document,
    crd_documents,
    crs_to_system,
    dns_name,
    dump_yaml,
    system_to_crs,
)
from controlloop.loop.settings import load_controller_settings
from tests.fakekube.crd import structural_problems, validation_errors

kv = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "manifests" / "crds"
EXAMPLE = ROOT / "manifests" / "examples" / "crs" / "large.yaml"
CONFIGS = [ROOT / "config", ROOT / "config" / "examples" / "large",
           ROOT / "config" / "examples" / "small", ROOT / "config" / "examples" / "iteration"]


def schema_of(kind: str) -> dict[str, Any]:
    doc = next(d for d in crd_documents() if d["spec"]["names"]["kind"] == kind)
    schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


# --- definitions ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_committed_definition_is_the_generated_one(kind: Any) -> None:
    (committed,) = load_all(CRDS / f"{kind.plural}.yaml")
    assert committed == crd_document(kind), (
        f"manifests/crds/{kind.plural}.yaml is stale: regenerate with "
        "`python -m controlloop.crds manifests/crds`")


@pytest.mark.parametrize("version", ("1.28.0", kv.latest_version()))
def test_definitions_validate_against_apiextensions_schema(version: str) -> None:
    for doc in crd_documents():
        kv.validate(doc, version, strict=True)


def test_definitions_are_structural_with_status_and_columns() -> None:
    for doc in crd_documents():
        spec = doc["spec"]
        assert doc["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
        (version,) = spec["versions"]
        assert version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        schema = version["schema"]["openAPIV3Schema"]
        assert structural_problems(schema) == [], spec["names"]["kind"]
        assert schema["required"] == ["spec"]
        paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
        assert paths[-1] == ".metadata.creationTimestamp" and len(paths) >= 3


def test_schema_carries_the_loaders_constraints() -> None:
    acc = schema_of("Accelerator")["properties"]["spec"]
    assert set(acc["required"]) == {"type", "cost"}
    assert acc["properties"]["cost"]["minimum"] == 0
    assert acc["properties"]["multiplicity"] == {"type": "integer", "minimum": 0,
                                                 "exclusiveMinimum": True, "maximum": 1024}
    opt = schema_of("Optimizer")["properties"]["spec"]["properties"]
    assert opt["optimizer"]["properties"]["saturationPolicy"]["enum"] == [
        "None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"]
    ctl = opt["controller"]["properties"]
    assert ctl["behavior"]["properties"]["scaleUp"]["properties"]["selectPolicy"]["enum"] == [
        "Max", "Min", "Disabled"]
    assert ctl["intervalSeconds"]["exclusiveMinimum"] is True
    status = schema_of("Optimizer")["properties"]["status"]["properties"]
    assert {"observedGeneration", "lastCycleTime", "totals", "servers", "conditions"} <= set(status)
    assert status["servers"]["items"]["properties"]["decision"]["enum"][:3] == [
        "scaled", "moved", "unchanged"]


# Each bad value must be refused by the API server's schema AND by our loader: the two
# validators are independent, so agreeing on the same cases checks the generated schema.
BAD_CASES = [
    ("Accelerator", {"type": "L4", "cost": -1}),
    ("Accelerator", {"type": "L4", "cost": 1, "multiplicity": 0}),
    ("Accelerator", {"cost": 1}),
    ("Accelerator", {"type": "L4", "cost": 1, "power": {"midUtil": 1.5}}),
    ("Model", {"perf": []}),
    ("Model", {"perf": [{"acc": "L4", "maxBatchSize": 0, "atTokens": 512,
                         "decodeParms": {"alpha": 1, "beta": 0},
                         "prefillParms": {"gamma": 0, "delta": 0}}]}),
    ("Model", {"perf": [{"acc": "L4", "maxBatchSize": 8, "atTokens": 512,
                         "decodeParms": {"alpha": 0, "beta": 0},
                         "prefillParms": {"gamma": 0, "delta": 0}}]}),
    ("ServiceClass", {"modelTargets": [{"model": "m", "slo-itl": -5}]}),
    ("Capacity", {"count": [{"type": "L4", "count": -1}]}),
    ("Optimizer", {"optimizer": {"saturationPolicy": "Sometimes"}}),
    ("Optimizer", {"optimizer": {"mipGap": 1}}),
    ("Optimizer", {"controller": {"intervalSeconds": 0}}),
    ("Optimizer", {"controller": {"actuation": {"moveStrategy": "teleport"}}}),
    ("Server", {"model": "m", "minNumReplicas": -1}),
    # physical bounds (controlloop/bounds.py)
    ("Model", {"perf": [{"acc": "L4", "maxBatchSize": 100_000_000, "atTokens": 512,
                         "decodeParms": {"alpha": 1, "beta": 0},
                         "prefillParms": {"gamma": 0, "delta": 0}}]}),
    ("Capacity", {"count": [{"type": "L4", "count": 10**12}]}),
    ("ServiceClass", {"modelTargets": [{"model": "m", "slo-ttft": 1e12}]}),
    ("Server", {"model": "m", "maxBatchSize": 5000}),
]


def _base_system_crs() -> list[dict[str, Any]]:
    return system_to_crs(load_config(ROOT / "config" / "examples" / "small").system)


@pytest.mark.parametrize(("kind", "spec"), BAD_CASES, ids=lambda x: str(x)[:40])
def test_schema_and_loader_refuse_the_same_bad_values(kind: str, spec: dict[str, Any]) -> None:
    obj = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "bad"}, "spec": spec}
    assert validation_errors(obj, schema_of(kind)), f"schema accepts {spec}"
    crs = [o for o in _base_system_crs() if o["kind"] != kind or kind not in ("Optimizer",
                                                                               "Capacity")]
    with pytest.raises(CrConfigError) as info:
        crs_to_system([*crs, obj])
    assert any(p.startswith(f"{kind}/bad: spec") for p in info.value.problems), info.value
    assert f"{kind}/bad" in info.value.invalid


def test_schema_accepts_every_good_resource() -> None:
    for path in CONFIGS:
        settings = load_controller_settings(path) if (path / "controller.yaml").exists() else None
        for obj in system_to_crs(load_config(path).system, settings=settings):
            assert validation_errors(obj, schema_of(obj["kind"])) == [], (path, obj["metadata"])


# --- examples -----------------------------------------------------------------------------


def test_example_resources_are_valid_and_are_the_large_sample() -> None:
    docs = load_all(EXAMPLE)
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Accelerator", "Capacity", "Model", "ServiceClass", "Server", "Optimizer"}
    for doc in docs:
        assert doc["metadata"]["namespace"] == "controlloop-system"
        assert validation_errors(doc, schema_of(doc["kind"])) == [], doc["metadata"]["name"]
        name = doc["metadata"]["name"]
        assert name == dns_name(name) and len(name) <= 253
    large = load_config(ROOT / "config" / "examples" / "large").system
    assert crs_to_system(docs).loaded.system == canonical(large)


# --- round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_round_trip_gives_the_system_the_files_load(path: Path) -> None:
    system = load_config(path).system
    settings = load_controller_settings(path) if (path / "controller.yaml").exists() else None
    text = dump_yaml(system_to_crs(system, namespace="ns", settings=settings))
    docs = [d for d in yaml.safe_load_all(text) if d]
    # An API server lists by name, never in file order: shuffle to make sure order is not relied on.
    back = crs_to_system(list(reversed(docs)))
    assert back.loaded.system == canonical(system)
    assert back.settings == settings
    # canonical() only reorders: the same members.
    assert sorted(a.name for a in canonical(system).accelerators) == sorted(
        a.name for a in system.accelerators)
    assert sorted((m.name, m.acc) for m in canonical(system).models) == sorted(
        (m.name, m.acc) for m in system.models)


def test_names_are_dns_safe_and_unique() -> None:
    assert dns_name("granite_13b") == "granite-13b"
    assert dns_name("2xA100") == "2xa100"
    assert dns_name("__") != ""
    system = load_config(ROOT / "config" / "examples" / "small").system
    twin = system.accelerators[0].model_copy(update={"name": system.accelerators[0].name.lower()
                                                     + "_"})
    system = system.model_copy(update={"accelerators": [*system.accelerators, twin]})
    names = [o["metadata"]["name"] for o in system_to_crs(system) if o["kind"] == "Accelerator"]
    assert len(names) == len(set(names))
    back = crs_to_system(system_to_crs(system))
    assert {a.name for a in back.loaded.system.accelerators} == {a.name for a in
                                                                 system.accelerators}


def test_problems_name_the_resource_and_cross_references_are_checked() -> None:
    crs = _base_system_crs()
    model = next(o for o in crs if o["kind"] == "Model")
    broken = copy.deepcopy(model)
    broken["spec"]["perf"][0]["acc"] = "NoSuchCard"
    others = [o for o in crs if o is not model]
    with pytest.raises(ConfigError) as info:
        crs_to_system([*others, broken])
    assert "unknown accelerator 'NoSuchCard'" in str(info.value)
    with pytest.raises(ConfigError, match="no accelerators found"):
        crs_to_system([o for o in crs if o["kind"] != "Accelerator"])
    foreign = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    with pytest.raises(ConfigError, match="ConfigMap/x: not a controlloop.io/v1alpha1 kind"):
        crs_to_system([*crs, foreign])
    two = [{**o, "metadata": {"name": n}} for o in crs if o["kind"] == "Optimizer"
           for n in ("a", "b")]
    with pytest.raises(ConfigError, match="2 resources .* none named 'default'"):
        crs_to_system([o for o in crs if o["kind"] != "Optimizer"] + two)


def test_priority_out_of_range_is_a_warning_like_the_files() -> None:
    crs = _base_system_crs()
    cls = next(o for o in crs if o["kind"] == "ServiceClass")
    cls["spec"]["priority"] = 500
    got = crs_to_system(crs)
    assert any("spec.priority" in w and "using 100" in w for w in got.loaded.warnings)
    name = cls["spec"].get("name", cls["metadata"]["name"])
    svc = got.loaded.system.service_class(name)
    assert svc is not None and svc.priority == 100


def test_export_crs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["export-crs", str(ROOT / "config"), "-n", "team-a"]) == 0
    docs = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    assert {d["metadata"]["namespace"] for d in docs} == {"team-a"}
    opt = next(d for d in docs if d["kind"] == "Optimizer")
    assert isinstance(opt["spec"]["controller"], dict)
    back = crs_to_system(docs)
    assert back.settings == load_controller_settings(ROOT / "config")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["export-crs", "--definitions"]) == 0
    assert [d for d in yaml.safe_load_all(out.getvalue()) if d] == crd_documents()
    assert main(["export-crs", str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
