#!/usr/bin/env bash
# Refresh the dashboard's vendored charting library (uPlot, MIT) from the npm registry.
# The files are committed under controlloop/ui/static and ship as package data: the page
# loads nothing from a CDN. Usage: scripts/vendor-uplot.sh [VERSION]   (default 1.6.32)
set -euo pipefail
version="${1:-1.6.32}"
dest="$(cd "$(dirname "$0")/.." && pwd)/controlloop/ui/static"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@${version}" >/dev/null && tar xzf "uplot-${version}.tgz")
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$dest/"
cp "$work/package/LICENSE" "$dest/uPlot.LICENSE"
echo "vendored uPlot ${version} into $dest"
