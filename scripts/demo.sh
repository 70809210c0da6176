#!/usr/bin/env bash
# The main job, end to end: sentimqd classifies reviews arriving over MQTT with the shipped model
# (models/imdb-minilm) and publishes JSON results.
#   scripts/demo.sh                                       # four sample reviews
#   scripts/demo.sh "Loved it." "Hated it."               # your texts
#   scripts/demo.sh --server mqtt://broker.lan:1883 ...   # through your broker
# Builds sentimqd (release) and runs `sentimqd demo`: with no broker configured it starts one
# in-process (rumqttd, feature embedded-broker) on a free loopback port, starts the daemon
# with its defaults, publishes each text at QoS 1 on sentimq/classify/demo/<n>, prints every
# result as the daemon publishes it, then stops the daemon as SIGTERM would (`offline`,
# disconnect). Every `sentimqd run` flag applies (`sentimqd demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

sentimqd=${SENTIMQD:-${CARGO_TARGET_DIR:-target}/release/sentimqd}
if [ -z "${SENTIMQD:-}" ]; then
  cargo build --release --quiet --bin sentimqd
fi
exec "$sentimqd" demo "$@"
