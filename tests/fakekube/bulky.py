"""Pods and Deployments with the bulk a real cluster gives them (tests, fleet benchmark).

The test doubles' objects (tests/fakekube/objects.py) carry only what the tests assert
on, a few hundred bytes. A vLLM pod read from a real API server is 8-10 KB of JSON:
server-side apply's managedFields, the whole container spec (args, env, probes, volume
mounts), tolerations, containerStatuses; a Deployment made with ``kubectl apply`` also
carries its last-applied copy. What a daemon holds per cycle scales with that, so the
memory figures are measured with these. The shapes follow ``kubectl get -o json`` of
a vLLM Deployment on a GPU node pool; the values are made up.
"""

from __future__ import annotations

import json
from typing import Any

Obj = dict[str, Any]

_ENV = [("HF_HOME", "/models/cache"), ("VLLM_WORKER_MULTIPROC_METHOD", "spawn"),
        ("NCCL_DEBUG", "WARN"), ("VLLM_LOGGING_LEVEL", "INFO"),
        ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("OMP_NUM_THREADS", "8"),
        ("VLLM_USAGE_SOURCE", "production-docker-image"), ("PYTHONUNBUFFERED", "1"),
        ("HUGGING_FACE_HUB_TOKEN", ""), ("VLLM_ATTENTION_BACKEND", "FLASH_ATTN")]


def _container(model: str) -> Obj:
    probe = {"httpGet": {"path": "/health", "port": 8000, "scheme": "HTTP"},
             "periodSeconds": 10, "timeoutSeconds": 5, "successThreshold": 1,
             "failureThreshold": 3}
    env: list[Obj] = [{"name": k, "value": v} for k, v in _ENV]
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                               "fieldPath": "metadata.name"}}})
    return {
        "name": "vllm", "image": "vllm/vllm-openai:v0.6.0", "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": ["--model", f"/models/{model}", "--served-model-name", model,
                 "--port", "8000", "--max-num-seqs", "256", "--gpu-memory-utilization", "0.9",
                 "--max-model-len", "8192", "--disable-log-requests", "--enable-prefix-caching"],
        "env": env,
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "8", "memory": "64Gi"},
                      "requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "48Gi"}},
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True},
                         {"name": "shm", "mountPath": "/dev/shm"},
                         {"name": "kube-api-access-x7k2p", "readOnly": True,
                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "livenessProbe": {**probe, "initialDelaySeconds": 120},
        "readinessProbe": {**probe, "initialDelaySeconds": 30},
        "startupProbe": {**probe, "failureThreshold": 60},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _fields_of(obj: Any) -> Any:
    """A managedFields ``fieldsV1`` tree mirroring ``obj`` (as server-side apply writes)."""
    if isinstance(obj, dict):
        return {f"f:{k}": _fields_of(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return {f'k:{{"name":"{i.get("name", n)}"}}' if isinstance(i, dict) else f"v:{i}":
                _fields_of(i) for n, i in enumerate(obj)}
    return {}


def _pod_spec(model: str) -> Obj:
    return {
        "containers": [_container(model)],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": "model-cache"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
            {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 120,
        "dnsPolicy": "ClusterFirst", "serviceAccountName": "vllm",
        "serviceAccount": "vllm", "schedulerName": "default-scheduler",
        "securityContext": {}, "priority": 0, "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }


def pod_bulk(name: str, model: str, node: str) -> Obj:
    """What to merge into a test pod to make it the size of a real one."""
    spec = {**_pod_spec(model), "nodeName": node}
    stamp = "2026-12-01T08:00:00Z"
    status = {
        "hostIP": "10.0.12.7", "podIP": "10.244.3.18", "podIPs": [{"ip": "10.244.3.18"}],
        "startTime": stamp, "qosClass": "Burstable",
        "containerStatuses": [{
            "name": "vllm", "ready": True, "restartCount": 0, "started": True,
            "image": "docker.io/vllm/vllm-openai:v0.6.0",
            "imageID": "docker.io/vllm/vllm-openai@sha256:" + "3f9a" * 16,
            "containerID": "containerd://" + "a1b2c3d4" * 8,
            "state": {"running": {"startedAt": stamp}}, "lastState": {}}],
    }
    managed = [
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
         "time": stamp, "fieldsType": "FieldsV1", "fieldsV1": {
             "f:metadata": {"f:generateName": {}, "f:labels": {}, "f:ownerReferences": {}},
             "f:spec": _fields_of(spec)}},
        {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": stamp,
         "fieldsType": "FieldsV1", "subresource": "status",
         "fieldsV1": {"f:status": _fields_of(status)}},
    ]
    return {"metadata": {"generateName": name.rsplit("-", 1)[0] + "-",
                         "creationTimestamp": stamp, "uid": "0f3c" * 8,
                         "managedFields": managed},
            "spec": spec, "status": status}


def deployment_bulk(deployment: Obj, model: str) -> Obj:
    """What to merge into a test Deployment to make it the size of a real, applied one."""
    template = deployment["spec"]["template"]
    spec = {**_pod_spec(model), **template.get("spec", {})}
    spec["containers"] = [{**_container(model), **spec["containers"][0]}]
    applied = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {k: deployment["metadata"][k] for k in ("name", "namespace",
                                                                    "labels")},
               "spec": {"replicas": deployment["spec"].get("replicas", 1),
                        "selector": deployment["spec"]["selector"],
                        "template": {**template, "spec": spec}}}
    annotations = dict(deployment["metadata"].get("annotations") or {})
    annotations["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(applied)
    annotations["deployment.kubernetes.io/revision"] = "3"
    managed = [{"manager": "kubectl-client-side-apply", "operation": "Update",
                "apiVersion": "apps/v1", "time": "2026-12-01T08:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": _fields_of(applied["spec"])}}]
    return {"metadata": {"annotations": annotations, "managedFields": managed},
            "spec": {"template": {**template, "spec": spec},
                     "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10}}


def merged(base: Obj, extra: Obj) -> Obj:
    """``extra`` merged into ``base`` (dicts recursively; the rest replaced)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
