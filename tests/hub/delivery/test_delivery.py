"""Delivery against a real Mosquitto: receipts, outages, crashes, auth and TLS.

Each test starts its own broker on a free loopback port. The hub is the real Hub (see
tests/hub_support.py); the response centre is tools/centre/response_centre.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hub.config import settings as config
from tests.conftest import requires_mosquitto
from tests.hub_support import (
    SITE,
    centre_keys,
    make_hub,
    open_for_broker,
    outgoing,
    running,
    until,
    wait_sync,
    write_config,
)
from tools.centre.mosquitto import Mosquitto, make_tls
from tools.centre.netns import NetNs
from tools.centre.response_centre import ResponseCentre

pytestmark = requires_mosquitto
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return open_for_broker(tmp_path)


def test_alarm_is_done_at_the_receipt_not_at_the_puback(workdir: Path) -> None:
    async def main() -> None:
        with Mosquitto(workdir / "broker") as broker:
            centre = ResponseCentre("127.0.0.1", broker.port, receipts=False,
                                    receipt_keys=centre_keys).start()
            hub = make_hub(write_config(workdir, broker.port))
            delivered: list[tuple[str, dict[str, Any]]] = []
            hub.on_delivered.append(lambda i, p: delivered.append((i, p)))
            try:
                async with running(hub):
                    await hub.emit(outgoing("alarm", "a1"))
                    await hub.emit(outgoing("status", "s1"))
                    await until(lambda: {"a1", "s1"} <= centre.seen_ids, what="both arrive")
                    # No Nagle: an alarm after a small packet must not wait ~40 ms for an ACK.
                    sock = hub.link.client.socket()
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    # Telemetry left at PUBACK; the alarm stays, and goes again with its id.
                    await until(lambda: hub.outbox.ids() == ["a1"], what="status removed")
                    await until(lambda: centre.duplicates >= 1, what="re-published alarm")
                    assert hub.link.republished >= 1 and delivered == []
                    centre.receipts = True  # the next copy gets its receipt
                    await until(lambda: delivered, what="receipt")
                    assert delivered[0][0] == "a1" and delivered[0][1]["kind"] == "alarm"
                    await until(lambda: hub.outbox.depth() == 0, what="outbox empty")
                    assert centre.ids() == ["a1", "s1"]
            finally:
                centre.stop()

    asyncio.run(main())


def test_broker_down_alarms_kept_then_all_delivered_alarms_first_in_order(
    workdir: Path,
) -> None:
    async def main() -> None:
        broker = Mosquitto(workdir / "broker").start()
        # A plain subscription: Mosquitto 2.0 does not restore shared subscriptions from its
        # persistence after a restart, so telemetry (which has no receipt) published before
        # a shared consumer is back would be lost. Alarms are not: see the SIGKILL test.
        centre = ResponseCentre("127.0.0.1", broker.port, group=None,
                                receipt_keys=centre_keys).start()
        hub = make_hub(write_config(workdir, broker.port))
        try:
            async with running(hub):
                await until(lambda: hub.link.connected, what="connected")
                broker.stop()
                await until(lambda: not hub.link.connected, what="hub notices")
                for i in range(30):
                    await hub.emit(outgoing("status", f"s{i:02}"))
                    await hub.emit(outgoing("alarm", f"a{i:02}"))
                assert hub.outbox.depth() == 60
                broker.start()  # same port, same persistence
                await until(lambda: hub.outbox.depth() == 0, 30, "all delivered")
                await until(lambda: len(centre.seen_ids) == 60, 30,
                            lambda: f"all received, got {sorted(centre.seen_ids)}")
        finally:
            centre.stop()
            broker.close()
        got = centre.ids()
        alarms = [i for i in got if i[0] == "a"]
        status = [i for i in got if i[0] == "s"]
        assert alarms == [f"a{i:02}" for i in range(30)]
        assert status == [f"s{i:02}" for i in range(30)]
        assert got.index("a29") < got.index("s00")  # after the outage, alarms first

    asyncio.run(main())


def test_broker_sigkill_after_puback_alarms_reach_the_consumer(workdir: Path) -> None:
    """Mosquitto acknowledges and loses what it had not saved yet; no receipt -> sent again."""

    async def main() -> None:
        # Persistence is saved only at a clean exit: a SIGKILL loses everything since start.
        broker = Mosquitto(workdir / "broker", autosave_interval=3600).start()
        centre = ResponseCentre("127.0.0.1", broker.port, client_id="rc-kill",
                                receipt_keys=centre_keys).start()
        centre.stop()  # away: its persistent session queues the alarms in the broker
        hub = make_hub(write_config(workdir, broker.port))
        try:
            async with running(hub):
                for i in range(5):
                    await hub.emit(outgoing("alarm", f"k{i}"))
                await until(lambda: hub.link.published >= 5, what="PUBACKs")
                broker.kill()
                broker.start()
                centre = ResponseCentre("127.0.0.1", broker.port, client_id="rc-kill",
                                        receipt_keys=centre_keys).start()
                want = {f"k{i}" for i in range(5)}
                await until(lambda: want <= centre.seen_ids, 30, "alarms at the consumer")
                await until(lambda: hub.outbox.depth() == 0, 30, "receipts")
                assert hub.link.republished >= 5  # they came from the hub again
        finally:
            centre.stop()
            broker.close()

    asyncio.run(main())


def test_wrong_password_is_named_and_the_hub_keeps_buffering(workdir: Path) -> None:
    async def main() -> None:
        users = {"hub-t": "right-pw", "centre": "centre-pw"}
        with Mosquitto(workdir / "broker", users=users) as broker:
            pw = workdir / "mqtt.pw"
            pw.write_text("wrong-pw\n")
            pw.chmod(0o600)
            cfg = write_config(workdir, broker.port,
                               extra_mqtt='username = "hub-t"\npassword_file = "mqtt.pw"\n')
            hub = make_hub(cfg)
            async with running(hub):
                await hub.emit(outgoing("alarm", "p1"))
                await until(lambda: hub.link.last_error, what="an error")
                assert "refused" in str(hub.link.last_error)
                assert "password" in str(hub.link.last_error)
                assert hub.outbox.ids() == ["p1"] and not hub.link.connected
            pw.write_text("right-pw\n")
            centre = ResponseCentre("127.0.0.1", broker.port, username="centre",
                                    password="centre-pw", receipt_keys=centre_keys).start()
            try:
                async with running(make_hub(cfg)) as hub:
                    await until(lambda: "p1" in centre.seen_ids, what="p1 at the consumer")
                    await until(lambda: hub.outbox.depth() == 0, what="receipt")
            finally:
                centre.stop()

    asyncio.run(main())


def test_password_file_readable_by_others_is_a_config_error(workdir: Path) -> None:
    pw = workdir / "mqtt.pw"
    pw.write_text("secret\n")
    pw.chmod(0o644)
    cfg = write_config(workdir, 1883,
                       extra_mqtt='username = "hub-t"\npassword_file = "mqtt.pw"\n')
    with pytest.raises(config.ConfigError) as e:
        config.load(cfg)
    assert "mqtt.password_file" in str(e.value) and "readable by other users" in str(e.value)
    assert str(cfg) in str(e.value)


def test_tls_with_a_self_signed_ca_and_client_certificate(workdir: Path) -> None:
    async def main() -> None:
        tls = make_tls(workdir / "tls", client_cn="hub-t")
        with Mosquitto(workdir / "broker", tls=tls, require_certificate=True) as broker:
            extra = (f'tls_ca = "{tls.ca}"\ntls_cert = "{tls.client_cert}"\n'
                     f'tls_key = "{tls.client_key}"\n')
            # Hostname checking: connect by the name in the server certificate.
            cfg = write_config(workdir, broker.port, host="localhost", extra_mqtt=extra)
            centre = ResponseCentre("localhost", broker.port, tls_ca=str(tls.ca),
                                    tls_cert=str(tls.client_cert),
                                    tls_key=str(tls.client_key), receipt_keys=centre_keys).start()
            try:
                async with running(make_hub(cfg)) as hub:
                    await hub.emit(outgoing("alarm", "t1"))
                    await until(lambda: "t1" in centre.seen_ids, what="t1 at the consumer")
                    await until(lambda: hub.outbox.depth() == 0, what="receipt")
            finally:
                centre.stop()
            # A CA that did not sign the broker's certificate: a clear error, still buffering.
            other = make_tls(workdir / "other-ca", ca_cn="someone-else")
            extra_bad = extra.replace(str(tls.ca), str(other.ca))
            bad = write_config(workdir / "bad", broker.port, host="localhost",
                               extra_mqtt=extra_bad)
            async with running(make_hub(bad)) as hub:
                await hub.emit(outgoing("alarm", "t2"))
                await until(lambda: hub.link.last_error, what="TLS error")
                assert "not trusted" in str(hub.link.last_error)
                assert "tls_ca" in str(hub.link.last_error)
                await until(lambda: len(hub.outbox.ids()) == 2, what="technical alarm stored")
                assert hub.outbox.ids()[0] == "t2"
                assert hub.link.status()["problems"] == ["tls_failed"]
            # The broker demands a client certificate and the hub has none: said, not silent.
            no_cert = write_config(workdir / "nocert", broker.port, host="localhost",
                                   extra_mqtt=f'tls_ca = "{tls.ca}"\n')
            async with running(make_hub(no_cert)) as hub:
                await hub.emit(outgoing("alarm", "t3"))
                await until(lambda: hub.link.last_error, what="TLS error")
                assert "client certificate" in str(hub.link.last_error), hub.link.last_error
                assert "tls_cert" in str(hub.link.last_error)
                # The error is noted in paho's thread, the technical alarm on the loop: after.
                await until(lambda: hub.link.status()["problems"] == ["tls_failed"],
                            what="tls_failed technical alarm")

    asyncio.run(main())


# -- the hub as a process: SIGKILL, will message --------------------------------------------
class HubProcess:
    """The hub as a process. A reader thread drains its stdout all the time: a hub that
    blocks on a full pipe would stall its event loop and look like a delivery bug."""

    def __init__(self, cfg: Path, log: Path, netns: NetNs | None = None) -> None:
        self.log = open(log, "ab")
        argv = [sys.executable, "-m", "tests.hub_support", str(cfg)]
        self.proc = subprocess.Popen(
            netns.command(argv) if netns else argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT,
        )
        self._lines: list[str] = []
        self._stored: list[str] = []
        self._per_prefix: dict[str, int] = {}  # "t12_" -> how many of t12_* are stored
        self._pos = 0
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.expect("ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().rstrip("\n")
            with self._cond:
                self._lines.append(line)
                if line.startswith("stored "):
                    msg_id = line.split()[1]
                    self._stored.append(msg_id)
                    prefix = msg_id.split("_")[0] + "_"
                    self._per_prefix[prefix] = self._per_prefix.get(prefix, 0) + 1
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def stored(self) -> list[str]:
        with self._cond:
            return list(self._stored)

    def wait_stored(self, prefix: str, k: int, timeout: float = 60.0) -> None:
        """Until at least k messages with ids "<prefix>..." are stored ("t3_" style)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._per_prefix.get(prefix, 0) < k:
                if self._eof:
                    raise AssertionError(f"hub process ended with {prefix}* not stored")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{prefix}*: {k} never stored")
                self._cond.wait(left)

    def expect(self, word: str, timeout: float = 60.0) -> str:
        """The next line (after the last one expected) that starts with `word`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._pos < len(self._lines):
                    line = self._lines[self._pos]
                    self._pos += 1
                    if line.startswith(word):
                        return line
                if self._eof:
                    raise AssertionError(f"hub process ended before {word!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"hub process never said {word!r}")
                self._cond.wait(left)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(10)
        self.log.close()


def test_hub_killed_after_store_before_puback_delivers_after_restart(workdir: Path) -> None:
    broker = Mosquitto(workdir / "broker").start()
    centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
    cfg = write_config(workdir, broker.port)
    hub = HubProcess(cfg, workdir / "hub.log")
    try:
        wait_sync(lambda: any(s.get("state") == "online" for s in centre.hub_states),
                  what="hub online")
        broker.pause()  # a black hole: no PUBACK can come
        hub.send("alarm x1")
        hub.expect("stored x1")  # acknowledged to the resident's device from here on
        hub.kill()
        broker.resume()
        hub = HubProcess(cfg, workdir / "hub.log")
        assert centre.wait_for({"x1"}, 30) == set()
        hub.expect("delivered x1")
    finally:
        hub.kill()
        centre.stop()
        broker.close()


def test_hub_state_is_retained_with_heartbeat_and_offline_when_killed(workdir: Path) -> None:
    broker = Mosquitto(workdir / "broker").start()
    centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
    hub = HubProcess(write_config(workdir, broker.port, keepalive=1), workdir / "hub.log")
    try:
        wait_sync(lambda: len([s for s in centre.hub_states if s["state"] == "online"]) >= 2,
                  what="heartbeats")
        beat = [s for s in centre.hub_states if s["state"] == "online"][-1]
        assert beat["_topic"] == f"tryggheim/v1/{SITE}/hub" and beat["hub"] == "hub-t"
        assert beat["outbox"]["depth"] == 0 and "budget_bytes" in beat["outbox"]
        assert beat["devices"]["configured"] == 0
        hub.kill()
        # The will: within 1.5 keepalives the broker says the hub is gone.
        wait_sync(lambda: centre.hub_states[-1]["state"] == "offline", 10, "will message")
        # A late subscriber sees the retained state at once.
        late = ResponseCentre("127.0.0.1", broker.port, client_id="late",
                              receipt_keys=centre_keys).start()
        wait_sync(lambda: late.hub_states, 5, "retained state")
        assert late.hub_states[-1]["state"] == "offline"
        late.stop()
    finally:
        hub.kill()
        centre.stop()
        broker.close()


def test_network_cut_without_tcp_close_hub_notices_buffers_and_delivers(workdir: Path) -> None:
    """Hub in its own network namespace behind a veth pair; the link goes down mid-burst."""
    if not NetNs.available():
        pytest.skip("network namespaces are not permitted here (needs CAP_NET_ADMIN)")
    with NetNs() as net:
        broker = Mosquitto(workdir / "broker", host=net.host_ip).start()
        centre = ResponseCentre(net.host_ip, broker.port, receipt_keys=centre_keys).start()
        keepalive = 2
        log = workdir / "hub.log"
        hub = HubProcess(write_config(workdir, broker.port, host=net.host_ip,
                                      keepalive=keepalive), log, net)
        try:
            wait_sync(lambda: any(s.get("state") == "online" for s in centre.hub_states),
                      what="hub online")
            hub.send("burst c 200")
            hub.expect("stored c")
            net.cut()  # mid-burst: no FIN, no RST, packets just vanish
            t_cut = time.monotonic()
            hub.expect("stored c199")  # storing never depends on the network
            wait_sync(lambda: "MQTT disconnected" in log.read_text(), 4 * keepalive,
                      "the hub noticing the cut")
            noticed = time.monotonic() - t_cut
            assert noticed <= 2 * keepalive + 1
            for i in range(20):  # alarms raised while cut off
                hub.send(f"alarm d{i}")
            hub.expect("stored d19")
            # The broker notices too: the hub's will says it is offline.
            wait_sync(lambda: centre.hub_states[-1]["state"] == "offline", 4 * keepalive,
                      "will message")
            net.restore()
            want = {f"c{i}" for i in range(200)} | {f"d{i}" for i in range(20)}
            assert centre.wait_for(want, 40) == set()
            wait_sync(lambda: centre.hub_states[-1]["state"] == "online", 20, "back online")
        finally:
            hub.kill()
            centre.stop()
            broker.close()


def test_healthy_link_sends_each_message_once(workdir: Path) -> None:
    """The window refills while acknowledgements are being written back: none goes twice."""

    async def main() -> None:
        with Mosquitto(workdir / "broker") as broker:
            centre = ResponseCentre("127.0.0.1", broker.port, group=None,
                                    receipt_keys=centre_keys).start()
            hub = make_hub(write_config(workdir, broker.port, window=20))
            try:
                async with running(hub):
                    await until(lambda: hub.link.connected, what="connected")
                    await asyncio.gather(*(
                        hub.emit(outgoing("status" if i % 10 else "alarm", f"h{i:04}"))
                        for i in range(1500)))
                    await until(lambda: len(centre.seen_ids) == 1500, 30, "all received")
                    await until(lambda: hub.outbox.depth() == 0, 30, "outbox empty")
                assert centre.duplicates == 0
                for kind in ("alarm", "status"):  # in order within each priority
                    got = [m["id"] for m in centre.all if m["kind"] == kind]
                    assert got == sorted(got) and len(got) == (150 if kind == "alarm" else 1350)
            finally:
                centre.stop()

    asyncio.run(main())


# The shipped ACL is tested in tests/hub/delivery/test_link_security.py.


def test_hub_killed_at_random_points_in_bursts_loses_no_stored_alarm(workdir: Path) -> None:
    import random

    rng = random.Random(int(os.environ.get("CHAOS_SEED", "6")))
    broker = Mosquitto(workdir / "broker").start()
    centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
    cfg = write_config(workdir, broker.port)
    stored: set[str] = set()
    try:
        for round_ in range(3):
            hub = HubProcess(cfg, workdir / "hub.log")
            hub.send(f"burst r{round_}_ 300")
            k = rng.randint(1, 299)
            hub.wait_stored(f"r{round_}_", k)
            hub.kill()  # somewhere in the burst: stored, in flight, PUBACKed, receipted
            stored.update(hub.stored)
        hub = HubProcess(cfg, workdir / "hub.log")  # the restart delivers what is left
        assert centre.wait_for(stored, 40) == set(), "stored alarms lost"
        hub.kill()
    finally:
        centre.stop()
        broker.close()


def _tmpfs(where: Path, size_kb: int) -> bool:
    where.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs",
                        str(where)], capture_output=True)
    return r.returncode == 0


def test_full_filesystem_raises_a_technical_alarm_and_loses_no_alarm(workdir: Path) -> None:
    data = workdir / "var"  # the hub's data_dir
    if not _tmpfs(data, 12288):  # room for the hub's files and its 6 MiB reserve
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")

    async def main() -> None:
        with Mosquitto(workdir / "broker") as broker:
            centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
            try:
                async with running(make_hub(write_config(workdir, broker.port))) as hub:
                    await hub.emit(outgoing("alarm", "f0"))
                    with open(data / "filler", "wb", buffering=0) as f:  # a log gone wild
                        try:
                            while True:
                                f.write(b"\0" * 65536)
                        except OSError:
                            pass
                    for i in range(1, 30):
                        await asyncio.wait_for(hub.emit(outgoing("alarm", f"f{i}", pad=3000)), 20)
                    want = {f"f{i}" for i in range(30)}
                    await until(lambda: want <= centre.seen_ids, 20, "alarms at the centre")
                    await until(lambda: any(m["type"] == "outbox_disk_full" for m in centre.all),
                                20, "technical alarm")
                    tech = next(m for m in centre.all if m["type"] == "outbox_disk_full")
                    assert tech["kind"] == "technical_alarm" and tech["hub"] == "hub-t"
                    assert "filesystem full" in tech["detail"]
                    await until(lambda: hub.outbox.depth() == 0, 20, "all receipted")
            finally:
                centre.stop()

    try:
        asyncio.run(main())
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_budget_full_drops_telemetry_raises_technical_alarm_keeps_alarms(
    workdir: Path,
) -> None:
    async def main() -> None:
        broker = Mosquitto(workdir / "broker").start()
        centre = ResponseCentre("127.0.0.1", broker.port, group=None,
                                receipt_keys=centre_keys).start()
        cfg = write_config(workdir, broker.port, extra_mqtt="outbox_budget_mb = 0.02\n")
        try:
            async with running(make_hub(cfg)) as hub:
                await until(lambda: hub.link.connected, what="connected")
                broker.stop()  # a long outage: the budget (20 kB) fills up
                for i in range(60):
                    await hub.emit(outgoing("status", f"s{i:02}", pad=500))
                    if i % 6 == 0:
                        await hub.emit(outgoing("alarm", f"a{i:02}", pad=500))
                assert hub.outbox.dropped > 0
                broker.start()
                alarms = {f"a{i:02}" for i in range(0, 60, 6)}
                await until(lambda: alarms <= centre.seen_ids, 30, "every alarm")
                await until(lambda: hub.outbox.depth() == 0, 30, "outbox drained")
                # Telemetry leaves the outbox at PUBACK, a moment before the centre has it.
                await until(lambda: "s59" in centre.seen_ids, 10, "the newest telemetry")
        finally:
            centre.stop()
            broker.close()
        [tech] = [m for m in centre.all if m["type"] == "outbox_filling"]
        assert tech["budget_bytes"] == 20000 and tech["depth"] > 0
        got_status = [i for i in centre.ids() if i[0] == "s"]
        assert "s59" in got_status and "s00" not in got_status  # the oldest went first

    asyncio.run(main())


@pytest.mark.schema_exempt("z1", "z2")  # incomplete on purpose: the consumer is tested
def test_consumer_receipts_only_to_the_site_of_the_topic(workdir: Path) -> None:
    import json

    with Mosquitto(workdir / "broker") as broker:
        centre = ResponseCentre("127.0.0.1", broker.port, group=None,
                                receipt_keys=centre_keys).start()
        spy = ResponseCentre("127.0.0.1", broker.port, client_id="spy", group=None,
                             receipts=False, receipt_keys=centre_keys)
        receipts: list[str] = []
        spy.client.on_connect = lambda c, *a: c.subscribe("tryggheim/v1/+/receipt", qos=1)
        spy.client.on_message = lambda c, u, m: receipts.append(m.topic)
        spy.start()
        try:
            pub = centre.client  # any client will do to publish
            forged = {"schema": 1, "kind": "alarm", "id": "z1", "site": "victim"}
            pub.publish(f"tryggheim/v1/{SITE}/alarm", json.dumps(forged), qos=1)
            honest = dict(forged, id="z2", site=SITE)
            pub.publish(f"tryggheim/v1/{SITE}/alarm", json.dumps(honest), qos=1)
            assert centre.wait_for({"z2"}, 10) == set()
            wait_sync(lambda: receipts, 10, "the honest receipt")
            assert receipts == [f"tryggheim/v1/{SITE}/receipt"]
            assert "z1" not in centre.seen_ids and centre.malformed == 1
        finally:
            spy.stop()
            centre.stop()


def test_unconfirmed_alarms_are_bounded_per_priority_and_drain_in_order(workdir: Path) -> None:
    """End-to-end flow control: with no receipts coming, a hub keeps at most its receipt
    window of alarms out (the oldest), re-sending those; a technical alarm is not held back
    by them; when receipts flow, everything drains in order."""

    async def main() -> None:
        with Mosquitto(workdir / "broker") as broker:
            centre = ResponseCentre("127.0.0.1", broker.port, receipts=False,
                                    group=None, receipt_keys=centre_keys).start()
            hub = make_hub(write_config(workdir, broker.port, window=10))
            try:
                async with running(hub):
                    limit = hub.link.receipt_window
                    await asyncio.gather(*(hub.emit(outgoing("alarm", f"w{i:03}"))
                                           for i in range(limit + 150)))
                    await until(lambda: hub.link.republished >= limit, 20, "re-sends")
                    assert centre.seen_ids == {f"w{i:03}" for i in range(limit)}
                    await hub.emit(outgoing("technical_alarm", "tech"))
                    await until(lambda: "tech" in centre.seen_ids, 10, "technical alarm")
                    centre.receipts = True
                    await until(lambda: hub.outbox.depth() == 0, 30, "drained")
                alarms = [i for i in centre.ids() if i.startswith("w")]
                assert alarms == [f"w{i:03}" for i in range(limit + 150)]
            finally:
                centre.stop()

    asyncio.run(main())
