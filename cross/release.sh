#!/usr/bin/env bash
# Builds the release artifacts of sentimqd into dist/:
#   sentimqd_<version>-1_<arch>.deb and sentimqd-<version>-<target>.tar.gz for amd64, arm64 and
#   armhf, plus SHA256SUMS (check with `cd dist && sha256sum -c SHA256SUMS`).
#   cross/release.sh                      # all three targets
#   cross/release.sh aarch64-unknown-linux-gnu
# The ARM targets are built by cross/build.sh (Debian's toolchain, no Docker); the .deb by
# cargo-deb (`cargo install cargo-deb`) from Cargo.toml's [package.metadata.deb].
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
model=models/imdb-minilm
for file in model.int8.onnx tokenizer.json model.json; do
  [ -f "$model/$file" ] || { echo "cross/release.sh: $model/$file is missing" >&2; exit 1; }
done
command -v cargo-deb >/dev/null || { echo "cross/release.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
host_target_dir=${CARGO_TARGET_DIR:-target}
cross_target_dir=${SENTIMQ_CROSS_TARGET_DIR:-$host_target_dir/cross}
mkdir -p dist
# This version's artifacts of the targets built now replace their old copies; SHA256SUMS covers
# what dist/ holds afterwards (another version's files too, which a full run removes).
[ $# -gt 0 ] || rm -f dist/*.deb dist/*.tar.gz dist/SHA256SUMS
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

for target in "${targets[@]}"; do
  echo "== $target"
  if [ "$target" = x86_64-unknown-linux-gnu ]; then
    target_dir=$host_target_dir
    cargo build --release --locked --target "$target" --bin sentimqd --no-default-features
  else
    target_dir=$cross_target_dir
    SENTIMQ_CROSS_TARGET_DIR=$target_dir cross/build.sh "$target" build --release --locked --bin sentimqd --no-default-features
  fi
  binary=$target_dir/$target/release/sentimqd
  echo "$target: $(stat -c %s "$binary") bytes ($binary)"

  CARGO_TARGET_DIR=$target_dir cargo deb --no-build --no-strip --target "$target" --output dist/

  name=sentimqd-$version-$target
  mkdir -p "$stage/$name/models/imdb-minilm"
  cp "$binary" "$stage/$name/"
  cp systemd/sentimqd.service systemd/sentimqd.toml README.md "$stage/$name/"
  cp models/README.md "$stage/$name/MODEL.md"
  cp "$model"/{model.int8.onnx,tokenizer.json,model.json} "$stage/$name/models/imdb-minilm/"
  (cd "$stage/$name" && sha256sum sentimqd sentimqd.service sentimqd.toml models/imdb-minilm/* > SHA256SUMS)
  tar -C "$stage" --owner=0 --group=0 --sort=name -czf "dist/$name.tar.gz" "$name"
  rm -rf "${stage:?}/$name"
done

(cd dist && sha256sum -- *.deb *.tar.gz > SHA256SUMS && sha256sum -c --quiet SHA256SUMS)
ls -l dist
