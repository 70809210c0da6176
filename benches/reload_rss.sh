#!/usr/bin/env bash
# Memory across model reloads: starts a private mosquitto and sentimqd (this checkout's release
# build, the shipped model, the defaults), sends light traffic, then reloads (SIGHUP) 10 times and
# prints VmRSS and VmHWM (peak) after each. docs/measurements.md#model-reload has the figures.
#   benches/reload_rss.sh [path/to/sentimqd]
set -euo pipefail
BIN=${1:-target/release/sentimqd}
cd "$(dirname "$0")/.."
d=$(mktemp -d); port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' $port > $d/m.conf
/usr/sbin/mosquitto -c $d/m.conf >/dev/null 2>&1 & mp=$!
sleep 0.5
$BIN run --server mqtt://127.0.0.1:$port --model models/imdb-minilm > $d/d.log 2>&1 & dp=$!
until grep -q "ready" $d/d.log; do
  kill -0 $dp 2>/dev/null || { cat $d/d.log >&2; echo "sentimqd exited" >&2; kill $mp; exit 1; }
  sleep 0.2
done
rss() { awk '/VmRSS|VmHWM/{printf "%s %.1f MiB  ", $1, $2/1024}' /proc/$dp/status; echo; }
mosquitto_sub -p $port -t sentimq/reload > $d/reload.out & sp=$!
echo "ready:          $(rss)"
for i in $(seq 1 50); do mosquitto_pub -p $port -q 1 -t sentimq/classify/x -m "A fine film, review $i, with a story that moves and acting that convinces."; done
sleep 2; echo "after traffic:  $(rss)"
for i in $(seq 1 10); do
  kill -HUP $dp
  until [ "$(wc -l < $d/reload.out)" -ge $i ]; do sleep 0.1; done
  for j in $(seq 1 10); do mosquitto_pub -p $port -q 1 -t sentimq/classify/x -m "After reload $i: dull and far too long."; done
  sleep 1; echo "after reload $i: $(rss)"
done
echo "reloads swapped in: $(grep -c '"ok":true' $d/reload.out) of 10; the first outcome:"
head -1 $d/reload.out
kill $sp $dp; wait $dp || true; kill $mp; rm -rf "$d"
