#!/usr/bin/env bash
# System packages the integration tests need: Debian's Prometheus server.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "prometheus is missing and we are not root: install Debian's 'prometheus' package" >&2
        exit 1
    fi
fi
echo "installing Debian package: prometheus" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# The package's postinst starts a service where systemd runs; tests start their own.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
