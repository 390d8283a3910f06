"""Provisioning on the installer's side: the device's config.json from the pin map, its key,
and the counter file it keeps (the registration with the hub: tests/hub/installer/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hub.installer.provision import ProvisionError
from tools.installer import provision

ROOT = Path(__file__).resolve().parents[3]


def test_new_keys_are_128_bit_and_distinct() -> None:
    keys = {provision.new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(re.fullmatch(r"[0-9a-f]{32}", k) for k in keys)


def test_device_config_takes_pins_from_the_hardware_pin_map() -> None:
    pinmap = json.loads((ROOT / "hardware" / "pinmap.json").read_text())
    cfg = provision.device_config("pendant-1", "pendant", "00" * 16, "24:0a:c4:00:00:01")
    assert cfg["pins"] == pinmap["roles"]["pendant"]["pins"]
    assert cfg["mac"] == "24:0A:C4:00:00:01"
    assert cfg["heartbeat_s"] == 600


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("Pendant 1", "pendant", "00" * 16), "device id"),
        (("p1", "toaster", "00" * 16), "role"),
        (("p1", "pendant", "00" * 15), "key"),
        (("p1", "pendant", "ZZ" * 16), "key"),
    ],
)
def test_device_config_rejects_bad_input(args: tuple[str, str, str], problem: str) -> None:
    with pytest.raises(ProvisionError, match=problem):
        provision.device_config(*args)


def test_heartbeat_outside_the_firmware_range_is_refused() -> None:
    with pytest.raises(ProvisionError, match="heartbeat_s 30"):
        provision.device_config("p1", "pendant", "00" * 16, heartbeat_s=30)


def test_pin_map_problems_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "pinmap.json"
    bad.write_text(json.dumps({"roles": {"door": {"pins": {"door": 77}}}}))
    with pytest.raises(ProvisionError, match=r"pinmap.json: roles.door.pins.door: 77"):
        provision.load_pinmap("door", bad)
    with pytest.raises(ProvisionError, match="roles.pir.pins: missing"):
        provision.load_pinmap("pir", bad)


def test_counter_file_is_the_one_the_firmware_keeps() -> None:
    m = re.search(r'^COUNTER_HWM_PATH = "([^"]+)"', (ROOT / "firmware" / "device.py").read_text(),
                  re.M)
    assert m is not None and m.group(1) == provision.COUNTER_FILE
