"""Hostile and soak runs: many MQTT messages through mosquitto to a running sentimqd.

--mode hostile (default) sends generated payloads of every kind a broken or malicious client
can publish: random bytes, invalid UTF-8, empty and blank texts, payloads exactly at and one
byte over input.max_payload_bytes, deep and huge JSON, number and unicode edge cases, wrong field
types, v5 response topics that would loop back into the inputs, and valid texts
(IMDB openings) mixed in; over MQTT v3.1.1 and v5 clients, at QoS 0 and 1. --mode soak sends
only valid texts (QoS 1, v5) to watch memory over a long run.

Every message has its own input topic, sentimq/classify/h/<n>, so each answer (a result on
sentimq/result/<input topic>, an error reply naming source_topic on sentimq/error, or a v5
response on its response topic) is matched to its message. Pass: the daemon never exits, every
QoS 1 message is answered exactly once (its acknowledgement follows its answer), and RSS stays
bounded; QoS 0 messages may be dropped under overload and are counted. sentimqd's RSS is
sampled every --rss-every messages; the slope after the first 10 % of the run is reported in
MiB per 100,000 messages.

  python3 benches/hostile.py --sentimqd target/release/sentimqd --messages 1000000
  python3 benches/hostile.py --mode soak --messages 1000000

Prints progress lines, then one JSON summary line. A run cannot be resumed: the soak measures
one process. At the 239 messages/s measured on 2 cores (docs/measurements.md) a million take
about 70 minutes; run in the background with the output in a file. Needs mosquitto, paho-mqtt and
../shared's IMDB archive (or --data).
"""

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_compare import free_port, imdb_openings, start_mosquitto  # noqa: E402

MAX_PAYLOAD = 4096
INPUT = "sentimq/classify/h/"
REPLIES = "hostile/replies/"

EDGE_JSON = [
    b'{"text": "\\ud800 lone surrogate"}',
    b'{"text": "ok", "id": 18446744073709551616}',
    b'{"text": "ok", "id": 1e999}',
    b'{"text": "ok", "id": -0.0}',
    b'{"text": NaN}',
    b'{"text": "\\u0000\\u0001\\u001f"}',
    b'{"text": "\xe2\x80\x8b\xe2\x80\x8b"}',
    '{"text": "Ça va 😀 — 好 שלום ﬁ"}'.encode(),
    b'{"text": "ok", "text": "duplicate key"}',
    b'{"text": "\\"quoted\\" \\\\ back"}',
    b'{"id": null}',
    b'{}',
    b'{',
    b'{"text": "unterminated',
]
WRONG_TYPES = [b'{"text": 5}', b'{"text": null}', b'{"text": ["a"]}', b'{"text": {"a": 1}}',
               b'{"text": true}', b'[]', b'"just a string"', b'{"text": "ok", "id": {"a": [1, 2]}}']


def payload(kind, rng, texts):
    """The payload of one message of `kind` and whether it is a valid text."""
    text = texts[rng.randrange(len(texts))]
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
    if kind == 1:
        raw = bytearray(text.encode())
        for _ in range(1 + rng.randrange(3)):
            raw.insert(rng.randrange(len(raw) + 1), rng.choice([0x80, 0xC3, 0xFF, 0xED, 0xF8]))
        return bytes(raw)
    if kind == 2:
        return rng.choice([b"", b" ", b"\n\t ", b'{"text": ""}', b'{"text": "   "}', "\u3000".encode()])
    if kind == 3:
        base = (text + " ") * (MAX_PAYLOAD // max(len(text), 1) + 1)
        data = base.encode()[:MAX_PAYLOAD]
        while True:  # cut at a character boundary, then pad with spaces to the exact size
            try:
                data.decode()
                break
            except UnicodeDecodeError:
                data = data[:-1]
        data = data + b" " * (MAX_PAYLOAD - len(data))
        return data + (b"x" if rng.random() < 0.5 else b"")
    if kind == 4:
        depth = rng.choice([64, 127, 128, 129, 1000, 1900])
        return b'{"text": ' + b"[" * depth + b'"deep"' + b"]" * depth + b"}"
    if kind == 5:
        keys = rng.randrange(10, 200)
        body = ",".join(f'"k{i}": "{"v" * 10}"' for i in range(keys))
        return ('{' + body + f', "text": {json.dumps(text)}' + '}').encode()[:MAX_PAYLOAD]
    if kind == 6:
        return rng.choice(EDGE_JSON)
    if kind == 7:
        return rng.choice(WRONG_TYPES)
    if kind == 8:
        return json.dumps({"id": rng.randrange(1 << 40), "text": text}).encode()
    return text.encode()


class Run:
    def __init__(self, port, args):
        self.args = args
        self.answers = bytearray(args.messages)
        self.qos1 = bytearray(args.messages)
        self.answered_qos1 = 0
        self.duplicates = 0
        self.unmatched = 0
        self.bad_correlation = 0
        self.results = 0
        self.errors = 0
        self.online = threading.Event()
        self.progress = threading.Condition()
        self.sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-sub",
                               protocol=mqtt.MQTTv5)
        self.sub.on_message = self.on_message
        self.sub.connect("127.0.0.1", port)
        self.sub.subscribe([("sentimq/result/#", 1), ("sentimq/error", 1), ("sentimq/status", 1),
                            (REPLIES + "#", 1)])
        self.sub.loop_start()
        self.v5 = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-v5",
                              protocol=mqtt.MQTTv5)
        self.v3 = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-v3",
                              protocol=mqtt.MQTTv311)
        for client in (self.v5, self.v3):
            client.max_inflight_messages_set(1000)
            client.max_queued_messages_set(0)
            client.connect("127.0.0.1", port)
            client.loop_start()

    def on_message(self, _client, _userdata, message):
        topic = message.topic
        if topic == "sentimq/status":
            if message.payload == b"online":
                self.online.set()
            return
        source = None
        if topic == "sentimq/error":
            self.errors += 1
            try:
                source = json.loads(message.payload).get("source_topic", "")
            except ValueError:
                source = ""
        elif topic.startswith("sentimq/result/"):
            self.results += 1
            source = topic[len("sentimq/result/"):]
        elif topic.startswith(REPLIES):
            n = topic[len(REPLIES):]
            props = getattr(message, "properties", None)
            data = getattr(props, "CorrelationData", None)
            if data != n.encode():
                self.bad_correlation += 1
            source = INPUT + n
            if b'"error"' in message.payload:
                self.errors += 1
            else:
                self.results += 1
        if not source or not source.startswith(INPUT) or not source[len(INPUT):].isdigit():
            self.unmatched += 1
            return
        n = int(source[len(INPUT):])
        if n >= len(self.answers):
            self.unmatched += 1
            return
        with self.progress:
            if self.answers[n]:
                self.duplicates += 1
            self.answers[n] = min(self.answers[n] + 1, 255)
            if self.qos1[n] and self.answers[n] == 1:
                self.answered_qos1 += 1
                self.progress.notify_all()

    def send(self, n, rng, texts):
        args = self.args
        if args.mode == "soak":
            kind, qos, v5, route = 9, 1, True, 0
        else:
            kind = n % 10
            qos = 0 if rng.random() < 0.125 else 1
            v5 = n % 2 == 1
            route = rng.randrange(16) if v5 else 0
        data = payload(kind, rng, texts)
        props = None
        if route in (3, 7, 11):
            props = Properties(PacketTypes.PUBLISH)
            # 7 and 11 would loop back into the inputs (a wildcard is a protocol error the
            # broker itself refuses, so it never reaches the daemon).
            props.ResponseTopic = {3: REPLIES + str(n), 7: INPUT + "loop",
                                   11: "sentimq/classify/h"}[route]
            props.CorrelationData = str(n).encode()
        if qos == 1:
            self.qos1[n] = 1
        client = self.v5 if v5 else self.v3
        while True:
            info = client.publish(INPUT + str(n), data, qos=qos, properties=props)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                return qos == 1
            time.sleep(0.01)  # the client's outgoing queue is full


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def slope_per_100k(samples):
    """Least-squares RSS slope (MiB per 100,000 messages) over the samples after the first 10 %."""
    if len(samples) < 3:
        return float("nan")
    start = samples[-1][0] * 0.1
    points = [(n, kib / 1024) for n, kib in samples if n >= start]
    if len(points) < 2:
        return float("nan")
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var * 100_000 if var else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["hostile", "soak"], default="hostile")
    parser.add_argument("--sentimqd", default="target/release/sentimqd")
    parser.add_argument("--sentimqd-args", default="", help="extra flags of `sentimqd run`")
    parser.add_argument("--model", type=Path, default=Path("models/imdb-minilm"))
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parent.parent.parent
                        / "shared/data/imdb/aclImdb_v1_labeled.tar.gz")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=512,
                        help="most QoS 1 messages unanswered at once")
    parser.add_argument("--rss-every", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if not Path(args.sentimqd).is_file():
        sys.exit(f"hostile: no sentimqd at {args.sentimqd} (cargo build --release --bin sentimqd)")
    texts = imdb_openings(args.data, 1000, 200)
    rng = random.Random(args.seed)

    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        broker = start_mosquitto(scratch, port, "max_inflight_messages 0\n")
        log = open(Path(scratch) / "sentimqd.log", "w+")
        daemon = None
        try:
            run = Run(port, args)
            env = {"SENTIMQ_INPUT_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD), "PATH": "/usr/bin:/bin"}
            daemon = subprocess.Popen(
                [args.sentimqd, "run", "--server", f"mqtt://127.0.0.1:{port}",
                 "--model", str(args.model), "--input", INPUT + "#", "--stats-interval-secs", "0",
                 *args.sentimqd_args.split()],
                stdout=subprocess.DEVNULL, stderr=log, env=env)
            if not run.online.wait(args.timeout):
                sys.exit("hostile: sentimqd never came online")
            samples = [(0, rss_kib(daemon.pid))]
            peak = samples[0][1]
            started = time.perf_counter()
            sent_qos1 = 0
            for n in range(args.messages):
                if daemon.poll() is not None:
                    sys.exit(f"hostile: sentimqd exited with {daemon.returncode} at message {n}")
                with run.progress:
                    deadline = time.monotonic() + args.timeout
                    while sent_qos1 - run.answered_qos1 >= args.window:
                        if not run.progress.wait(timeout=max(deadline - time.monotonic(), 0)):
                            sys.exit(f"hostile: no answer for {args.timeout} s at message {n}")
                sent_qos1 += run.send(n, rng, texts)
                if (n + 1) % args.rss_every == 0:
                    kib = rss_kib(daemon.pid)
                    peak = max(peak, kib)
                    samples.append((n + 1, kib))
                    elapsed = time.perf_counter() - started
                    print(f"{n + 1} sent, {run.answered_qos1}/{sent_qos1} QoS 1 answered, "
                          f"{(n + 1) / elapsed:.0f} msg/s, RSS {kib / 1024:.1f} MiB", flush=True)
            with run.progress:
                deadline = time.monotonic() + args.timeout
                while run.answered_qos1 < sent_qos1:
                    if not run.progress.wait(timeout=max(deadline - time.monotonic(), 0)):
                        break
            elapsed = time.perf_counter() - started
            time.sleep(1.0)  # late QoS 0 answers and duplicates
            final = rss_kib(daemon.pid)
            alive = daemon.poll() is None
            qos0 = args.messages - sent_qos1
            answered_qos0 = sum(1 for n in range(args.messages) if not run.qos1[n] and run.answers[n])
            log.seek(0)
            warnings = sum(1 for line in log if " WARN " in line or '"WARN"' in line)
            summary = {
                "mode": args.mode,
                "messages": args.messages,
                "seconds": round(elapsed, 1),
                "messages_per_s": round(args.messages / elapsed, 1),
                "qos1_sent": sent_qos1,
                "qos1_lost": sent_qos1 - run.answered_qos1,
                "duplicates": run.duplicates,
                "qos0_sent": qos0,
                "qos0_answered": answered_qos0,
                "results": run.results,
                "error_replies": run.errors,
                "unmatched_replies": run.unmatched,
                "bad_correlation": run.bad_correlation,
                "daemon_alive": alive,
                "daemon_warning_lines": warnings,
                "rss_start_mib": round(samples[0][1] / 1024, 1),
                "rss_final_mib": round(final / 1024, 1),
                "rss_peak_sampled_mib": round(peak / 1024, 1),
                "rss_slope_mib_per_100k": round(slope_per_100k(samples), 3),
            }
            print(json.dumps(summary), flush=True)
            ok = alive and summary["qos1_lost"] == 0 and run.duplicates == 0 \
                and run.unmatched == 0 and run.bad_correlation == 0
            sys.exit(0 if ok else 1)
        finally:
            if daemon is not None and daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=30)
            broker.terminate()
            broker.wait()


if __name__ == "__main__":
    main()
