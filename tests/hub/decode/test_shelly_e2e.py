"""Shelly BLU sensors drive the rules end to end: adverts on the (virtual) air, the real hub
process, a real Mosquitto, and the response centre's consumer at the other end.

The button and the motion sensor send the adverts published in bthome-ble's test suite
(tests/test_parser_v2.py: test_encrypted_shelly_blu_button_event, test_bthome_motion); the
door sends adverts built to the same format (there is no published encrypted one)."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hub.config import keys
from hub.decode.shelly import build_service_data
from tests.conftest import requires_mosquitto
from tests.hub.decode.test_shelly import PUB_BUTTON, PUB_MOTION
from tests.hub_support import RECEIPT_KEY, centre_keys, write_key
from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre
from tools.sim.vboard.air import Air
from tools.sim.virtual_home import start_hub

pytestmark = requires_mosquitto

DOOR_MAC = "7C:C6:B6:00:00:01"
DOOR_KEY = bytes(range(16))


def hub_config(workdir: Path, port: int) -> Path:
    text = f"""[site]
id = "shelly-home"
timezone = "Europe/Oslo"

[hub]
id = "hub-shelly"
data_dir = "var"

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = 5
receipt_key_file = "receipt.key"

[radio]
kind = "virtual"
air = "air.sock"

[[device]]
id = "door-1"
role = "door"
mac = "{DOOR_MAC}"
room = "hall"
model = "shelly-blu-door-window"

[[device]]
id = "pir-1"
role = "pir"
mac = "{PUB_MOTION[1]}"
room = "hall"
model = "shelly-blu-motion"

[[device]]
id = "button-1"
role = "pendant"
mac = "{PUB_BUTTON[1]}"
room = "bedroom"
model = "shelly-blu-button1"

[[rules.wandering]]
name = "front door"
door = "door-1"
window = "00:00-24:00"
return_min = 0
inside = ["pir-1"]
"""
    path = workdir / "hub.toml"
    path.write_text(text)
    write_key(workdir / "receipt.key", RECEIPT_KEY)
    keys.write(workdir / "keys.toml", {"door-1": DOOR_KEY, "pir-1": PUB_MOTION[2],
                                       "button-1": PUB_BUTTON[2]})
    return path


def next_of(centre: ResponseCentre, kind: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = centre.get(timeout=left)
        if msg["kind"] == kind:
            return msg
    raise AssertionError(f"no {kind} within {timeout} s")


def no_more(centre: ResponseCentre, kind: str, wait: float = 1.5) -> None:
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = centre.get(timeout=left)
        except queue.Empty:
            return
        assert msg["kind"] != kind, msg


def test_shelly_door_motion_and_button_drive_the_rules(tmp_path: Path,
                                                        broker: Mosquitto) -> None:
    config = hub_config(tmp_path, broker.port)
    air = Air(tmp_path / "air.sock")
    centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
    hub = start_hub(config, tmp_path / "hub.log")
    try:
        air.wait_for_listener(proc=hub)
        # The door opens at night: the wandering rule (return_min 0) raises at once.
        # As a Shelly BLU Door/Window sends it: with light level and tilt (BTHome 0x05, 0x3F).
        opened = build_service_data(DOOR_KEY, DOOR_MAC, [(0x00, 1), (0x01, 90), (0x05, 4200),
                                                         (0x2D, 1), (0x3F, 150)],
                                    counter=500, trigger=True)
        for _ in range(3):  # Shelly repeats each advert; one alarm
            air.broadcast(DOOR_MAC, -58, opened)
        alarm = next_of(centre, "alarm")
        assert (alarm["type"], alarm["device"], alarm["room"]) == ("wandering", "door-1", "hall")

        # Door closed, then motion inside (the published Shelly BLU Motion advert): back in.
        air.broadcast(DOOR_MAC, -58, build_service_data(
            DOOR_KEY, DOOR_MAC, [(0x00, 2), (0x01, 90), (0x2D, 0)], counter=501, trigger=True))
        no_more(centre, "alarm_cleared", wait=0.5)  # the closed door alone is not "back"
        air.broadcast(PUB_MOTION[1], -61, PUB_MOTION[0])
        cleared = next_of(centre, "alarm_cleared")
        assert (cleared["type"], cleared["alarm_id"], cleared["reason"]) == (
            "wandering", alarm["alarm_id"], "returned")

        # The resident presses the Shelly button (the published advert), repeated on the air.
        for _ in range(3):
            air.broadcast(PUB_BUTTON[1], -50, PUB_BUTTON[0])
        press = next_of(centre, "alarm")
        assert (press["type"], press["device"], press["trigger"]) == (
            "alarm_button", "button-1", "press")
        no_more(centre, "alarm")

        # `tryggheim devices` tells the admin the Shelly button shows the resident nothing.
        exe = shutil.which("tryggheim") or str(Path(sys.executable).with_name("tryggheim"))
        listed = subprocess.run([exe, "devices", "--config", str(config)], capture_output=True,
                                text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        row = next(x for x in listed.stdout.splitlines() if x.startswith("button-1"))
        assert "no 'help is coming' feedback" in row
        devs = json.loads(subprocess.run([exe, "devices", "--json", "--config", str(config)],
                                         capture_output=True, text=True, timeout=30).stdout)
        button = next(d for d in devs if d["id"] == "button-1")
        assert (button["model"], button["battery"]) == ("shelly-blu-button1", 100)
    finally:
        if hub.poll() is None:
            hub.terminate()
            hub.wait(timeout=10)
        centre.stop()
        air.close()
    log = (tmp_path / "hub.log").read_text()
    assert "'accepted': 4" in log, log[-2000:]
