#!/usr/bin/env bash
# System packages the tests need, from Debian:
#   prometheus                 a real Prometheus server with promtool (tests/promharness)
#   chromium, chromium-driver  the dashboard's browser test (tests/e2e/test_dashboard_browser.py)
#   kubernetes-client          kubectl against the loopback API (tests/integration/test_kube_crds.py)
set -euo pipefail
missing=()
if ! command -v prometheus >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus ]; then
    missing+=(prometheus)
fi
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    missing+=(chromium)
fi
if ! command -v chromedriver >/dev/null 2>&1 && [ ! -x /usr/bin/chromedriver ]; then
    missing+=(chromium-driver)
fi
if ! command -v kubectl >/dev/null 2>&1; then
    missing+=(kubernetes-client)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "missing and we are not root: install Debian's ${missing[*]}" >&2
        exit 1
    fi
fi
echo "installing Debian packages: ${missing[*]}" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# prometheus' postinst starts a service where systemd runs; tests start their own.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
