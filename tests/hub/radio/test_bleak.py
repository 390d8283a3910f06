"""The bleak scanner through the real bleak BlueZ backend, against a mock BlueZ on a private bus.

What is real: bleak 3.x and its D-Bus traffic (dbus-fast), the D-Bus daemon, the hub's radio
and watchdog code. What stands in for the missing radio: tests/hub/radio/bluez_template.py,
which only lets an advert through while the adapter is really scanning, so a scan that is not restarted
after a fault stays deaf here as it would on a Pi.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.clock import SystemClock
from hub.radio.bleak import (
    ACK_CHAR_UUID,
    ACK_SERVICE_UUID,
    BleakRadio,
    BleakSettings,
    TransmitError,
)
from hub.radio.scanner import Advert
from hub.radio.watchdog import WatchdogSettings
from protocols import bthome
from tests.hub.radio.bluez_mock import BluezMock, requires_dbus

pytestmark = requires_dbus

PENDANT = "D4:00:00:00:00:01"
NEIGHBOUR = "E0:11:22:33:44:55"
FAST = WatchdogSettings(silence_s=0.6, deaf_alarm_s=60.0, backoff_s=0.05, backoff_max_s=0.4)


def svc(packet: int) -> bytes:
    return bthome.service_data(bthome.encode_objects([(bthome.PACKET_ID, packet)]))


@pytest.fixture
def bluez(tmp_path: Path) -> Iterator[BluezMock]:
    m = BluezMock(tmp_path / "bluez").start()
    try:
        m.add_adapter()
        yield m
    finally:
        m.close()


@pytest.fixture
def bluez_old(tmp_path: Path) -> Iterator[BluezMock]:
    """BlueZ without experimental features: no advertisement monitors, no passive scanning."""
    m = BluezMock(tmp_path / "bluez", monitor_api=False).start()
    try:
        m.add_adapter()
        yield m
    finally:
        m.close()


def run(coro: Awaitable[None], timeout: float = 30.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(main())


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


async def heard_after(bluez: BluezMock, got: list[Advert], mac: str, packet: int,
                      timeout: float = 10.0) -> None:
    """Advertise (repeatedly, like a device's burst) until the radio delivers the advert."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    data = svc(packet)
    while not any(a.mac == mac and a.service_data == data for a in got):
        if loop.time() > end:
            raise AssertionError(f"advert {packet} from {mac} never reached the hub")
        bluez.advertise(mac, data, rssi=-50 - packet % 20)
        await asyncio.sleep(0.05)


def test_passive_scan_delivers_provisioned_adverts_and_drops_the_rest(bluez: BluezMock) -> None:
    async def main() -> None:
        got: list[Advert] = []
        radio = BleakRadio(SystemClock(), BleakSettings(watchdog=FAST), provisioned=[PENDANT])
        await radio.start(got.append)
        try:
            assert radio.mode == "passive"
            assert bluez.scanning()
            assert bluez.advertise(NEIGHBOUR, svc(1), rssi=-40)
            assert bluez.advertise(PENDANT, svc(1), rssi=-70)
            assert bluez.advertise(PENDANT, svc(2), rssi=-60)
            await until(lambda: len(got) == 2, what="two adverts")
            assert [a.service_data for a in got] == [svc(1), svc(2)]
            assert {a.mac for a in got} == {PENDANT}
            assert got[1].rssi == -60
            assert radio.foreign == 1
            sig = radio.signal[PENDANT]
            assert (sig.rssi, sig.adverts) == (-60, 2)
            assert -70 < sig.average < -60
            assert radio.status()["mode"] == "passive"
        finally:
            await radio.stop()
        assert not bluez.scanning()

    run(main())


def test_falls_back_to_active_scanning_without_experimental_bluez(bluez_old: BluezMock) -> None:
    async def main() -> None:
        got: list[Advert] = []
        radio = BleakRadio(SystemClock(), BleakSettings(watchdog=FAST), provisioned=[PENDANT])
        await radio.start(got.append)
        try:
            assert radio.mode == "active"
            assert radio.passive_unsupported
            await heard_after(bluez_old, got, PENDANT, 7)
        finally:
            await radio.stop()

    run(main())


def test_forced_passive_mode_reports_the_missing_bluez_feature(bluez_old: BluezMock) -> None:
    async def main() -> None:
        radio = BleakRadio(SystemClock(), BleakSettings(scan_mode="passive", watchdog=FAST),
                           provisioned=[PENDANT])
        await radio.start(lambda a: None)
        try:
            assert radio.mode is None
            assert any(k.startswith("start_failed") for k in radio.stats)
        finally:
            await radio.stop()

    run(main())


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_adapter_removed_and_readded_watchdog_recovers(bluez: BluezMock, mode: str) -> None:
    async def main() -> None:
        got: list[Advert] = []
        radio = BleakRadio(SystemClock(), BleakSettings(scan_mode=mode, watchdog=FAST),
                           provisioned=[PENDANT])
        await radio.start(got.append)
        try:
            await heard_after(bluez, got, PENDANT, 1)
            bluez.remove_adapter()
            await until(lambda: radio.stats["adapter_gone"] >= 1, what="adapter_gone")
            assert not bluez.advertise(PENDANT, svc(2))  # nothing can hear it now
            bluez.add_adapter()  # the dongle is plugged back in: a fresh, idle adapter
            await until(bluez.scanning, what="scan restarted on the new adapter")
            await heard_after(bluez, got, PENDANT, 3)
            assert radio.watchdog.counts["recovered"] >= 1
        finally:
            await radio.stop()

    run(main())


@pytest.mark.parametrize(
    ("mode", "method"), [("passive", "RegisterMonitor"), ("active", "StartDiscovery")]
)
def test_discovery_errors_at_start_are_retried_until_scanning(
    bluez: BluezMock, mode: str, method: str
) -> None:
    async def main() -> None:
        got: list[Advert] = []
        bluez.inject(method, "org.bluez.Error.InProgress", "org.bluez.Error.NotReady",
                     "org.bluez.Error.InProgress")
        radio = BleakRadio(SystemClock(), BleakSettings(scan_mode=mode, watchdog=FAST),
                           provisioned=[PENDANT])
        await radio.start(got.append)
        try:
            assert radio.stats["start_failed_InProgress"] == 1
            await heard_after(bluez, got, PENDANT, 5)
            assert radio.stats["start_failed_InProgress"] == 2
            assert radio.stats["start_failed_NotReady"] == 1
            # The ladder climbed to a power cycle on the way.
            assert radio.watchdog.counts["power_cycle"] >= 1
            assert radio.mode == mode
        finally:
            await radio.stop()

    run(main())


def test_silent_stall_restart_then_power_cycle_and_deaf_alarm(bluez: BluezMock) -> None:
    async def main() -> None:
        got: list[Advert] = []
        health: list[str] = []
        wd = WatchdogSettings(silence_s=0.4, power_cycle_silence_s=0.8, deaf_alarm_s=1.2,
                              backoff_s=0.05, backoff_max_s=0.2)
        radio = BleakRadio(SystemClock(), BleakSettings(watchdog=wd), provisioned=[PENDANT])
        radio.on_health = lambda state, detail: health.append(state)
        await radio.start(got.append)
        try:
            await heard_after(bluez, got, PENDANT, 1)
            # Like bluez#1126: still "scanning", hears nothing; a restart fixes it.
            bluez.stall(1)
            assert not bluez.advertise(PENDANT, svc(2))
            await heard_after(bluez, got, PENDANT, 3)
            counts = radio.watchdog.counts
            assert counts["quiet_restart"] + counts["restart_scan"] >= 1
            # A deeper stall survives a scan restart; only a power cycle of the adapter helps,
            # and it lasts long enough for the response centre to be told.
            power_cycles = radio.watchdog.counts["power_cycle"]
            bluez.stall(2)
            await until(lambda: "deaf" in health, what="deaf alarm")
            await heard_after(bluez, got, PENDANT, 4)
            assert radio.watchdog.counts["power_cycle"] > power_cycles
            await until(lambda: health[-1] == "restored", what="restored")
            assert health == ["deaf", "restored"]
        finally:
            await radio.stop()

    run(main(), timeout=40)


def test_bluetoothd_power_off_is_noticed_and_repaired(bluez: BluezMock) -> None:
    import dbus

    async def main() -> None:
        got: list[Advert] = []
        radio = BleakRadio(SystemClock(), BleakSettings(scan_mode="active", watchdog=FAST),
                           provisioned=[PENDANT])
        await radio.start(got.append)
        try:
            await heard_after(bluez, got, PENDANT, 1)
            bus = dbus.bus.BusConnection(bluez.address)
            adapter = bus.get_object("org.bluez", "/org/bluez/hci0")
            adapter.Set("org.bluez.Adapter1", "Powered", dbus.Boolean(False),
                        dbus_interface="org.freedesktop.DBus.Properties")
            await until(lambda: radio.stats["powered_off"] >= 1, what="powered_off seen")
            await heard_after(bluez, got, PENDANT, 2)
        finally:
            await radio.stop()

    run(main())


def test_ack_is_written_to_the_device_characteristic(bluez: BluezMock) -> None:
    async def main() -> None:
        got: list[Advert] = []
        radio = BleakRadio(SystemClock(), BleakSettings(watchdog=FAST), provisioned=[PENDANT])
        await radio.start(got.append)
        try:
            with pytest.raises(TransmitError):  # never heard: no address to connect to
                await radio.transmit(PENDANT, b"ack")
            bluez.advertise(PENDANT, svc(1), connectable=False)
            await until(lambda: bool(got))
            with pytest.raises(TransmitError):  # heard, but not connectable right now
                await radio.transmit(PENDANT, b"ack")
            bluez.advertise(PENDANT, svc(1), connectable=True)
            bluez.add_gatt(PENDANT, ACK_SERVICE_UUID, ACK_CHAR_UUID)
            await radio.transmit(PENDANT, b"\x01\x01frame")
            assert bluez.writes() == [(PENDANT, b"\x01\x01frame")]
            assert radio.stats["ack_written"] == 1
            # The scan goes on after the connection.
            await heard_after(bluez, got, PENDANT, 2)
        finally:
            await radio.stop()

    run(main())


def test_bluetoothd_restart_is_noticed_and_scanning_resumes(bluez: BluezMock) -> None:
    async def main() -> None:
        got: list[Advert] = []
        radio = BleakRadio(SystemClock(), BleakSettings(watchdog=FAST), provisioned=[PENDANT])
        await radio.start(got.append)
        try:
            await heard_after(bluez, got, PENDANT, 1)
            # The new bluetoothd has no discovery session or monitor of ours: bleak alone
            # would believe it is still scanning (shared/notes/reliability.md 1.2).
            bluez.restart_bluetoothd()
            bluez.add_adapter()
            await until(lambda: radio.stats["bluetoothd_restarted"] >= 1, what="restart seen")
            await heard_after(bluez, got, PENDANT, 2)
        finally:
            await radio.stop()

    run(main())


def test_reload_changes_which_devices_pass_the_first_filter(bluez: BluezMock) -> None:
    async def main() -> None:
        got: list[Advert] = []
        radio = BleakRadio(SystemClock(), BleakSettings(watchdog=FAST), provisioned=[])
        assert not radio.watchdog.expect_adverts  # nothing provisioned: silence is normal
        await radio.start(got.append)
        try:
            assert bluez.advertise(PENDANT, svc(1))
            await until(lambda: radio.foreign == 1, what="dropped as foreign")
            radio.provisioned = [PENDANT.lower()]  # what a configuration reload does
            assert radio.watchdog.expect_adverts
            await heard_after(bluez, got, PENDANT, 2)
        finally:
            await radio.stop()

    run(main())
