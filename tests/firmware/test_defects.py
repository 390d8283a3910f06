"""The firmware on the port model (tests/esp32_fakes under the virtual board), scenario by
scenario, for the defects a review against the ESP32 port found (issue: "firmware that works
on a real ESP32"). Each test failed on the firmware before its fix; run them on another tree
with TRYGGHEIM_FIRMWARE_DIR=<dir with firmware/*.py>."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols import ack, bthome
from tests.conftest import requires_node
from tests.hil.conftest import KEY, MAC
from tests.hil.helpers import ack_for, events, values
from tools.sim.vboard import VirtualBoard
from tools.sim.vboard.scenarios import fall

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = Path(os.environ.get("TRYGGHEIM_FIRMWARE_DIR", ROOT / "firmware"))
pytestmark = requires_node
LIPO = 4000
SECOND_PRESS_AT = 20_000


def cfg(role: str, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"id": f"{role}-1", "role": role, "key": KEY, "heartbeat_s": 600}
    c.update(extra)
    return c


@pytest.fixture
def boards() -> Iterator[list[VirtualBoard]]:
    made: list[VirtualBoard] = []
    yield made
    for b in made:
        b.stop()


def start(made: list[VirtualBoard], config: dict[str, Any] | None, **kw: Any) -> VirtualBoard:
    kw.setdefault("mac", MAC)
    kw.setdefault("battery_mv", LIPO if config and config.get("role") in (
        "pendant", "wearable") else 3000)
    b = VirtualBoard(config, firmware_dir=FIRMWARE, **kw)
    made.append(b)
    b.start()
    b.advance(1000)
    return b


def faults(b: VirtualBoard) -> list[str]:
    return [line for line in b.log if line.startswith("fault")]


def alarm_acked(b: VirtualBoard) -> bytes:
    """Press the button; the hub acks received, then delivered. Returns the alarm advert."""
    b.press("button", hold_ms=200)
    b.advance(300)
    svc = [a.service_data for a in b.adverts_since(1)][-1]
    b.hub_write(ack_for(b, svc, ack.RECEIVED))
    b.advance(500)
    b.hub_write(ack_for(b, svc, ack.DELIVERED))
    b.advance(1000)
    return svc


# -- 1. a second press must not cancel the alarm (life safety) ----------------------------
def test_second_short_press_in_the_cancel_window_is_not_a_cancel(
        boards: list[VirtualBoard]) -> None:
    p = start(boards, cfg("pendant"))
    alarm_acked(p)
    assert "help_coming" in [i for _, i in p.indications]
    p.advance(SECOND_PRESS_AT - p.now_ms)
    t = p.now_ms
    p.press("button", hold_ms=300)  # things got worse: press again, briefly
    p.advance(2000)
    pressed = [v for _, v in events(p, "button", since=t)]
    assert bthome.BUTTON_CANCEL not in pressed
    assert pressed[:1] == [bthome.BUTTON_PRESS]  # a new alarm
    assert "cancelled" not in [i for ti, i in p.indications if ti >= t]
    assert not faults(p)


def test_holding_the_button_still_cancels_and_the_button_is_not_taken_for_stuck(
        boards: list[VirtualBoard]) -> None:
    p = start(boards, cfg("pendant"))
    p.press("button", hold_ms=200)
    p.advance(5000)
    p.press("button", hold_ms=4500)
    p.advance(4000)
    assert [v for _, v in events(p, "button")][-1] == bthome.BUTTON_CANCEL
    p.advance(120_000)
    t = p.now_ms
    p.press("button", hold_ms=200)  # still armed for deep sleep: a press is an alarm
    p.advance(1000)
    assert [v for _, v in events(p, "button", since=t)] == [bthome.BUTTON_PRESS]


# -- 2, 8. no light sleep with BLE on; legal advert intervals: every app runs --------------
@pytest.mark.parametrize("role,pin", [("door", "door"), ("pir", "motion"), ("bed", "mat"),
                                      ("pendant", "button"), ("wearable", "button")])
def test_every_app_runs_its_events_without_a_fault(
        boards: list[VirtualBoard], role: str, pin: str) -> None:
    d = start(boards, cfg(role))
    d.set_pin(pin, 1)
    d.advance(200 if pin == "button" else 30_000)
    d.set_pin(pin, 0)
    d.advance(30_000)
    assert not faults(d), d.log[-10:]
    assert not d.halted
    assert any(v.get(bthome.OBJECTS[k][0]) == 1 for _, v in values(d, since=1000)
               for k in (bthome.DOOR, bthome.MOTION, bthome.OCCUPANCY, bthome.BUTTON))


# -- 3. inputs after an armed light sleep ---------------------------------------------------
def test_worn_wearable_keeps_sampling_and_never_reads_charging(
        boards: list[VirtualBoard]) -> None:
    w = start(boards, cfg("wearable"))
    w.advance(60_000)
    assert w.usage.light_wakes > 50  # it light-slept between FIFO bursts
    assert all(v.get("battery_charging") == 0 for _, v in values(w))
    assert w.accel.samples_made >= 59 * 50
    w.accel.feed(fall())
    w.advance(10_000 + 30_000)  # detection, then the 30 s cancel window (firmware/fall_alert.py)
    assert len(events(w, "problem")) == 1  # and still detects a fall


# -- 5. on the charger, charging or charged -------------------------------------------------
def test_a_wearable_on_the_cradle_says_so_and_stops_sampling(boards: list[VirtualBoard]) -> None:
    w = start(boards, cfg("wearable"))
    w.set_pin("charge", 1)
    w.advance(5000)
    assert [v.get("battery_charging") for _, v in values(w)][-1] == 1
    samples = w.accel.samples_made
    w.advance(30_000)
    assert w.accel.samples_made == samples  # not worn: the sensor is off
    w.set_pin("charge", 0)  # taken off the cradle
    w.advance(5000)
    assert [v.get("battery_charging") for _, v in values(w)][-1] == 0


# -- 6. indications visible for their stated time --------------------------------------------
def led_pulses(b: VirtualBoard, since: int, until: int) -> int:
    return sum(1 for t, v in b.led if since <= t < until and v == 1)


def test_not_received_blinks_before_the_device_sleeps(boards: list[VirtualBoard]) -> None:
    p = start(boards, cfg("pendant"))
    p.press("button")
    p.advance(20_000)
    t = next(t for t, i in p.indications if i == "not_received")
    assert led_pulses(p, t, t + 4000) >= 2  # 100 ms flash every 2 s, twice


def test_help_coming_keeps_blinking_while_shown(boards: list[VirtualBoard]) -> None:
    p = start(boards, cfg("pendant"))
    alarm_acked(p)
    p.advance(15_000)
    t = next(t for t, i in p.indications if i == "help_coming")
    assert led_pulses(p, t, t + 10_000) >= 9  # 200/800 ms for the 10 s it is shown


def test_config_error_is_shown_on_the_led(boards: list[VirtualBoard]) -> None:
    d = start(boards, None)
    d.advance(40_000)
    assert d.indication() == "config_error" and d.sleeping
    assert led_pulses(d, 0, 30_000) >= 60  # 100/300 ms for 30 s


def test_fault_is_shown_before_the_back_off(boards: list[VirtualBoard]) -> None:
    d = start(boards, cfg("door"))
    d.fail_calls("adc")
    d.power_cycle()
    d.advance(6000)
    t = next(t for t, i in d.indications if i == "fault")
    assert led_pulses(d, t, t + 5000) >= 4


def test_a_shown_pattern_stops_so_the_wearable_light_sleeps_again(
        boards: list[VirtualBoard]) -> None:
    # A blinking LED keeps the board awake (Timer callbacks need the CPU): a pattern stops
    # after its time, or the worn wearable would idle at the awake current all day.
    w = start(boards, cfg("wearable"))
    w.press("button", hold_ms=200)
    w.advance(3000)
    w.press("button", hold_ms=4500)  # cancelled: shown 3 s, then sampling goes on
    w.advance(10_000)
    assert "cancelled" in [i for _, i in w.indications]
    awake, wakes = w.usage.awake_ms, w.usage.light_wakes
    w.advance(10_000)
    assert w.usage.light_wakes > wakes + 10 and w.usage.awake_ms - awake < 2000


# -- 7. every path ends in deep sleep or a reset; pins checked against the chip ------------
@pytest.mark.parametrize("pins", [{"door": 24}, {"door": 30}, {"led": 34}, {"door": 7},
                                  {"door": 21}, {"battery": 26}, {"led": 27}])
def test_pins_the_chip_cannot_use_are_config_errors(
        boards: list[VirtualBoard], pins: dict[str, int]) -> None:
    d = start(boards, cfg("door", pins=pins))
    d.advance(40_000)
    assert d.indication() == "config_error"
    assert d.sleeping and not d.halted


@pytest.mark.parametrize("text", [b"5", b"[1, 2]", b'{"id": "x", "role": "door", "pins": []}'])
def test_a_config_that_breaks_the_loader_is_a_config_error(
        boards: list[VirtualBoard], text: bytes) -> None:
    d = start(boards, cfg("door"))
    (d.flash_dir / "config.json").write_bytes(text)
    d.power_cycle()
    d.advance(40_000)
    assert d.indication() == "config_error"
    assert d.sleeping and not d.halted


def test_a_crash_in_configure_still_ends_in_deep_sleep(boards: list[VirtualBoard]) -> None:
    d = start(boards, cfg("door"))
    d.fail_calls("pin_init")  # the pin driver fails while the board is configured
    d.power_cycle()
    d.advance(60_000)
    assert not d.halted  # never left awake at the REPL
    assert d.sleeping and len(d.boots) <= 4  # backs off, no reboot loop


# -- 9. advertising again after a central disconnects ---------------------------------------
def test_a_stray_connection_does_not_end_the_alarm_burst(boards: list[VirtualBoard]) -> None:
    p = start(boards, cfg("pendant"))
    p.press("button")
    p.advance(200)
    svc = [a.service_data for a in p.adverts_since(1)][-1]
    p.hub_write(b"\x01" + bytes(12))  # a central connects and writes junk, then leaves
    p.advance(300)
    p.hub_write(ack_for(p, svc, ack.RECEIVED))
    p.advance(500)
    assert p.indication() == "received"


# -- 10. ticks wrap at 2**30 -----------------------------------------------------------------
def test_a_burst_across_the_tick_wrap_ends(boards: list[VirtualBoard]) -> None:
    d = start(boards, cfg("door"), ticks0=2**30 - 1500)
    d.set_pin("door", 1)  # the burst starts just before ticks_ms wraps
    d.advance(3000)
    assert d.sleeping
    assert [v for _, v in events(d, "door", since=1000)] == [1]


def test_a_press_across_the_tick_wrap_is_measured(boards: list[VirtualBoard]) -> None:
    p = start(boards, cfg("pendant"), ticks0=2**30 - 1100)
    p.press("button", hold_ms=300)  # wakes at 1000: held across the wrap
    p.advance(1000)
    assert [v for _, v in events(p, "button")] == [bthome.BUTTON_PRESS]


# -- 11. repeated object ids keep their order on MicroPython ---------------------------------
def test_encode_objects_keeps_the_order_of_repeated_ids(tmp_path: Path) -> None:
    fw = tmp_path / "fw"
    fw.mkdir()
    objs = [(bthome.BUTTON, i % 7) for i in range(40)] + [(bthome.BATTERY, 1)]
    (fw / "main.py").write_text(
        "from protocols import bthome\n"
        f"print('OUT', bthome.encode_objects({objs!r}).hex())\n")
    b = VirtualBoard({"id": "x"}, firmware_dir=fw)
    try:
        b.start()
    finally:
        b.stop()
    out = [line[4:] for line in b.log if line.startswith("OUT ")]
    assert out == [bthome.encode_objects(objs).hex()]
    expect = bytes([bthome.BATTERY, 1]) + b"".join(bytes([bthome.BUTTON, v]) for _, v in objs[:-1])
    assert out[0] == expect.hex()


# -- 12. the PIR reports "no motion", with a consistent trigger flag and its version ---------
def test_pir_reports_clear_after_the_hold_off(boards: list[VirtualBoard]) -> None:
    pir = start(boards, cfg("pir", holdoff_s=60))
    pir.set_pin("motion", 1)
    pir.advance(3000)
    pir.set_pin("motion", 0)
    pir.advance(70_000)
    assert [(t, v["motion"]) for t, v in values(pir, since=1000)] == [(1000, 1), (61_000, 0)]
    pir.advance(600_000)  # the heartbeat carries the state and the firmware version
    beat = values(pir, since=100_000)[-1][1]
    assert beat["motion"] == 0 and "firmware_version" in beat
    assert {v["_trigger"] for _, v in values(pir)} == {True}
