#!/usr/bin/env bash
# Installs what sentimq's tests and tools need on a fresh Debian machine (run as root or with sudo).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
# mosquitto (broker + mosquitto_passwd): the daemon's integration tests run against a real one.
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
if [ ${#need_apt[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# onnx + onnxruntime: the interop tests and benches/onnxruntime.py.
if ! python3 -c "import onnx, onnxruntime, numpy" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r tests/python/requirements.txt
fi
