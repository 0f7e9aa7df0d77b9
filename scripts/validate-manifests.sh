#!/usr/bin/env bash
# Offline validation of the deployment artefacts (no cluster, no Docker):
# Kubernetes schemas, rendered kustomizations, config, hadolint.
# With kubectl/kustomize on PATH, also renders every overlay with the real tool.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" -m pytest -q -p no:cacheprovider tests/unit/test_manifests.py
if command -v kustomize >/dev/null 2>&1; then
    BUILD=(kustomize build --load-restrictor LoadRestrictionsNone)
elif command -v kubectl >/dev/null 2>&1; then
    BUILD=(kubectl kustomize --load-restrictor=LoadRestrictionsNone)
else
    echo "kustomize/kubectl not found: skipped the real kustomize render" >&2
    exit 0
fi
for dir in manifests/cluster manifests/namespaced manifests/examples; do
    "${BUILD[@]}" "$dir" >/dev/null
    echo "rendered $dir"
done
