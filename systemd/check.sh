#!/usr/bin/env bash
# Checks the systemd unit and the amd64 package (scripts/test.sh runs it):
# 1. `systemd-analyze security --offline=yes`: the unit's exposure score is printed and must be
#    <= 2.0;
# 2. the amd64 .deb (cargo-deb; with the dev-profile sentimqd the tests built, for speed:
#    cross/release.sh builds the release packages): `dpkg-deb -I`/`-c` show the control fields and every expected file;
# 3. the package unpacked into a throwaway root: `systemd-analyze verify` of the installed unit
#    (directives, ExecStart present) and the installed sentimqd validates the installed config
#    against the installed model, offline.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=systemd/sentimqd.service
analysis=$(systemd-analyze security --offline=yes "$unit" 2>&1) || {
  echo "$analysis" >&2
  echo "systemd/check.sh: systemd-analyze security failed on $unit" >&2
  exit 1
}
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$analysis")
echo "systemd-analyze security: exposure $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || {
  systemd-analyze security --offline=yes "$unit" >&2
  echo "systemd/check.sh: exposure $score is above 2.0" >&2
  exit 1
}

target_dir=${CARGO_TARGET_DIR:-target}
# The features of scripts/test.sh's host build, so its dependencies are reused, not rebuilt.
cargo build --locked --features train --bin sentimqd
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo deb --no-build --strip --profile dev --output "$work/sentimqd.deb" >/dev/null
deb=$work/sentimqd.deb
dpkg-deb -I "$deb"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./||' | sort > "$work/contents"
for path in usr/bin/sentimqd usr/lib/systemd/system/sentimqd.service etc/sentimq/sentimqd.toml \
    usr/share/sentimq/models/imdb-minilm/model.int8.onnx \
    usr/share/sentimq/models/imdb-minilm/tokenizer.json \
    usr/share/sentimq/models/imdb-minilm/model.json \
    usr/share/doc/sentimqd/README.md usr/share/doc/sentimqd/MODEL.md; do
  grep -qx "$path" "$work/contents" || { echo "systemd/check.sh: $path is not in the package" >&2; exit 1; }
done
dpkg-deb -f "$deb" Package Architecture Depends | tee "$work/fields"
grep -qx "Architecture: amd64" "$work/fields"
dpkg-deb -e "$deb" "$work/control"
grep -q "deb-systemd-helper enable sentimqd.service\|systemctl.*enable.*sentimqd" "$work/control/postinst" \
  || { echo "systemd/check.sh: postinst does not enable sentimqd.service" >&2; exit 1; }
grep -qx "/etc/sentimq/sentimqd.toml" "$work/control/conffiles"

root=$work/root
dpkg-deb -x "$deb" "$root"
# systemd-analyze verify --root resolves the unit's dependencies inside the root.
cp -a /lib/systemd/system/*.target "$root/usr/lib/systemd/system/"
# ExecReload's /bin/kill comes from procps, a dependency of the package.
mkdir -p "$root/bin" && cp /bin/kill "$root/bin/"
systemd-analyze verify --root="$root" sentimqd.service
echo "systemd-analyze verify: ok"
SENTIMQ_MODEL_PATH="$root/usr/share/sentimq/models/imdb-minilm" \
  "$root/usr/bin/sentimqd" validate --offline --config "$root/etc/sentimq/sentimqd.toml"
echo "systemd/check.sh: passed"
