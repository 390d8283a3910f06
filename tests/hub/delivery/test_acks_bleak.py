"""End to end through the real radio stack: an encrypted button advert enters BlueZ (mock, on a
private D-Bus), passes the real bleak backend into the hub, becomes an alarm that is stored,
published to a real Mosquitto and receipted by the reference response centre; the resident's
pendant gets "received" and then "help is coming" written to its ack characteristic over GATT.
"""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path
from typing import Any

import pytest

from hub.config import keys
from hub.config import settings as config
from hub.radio.bleak import ACK_CHAR_UUID, ACK_SERVICE_UUID
from hub.service import Hub
from protocols import ack, bthome
from tests.conftest import requires_mosquitto
from tests.hub.radio.bluez_mock import BluezMock, requires_dbus
from tests.hub_support import RECEIPT_KEY, centre_keys, write_key
from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre

pytestmark = [requires_dbus, requires_mosquitto]

PENDANT = "D4:00:00:00:00:01"
DOOR = "D4:00:00:00:00:02"
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def write_config(tmp: Path, port: int) -> Path:
    (tmp / "hub.toml").write_text(f"""
[site]
id = "home-1"
[hub]
id = "hub-1"
data_dir = "var"
[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = 5
receipt_key_file = "receipt.key"
[radio]
kind = "bleak"
adapter = "hci0"
[[device]]
id = "pendant-1"
role = "pendant"
mac = "{PENDANT}"
room = "bedroom"
[[device]]
id = "door-1"
role = "door"
mac = "{DOOR}"
""")
    keys.write(tmp / "keys.toml", {"pendant-1": KEY, "door-1": bytes(16)})
    write_key(tmp / "receipt.key", RECEIPT_KEY)
    return tmp / "hub.toml"


def button_advert(counter: int, packet: int) -> bytes:
    payload = bthome.encode_objects([(bthome.PACKET_ID, packet),
                                     (bthome.BUTTON, bthome.BUTTON_PRESS)])
    return bytes(bthome.encrypt_service_data(ack.host_aes(KEY), bthome.mac_bytes(PENDANT),
                                             payload, counter, trigger=True))


async def until(cond: Any, timeout: float = 15.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_button_through_bleak_alarm_receipted_and_acknowledged(
    tmp_path: Path, broker: Mosquitto
) -> None:
    bluez = BluezMock(tmp_path / "bluez").start()
    centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
    try:
        bluez.add_adapter()
        cfg = config.load(write_config(tmp_path, broker.port))

        async def main() -> None:
            hub = Hub(cfg)
            stop = asyncio.Event()
            runner = asyncio.create_task(hub.run(stop))
            try:
                await until(bluez.scanning, what="hub scanning")
                assert hub.radio_status()["mode"] == "passive"
                # Someone else's BTHome sensor next door: dropped at the first filter.
                bluez.advertise("E0:11:22:33:44:55", button_advert(1, 1))
                # Garbage and a forgery under the pendant's address: counted, dropped, no crash.
                assert bluez.advertise(PENDANT, b"\xff\x00\x01")
                forged = bytearray(button_advert(counter=40, packet=6))
                forged[3] ^= 0x01
                assert bluez.advertise(PENDANT, bytes(forged))
                await until(lambda: hub.decoder.stats["malformed"] >= 1
                            and hub.decoder.stats["bad_mic"] >= 1, what="both dropped")
                frame = button_advert(counter=41, packet=7)
                # The pendant's burst: the same advert several times, connectable for the ack.
                for _ in range(3):
                    assert bluez.advertise(PENDANT, frame, rssi=-58, connectable=True)
                bluez.add_gatt(PENDANT, ACK_SERVICE_UUID, ACK_CHAR_UUID)
                alarm = await asyncio.to_thread(centre.get, 20)
                assert (alarm["kind"], alarm["type"], alarm["device"]) == (
                    "alarm", "alarm_button", "pendant-1")

                def states() -> list[tuple[int, int]]:
                    aes = ack.host_aes(KEY)
                    return [ack.decode(aes, bthome.mac_bytes(PENDANT), f)
                            for mac, f in bluez.writes() if mac == PENDANT]

                await until(lambda: len(states()) == 2, what="received + delivered acks")
                assert states() == [(41, ack.RECEIVED), (41, ack.DELIVERED)]
                # A repeat of the same advert is the same event; a new press is a new alarm.
                assert bluez.advertise(PENDANT, frame, rssi=-61, connectable=True)
                with pytest.raises(queue.Empty):
                    await asyncio.to_thread(centre.get, 0.5)
                assert bluez.advertise(PENDANT, button_advert(42, 8), rssi=-66, connectable=True)
                second = await asyncio.to_thread(centre.get, 20)
                assert second["id"] != alarm["id"] and second["type"] == "alarm_button"
                st = hub.radio_status()
                assert st["counts"]["foreign"] == 1
                assert st["signal"][PENDANT]["rssi"] == -66
            finally:
                stop.set()
                await runner

        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        centre.stop()
        bluez.close()


def test_help_is_coming_reaches_the_pendant_across_a_hub_restart(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The broker is down when the button is pressed; the hub stores the alarm ("received")
    and is restarted before anything reaches the response centre. The new hub process state
    delivers the alarm and, on the receipt, tells the pendant that help is coming."""
    bluez = BluezMock(tmp_path / "bluez").start()
    centre: ResponseCentre | None = None
    try:
        bluez.add_adapter()
        cfg = config.load(write_config(tmp_path, broker.port))

        def states() -> list[tuple[int, int]]:
            aes = ack.host_aes(KEY)
            return [ack.decode(aes, bthome.mac_bytes(PENDANT), f)
                    for mac, f in bluez.writes() if mac == PENDANT]

        async def first_hub() -> None:
            broker.stop()
            hub = Hub(cfg)
            stop = asyncio.Event()
            runner = asyncio.create_task(hub.run(stop))
            try:
                await until(bluez.scanning, what="hub scanning")
                assert bluez.advertise(PENDANT, button_advert(51, 9), connectable=True)
                bluez.add_gatt(PENDANT, ACK_SERVICE_UUID, ACK_CHAR_UUID)
                await until(lambda: states() == [(51, ack.RECEIVED)], what="received")
            finally:
                stop.set()
                await runner

        async def second_hub() -> None:
            hub = Hub(cfg)
            stop = asyncio.Event()
            runner = asyncio.create_task(hub.run(stop))
            try:
                await until(bluez.scanning, what="hub scanning")
                # A heartbeat: the new process hears the pendant and learns where it is.
                payload = bthome.encode_objects([(bthome.PACKET_ID, 10), (bthome.BATTERY, 80)])
                heartbeat = bytes(bthome.encrypt_service_data(
                    ack.host_aes(KEY), bthome.mac_bytes(PENDANT), payload, 52))
                assert bluez.advertise(PENDANT, heartbeat, connectable=True)
                assert centre is not None
                alarm = await asyncio.to_thread(centre.get, 20)
                assert (alarm["type"], alarm["device"]) == ("alarm_button", "pendant-1")
                await until(lambda: len(states()) == 2, what="delivered after the restart")
                assert states() == [(51, ack.RECEIVED), (51, ack.DELIVERED)]
            finally:
                stop.set()
                await runner

        asyncio.run(asyncio.wait_for(first_hub(), 60))
        broker.start()
        centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
        asyncio.run(asyncio.wait_for(second_hub(), 60))
    finally:
        if centre is not None:
            centre.stop()
        bluez.close()
