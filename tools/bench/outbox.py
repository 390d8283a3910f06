"""Outbox and delivery benchmark (`make bench`), each figure against a baseline in this run.

1. Durable appends/s: group commit (alarms fsync'd, many appends in flight) vs one commit
   (one fsync) per message.
2. (The replay of 100,000 queued messages after an outage is tools/bench/link.py's; its
   baseline, paho fed from memory, and its subscriber are here.)
3. Disk bytes per buffered message (database + WAL after a checkpoint) vs payload bytes.
4. End-to-end alarm latency on loopback: encrypted advert into Hub.on_advert -> decode ->
   rules -> outbox (fsync) -> Mosquitto -> subscriber, p50/p99; baselines in the same run: a
   bare paho QoS 1 publish -> subscriber round in the same broker, and one fsync'd SQLite
   commit (WAL, synchronous=FULL) of one row.
5. fsyncs per alarm on the hub's path, counted by the kernel (strace on a child process
   running the real Hub): advert -> decision commit -> "received" -> MQTT -> receipt ->
   "help is coming". Goal 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hub.config import settings as config
from hub.delivery.outbox import GroupCommitter, Outbox
from hub.rules.outgoing import Outgoing
from protocols import mqtt_schema
from tools.centre.mosquitto import Mosquitto

SITE = "bench"
RECEIPT_KEY = bytes(range(32))  # the bench centre signs its receipts, as a real one must
DB_SUFFIX = "/var/outbox.sqlite"
REPLAY_N = int(os.environ.get("BENCH_REPLAY_N", 100_000))


def _msg(kind: str, i: int, pad: int = 120) -> tuple[str, Outgoing]:
    prio = mqtt_schema.PRIORITY_CRITICAL if kind == "alarm" else mqtt_schema.PRIORITY_INFO
    payload = mqtt_schema.message(kind, f"{kind}-{i:08d}", SITE, "pendant-1", "bench", prio,
                                  "2026-01-01T00:00:00.000+01:00", pad="x" * pad)
    return mqtt_schema.topic(SITE, kind), Outgoing(kind, "pendant-1", prio, payload)


def _open_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    os.chmod(d, 0o755)  # the broker may run as its own user
    return d


# -- 1. durable appends ---------------------------------------------------------------------
def bench_appends(d: Path, n: int = 3000) -> None:
    base = Outbox(d / "one.sqlite", reserve_bytes=0)
    t = time.perf_counter()
    for i in range(n):
        base.append_many([_msg("alarm", i)], 0.0)
    one = n / (time.perf_counter() - t)
    base.close()

    async def grouped() -> float:
        ob = Outbox(d / "group.sqlite", reserve_bytes=0)
        gc = GroupCommitter(ob, lambda: 0.0)
        gc.start()
        t = time.perf_counter()
        await asyncio.gather(*(gc.append(*_msg("alarm", i)) for i in range(n * 10)))
        rate = n * 10 / (time.perf_counter() - t)
        await gc.stop()
        ob.close()
        return rate

    group = asyncio.run(grouped())
    print(f"durable appends: one commit per alarm {one:,.0f}/s (baseline); group commit "
          f"{group:,.0f}/s = {group / one:.1f}x")


# -- 2. replay after an outage ----------------------------------------------------------------
class _Counter:
    """The subscriber that checks every message arrived, in a process of its own: in the
    benchmark's process it competed for the interpreter with what is measured (the hub never
    hosts a subscriber), and took more from the link's threads than from the baseline's."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.n = 0
        self.want = 0
        self.done = threading.Event()
        self._p: subprocess.Popen[str] | None = None

    def expect(self, n: int) -> None:
        """Subscribe afresh for `n` messages; returns once the broker has granted it."""
        self.stop()
        self.n, self.want = 0, n
        self.done.clear()
        self._p = subprocess.Popen([sys.executable, "-m", "tools.bench.outbox", "--subscriber",
                                    str(self.port), self.topic, str(n)],
                                   stdout=subprocess.PIPE, text=True)
        assert self._p.stdout is not None
        if self._p.stdout.readline().strip() != "subscribed":
            raise RuntimeError("bench subscriber could not subscribe")
        threading.Thread(target=self._wait, args=(self._p,), daemon=True).start()

    def _wait(self, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if line.isdigit():
            self.n = int(line)
        self.done.set()

    def stop(self) -> None:
        if self._p is not None and self._p.poll() is None:
            self._p.kill()
            self._p.wait()


def _subscriber(port: int, topic: str, n: int) -> None:
    """Child of _Counter: say "subscribed", then how many arrived once n did."""
    got = [0]
    all_in = threading.Event()
    subscribed = threading.Event()

    def on_message(*a: Any) -> None:
        got[0] += 1
        if got[0] >= n:
            all_in.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{port}",
                    protocol=mqtt.MQTTv5)
    c.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    if subscribed.wait(10):
        print("subscribed", flush=True)
        all_in.wait(600)
    print(got[0], flush=True)
    c.disconnect()
    c.loop_stop()


def _paho_windowed(port: int, n: int, window: int, payload: bytes) -> float:
    """Baseline: paho from memory, at most `window` unacknowledged."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(window)
    free = threading.Semaphore(window)
    c.on_publish = lambda *a: free.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    t = time.perf_counter()
    for _ in range(n):
        free.acquire()
        c.publish(mqtt_schema.topic(SITE, "status"), payload, qos=1)
    for _ in range(window):
        free.acquire()
    dt = time.perf_counter() - t
    c.disconnect()
    c.loop_stop()
    return n / dt


def bench_disk(d: Path) -> None:
    """Disk bytes per buffered message, on 100k rows. (The replay of such a backlog is
    measured in tools/bench/link.py.)"""
    ob = Outbox(d / "size.sqlite", reserve_bytes=0)
    for start in range(0, REPLAY_N, 5000):
        ob.append_many([_msg("status", i) for i in range(start, min(start + 5000,
                                                                    REPLAY_N))], 0.0)
    ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    files = sum(p.stat().st_size for p in d.glob("size.sqlite*"))
    pay = len(json.dumps(_msg("status", 0)[1].payload, separators=(",", ":")))
    print(f"disk per buffered message: {files / REPLAY_N:.0f} bytes for a {pay}-byte payload "
          f"(= {files / REPLAY_N / pay:.2f}x the payload); budget accounting counts "
          f"{ob.stats().used_bytes / REPLAY_N:.0f} bytes")
    ob.close()


# -- 4. end-to-end alarm latency ----------------------------------------------------------------
def _percentiles(xs: list[float]) -> str:
    xs = sorted(xs)
    p50 = statistics.median(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def _one_commit(d: Path, n: int = 300) -> list[float]:
    """Baseline: one row per transaction, each commit fsync'd."""
    import sqlite3

    db = sqlite3.connect(d / "commit.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t(x BLOB)")
    out = []
    row = b"x" * 300
    for _ in range(n):
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?)", (row,))
        db.execute("COMMIT")
        out.append(time.perf_counter() - t)
    db.close()
    return out


def bench_latency(d: Path, n: int = int(os.environ.get("BENCH_LATENCY_N", 300))) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    from hub.radio.scanner import Advert
    from protocols import bthome
    from tests.hub_support import SilentRadio

    broker = Mosquitto(d / "lat-broker", extra_conf="set_tcp_nodelay true\n").start()
    got: dict[str, float] = {}
    arrived = threading.Condition()
    # The hub's rounds wait on this event, set from the subscriber's thread: polling the
    # event loop would take the interpreter from the threads being measured.
    hub_heard: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        m = json.loads(msg.payload)
        with arrived:
            got[m.get("id", "")] = now
            arrived.notify_all()
        for loop, ev in hub_heard:
            loop.call_soon_threadsafe(ev.set)
        if m.get("kind") in mqtt_schema.RECEIPT_KINDS:  # like the response centre
            body = mqtt_schema.signed_receipt([m["id"]], SITE, "bench", "", RECEIPT_KEY)
            c.publish(mqtt_schema.topic(SITE, "receipt"), json.dumps(body), qos=1)

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="lat-sub", protocol=mqtt.MQTTv5)
    ready = threading.Event()
    sub.on_connect = lambda c, *a: c.subscribe(f"{mqtt_schema.TOPIC_ROOT}/{SITE}/#", qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    ready.wait(10)

    def wait_id(pred: Callable[[], bool]) -> None:
        with arrived:
            arrived.wait_for(pred, 10)

    try:
        # Baseline: bare paho publish -> subscriber.
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="lat-pub",
                          protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        base = []
        for i in range(n):
            t = time.perf_counter()
            pub.publish(mqtt_schema.topic(SITE, "event"), b'{"id":"raw%d"}' % i, qos=1)
            wait_id(lambda i=i: f"raw{i}" in got)  # type: ignore[misc]
            base.append(got[f"raw{i}"] - t)
        pub.disconnect()
        pub.loop_stop()

        cfg_path, key, mac = _hub_dir(d, broker.port)
        from hub.service import Hub

        aes = AESCCM(key, tag_length=4)
        mac6 = bthome.mac_bytes(mac)

        def advert(counter: int) -> bytes:
            info = bthome.INFO_VERSION_2 | bthome.INFO_ENCRYPTED | bthome.INFO_TRIGGER
            objs = bthome.encode_objects([(bthome.PACKET_ID, counter % 256),
                                          (bthome.BUTTON, bthome.BUTTON_PRESS)])
            ctr = counter.to_bytes(4, "little")
            sealed = aes.encrypt(bthome.nonce(mac6, info, ctr), objs, None)
            return bytes((info,)) + sealed[:-4] + ctr + sealed[-4:]

        async def hub_rounds() -> list[float]:
            hub = Hub(config.load(cfg_path))
            hub.scanner = SilentRadio()
            stop = asyncio.Event()
            task = asyncio.create_task(hub.run(stop))
            while not hub.link.connected:
                await asyncio.sleep(0.01)
            heard = asyncio.Event()
            hub_heard.append((asyncio.get_running_loop(), heard))
            out = []
            for i in range(n):
                before = set(got)
                heard.clear()
                t = time.perf_counter()
                hub.on_advert(Advert(mac, -50, advert(1000 + i), time.time()))
                deadline = t + 10
                while len(got) == len(before) and time.perf_counter() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(heard.wait(), deadline - time.perf_counter())
                    heard.clear()
                new = [k for k in got if k not in before]
                if not new:
                    raise RuntimeError("no alarm came out of the hub (rules or decoder?)")
                out.append(got[new[0]] - t)
            stop.set()
            await task
            return out

        lat = asyncio.run(hub_rounds())
        commit = _one_commit(d)
        print(f"end-to-end alarm latency ({n} alarms, advert in -> subscriber): "
              f"{_percentiles(lat)}; bare paho QoS 1 round {_percentiles(base)} and one "
              f"fsync'd SQLite commit {_percentiles(commit)} (baselines, same run); p50 "
              f"ratio to paho {statistics.median(lat) / statistics.median(base):.1f}x, to "
              f"paho + commit {statistics.median(lat) / (statistics.median(base) + statistics.median(commit)):.1f}x")
    finally:
        sub.disconnect()
        sub.loop_stop()
        broker.close()


# -- 5. fsyncs per alarm ------------------------------------------------------------------------
def _hub_dir(d: Path, port: int) -> tuple[Path, bytes, str]:
    key = os.urandom(16)
    mac = "C0:FF:EE:00:00:01"
    (d / "keys.toml").write_text(f'[keys]\n"pendant-1" = "{key.hex()}"\n')
    (d / "receipt.key").write_text(RECEIPT_KEY.hex() + "\n")
    os.chmod(d / "receipt.key", 0o600)
    os.chmod(d / "keys.toml", 0o600)
    (d / "hub.toml").write_text(
        f'[site]\nid = "{SITE}"\n[hub]\nid = "bench-hub"\ndata_dir = "var"\n'
        f'[mqtt]\nport = {port}\nreceipt_key_file = "receipt.key"\n'
        '[radio]\nkind = "virtual"\n\n'
        f'[[device]]\nid = "pendant-1"\nrole = "pendant"\nmac = "{mac}"\n'
    )
    return d / "hub.toml", key, mac


def _fsync_child(cfg_path: Path, n: int) -> None:
    """Run in a child under strace: n alarms through the real Hub, each waited for until the
    pendant was told "help is coming"."""
    import sys

    from hub.radio.scanner import Advert
    from hub.service import Hub
    from protocols import ack, bthome
    from tests.protocols.test_ccm import Ecb

    cfg = config.load(cfg_path)
    key = bytes.fromhex(cfg_path.with_name("keys.toml").read_text().split('"')[3])
    mac = next(iter(cfg.devices.values())).mac
    told: list[int] = []

    class Radio:
        async def start(self, cb: Any) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def transmit(self, m: str, frame: bytes) -> None:
            told.append(ack.decode(ack.host_aes(key), bthome.mac_bytes(mac), frame)[1])

    centre = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fsync-centre",
                         protocol=mqtt.MQTTv5)
    ready = threading.Event()
    centre.on_connect = lambda c, *a: c.subscribe(f"{mqtt_schema.TOPIC_ROOT}/{SITE}/alarm",
                                                  qos=1)
    centre.on_subscribe = lambda *a: ready.set()

    def receipt(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        m = json.loads(msg.payload)
        body = mqtt_schema.signed_receipt([m["id"]], SITE, "bench", "", RECEIPT_KEY)
        c.publish(mqtt_schema.topic(SITE, "receipt"), json.dumps(body), qos=1)

    centre.on_message = receipt
    centre.connect("127.0.0.1", cfg.mqtt.port)
    centre.loop_start()
    ready.wait(10)

    async def main() -> None:
        hub = Hub(cfg)
        hub.scanner = Radio()  # type: ignore[assignment]
        hub.acks.transmit = hub.scanner.transmit
        stop = asyncio.Event()
        task = asyncio.create_task(hub.run(stop))
        while not hub.link.connected:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # start-up writes are not the alarm path
        os.chdir(os.getcwd())  # marks the start for strace
        commits = hub.outbox.commits
        for i in range(n):
            svc = bthome.encrypt_service_data(
                Ecb(key), bthome.mac_bytes(mac), bthome.encode_objects(
                    [(bthome.PACKET_ID, i % 256), (bthome.BUTTON, bthome.BUTTON_PRESS)]),
                5000 + i, True)
            hub.on_advert(Advert(mac, -50, bytes(svc), time.time()))
            while told.count(ack.DELIVERED) <= i:
                await asyncio.sleep(0.001)
        os.chdir(os.getcwd())
        print(f"commits {hub.outbox.commits - commits}", file=sys.stderr)
        stop.set()
        await task

    asyncio.run(main())
    centre.disconnect()
    centre.loop_stop()


def bench_fsyncs(d: Path, n: int = 100) -> None:
    import subprocess
    import sys

    strace = shutil.which("strace")
    if strace is None:
        print("fsyncs per alarm: not measured (strace is not installed)")
        return
    broker = Mosquitto(d / "fs-broker").start()
    try:
        cfg, _, _ = _hub_dir(d, broker.port)
        trace = d / "strace.txt"
        subprocess.run([strace, "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,chdir", "-o",
                        str(trace), sys.executable, "-m", "tools.bench.outbox", "--fsync-child",
                        str(cfg), str(n)], check=True, timeout=300)
    finally:
        broker.close()
    lines = trace.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if "chdir(" in line]
    stretch = lines[marks[0] + 1:marks[-1]] if len(marks) >= 2 else []
    syncs = [line for line in stretch if "fsync(" in line or "fdatasync(" in line]
    wal = sum(1 for line in syncs if "-wal>" in line)
    main = sum(1 for line in syncs if f"{DB_SUFFIX}>" in line)
    # A checkpoint is one fsync of the database file, one of the WAL before it and one of
    # the WAL's new header after it; every other WAL fsync is a decision's commit.
    checkpoints = main
    commits = wal - 2 * checkpoints
    print(f"fsyncs per alarm (kernel-counted, {n} alarms, advert to 'help is coming' on the "
          f"pendant): {len(syncs) / n:.2f} in all (goal 1): {commits / n:.2f} on the alarm's "
          f"own path (its commit), {3 * checkpoints / n:.2f} for {checkpoints} WAL "
          f"checkpoint(s) run while the hub was idle, "
          f"{(len(syncs) - wal - main) / n:.2f} elsewhere")


def run() -> None:
    for name, fn in (("appends", bench_appends), ("disk", bench_disk),
                     ("latency", bench_latency), ("fsyncs", bench_fsyncs)):
        d = _open_dir()
        try:
            fn(d)
        except Exception as e:  # one broken part must not hide the others' figures
            print(f"{name}: FAILED: {type(e).__name__}: {e}")
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--fsync-child"]:
        _fsync_child(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--subscriber"]:
        _subscriber(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        run()
