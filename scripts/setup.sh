#!/usr/bin/env bash
# Installs what sentimq's tests and tools need on a fresh Debian machine (run as root or with sudo).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# The host toolchain (rustup's stable, with rustfmt and clippy) comes first: Debian's Rust is
# for the ARM builds only, and the host builds, CI's lint steps and `cargo install` need it.
if ! command -v rustup >/dev/null; then
  echo "setup.sh: needs rustup's stable toolchain with rustfmt and clippy (https://rustup.rs)" >&2
  exit 1
fi

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
# mosquitto (broker + mosquitto_passwd): the daemon's integration tests run against a real one.
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
# mosquitto_pub/mosquitto_sub: scripts/demo.sh, the README's main job.
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
# Raspberry Pi builds without Docker (cross/build.sh): Debian's rustc 1.96 with the targets'
# prebuilt standard libraries (multiarch arm64/armhf packages), GNU cross linkers, qemu-user to
# run the binaries.
# The crate's rust-version (Cargo.toml) is the oldest Debian rustc it builds with; an older one
# (bookworm's main suite has 1.85, bookworm-security the current one) is upgraded.
rust_version=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
debian_rustc_is_current() {
  local have
  have=$(/usr/bin/rustc --version 2>/dev/null | cut -d' ' -f2) || return 1
  [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$rust_version" "$have" | sort -V | head -n1)" = "$rust_version" ]
}
debian_rustc_is_current || need_apt+=(rustc-web)
[ -x /usr/bin/cargo ] && debian_rustc_is_current || need_apt+=(cargo-web)
for arch in arm64:aarch64-unknown-linux-gnu armhf:armv7-unknown-linux-gnueabihf; do
  if ! compgen -G "/usr/lib/rustlib/${arch#*:}/lib/libstd-*.rlib" >/dev/null; then
    dpkg --print-foreign-architectures | grep -qx "${arch%%:*}" || as_root dpkg --add-architecture "${arch%%:*}"
    need_apt+=("libstd-rust-web-dev:${arch%%:*}")
  fi
done
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need_apt+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
# LLVM's linker for the targets' release builds (cross/build.sh: packed relocations).
[ -x /usr/lib/llvm-15/bin/ld.lld ] || need_apt+=(lld-15)
# OpenBLAS for the training step's matmuls, linked statically (crates/train-kernels/build.rs).
[ -f "/usr/lib/$(gcc -print-multiarch)/openblas-pthread/libopenblas.a" ] || need_apt+=(libopenblas-pthread-dev)
# systemd-analyze (unit checks) and dpkg-deb (package checks); /bin/kill, which the package
# check's throw-away root copies (the unit's ExecReload).
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
[ -x /bin/kill ] || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
  # A mirror caught mid-sync fails one index ("File has unexpected size"); try again, then go
  # on with what was fetched: the install below still fails, naming the package, if it needs
  # an index that did not arrive.
  for attempt in 1 2 3; do
    as_root apt-get update -qq && break
    echo "setup.sh: apt-get update failed (attempt $attempt of 3)" >&2
    if [ "$attempt" -lt 3 ]; then sleep 20; fi
  done
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! debian_rustc_is_current; then
  echo "setup.sh: Debian's /usr/bin/rustc is $(/usr/bin/rustc --version 2>&1 | head -n1); the ARM" \
    "builds (cross/build.sh) need rustc-web >= $rust_version, which bookworm-security carries." \
    "If apt-get update failed above, run this script again once the mirror answers" >&2
  exit 1
fi

# onnx + onnxruntime: the interop tests and benches/ort_compare.py; pyarrow: the parquet tests;
# paho-mqtt: the hostile-input test (benches/hostile.py).
if ! python3 -c "import onnx, onnxruntime, numpy, pyarrow, paho.mqtt" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r tests/python/requirements.txt
fi

# cargo-deb: the .deb packages (cross/release.sh, and the package check of scripts/test.sh).
if ! command -v cargo-deb >/dev/null; then
  cargo install --quiet --locked cargo-deb@3.8.0
fi
