"""`tryggheim scan`: the installer's table, and the command through bleak against mock BlueZ."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hub.config import keys
from hub.config.settings import Device
from hub.installer.scan import ScanTable, render
from hub.radio.scanner import Advert
from protocols import ack, bthome
from tests.hub.radio.bluez_mock import BluezMock, requires_dbus

PENDANT = Device("pendant-1", "pendant", "D4:00:00:00:00:01", "bedroom")
DOOR = Device("door-1", "door", "D4:00:00:00:00:02", "hall")
BED = Device("bed-1", "bed", "D4:00:00:00:00:03", "bedroom")
K_PENDANT = bytes.fromhex("00112233445566778899aabbccddeeff")
K_DOOR = bytes(range(16))


def svc(mac: str, key: bytes, counter: int, battery: int = 87) -> bytes:
    payload = bthome.encode_objects([(bthome.PACKET_ID, counter % 256),
                                     (bthome.BATTERY, battery)])
    return bytes(bthome.encrypt_service_data(ack.host_aes(key), bthome.mac_bytes(mac), payload,
                                             counter))


def test_table_tells_the_installer_what_is_wrong() -> None:
    table = ScanTable({d.id: d for d in (PENDANT, DOOR, BED)},
                      {"pendant-1": K_PENDANT, "door-1": K_DOOR, "bed-1": bytes(16)})
    for rssi in (-60, -64):
        table.add(Advert(PENDANT.mac, rssi, svc(PENDANT.mac, K_PENDANT, 5, battery=91), 0.0))
    # The door was provisioned with another key than the one the hub holds; and it is far.
    table.add(Advert(DOOR.mac, -90, svc(DOOR.mac, bytes(16), 3), 0.0))
    # A device whose MAC was mistyped in the configuration: its adverts open with the bed key.
    stray = "D4:00:00:00:00:33"
    table.add(Advert(stray, -70, svc(stray, bytes(16), 9), 0.0))
    # A neighbour's plain BTHome thermometer.
    table.add(Advert("E0:11:22:33:44:55", -80, bthome.service_data(
        bthome.encode_objects([(bthome.BATTERY, 50)])), 0.0))
    rows = {r["mac"]: r for r in table.rows()}
    p = rows[PENDANT.mac]
    assert (p["id"], p["decrypt"], p["key"], p["battery"], p["rssi"], p["rssi_avg"],
            p["rssi_min"], p["adverts"]) == ("pendant-1", "ok", True, 91, -64, -62.0, -64, 2)
    assert p["notes"] == []
    d = rows[DOOR.mac]
    assert d["decrypt"] == "fails"
    assert any("re-provision" in n for n in d["notes"])
    assert any("weak signal" in n for n in d["notes"])
    b = rows[BED.mac]
    assert not b["heard"] and b["notes"] == ["not heard: check that it is powered and within range"]
    s = rows[stray]
    assert not s["configured"] and any("key of bed-1" in n for n in s["notes"])
    n = rows["E0:11:22:33:44:55"]
    assert (n["configured"], n["decrypt"], n["battery"]) == (False, "plain", 50)
    assert not table.all_ok()
    text = render(table.rows())
    assert "NOT HEARD" in text and "(not ours)" in text and "91%" in text
    # Configured devices are listed first.
    assert [r["configured"] for r in table.rows()][:3] == [True, True, True]


def test_device_without_a_key_on_the_hub() -> None:
    table = ScanTable({PENDANT.id: PENDANT}, {})
    table.add(Advert(PENDANT.mac, -60, svc(PENDANT.mac, K_PENDANT, 1), 0.0))
    (row,) = table.rows()
    assert (row["key"], row["decrypt"]) == (False, "no key")
    assert not table.all_ok()


@requires_dbus
def test_scan_command_through_bleak(tmp_path: Path) -> None:
    (tmp_path / "hub.toml").write_text(f"""
[site]
id = "home-1"
[hub]
id = "hub-1"
[radio]
kind = "bleak"
[[device]]
id = "pendant-1"
role = "pendant"
mac = "{PENDANT.mac}"
room = "bedroom"
""")
    keys.write(tmp_path / "keys.toml", {"pendant-1": K_PENDANT})
    bluez = BluezMock(tmp_path / "bluez").start()
    try:
        bluez.add_adapter()
        exe = shutil.which("tryggheim") or str(Path(sys.executable).with_name("tryggheim"))
        proc = subprocess.Popen(
            [exe, "scan", "--config", str(tmp_path / "hub.toml"), "--seconds", "2", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bluez.address},
        )
        try:
            deadline = time.monotonic() + 15
            while not bluez.scanning():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "scan never started"
                time.sleep(0.02)
            assert bluez.advertise(PENDANT.mac, svc(PENDANT.mac, K_PENDANT, 7, 64), rssi=-67)
            assert bluez.advertise("E0:11:22:33:44:55", bthome.service_data(b"\x01\x32"), rssi=-88)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
        assert result["mode"] == "passive"
        rows = {r["mac"]: r for r in result["devices"]}
        p = rows[PENDANT.mac]
        assert (p["id"], p["role"], p["decrypt"], p["battery"], p["rssi"]) == (
            "pendant-1", "pendant", "ok", 64, -67)
        assert rows["E0:11:22:33:44:55"]["configured"] is False
    finally:
        bluez.close()
