"""The firmware takes its default pins from hardware/pinmap.json; the config can override."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hil.conftest import DutFactory, device_config

PINMAP = json.loads((Path(__file__).resolve().parents[2] / "hardware" / "pinmap.json").read_text())


@pytest.mark.parametrize("role", sorted(PINMAP["roles"]))
def test_default_pins_come_from_the_pin_map(dut: DutFactory, role: str) -> None:
    d = dut(device_config(role), battery_mv=4000)
    d.advance(500)
    assert d.pin_map == PINMAP["roles"][role]["pins"]
    assert d.indication() not in ("config_error", "fault")


def test_config_pins_override_the_defaults(dut: DutFactory) -> None:
    d = dut(device_config("door", pins={"door": 32}))
    d.advance(500)
    assert d.pin_map["door"] == 32 and d.pin_map["led"] == PINMAP["roles"]["door"]["pins"]["led"]
