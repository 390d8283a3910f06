"""systemd's notify protocol and the watchdog: a fake NOTIFY_SOCKET (a datagram socket, as
systemd's) receives what the hub sends; pings stop when progress stops."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from hub.admin import sdnotify
from protocols import bthome
from tests.conftest import requires_mosquitto
from tests.hub.admin.test_server import hub_running, wait_until
from tools.centre.mosquitto import Mosquitto


class NotifySocket:
    """What systemd listens on: every datagram, with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.got: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            with self._lock:
                self.got.append((time.monotonic(), data.decode()))

    def messages(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.got]

    def pings(self) -> list[float]:
        with self._lock:
            return [t for t, m in self.got if m == "WATCHDOG=1"]

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", s.path)
    try:
        yield s
    finally:
        s.close()


def test_notify_reaches_the_socket_and_is_quiet_without_one(systemd: NotifySocket) -> None:
    assert sdnotify.notify("READY=1")
    wait_until(lambda: systemd.messages() == ["READY=1"])
    assert not sdnotify.notify("READY=1", env={})


def test_abstract_notify_socket() -> None:
    name = f"tryggheim-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert sdnotify.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name})
        assert s.recv(100) == b"WATCHDOG=1"


def test_watchdog_interval_is_half_of_watchdog_sec() -> None:
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval_s({}) is None
    # Meant for another process (systemd sets WATCHDOG_PID to the main pid).
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000",
                                         "WATCHDOG_PID": str(os.getpid() + 1)}) is None


def test_pings_only_while_every_part_makes_progress() -> None:
    now = [0.0]
    radio, mqtt_ = [0], [0]
    sent: list[str] = []
    dog = sdnotify.Watchdog([sdnotify.Check("radio", 10, lambda: radio[0]),
                             sdnotify.Check("mqtt", 5, lambda: mqtt_[0])],
                            interval_s=1, send=sent.append, now=lambda: now[0])
    for _ in range(20):  # both progress
        now[0] += 1
        radio[0] += 1
        mqtt_[0] += 1
        assert dog.step()
    for i in range(1, 8):  # the MQTT thread stops; the radio goes on
        now[0] += 1
        radio[0] += 1
        assert dog.step() == (i <= 5)
    assert sent[-1] == "STATUS=no progress from mqtt"
    mqtt_[0] += 1  # it came back
    assert dog.step()
    assert sent[-2:] == ["STATUS=running", "WATCHDOG=1"]
    assert sent.count("WATCHDOG=1") == 20 + 5 + 1


def test_a_blocked_event_loop_sends_no_pings() -> None:
    import asyncio

    sent: list[tuple[float, str]] = []
    dog = sdnotify.Watchdog([], interval_s=0.02,
                            send=lambda m: sent.append((time.monotonic(), m)))

    async def main() -> tuple[float, float]:
        task = asyncio.create_task(dog.run())
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        time.sleep(0.5)  # something blocks the loop (a synchronous call that hangs)
        t1 = time.monotonic()
        await asyncio.sleep(0.2)
        task.cancel()
        return t0, t1

    t0, t1 = asyncio.run(main())
    pings = [t for t, m in sent if m == "WATCHDOG=1"]
    assert any(t < t0 for t in pings) and any(t > t1 for t in pings)
    assert not [t for t in pings if t0 + 0.01 < t < t1]


def test_the_mqtt_check_follows_a_client_the_link_replaces() -> None:
    class Client:  # paho's on_log attribute, nothing else is used
        on_log = None

    heard: list[object] = []
    link = type("Link", (), {})()
    link.client = Client()
    link.client.on_log = lambda *a: heard.append(a)  # someone else listens too
    check = sdnotify.mqtt_check(lambda: link.client, keepalive_s=1, reconnect_cap_s=1)
    first = check.probe()
    link.client.on_log(None, None, 16, "Sending PINGREQ")
    assert check.probe() == first + 1 and len(heard) == 1  # counted, and passed on
    old = link.client
    link.client = Client()  # the link rebuilt its paho client after a stall
    replaced = check.probe()
    assert replaced != first + 1
    link.client.on_log(None, None, 16, "Received CONNACK")
    assert check.probe() == replaced + 1
    old.on_log(None, None, 16, "late")  # the old client's thread winding down still counts
    assert check.probe() == replaced + 2


def test_the_radio_check_follows_the_decoder_a_reload_puts_in() -> None:
    from collections import Counter
    from types import SimpleNamespace

    hub = SimpleNamespace(cfg=SimpleNamespace(devices={"bed-1": object()}),
                          decoder=SimpleNamespace(stats=Counter(accepted=5)))
    before = sdnotify.radio_progress(hub)  # type: ignore[arg-type]
    assert sdnotify.radio_progress(hub) == before  # type: ignore[arg-type]
    hub.decoder = SimpleNamespace(stats=Counter())  # `tryggheim reload`
    after_reload = sdnotify.radio_progress(hub)  # type: ignore[arg-type]
    hub.decoder.stats["accepted"] += 1
    assert sdnotify.radio_progress(hub) != after_reload  # type: ignore[arg-type]
    hub.cfg.devices = {}  # nothing to hear: silence is not a stuck radio
    assert sdnotify.radio_progress(hub) != sdnotify.radio_progress(hub)  # type: ignore[arg-type]


@requires_mosquitto
def test_the_mqtt_check_follows_pahos_network_thread(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        check = sdnotify.mqtt_check(lambda: client, keepalive_s=1, reconnect_cap_s=1)
        client.connect("127.0.0.1", broker.port, keepalive=1)
        client.loop_start()
        first = check.probe()
        wait_until(lambda: check.probe() != first)  # CONNACK, then a PINGREQ each second
        seen = check.probe()
        wait_until(lambda: check.probe() != seen)  # keeps going while idle
        client.loop_stop()  # the network thread is gone
        stopped = check.probe()
        time.sleep(2.5)  # a keepalive would have happened twice by now: proves a negative
        assert check.probe() == stopped
    finally:
        client.disconnect()
        broker.close()


@requires_mosquitto
def test_the_running_hub_pings_while_it_hears_the_home_and_stops_when_the_radio_is_stuck(
    tmp_path: Path, systemd: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    # The radio's deaf alarm after 10 s of silence: the watchdog allows twice that.
    with hub_running(tmp_path, site_extra="deaf_alarm_s = 10\n") as r:
        wait_until(lambda: any(m.startswith("READY=1") for m in systemd.messages()))

        def hear_for(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                r.advert("bed-1", [(bthome.BATTERY, 87), (bthome.OCCUPANCY, 1)])
                time.sleep(0.5)

        hear_for(3)
        assert len(systemd.pings()) >= 10
        # The broker goes away: paho keeps trying, which is progress (the outbox holds
        # everything); the hub must not be restarted for it.
        r.broker.close()
        n = len(systemd.pings())
        hear_for(4)
        assert len(systemd.pings()) >= n + 15
        # The adverts stop: after twice the deaf-alarm time the pings stop.
        silent_from = time.monotonic()
        wait_until(lambda: (p := systemd.pings()) and p[-1] < time.monotonic() - 1.5,
                   timeout=35)
        last = systemd.pings()[-1]
        assert 19 <= last - silent_from <= 25
        assert "STATUS=no progress from radio" in systemd.messages()
        r.advert("bed-1", [(bthome.BATTERY, 87), (bthome.OCCUPANCY, 1)])
        wait_until(lambda: systemd.pings()[-1] > last + 1)  # heard again: pinging again
