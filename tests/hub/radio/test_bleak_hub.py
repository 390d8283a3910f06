"""The hub with the real radio stack: a deaf radio becomes a technical alarm at the response
centre, and its end is reported too (mock BlueZ on a private bus, real Mosquitto)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from hub.config import settings as config
from hub.config.settings import RadioSettings
from hub.service import Hub
from tests.conftest import requires_mosquitto
from tests.hub.delivery.test_acks_bleak import PENDANT, button_advert, until, write_config
from tests.hub.radio.bluez_mock import BluezMock, requires_dbus
from tests.hub_support import centre_keys
from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre

pytestmark = [requires_dbus, requires_mosquitto]


def test_deaf_radio_raises_and_clears_a_technical_alarm(tmp_path: Path, broker: Mosquitto) -> None:
    bluez = BluezMock(tmp_path / "bluez").start()
    centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
    try:
        bluez.add_adapter()
        cfg = config.load(write_config(tmp_path, broker.port))
        # Shorter than an installation would use (config.load's minimums), to keep this fast.
        cfg = dataclasses.replace(cfg, radio=RadioSettings(watchdog_s=0.3, deaf_alarm_s=1.0))

        async def next_message() -> dict[str, Any]:
            return await asyncio.to_thread(centre.get, 20)

        async def main() -> None:
            hub = Hub(cfg)
            stop = asyncio.Event()
            runner = asyncio.create_task(hub.run(stop))
            try:
                await until(bluez.scanning, what="hub scanning")
                assert bluez.advertise(PENDANT, button_advert(1, 1))
                alarm = await next_message()
                assert alarm["type"] == "alarm_button"
                bluez.remove_adapter()  # the USB dongle is pulled out
                deaf = await next_message()
                assert (deaf["kind"], deaf["type"], deaf["state"]) == (
                    "technical_alarm", "radio_deaf", "raised")
                assert deaf["adapter"] == "hci0"
                bluez.add_adapter()
                await until(bluez.scanning, what="scanning again")
                assert bluez.advertise(PENDANT, button_advert(2, 2))
                got = [await next_message(), await next_message()]
                by_type = {m["type"]: m for m in got}
                assert by_type["radio_deaf"]["state"] == "cleared"
                assert "alarm_button" in by_type
                counts = hub.radio_status()["counts"]
                assert counts["adapter_gone"] >= 1 and counts["deaf_alarm"] == 1
            finally:
                stop.set()
                await runner

        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        centre.stop()
        bluez.close()
