"""Door, PIR and bed mat: the physical stimulus gives the right adverts, at the right time."""

from __future__ import annotations

import pytest

from tests.hil.conftest import DutFactory, device_config
from tests.hil.helpers import events, values

MIN = 60_000


def test_door_open_and_close_are_reported_at_once(dut: DutFactory) -> None:
    door = dut(device_config("door"))
    door.advance(2000)
    assert values(door)[0][1]["door"] == 0  # power-on advert carries the state
    door.set_pin("door", 1)
    t_open = door.now_ms
    door.advance(5000)
    door.set_pin("door", 0)
    t_closed = door.now_ms
    door.advance(2000)
    assert events(door, "door", since=1) == [(t_open + 20, 1), (t_closed + 20, 0)]
    assert door.sleeping


def test_door_change_during_the_burst_is_not_lost(dut: DutFactory) -> None:
    door = dut(device_config("door"))
    door.advance(2000)
    door.set_pin("door", 1)
    door.advance(300)  # still advertising "open"
    door.set_pin("door", 0)
    door.advance(3000)
    assert [v for _, v in events(door, "door", since=1)] == [1, 0]


def test_heartbeat_every_configured_interval_and_silent_otherwise(dut: DutFactory) -> None:
    door = dut(device_config("door", heartbeat_s=300))
    door.advance(31 * MIN)
    beats = [(t, v) for t, v in values(door) if not v["_trigger"]]
    times = [t for t, _ in beats]
    assert times == [5 * MIN * k for k in range(1, 7)]
    assert all(v["door"] == 0 and "battery" in v for _, v in beats)
    assert len(door.boots) == 7  # one wake per heartbeat: deep sleep in between


def test_event_moves_the_next_heartbeat(dut: DutFactory) -> None:
    door = dut(device_config("door", heartbeat_s=300))
    door.advance(4 * MIN)
    door.set_pin("door", 1)
    t_open = door.now_ms
    door.advance(6 * MIN)
    beats = [t for t, v in values(door, since=1) if not v["_trigger"]]
    assert beats == [t_open + 20 + 5 * MIN]


def test_low_battery_is_reported_in_every_advert(dut: DutFactory) -> None:
    door = dut(device_config("door"), battery_mv=3000)
    door.advance(1000)
    assert values(door)[-1][1]["battery_low"] == 0
    door.set_battery(2150, over_ms=9 * MIN)  # batteries running down
    door.advance(11 * MIN)
    last = values(door)[-1][1]
    assert last["voltage_mv"] == 2150
    assert last["battery_low"] == 1 and last["battery"] < 20


def test_pir_first_motion_at_once_then_hold_off(dut: DutFactory) -> None:
    pir = dut(device_config("pir", holdoff_s=60))
    pir.advance(1000)
    for _ in range(10):  # a busy room: motion every 5 s for 50 s
        pir.set_pin("motion", 1)
        pir.advance(2000)
        pir.set_pin("motion", 0)
        pir.advance(3000)
    assert events(pir, "motion", since=1) == [(1000, 1)]
    boots = len(pir.boots)
    pir.advance(2 * MIN)  # quiet
    assert len(pir.boots) == boots + 1  # woke once at the end of the hold-off, nothing more
    pir.set_pin("motion", 1)
    t = pir.now_ms
    pir.advance(2000)
    assert events(pir, "motion", since=t) == [(t, 1)]


def test_pir_motion_still_going_at_end_of_hold_off_is_reported(dut: DutFactory) -> None:
    pir = dut(device_config("pir", holdoff_s=60))
    pir.advance(1000)
    pir.set_pin("motion", 1)  # stays high (HC-SR501 retriggering)
    pir.advance(62_000)
    assert events(pir, "motion", since=1) == [(1000, 1), (61_000, 1)]


def test_bed_turning_over_is_not_out_of_bed(dut: DutFactory) -> None:
    bed = dut(device_config("bed", out_debounce_s=20, in_debounce_s=5))
    bed.advance(1000)
    bed.set_pin("mat", 1)  # lies down
    t_in = bed.now_ms
    bed.advance(10_000)
    for _ in range(3):  # turns over: pressure gone for 3 s, three times
        bed.set_pin("mat", 0)
        bed.advance(3000)
        bed.set_pin("mat", 1)
        bed.advance(60_000)
    assert events(bed, "occupancy", since=1) == [(t_in + 5000, 1)]
    bed.set_pin("mat", 0)  # gets up
    t_out = bed.now_ms
    bed.advance(30_000)
    assert events(bed, "occupancy", since=t_in + 5001) == [(t_out + 20_000, 0)]
    assert bed.sleeping


@pytest.mark.parametrize("role", ["door", "pir", "bed", "pendant", "wearable"])
def test_every_device_sends_heartbeats_on_time(dut: DutFactory, role: str) -> None:
    d = dut(device_config(role, heartbeat_s=60), battery_mv=4000 if role in (
        "pendant", "wearable") else 3000)
    d.advance(3 * MIN + 500)
    sent = [t for t, _ in values(d)]
    # A heartbeat carries the firmware version (BTHome 0xF2), whatever the device.
    beats = [t for t, v in values(d) if "firmware_version" in v and t > sent[0]]
    assert len(beats) == 3
    # One interval after the previous advert, whatever it was (boot advert or heartbeat).
    assert all(t - max(s for s in sent if s < t) == 60_000 for t in beats)


@pytest.mark.parametrize("role,mv,low", [("pir", 2150, 1), ("bed", 2900, 0),
                                         ("pendant", 3500, 1), ("wearable", 3900, 0)])
def test_low_battery_flag_per_chemistry(dut: DutFactory, role: str, mv: int, low: int) -> None:
    d = dut(device_config(role), battery_mv=mv)
    d.advance(1000)
    assert values(d)[0][1]["battery_low"] == low
