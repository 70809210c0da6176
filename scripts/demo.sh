#!/usr/bin/env bash
# The main job, end to end: sentimqd classifies reviews arriving over MQTT with the shipped model
# (models/imdb-minilm) and publishes JSON results.
#   scripts/demo.sh                          # sample reviews
#   scripts/demo.sh "Loved it." "Hated it."  # your texts
# Starts a private mosquitto on a free loopback port, builds and starts sentimqd with its
# defaults (no --model: the shipped model), publishes each text at QoS 1 on
# sentimq/classify/demo/<n>, prints every result, then stops both (SIGTERM: sentimqd publishes
# `offline` and disconnects). Needs mosquitto and mosquitto-clients (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

texts=("$@")
if [ ${#texts[@]} -eq 0 ]; then
  texts=(
    "A wonderful, moving film. The cast is superb and the last act had me in tears."
    "Dull, far too long, and the plot makes no sense. I checked my watch every ten minutes."
    "I expected little and came out delighted: sharp writing, great pacing, real heart."
    "The acting is wooden and the dialogue painful. A waste of two hours and a good premise."
  )
fi

sentimqd=${SENTIMQD:-target/release/sentimqd}
if [ -z "${SENTIMQD:-}" ]; then
  cargo build --release --quiet --bin sentimqd
fi
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
for tool in "$mosquitto" mosquitto_pub mosquitto_sub; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run scripts/setup.sh" >&2; exit 1; }
done

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
{
  echo "listener $port 127.0.0.1"
  echo "allow_anonymous true"
  echo "set_tcp_nodelay true"
  [ "$(id -u)" -eq 0 ] && echo "user root"
} > "$dir/mosquitto.conf"
"$mosquitto" -c "$dir/mosquitto.conf" 2>"$dir/mosquitto.log" &
pids+=($!)

# Wait for the broker, then for the daemon's `online` status.
for _ in $(seq 50); do
  mosquitto_pub -p "$port" -t sentimq-demo/ping -n 2>/dev/null && break
  sleep 0.1
done
"$sentimqd" run --server "mqtt://127.0.0.1:$port" --client-id sentimq-demo 2>"$dir/sentimqd.log" &
daemon=$!
pids+=("$daemon")
if ! mosquitto_sub -p "$port" -t sentimq/status -C 1 -W 120 | grep -qx online; then
  echo "demo: sentimqd did not come online; its log:" >&2
  cat "$dir/sentimqd.log" >&2
  exit 1
fi
echo "sentimqd is online: $(mosquitto_sub -p "$port" -t sentimq/info -C 1 -W 10)"
echo

mosquitto_sub -p "$port" -t 'sentimq/result/#' -t sentimq/error -v -C ${#texts[@]} -W 120 > "$dir/results" &
subscriber=$!
sleep 0.3
for i in "${!texts[@]}"; do
  mosquitto_pub -p "$port" -q 1 -t "sentimq/classify/demo/$i" -m "${texts[$i]}"
done
wait "$subscriber"
for i in "${!texts[@]}"; do
  echo "> ${texts[$i]}"
  grep "^sentimq/result/sentimq/classify/demo/$i " "$dir/results" | cut -d' ' -f2- || true
done
grep "^sentimq/error " "$dir/results" || true

kill -TERM "$daemon"
wait "$daemon" || true
