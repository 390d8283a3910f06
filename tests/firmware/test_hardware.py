"""hardware/ and the firmware cannot disagree: pin map, wiring tables, battery table."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tools.sim import battery_model

ROOT = Path(__file__).resolve().parents[2]
PINMAP = json.loads((ROOT / "hardware" / "pinmap.json").read_text())
ROLES = sorted(PINMAP["roles"])
# GPIOs that can wake an ESP32 from deep sleep (ESP32 TRM, RTC_MUX: RTC GPIOs).
RTC_GPIOS = {0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39}
INPUT_ONLY = {34, 35, 36, 37, 38, 39}


def wiring_table(role: str) -> dict[str, int]:
    text = (ROOT / "hardware" / f"{role}.md").read_text()
    section = text.split("## Wiring\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (\d+) \|", section, re.M)
    assert rows, f"hardware/{role}.md: no wiring table"
    return {sig: int(gpio) for sig, gpio in rows}


@pytest.mark.parametrize("role", ROLES)
def test_wiring_table_matches_the_pin_map(role: str) -> None:
    assert wiring_table(role) == PINMAP["roles"][role]["pins"]


@pytest.mark.parametrize("role", ROLES)
def test_pin_map_is_electrically_possible(role: str) -> None:
    spec = PINMAP["roles"][role]
    pins = spec["pins"]
    assert len(set(pins.values())) == len(pins), "two signals on one GPIO"
    for name in spec["wake"]:
        assert pins[name] in RTC_GPIOS, f"{name} cannot wake the ESP32 from deep sleep"
    for name in spec["outputs"]:
        assert pins[name] not in INPUT_ONLY, f"{name} is an output on an input-only GPIO"
    assert pins["battery"] in {32, 33, 34, 35, 36, 39}, "battery needs ADC1 (ADC2 is busy with radio)"
    either_edge = [n for n in spec["wake"] if n not in ("button", "accel_int")]
    assert len(either_edge) <= 1, "only one input can wake on both edges (ext0)"


def test_firmware_wake_inputs_are_in_the_pin_map() -> None:
    sys.path.insert(0, str(ROOT / "firmware"))
    try:
        import bed
        import door
        import pendant
        import wearable
    finally:
        sys.path.remove(str(ROOT / "firmware"))
    for role, wake in (("door", door.WAKE), ("bed", bed.WAKE), ("pendant", pendant.WAKE),
                       ("wearable", wearable.WAKE)):
        assert set(wake) == set(PINMAP["roles"][role]["wake"]), role
    assert PINMAP["roles"]["pir"]["wake"] == ["motion"]


def test_battery_table_in_hardware_is_current() -> None:
    # Change a firmware timing constant and this fails until battery.md is regenerated.
    assert (ROOT / "hardware" / "battery.md").read_text() == battery_model.render()


def test_battery_goals_are_met() -> None:
    rows = {r.profile.role: r for r in battery_model.table()}
    for role in ("door", "pir", "bed"):
        assert rows[role].life_days >= 2 * 365, role
    assert rows["wearable"].life_days >= 7


def test_battery_model_follows_the_firmware_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    fw = battery_model.firmware()
    before = {r.profile.role: r.life_days for r in battery_model.table()}
    monkeypatch.setattr(fw["device"], "EVENT_BURST_MS", 3 * fw["device"].EVENT_BURST_MS)
    monkeypatch.setattr(fw["pir"], "HOLDOFF_S", 60)
    after = {r.profile.role: r.life_days for r in battery_model.table()}
    assert after["door"] < before["door"]
    assert after["pir"] < before["pir"] * 0.8
