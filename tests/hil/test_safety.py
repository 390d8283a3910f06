"""What keeps a device safe when something is wrong: config, crashes, hangs, power loss."""

from __future__ import annotations

from typing import Any

import pytest

from tests.hil.conftest import DutFactory, device_config
from tests.hil.helpers import flash_files, rtc_state, values, write_flash

HOUR = 3_600_000
CONFIG_SHOW_MS = 30_000  # how long a config error is shown (firmware/FIRMWARE.md)


@pytest.mark.parametrize(
    "config",
    [
        None,  # never provisioned
        {"id": "x"},  # no role
        {"id": "x", "role": "toaster"},
        {"id": "x", "role": "door", "key": "not-hex"},
        {"id": "x", "role": "door", "pins": {"door": 99}},
        {"id": "x", "role": "door", "heartbeat_s": 5},
        {"id": "x", "role": "door", "chemistry": "nimh"},
    ],
    ids=["missing", "no-role", "unknown-role", "bad-key", "bad-pin", "bad-heartbeat",
         "bad-chemistry"],
)
def test_bad_config_shows_config_error_and_sleeps_without_looping(
    dut: DutFactory, config: dict[str, Any] | None
) -> None:
    d = dut(config)
    d.advance(1000)
    assert d.indication() == "config_error"
    d.advance(CONFIG_SHOW_MS)
    assert d.sleeping and d.adverts == []
    d.advance(5 * HOUR)
    # Shows it for its stated time once an hour, no reboot loop.
    gaps = [b - a for (a, _), (b, _) in zip(d.boots, d.boots[1:], strict=False)]
    assert gaps == [HOUR + CONFIG_SHOW_MS] * 4
    assert d.adverts == []


def test_unparseable_config_file_is_a_config_error(dut: DutFactory) -> None:
    d = dut(device_config("door"))
    write_flash(d, "config.json", b"{not json")
    d.power_cycle()
    d.advance(1000)
    assert d.indication() == "config_error"
    assert any("not valid JSON" in line for line in d.log + _stderr(d))


def _stderr(d: Any) -> list[str]:
    d.stop()
    return list(d.log)


def test_crash_backs_off_instead_of_reboot_looping(dut: DutFactory) -> None:
    d = dut(device_config("door"))
    d.fail_calls("battery")  # the ADC read fails: the app raises OSError on every wake
    d.power_cycle(off_ms=1000)
    d.advance(1000)
    assert d.indication() == "fault"
    d.advance(2 * HOUR)
    t0 = d.boots[1][0]
    # Each back-off (10 s, 60 s, 10 min, 1 h) after the fault was shown for FAULT_SHOW_MS.
    assert [t - t0 for t, _ in d.boots[1:]] == [0, 15_000, 80_000, 685_000, 4_290_000]
    d.fail_calls("battery", "")  # repaired (or a transient fault)
    t = d.now_ms
    d.set_pin("door", 1)  # the sensor input still wakes it, and now it works again
    d.advance(2000)
    assert [v["door"] for _, v in values(d, since=t)] == [1]
    assert d.indication() != "fault"


def test_broken_accelerometer_leaves_the_alarm_button_working(dut: DutFactory) -> None:
    d = dut(device_config("wearable"), battery_mv=4000, accel_present=False)
    d.advance(1000)
    assert d.indication() == "fault"
    d.press("button")
    d.advance(1000)
    assert [v.get("button") for _, v in values(d) if v["_trigger"]][-1] == 1


def test_watchdog_resets_a_hung_device_and_state_survives(dut: DutFactory) -> None:
    d = dut(device_config("door"))
    d.advance(1000)
    d.hang_next_call(60_000, op="adv")  # the radio call never returns
    d.set_pin("door", 1)
    d.advance(30_000)
    assert ("watchdog" in [reason for _, reason in d.boots])
    # After the reset the door state is still known (RTC memory) and reported.
    assert [v["door"] for _, v in values(d) if v["_trigger"]][-1] == 1


def test_rtc_memory_survives_deep_sleep_not_power_loss_flash_survives_both(
    dut: DutFactory,
) -> None:
    d = dut(device_config("door"))
    d.advance(1000)
    assert rtc_state(d)["door"] == 0
    assert "counter_hwm" in flash_files(d)  # the protocol's high-water mark on flash
    d.power_cycle()
    assert d.boots[-1][1] == "power_on"
    assert "counter_hwm" in flash_files(d)


@pytest.mark.virtual_only(reason="reads flash write times from the host directory")
def test_flash_writes_are_bounded(dut: DutFactory) -> None:
    d = dut(device_config("door", heartbeat_s=60))
    d.advance(1000)
    before = {p.name: p.stat().st_mtime_ns for p in d.flash_dir.iterdir()}
    for _ in range(20):  # 20 events and ~40 heartbeats
        d.set_pin("door", 1)
        d.advance(30_000)
        d.set_pin("door", 0)
        d.advance(30_000)
    after = {p.name: p.stat().st_mtime_ns for p in d.flash_dir.iterdir()}
    changed = [n for n in after if before.get(n) != after[n]]
    assert set(changed) <= {"counter_hwm"}  # only the counter mark, once per 64 adverts

