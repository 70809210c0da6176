"""sentimqd against the Python peer (benches/mqtt_peer.py) through one private mosquitto.

Each round starts one daemon, waits for its retained `online`, sends --messages QoS 1 texts
(the first --chars characters of IMDB test reviews, negative and positive interleaved, cut at a
word) on `sentimq/classify/bench/<run>/<n>`, at most --window of them unanswered, and times the
answers (results or error replies) on `sentimq/result/#` and `sentimq/error`; then the other
daemon. Rounds alternate. Prints one JSON line per run, then the ratio of the mean messages per
second (sentimqd / Python peer) as the last line.

With --rate R the texts are sent at a steady R per second instead (the load of a device that
is not saturated), and each run also reports the latency from publishing a message to its
answer (p50, p95) and the daemon's CPU use in cores (its user + system time over the run,
from /proc; also by thread name, clock ticks of 10 ms); the last lines compare those.

  python3 benches/daemon_compare.py --sentimqd target/release/sentimqd \
      --sentimqd-args "--workers 2 --intra-op-threads 1" --peer-graph model.ort-int8.onnx

The peer runs the model's default graph unless --peer-graph names another ONNX file: on
x86_64, onnxruntime runs its own `quantize_dynamic` output of model.onnx several times faster
than sentimq's int8 file (benches/ort_compare.py), so that is the fair peer.

Needs mosquitto, ../shared's IMDB archive (or --data) and the peer's packages (paho-mqtt,
onnxruntime, numpy, tokenizers).
"""

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

HERE = Path(__file__).resolve().parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(scratch, port, extra=""):
    """A private mosquitto on 127.0.0.1:`port` without a queue cap or persistence (config in
    the `scratch` directory); `extra` lines are appended to its config."""
    config = Path(scratch) / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                      f"max_queued_messages 0\npersistence false\n{extra}")
    broker = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return broker


def imdb_openings(archive, count, chars):
    """The first `chars` characters (cut at a word) of `count` test reviews, neg/pos interleaved."""
    wanted = {"neg": [], "pos": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) < 3 or parts[-3] != "test" or parts[-2] not in wanted:
                continue
            bucket = wanted[parts[-2]]
            if len(bucket) < (count + 1) // 2:
                text = tar.extractfile(member).read().decode("utf-8")
                text = " ".join(text.replace("<br />", " ").split())
                if len(text) > chars:
                    cut = text[:chars]
                    text = cut[:cut.rfind(" ")] if " " in cut and text[chars] != " " else cut
                bucket.append(text)
            if all(len(b) >= (count + 1) // 2 for b in wanted.values()):
                break
    interleaved = [t for pair in zip(wanted["neg"], wanted["pos"]) for t in pair]
    if len(interleaved) < count:
        sys.exit(f"daemon_compare: {archive} has fewer than {count} test reviews")
    return interleaved[:count]


class Load:
    """A publisher and a subscriber client on the broker, counting one answer per message."""

    def __init__(self, port):
        self.port = port
        self.answered = set()
        self.errors = 0
        self.sent_at = {}
        self.latencies = []
        self.tag = "r0"
        self.online = threading.Event()
        self.progress = threading.Condition()
        self.sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
        self.sub.on_message = self.on_message
        self.sub.connect("127.0.0.1", port)
        self.sub.subscribe([("sentimq/result/#", 1), ("sentimq/error", 1), ("sentimq/status", 1)])
        self.sub.loop_start()
        self.pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
        self.pub.max_inflight_messages_set(1000)
        self.pub.connect("127.0.0.1", port)
        self.pub.loop_start()

    def on_message(self, _client, _userdata, message):
        if message.topic == "sentimq/status":
            if message.payload == b"online":
                self.online.set()
            return
        if message.topic == "sentimq/error":
            self.errors += 1
            source = json.loads(message.payload).get("source_topic", "")
        else:
            source = message.topic[len("sentimq/result/"):]
        arrived = time.perf_counter()
        # Only this run's messages count (`bench/<tag>/<n>`): a late answer from an earlier
        # run reuses no topic.
        tag, _, n = source.rpartition("/")
        with self.progress:
            if not tag.endswith("/" + self.tag):
                return
            if n not in self.answered:
                sent = self.sent_at.get(n)
                if sent is not None:
                    self.latencies.append(arrived - sent)
            self.answered.add(n)
            self.progress.notify_all()

    def reset(self, tag):
        self.pub.publish("sentimq/status", b"", qos=1, retain=True).wait_for_publish(5)
        time.sleep(0.2)
        self.online.clear()
        with self.progress:
            self.answered = set()
            self.errors = 0
            self.sent_at = {}
            self.latencies = []
            self.tag = tag

    def run(self, texts, window, timeout, rate=0.0):
        """Sends `texts` (at `rate` per second, or as fast as `window` allows) and waits for
        every answer; returns the seconds taken."""
        started = time.perf_counter()
        for n, text in enumerate(texts):
            if rate > 0:
                time.sleep(max(started + n / rate - time.perf_counter(), 0.0))
            with self.progress:
                deadline = time.monotonic() + timeout
                while n - len(self.answered) >= window:
                    if not self.progress.wait(timeout=max(deadline - time.monotonic(), 0)):
                        sys.exit(f"daemon_compare: no answer for {timeout} s at message {n}")
                self.sent_at[str(n)] = time.perf_counter()
            self.pub.publish(f"sentimq/classify/bench/{self.tag}/{n}", text.encode(), qos=1)
        with self.progress:
            deadline = time.monotonic() + timeout
            while len(self.answered) < len(texts):
                if not self.progress.wait(timeout=max(deadline - time.monotonic(), 0)):
                    sys.exit(f"daemon_compare: {len(texts) - len(self.answered)} messages unanswered")
        return time.perf_counter() - started


def cpu_seconds(pid):
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid):
    """CPU seconds of each thread of `pid` so far, summed by thread name."""
    by_name = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        by_name[name] = by_name.get(name, 0.0) + seconds
    return by_name


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p), len(ordered) - 1)] if ordered else float("nan")


def start(kind, args, port, round_):
    if kind == "sentimqd":
        # A new session each round: with one client id the broker would keep the messages of
        # the peer's round for sentimqd's persistent session and deliver them in its next.
        command = [args.sentimqd, "run", "--server", f"mqtt://127.0.0.1:{port}",
                   "--client-id", f"daemon-compare-{round_}",
                   "--model", str(args.model), *shlex.split(args.sentimqd_args)]
    else:
        command = [sys.executable, str(HERE / "mqtt_peer.py"), "--server", f"127.0.0.1:{port}",
                   "--model", str(args.model), "--threads", str(args.peer_threads)]
        if args.peer_graph:
            command += ["--graph", str(args.peer_graph)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentimqd", default="target/release/sentimqd")
    parser.add_argument("--sentimqd-args", default="", help="extra flags of `sentimqd run`")
    parser.add_argument("--model", type=Path, default=Path("models/imdb-minilm"))
    parser.add_argument("--data", type=Path,
                        default=HERE.parent.parent / "shared/data/imdb/aclImdb_v1_labeled.tar.gz")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--chars", type=int, default=200)
    parser.add_argument("--window", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peer-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peer-graph", type=Path,
                        help="ONNX file the peer runs instead of the model's default graph "
                             "(e.g. onnxruntime's quantize_dynamic of model.onnx)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="messages per second (0: as fast as the window allows)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if not Path(args.sentimqd).is_file():
        sys.exit(f"daemon_compare: no sentimqd at {args.sentimqd} (cargo build --release --bin sentimqd)")
    texts = imdb_openings(args.data, args.messages, args.chars)

    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        broker = start_mosquitto(scratch, port)
        try:
            load = Load(port)
            rates = {"sentimqd": [], "python": []}
            steady = {"sentimqd": [], "python": []}
            for round_ in range(1, args.rounds + 1):
                for kind in rates:
                    load.reset(f"{kind}-{round_}")
                    daemon = start(kind, args, port, round_)
                    try:
                        if not load.online.wait(args.timeout):
                            sys.exit(f"daemon_compare: {kind} never came online: "
                                     f"{daemon.stderr.read1().decode(errors='replace')}")
                        cpu_before = cpu_seconds(daemon.pid)
                        threads_before = thread_cpu_seconds(daemon.pid)
                        seconds = load.run(texts, args.window, args.timeout, args.rate)
                        cores = (cpu_seconds(daemon.pid) - cpu_before) / seconds
                        threads = {name: round((used - threads_before.get(name, 0.0)) / seconds, 3)
                                   for name, used in thread_cpu_seconds(daemon.pid).items()}
                    finally:
                        daemon.send_signal(signal.SIGTERM)
                        daemon.wait(timeout=30)
                    rate = len(texts) / seconds
                    rates[kind].append(rate)
                    report = {"daemon": kind, "round": round_, "messages": len(texts),
                              "errors": load.errors, "seconds": round(seconds, 3),
                              "messages_per_s": round(rate, 1)}
                    if args.rate > 0:
                        p50, p95 = (percentile(load.latencies, p) * 1e3 for p in (0.5, 0.95))
                        steady[kind].append((p50, cores))
                        report.update(p50_ms=round(p50, 2), p95_ms=round(p95, 2),
                                      cpu_cores=round(cores, 3),
                                      cores_by_thread={n: c for n, c in threads.items() if c > 0})
                    print(json.dumps(report), flush=True)
        finally:
            broker.terminate()
            broker.wait()
    mean = {kind: sum(r) / len(r) for kind, r in rates.items()}
    print(f"sentimqd {mean['sentimqd']:.1f} msg/s, python peer {mean['python']:.1f} msg/s")
    if args.rate > 0:
        for kind, runs in steady.items():
            p50 = sum(r[0] for r in runs) / len(runs)
            cores = sum(r[1] for r in runs) / len(runs)
            print(f"{kind} at {args.rate:g} msg/s: p50 {p50:.2f} ms, {cores:.3f} cores")
    print(f"ratio {mean['sentimqd'] / mean['python']:.2f}")


if __name__ == "__main__":
    main()
