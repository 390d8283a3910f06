"""Random radio faults one after another, through real bleak against mock BlueZ: after every
fault the hub must hear the pendant again, without anyone restarting it. A short run is part of
the default suite; `make soak` runs the long one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hub.clock import SystemClock
from hub.radio.bleak import BleakRadio, BleakSettings
from hub.radio.scanner import Advert
from hub.radio.watchdog import WatchdogSettings
from tests.hub.radio.bluez_mock import BluezMock, requires_dbus
from tests.hub.radio.test_bleak import PENDANT, heard_after, run

pytestmark = requires_dbus

WD = WatchdogSettings(silence_s=0.5, power_cycle_silence_s=1.0, deaf_alarm_s=60,
                      backoff_s=0.05, backoff_max_s=0.3)
FAULTS = ("adapter_replugged", "start_refused", "stop_refused", "stall", "deep_stall",
          "powered_off", "bluetoothd_restarted")


def apply(bluez: BluezMock, fault: str, mode: str) -> None:
    start, stop = (("RegisterMonitor", "UnregisterMonitor") if mode == "passive"
                   else ("StartDiscovery", "StopDiscovery"))
    if fault == "adapter_replugged":
        bluez.remove_adapter()
        bluez.add_adapter()
    elif fault == "start_refused":
        bluez.inject(start, "org.bluez.Error.InProgress", "org.bluez.Error.NotReady")
        bluez.stall(1)  # so that the scanner has to restart (and meets the refusals)
    elif fault == "stop_refused":
        bluez.inject(stop, "org.bluez.Error.InProgress", "org.bluez.Error.Failed")
        bluez.stall(1)
    elif fault == "stall":
        bluez.stall(1)
    elif fault == "deep_stall":
        bluez.stall(2)
    elif fault == "powered_off":
        import dbus

        bus = dbus.bus.BusConnection(bluez.address)
        bus.get_object("org.bluez", "/org/bluez/hci0").Set(
            "org.bluez.Adapter1", "Powered", dbus.Boolean(False),
            dbus_interface="org.freedesktop.DBus.Properties")
    elif fault == "bluetoothd_restarted":
        bluez.restart_bluetoothd()
        bluez.add_adapter()


def chaos(tmp_path: Path, mode: str, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    bluez = BluezMock(tmp_path / "bluez", monitor_api=mode == "passive").start()
    try:
        bluez.add_adapter()

        async def main() -> None:
            got: list[Advert] = []
            radio = BleakRadio(SystemClock(), BleakSettings(scan_mode="auto", watchdog=WD),
                               provisioned=[PENDANT])
            await radio.start(got.append)
            try:
                assert radio.mode == mode
                await heard_after(bluez, got, PENDANT, 0)
                for n in range(1, rounds + 1):
                    fault = rng.choice(FAULTS)
                    apply(bluez, fault, mode)
                    try:
                        await heard_after(bluez, got, PENDANT, n % 256, timeout=20)
                    except AssertionError as e:
                        raise AssertionError(f"round {n}: not heard after {fault}") from e
                assert radio.mode == mode
            finally:
                await radio.stop()

        run(main(), timeout=30 + 5 * rounds)
    finally:
        bluez.close()


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_radio_recovers_from_random_faults(tmp_path: Path, mode: str) -> None:
    chaos(tmp_path, mode, rounds=5, seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["passive", "active"])
def test_radio_recovers_from_random_faults_soak(tmp_path: Path, mode: str) -> None:
    chaos(tmp_path, mode, rounds=150, seed=2026)
