"""Wearable: the cancel window after a detected fall (firmware/fall_alert.py), end to end
from the accelerometer to what the hub makes of the adverts."""

from __future__ import annotations

import os
import re

from hub.decode.decoder import Report
from protocols import bthome
from tests.hil.conftest import DutFactory, device_config
from tests.hil.helpers import events, values
from tests.hil.test_alarms import LIPO_FULL, fall
from tests.hub.rules.test_rules import Home, RulesConfig
from tools.sim.vboard import VirtualBoard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SRC = open(os.path.join(ROOT, "firmware", "fall_alert.py")).read()
WINDOW_MS = int(re.search(r"^CANCEL_WINDOW_S = (\d+)", _SRC, re.M).group(1)) * 1000  # type: ignore[union-attr]
CANCEL_HOLD_MS = 4000  # firmware/alarm.py: the one cancel gesture
IMPACT_MS = 173 * 20  # the impact sample of fall()
DETECT_MS = IMPACT_MS + 2500 + 500  # confirmed 2.5 s after it, read at the next FIFO burst


def fallen(dut: DutFactory) -> tuple[VirtualBoard, int]:
    """A wearable that has just detected a fall: (board, time the samples began)."""
    w = dut(device_config("wearable"), battery_mv=LIPO_FULL)
    w.advance(1000)
    t0 = w.now_ms
    w.accel.feed(fall())
    w.advance(DETECT_MS + 500)
    return w, t0


def hub_sees(w: VirtualBoard) -> list[tuple[str, str]]:
    """Every triggered advert the wearable sent, through the hub's rules: (kind, type)."""
    h = Home(RulesConfig())
    out = []
    for t, v in values(w, distinct=True):
        vals = {k: x for k, x in v.items() if not k.startswith("_")}
        r = Report(h.devices["watch-1"], t / 1000, -60, vals, vals.get("packet_id"),
                   trigger=v["_trigger"])
        out += [(o.kind, o.payload["type"]) for o in h.engine.on_report(r, t / 1000)]
    return out


def test_fall_beeps_for_the_window_then_raises_the_alarm(dut: DutFactory) -> None:
    w, t0 = fallen(dut)
    assert events(w, "problem") == []  # nothing on the air while the resident may cancel
    beeps = [t for t, i in w.indications if i == "fall_check"]
    assert beeps and beeps[0] <= t0 + DETECT_MS
    w.advance(WINDOW_MS)
    beeps = [t for t, i in w.indications if i == "fall_check"]
    assert len(beeps) >= WINDOW_MS // 2000 - 1  # a chirp every 2 s through the window
    falls = events(w, "problem", distinct=True)
    assert [v for _, v in falls] == [1]
    assert beeps[0] + WINDOW_MS <= falls[0][0] <= beeps[0] + WINDOW_MS + 1000
    assert "button" not in values(w, distinct=True)[-1][1]
    assert hub_sees(w) == [("alarm", "fall")]


def test_hold_in_the_window_cancels_and_the_hub_reports_it(dut: DutFactory) -> None:
    w, _ = fallen(dut)
    w.advance(5000)
    w.press("button", hold_ms=CANCEL_HOLD_MS + 300)
    w.advance(2000)
    assert "cancelled" in [i for _, i in w.indications]
    n = w.accel.samples_made
    w.advance(WINDOW_MS + 10_000)  # well past the window: no alarm follows
    sent = [v for _, v in values(w, distinct=True) if "problem" in v or "button" in v]
    assert [(v.get("problem"), v.get("button")) for v in sent] == [(1, bthome.BUTTON_CANCEL)]
    assert w.accel.samples_made > n  # watching again
    assert hub_sees(w) == [("status", "fall_cancelled")]


def test_short_press_in_the_window_sends_the_alarm_at_once(dut: DutFactory) -> None:
    w, _ = fallen(dut)
    w.advance(2000)
    t_press = w.now_ms
    w.press("button", hold_ms=300)
    w.advance(1000)
    falls = events(w, "problem", distinct=True)
    assert len(falls) == 1 and t_press <= falls[0][0] <= t_press + 1000
    assert hub_sees(w) == [("alarm", "fall")]


def test_a_hold_too_short_does_not_cancel(dut: DutFactory) -> None:
    w, _ = fallen(dut)
    w.press("button", hold_ms=CANCEL_HOLD_MS // 2)
    w.advance(1000)
    assert [v for _, v in events(w, "problem", distinct=True)] == [1]


def test_power_loss_in_the_window_still_raises_the_alarm(dut: DutFactory) -> None:
    w, _ = fallen(dut)
    w.power_cycle(off_ms=1000)
    w.advance(2000)
    assert [v for _, v in events(w, "problem", distinct=True)] == [1]
    assert hub_sees(w) == [("alarm", "fall")]


def test_invalid_window_in_the_config_falls_back_to_the_default(dut: DutFactory) -> None:
    w = dut(device_config("wearable", fall_cancel_window_s=86400), battery_mv=LIPO_FULL)
    w.advance(1000)
    w.accel.feed(fall())
    w.advance(DETECT_MS + 500 + WINDOW_MS)
    assert [v for _, v in events(w, "problem", distinct=True)] == [1]
