"""Pendant and wearable: alarm adverts and the acknowledgement shown to the resident."""

from __future__ import annotations

import random

from protocols import ack, bthome
from tests.hil.conftest import DutFactory, device_config
from tests.hil.helpers import ack_for, events, values
from tools.sim.vboard import VirtualBoard
from tools.sim.vboard.scenarios import fall

LIPO_FULL = 4000
FALL_WINDOW_MS = 30_000  # firmware/fall_alert.py CANCEL_WINDOW_S (tests/hil/test_fall_alert.py)


def pendant(dut: DutFactory, **cfg: object) -> VirtualBoard:
    p = dut(device_config("pendant", **cfg), battery_mv=LIPO_FULL)
    p.advance(1000)
    return p


def test_press_and_long_press_are_alarms(dut: DutFactory) -> None:
    p = pendant(dut)
    p.press("button", hold_ms=200)
    p.advance(1000)
    p.press("button", hold_ms=2500)  # within the cancel window, but not held for the cancel
    p.advance(1000)
    # The second press repeats the same alarm at once (same bytes): still one alarm.
    assert len({a.service_data for a in p.adverts_since(1)}) == 1
    assert [v for _, v in events(p, "button")] == [bthome.BUTTON_PRESS] * 2
    assert p.indication() in ("sending", "not_received")
    q = pendant(dut)
    q.press("button", hold_ms=2000)
    q.advance(1000)
    assert [v for _, v in events(q, "button")] == [bthome.BUTTON_LONG_PRESS]


def test_ack_received_then_delivered(dut: DutFactory) -> None:
    p = pendant(dut)
    p.press("button")
    p.advance(500)
    (t0, svc), = [(t, a.service_data) for t, a in ((a.t_ms, a) for a in p.adverts_since(1))]
    assert p.indication() == "sending"
    p.hub_write(ack_for(p, svc, ack.RECEIVED))  # the hub stored it durably
    p.advance(500)
    assert p.indication() == "received"
    p.advance(5000)  # the response centre's receipt takes a while
    p.hub_write(ack_for(p, svc, ack.DELIVERED))
    p.advance(500)
    assert p.indication() == "help_coming"
    p.advance(15_000)
    assert p.sleeping and p.indication() == "off"
    # Every advert of this alarm was the same bytes (same counter): one alarm, not several.
    assert {a.service_data for a in p.adverts_since(t0)} == {svc}
    n = len(p.adverts)
    p.advance(120_000)
    assert len(p.adverts) == n  # done: nothing more until the next heartbeat


def test_no_ack_keeps_trying_with_back_off_and_says_not_received(dut: DutFactory) -> None:
    p = pendant(dut)
    p.press("button")
    p.advance(10 * 60_000)
    sends = p.adverts_since(1)
    assert len({a.service_data for a in sends}) == 1  # the same alarm advert every time
    gaps = [b.t_ms - a.t_ms for a, b in zip(sends, sends[1:], strict=False)]
    # burst, "not received" shown 4 s, then the back-off
    assert gaps[:5] == [3000 + 4000 + b for b in (5000, 10000, 20000, 40000, 60000)]
    assert all(g == 67000 for g in gaps[5:]) and len(gaps) >= 8  # never gives up
    assert p.indication() == "not_received"
    # The hub comes back: it answers during the next attempt, and that attempt hears it.
    next_attempt = sends[-1].t_ms + 67_000
    p.hub_write(ack_for(p, sends[0].service_data, ack.DELIVERED), at_ms=next_attempt + 500)
    p.advance(next_attempt + 1000 - p.now_ms)
    assert "help_coming" in [i for _, i in p.indications]


def test_forged_or_foreign_ack_is_ignored(dut: DutFactory) -> None:
    p = pendant(dut)
    p.press("button")
    p.advance(300)
    svc = p.adverts_since(1)[0].service_data
    good = ack_for(p, svc, ack.DELIVERED)
    forged = good[:-1] + bytes((good[-1] ^ 1,))
    other_alarm = ack.encode(ack.host_aes(bytes(16)), bthome.mac_bytes(p.mac),
                             ack.alarm_counter(svc), ack.DELIVERED)  # wrong key
    p.hub_write(forged)
    p.hub_write(other_alarm)
    p.hub_write(b"\x01garbage")
    p.advance(3000)
    assert "help_coming" not in [i for _, i in p.indications]
    assert p.indication() == "not_received"


def test_press_during_back_off_retries_at_once(dut: DutFactory) -> None:
    p = pendant(dut, cancel_window_s=5)
    p.press("button")
    p.advance(20_000)  # two unanswered attempts, now sleeping in the back-off
    n = len(p.adverts)
    p.press("button")
    t = p.now_ms
    p.advance(1000)
    assert len(p.adverts) == n + 1 and p.adverts[-1].service_data == p.adverts[n - 1].service_data
    assert p.adverts[-1].t_ms - t <= 500


def test_hold_within_the_window_cancels_a_false_alarm(dut: DutFactory) -> None:
    p = pendant(dut, cancel_hold_ms=3000, cancel_window_s=60)
    p.press("button")
    p.advance(10_000)
    p.press("button", hold_ms=3500)
    p.advance(5000)
    assert [v for _, v in events(p, "button", distinct=True)] == [
        bthome.BUTTON_PRESS, bthome.BUTTON_CANCEL]
    assert "cancelled" in [i for _, i in p.indications]
    n = len(p.adverts)
    p.advance(5 * 60_000)
    assert len(p.adverts) == n  # the cancelled alarm is not retried any more


def test_hold_after_the_window_is_a_new_alarm_not_a_cancel(dut: DutFactory) -> None:
    p = pendant(dut, cancel_hold_ms=3000, cancel_window_s=30)
    p.press("button")
    p.advance(1000)
    svc = p.adverts_since(1)[0].service_data
    p.hub_write(ack_for(p, svc, ack.DELIVERED))
    p.advance(40_000)
    p.press("button", hold_ms=3500)
    p.advance(1000)
    assert [v for _, v in events(p, "button", distinct=True)] == [
        bthome.BUTTON_PRESS, bthome.BUTTON_LONG_PRESS]


def test_press_after_help_is_coming_is_a_new_alarm(dut: DutFactory) -> None:
    p = pendant(dut)
    p.press("button")
    p.advance(300)
    first = p.adverts_since(1)[0].service_data
    p.hub_write(ack_for(p, first, ack.DELIVERED))
    p.advance(20_000)  # help is coming; still inside the 60 s cancel window
    p.press("button", hold_ms=300)
    p.advance(1000)
    alarms = {a.service_data for a in p.adverts_since(1)}
    assert len(alarms) == 2 and first in alarms
    assert [v for _, v in events(p, "button", distinct=True)] == [bthome.BUTTON_PRESS] * 2


def test_pendant_reports_charging(dut: DutFactory) -> None:
    p = pendant(dut)
    assert values(p)[-1][1]["battery_charging"] == 0
    p.set_pin("charge", 1)
    p.advance(1000)
    assert values(p)[-1][1]["battery_charging"] == 1
    p.set_pin("charge", 0)
    p.advance(1000)
    assert values(p)[-1][1]["battery_charging"] == 0


def test_unacknowledged_alarm_survives_power_loss(dut: DutFactory) -> None:
    p = pendant(dut)
    p.press("button")
    p.advance(4000)
    svc = p.adverts_since(1)[0].service_data
    p.power_cycle(off_ms=2000)  # battery pulled mid-alarm
    p.advance(1000)
    assert svc in [a.service_data for a in p.adverts_since(p.now_ms - 1000)]
    p.hub_write(ack_for(p, svc, ack.DELIVERED))
    p.advance(20_000)
    assert "help_coming" in [i for _, i in p.indications]
    p.power_cycle()
    p.advance(5000)
    assert svc not in [a.service_data for a in p.adverts_since(p.now_ms - 5000)]


# -- wearable ----------------------------------------------------------------------------

def wearable(dut: DutFactory) -> VirtualBoard:
    w = dut(device_config("wearable"), battery_mv=LIPO_FULL)
    w.advance(1000)
    return w


def test_wearable_fall_raises_alarm_with_ack(dut: DutFactory) -> None:
    w = wearable(dut)
    w.accel.feed(fall())
    t_feed = w.now_ms
    w.advance(8000 + FALL_WINDOW_MS)
    falls = events(w, "problem")
    assert len(falls) == 1
    t_fall = falls[0][0]
    impact = t_feed + 173 * 20
    # confirmed 2.5 s after the impact, then the cancel window (tests/hil/test_fall_alert.py)
    assert impact + FALL_WINDOW_MS < t_fall <= impact + FALL_WINDOW_MS + 3000
    svc = w.adverts_since(t_fall)[0].service_data
    w.hub_write(ack_for(w, svc, ack.RECEIVED))
    w.advance(1000)
    assert w.indication() == "received"
    w.hub_write(ack_for(w, svc, ack.DELIVERED))
    w.advance(12_000)
    assert "help_coming" in [i for _, i in w.indications]
    n = w.accel.samples_made
    w.advance(5000)
    assert w.accel.samples_made > n  # watching again


def test_wearable_sleeps_between_fifo_bursts_and_ignores_walking(dut: DutFactory) -> None:
    w = wearable(dut)
    rng = random.Random(3)
    walk = [(rng.gauss(0, .2), -1 + 0.5 * ((i % 25) / 25) + rng.gauss(0, .1), rng.gauss(0, .2))
            for i in range(1500)]
    w.accel.feed(walk)
    w.advance(30_000)
    assert events(w, "problem") == []
    assert w.accel.samples_made >= 1500 - 25
    assert w.accel.dropped == 0  # every burst read before the FIFO filled


def test_wearable_loses_no_samples_across_heartbeats(dut: DutFactory) -> None:
    w = dut(device_config("wearable", heartbeat_s=60), battery_mv=LIPO_FULL)
    w.advance(4 * 60_000)
    assert len([v for _, v in values(w) if not v["_trigger"]]) >= 3
    assert w.accel.samples_made >= 4 * 60 * 50 - 100
    assert w.accel.dropped == 0


def test_wearable_button_is_an_alarm_and_charger_stops_sampling(dut: DutFactory) -> None:
    w = wearable(dut)
    w.press("button")
    w.advance(1000)
    assert [v for _, v in events(w, "button")] == [bthome.BUTTON_PRESS]
    w2 = wearable(dut)
    w2.set_pin("charge", 1)
    w2.advance(1000)
    assert values(w2)[-1][1]["battery_charging"] == 1
    n = w2.accel.samples_made
    w2.advance(60_000)
    assert w2.accel.samples_made == n and w2.sleeping
