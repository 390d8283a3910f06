"""Rule engine scenarios from real cases, at explicit instants in Europe/Oslo.

Helpers here (Home, at, DEVICES) are shared with test_rules_props.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.config.settings import Device
from hub.decode.decoder import Report
from hub.rules.engine import RuleEngine
from hub.rules.outgoing import Outgoing
from hub.rules.settings import (
    BatteryRule,
    BedExitRule,
    ChargingRule,
    InactivityRule,
    RulesConfig,
    SilentRule,
    WanderingRule,
)
from hub.rules.store import RuleStateStore
from hub.rules.windows import parse_window
from protocols import bthome

OSLO = ZoneInfo("Europe/Oslo")

DEVICES = {
    "pendant-1": Device("pendant-1", "pendant", "C0:FF:EE:00:00:01", "living room"),
    "watch-1": Device("watch-1", "wearable", "C0:FF:EE:00:00:02", ""),
    "bed-1": Device("bed-1", "bed", "C0:FF:EE:00:00:03", "bedroom"),
    "door-1": Device("door-1", "door", "C0:FF:EE:00:00:04", "hall"),
    "pir-hall": Device("pir-hall", "pir", "C0:FF:EE:00:00:05", "hall"),
    "pir-kitchen": Device("pir-kitchen", "pir", "C0:FF:EE:00:00:06", "kitchen"),
}


def at(text: str, tz: ZoneInfo = OSLO) -> float:
    """"2026-11-26 02:10" in local time -> epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def counter_ids() -> Any:
    n = 0

    def make() -> str:
        nonlocal n
        n += 1
        return f"a{n:04d}"

    return make


@dataclass
class Home:
    """An engine plus everything it emitted, driven at explicit instants."""

    settings: RulesConfig
    tz: ZoneInfo = OSLO
    devices: dict[str, Device] = field(default_factory=lambda: dict(DEVICES))
    engine: RuleEngine = field(init=False)
    sent: list[Outgoing] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = RuleEngine("home-1", self.tz, counter_ids(), devices=self.devices,
                                 settings=self.settings)

    def report(self, device: str, t: float, **values: int) -> list[Outgoing]:
        r = Report(self.devices[device], t, -60, dict(values), None)
        out = self.engine.on_report(r, t)
        self.sent += out
        return out

    def tick(self, t: float) -> list[Outgoing]:
        out = self.engine.tick(t)
        self.sent += out
        return out

    def run(self, start: float, end: float, step: float = 60) -> list[Outgoing]:
        """Tick every `step` seconds from start to end inclusive."""
        out: list[Outgoing] = []
        t = start
        while t <= end:
            out += self.tick(t)
            t += step
        return out

    def of(self, type_: str, state: str | None = None) -> list[Outgoing]:
        return [o for o in self.sent if o.payload["type"] == type_
                and (state is None or o.payload.get("state") == state)]


# The silent-device rule would speak up in tests that only tick; tests of other rules mute it.
QUIET = SilentRule(missed_heartbeats=10_000)


def besto(return_min: int = 30) -> RulesConfig:
    return RulesConfig(bed_exit=(BedExitRule("Besto", "bed-1", parse_window("20:30-06:00"),
                                             return_min),), silent=QUIET)


def local(o: Outgoing) -> str:
    return datetime.fromisoformat(o.payload["time"]).strftime("%H:%M")


# -- bed exit ------------------------------------------------------------------------------

def test_besto_back_within_15_minutes_no_alarm_then_out_at_0300_alarm_at_0330() -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-11-25 20:40"), occupancy=1)
    h.report("bed-1", at("2026-11-26 02:10"), occupancy=0)
    h.run(at("2026-11-26 02:10"), at("2026-11-26 02:24"))
    h.report("bed-1", at("2026-11-26 02:25"), occupancy=1)
    h.run(at("2026-11-26 02:25"), at("2026-11-26 02:59"))
    assert h.of("bed_exit") == []
    h.report("bed-1", at("2026-11-26 03:00"), occupancy=0)
    assert h.run(at("2026-11-26 03:00"), at("2026-11-26 03:29:59"), step=1) == [] or \
        h.of("bed_exit") == []
    raised = h.tick(at("2026-11-26 03:30"))
    assert [(o.kind, o.payload["type"], o.payload["state"], local(o)) for o in raised] == [
        ("alarm", "bed_exit", "raised", "03:30")]
    assert raised[0].priority == 2
    assert raised[0].payload["room"] == "bedroom"
    # Still out: no second alarm for the same cause.
    h.run(at("2026-11-26 03:31"), at("2026-11-26 05:00"))
    assert len(h.of("bed_exit", "raised")) == 1
    cleared = h.report("bed-1", at("2026-11-26 05:10"), occupancy=1)
    assert [(o.kind, o.payload["state"], o.payload["reason"]) for o in cleared] == [
        ("alarm_cleared", "cleared", "back_in_bed")]
    assert cleared[0].payload["alarm_id"] == raised[0].payload["alarm_id"]
    assert cleared[0].msg_id != raised[0].msg_id


def test_bed_exit_outside_window_is_no_alarm() -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-11-26 13:00"), occupancy=1)
    h.report("bed-1", at("2026-11-26 14:00"), occupancy=0)  # afternoon nap over
    h.run(at("2026-11-26 14:00"), at("2026-11-26 20:29"))
    h.report("bed-1", at("2026-11-26 20:20"), occupancy=1)
    h.run(at("2026-11-26 20:20"), at("2026-11-27 06:00"))
    assert h.of("bed_exit") == []


def test_bed_exit_still_up_when_window_opens_counts_from_window_start() -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-11-26 07:00"), occupancy=0)
    assert h.run(at("2026-11-26 07:00"), at("2026-11-26 20:59")) == [] or not h.of("bed_exit")
    h.tick(at("2026-11-26 21:00"))
    assert [local(o) for o in h.of("bed_exit", "raised")] == ["21:00"]


def test_bed_exit_window_days_restrict_the_night_it_starts_on() -> None:
    cfg = RulesConfig(bed_exit=(BedExitRule("weekday nights", "bed-1",
                                            parse_window("22:00-06:00", "mon-thu"), 20),))
    h = Home(cfg)
    # 2026-11-27 is a Friday: Friday night is not covered, even after midnight (Saturday).
    h.report("bed-1", at("2026-11-28 01:00"), occupancy=0)
    h.run(at("2026-11-28 01:00"), at("2026-11-28 03:00"))
    assert h.of("bed_exit") == []
    h.report("bed-1", at("2026-11-28 03:00"), occupancy=1)
    # Thursday night, after midnight (Friday 01:00) is covered.
    h2 = Home(cfg)
    h2.report("bed-1", at("2026-11-27 01:00"), occupancy=0)
    h2.run(at("2026-11-27 01:00"), at("2026-11-27 01:30"))
    assert [local(o) for o in h2.of("bed_exit", "raised")] == ["01:20"]


# DST in Oslo 2026: starts Sunday 29 March 02:00 -> 03:00, ends Sunday 25 October 03:00 -> 02:00.

def test_bed_exit_on_the_night_dst_starts_fires_after_real_minutes() -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-03-28 21:00"), occupancy=1)
    out_at = at("2026-03-29 01:50")  # CET
    h.report("bed-1", out_at, occupancy=0)
    h.run(out_at, out_at + 30 * 60 - 60)
    assert h.of("bed_exit") == []
    h.tick(out_at + 30 * 60)
    raised = h.of("bed_exit", "raised")
    # 30 real minutes after 01:50 CET is 03:20 CEST on the wall clock.
    assert [local(o) for o in raised] == ["03:20"]
    assert raised[0].payload["time"].endswith("+02:00")


def test_bed_exit_on_the_night_dst_ends_fires_after_real_minutes() -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-10-24 21:00"), occupancy=1)
    # 02:40 the first time (CEST, fold=0): 30 minutes later it is 02:10 the second time (CET).
    out_at = datetime(2026, 10, 25, 2, 40, tzinfo=OSLO).timestamp()
    h.report("bed-1", out_at, occupancy=0)
    h.run(out_at, out_at + 29 * 60)
    assert h.of("bed_exit") == []
    h.tick(out_at + 30 * 60)
    raised = h.of("bed_exit", "raised")
    assert [local(o) for o in raised] == ["02:10"]
    assert raised[0].payload["time"].endswith("+01:00")


def test_window_lengths_on_dst_nights() -> None:
    w = parse_window("20:30-06:00")
    spring = next(w.occurrences(at("2026-03-28 12:00"), OSLO))
    autumn = next(w.occurrences(at("2026-10-24 12:00"), OSLO))
    normal = next(w.occurrences(at("2026-11-24 12:00"), OSLO))
    assert normal[1] - normal[0] == 9.5 * 3600
    assert spring[1] - spring[0] == 8.5 * 3600
    assert autumn[1] - autumn[0] == 10.5 * 3600
    # A window starting inside the skipped hour starts when the clocks jump (03:00 CEST).
    gap = next(parse_window("02:30-05:00").occurrences(at("2026-03-29 00:00"), OSLO))
    assert datetime.fromtimestamp(gap[0], OSLO).strftime("%H:%M %z") == "03:00 +0200"


def test_restart_mid_timer_fires_at_the_right_time(tmp_path: Path) -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-11-25 21:00"), occupancy=1)
    h.report("bed-1", at("2026-11-26 03:00"), occupancy=0)
    h.run(at("2026-11-26 03:00"), at("2026-11-26 03:10"))
    store = RuleStateStore(tmp_path / "rules_state.json")
    store.save(h.engine)
    # The hub restarts at 03:12: a new engine from the file.
    h2 = Home(besto())
    assert RuleStateStore(tmp_path / "rules_state.json").load_into(h2.engine)
    h2.run(at("2026-11-26 03:12"), at("2026-11-26 03:29"))
    assert h2.of("bed_exit") == []
    h2.tick(at("2026-11-26 03:30"))
    assert [local(o) for o in h2.of("bed_exit", "raised")] == ["03:30"]
    # And a restart while the alarm is active keeps it active (no re-raise) and clears it.
    store.save(h2.engine)
    h3 = Home(besto())
    RuleStateStore(tmp_path / "rules_state.json").load_into(h3.engine)
    h3.run(at("2026-11-26 03:31"), at("2026-11-26 04:00"))
    assert h3.of("bed_exit", "raised") == []
    cleared = h3.report("bed-1", at("2026-11-26 04:05"), occupancy=1)
    assert [o.payload["alarm_id"] for o in cleared if o.payload["type"] == "bed_exit"] == [
        h2.of("bed_exit", "raised")[0].payload["alarm_id"]]


def test_restart_after_the_deadline_fires_at_once(tmp_path: Path) -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-11-26 03:00"), occupancy=0)
    RuleStateStore(tmp_path / "s.json").save(h.engine)
    h2 = Home(besto())
    RuleStateStore(tmp_path / "s.json").load_into(h2.engine)
    h2.tick(at("2026-11-26 03:45"))  # the hub was down from 03:05 to 03:45
    assert [local(o) for o in h2.of("bed_exit", "raised")] == ["03:45"]


def test_corrupt_state_file_is_set_aside_and_the_engine_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "rules_state.json"
    path.write_text('{"version": 1, "rules": ')
    h = Home(besto())
    assert not RuleStateStore(path).load_into(h.engine)
    assert (tmp_path / "rules_state.corrupt").exists()
    h.report("bed-1", at("2026-11-26 03:00"), occupancy=0)
    h.tick(at("2026-11-26 03:30"))
    assert len(h.of("bed_exit", "raised")) == 1


# -- wandering -----------------------------------------------------------------------------

def night_wandering(return_min: int = 10, **kw: Any) -> RulesConfig:
    return RulesConfig(wandering=(WanderingRule(
        "front door at night", "door-1", parse_window("22:00-06:00"), return_min,
        inside=("pir-hall",), bed=kw.pop("bed", "bed-1"), **kw),), silent=QUIET)


def test_night_wandering_door_opens_and_no_return_alarm_after_n_minutes() -> None:
    h = Home(night_wandering())
    h.report("door-1", at("2026-11-26 02:00"), door=1)
    h.report("door-1", at("2026-11-26 02:01"), door=0)  # door shut behind her: she is outside
    h.run(at("2026-11-26 02:00"), at("2026-11-26 02:09"))
    assert h.of("wandering") == []
    h.tick(at("2026-11-26 02:10"))
    raised = h.of("wandering", "raised")
    assert [local(o) for o in raised] == ["02:10"]
    assert raised[0].kind == "alarm" and raised[0].payload["room"] == "hall"
    # She comes back: the door opens and closes, then the hall sensor sees her.
    h.report("door-1", at("2026-11-26 02:30"), door=1)
    h.report("door-1", at("2026-11-26 02:31"), door=0)
    cleared = h.report("pir-hall", at("2026-11-26 02:31:30"), motion=1)
    assert [(o.kind, o.payload["reason"]) for o in cleared] == [("alarm_cleared", "returned")]


def test_wandering_door_opened_and_resident_comes_back_in_no_alarm() -> None:
    h = Home(night_wandering())
    h.report("door-1", at("2026-11-26 23:00"), door=1)
    h.report("pir-hall", at("2026-11-26 23:01"), motion=1)  # door still open: not proof
    h.report("door-1", at("2026-11-26 23:03"), door=0)
    # The PIR reports nothing new during its 300 s hold-off; at its end, motion again.
    h.report("pir-hall", at("2026-11-26 23:06:05"), motion=1)
    h.run(at("2026-11-26 23:00"), at("2026-11-27 00:00"))
    assert h.of("wandering") == []


def test_wandering_motion_while_door_open_is_not_a_return() -> None:
    h = Home(night_wandering())
    h.report("door-1", at("2026-11-26 23:00"), door=1)
    h.report("pir-hall", at("2026-11-26 23:01"), motion=1)
    h.run(at("2026-11-26 23:00"), at("2026-11-26 23:10"))
    assert [local(o) for o in h.of("wandering", "raised")] == ["23:10"]


def test_wandering_immediate_when_n_is_zero_and_day_openings_ignored() -> None:
    h = Home(night_wandering(return_min=0))
    h.report("door-1", at("2026-11-26 12:00"), door=1)
    h.report("door-1", at("2026-11-26 12:01"), door=0)
    assert h.of("wandering") == []
    out = h.report("door-1", at("2026-11-26 23:30"), door=1)
    assert [(o.kind, local(o)) for o in out] == [("alarm", "23:30")]


def test_wandering_back_to_bed_counts_as_return() -> None:
    h = Home(night_wandering())
    h.report("door-1", at("2026-11-26 23:00"), door=1)
    h.report("bed-1", at("2026-11-26 23:05"), occupancy=1)
    h.run(at("2026-11-26 23:00"), at("2026-11-26 23:30"))
    assert h.of("wandering") == []


def test_wandering_only_after_bed() -> None:
    h = Home(night_wandering(require_in_bed=True))
    h.report("door-1", at("2026-11-26 22:30"), door=1)  # not yet been to bed tonight
    h.report("door-1", at("2026-11-26 22:31"), door=0)
    h.run(at("2026-11-26 22:30"), at("2026-11-26 23:00"))
    assert h.of("wandering") == []
    h.report("bed-1", at("2026-11-26 23:10"), occupancy=1)
    h.report("bed-1", at("2026-11-27 03:00"), occupancy=0)
    h.report("door-1", at("2026-11-27 03:02"), door=1)
    h.report("door-1", at("2026-11-27 03:03"), door=0)
    h.run(at("2026-11-27 03:02"), at("2026-11-27 03:12"))
    assert [local(o) for o in h.of("wandering", "raised")] == ["03:12"]


def test_staff_mute_ignores_the_door_for_the_visit_then_rearms() -> None:
    h = Home(night_wandering())
    h.report("door-1", at("2026-11-26 22:30"), door=1)  # the night nurse comes in
    muted = h.engine.mute_wandering(at("2026-11-26 22:31"), 30, by="nurse")
    assert [o.payload["type"] for o in muted] == ["wandering_muted"]
    h.report("door-1", at("2026-11-26 22:32"), door=0)
    h.report("door-1", at("2026-11-26 22:55"), door=1)  # and leaves
    h.report("door-1", at("2026-11-26 22:56"), door=0)
    h.run(at("2026-11-26 22:30"), at("2026-11-26 23:30"))
    assert h.of("wandering") == []
    h.report("door-1", at("2026-11-27 01:00"), door=1)  # the mute is over
    h.run(at("2026-11-27 01:00"), at("2026-11-27 01:10"))
    assert len(h.of("wandering", "raised")) == 1


# -- inactivity ----------------------------------------------------------------------------

def afternoon() -> RulesConfig:
    return RulesConfig(inactivity=(InactivityRule("day", parse_window("08:00-22:00"), 4.0),),
                       silent=QUIET)


def test_afternoon_with_no_motion_for_4_hours_alarm_then_cleared_by_motion() -> None:
    h = Home(afternoon())
    h.report("pir-kitchen", at("2026-11-26 12:15"), motion=1)
    h.run(at("2026-11-26 12:15"), at("2026-11-26 16:14"))
    assert h.of("inactivity") == []
    h.tick(at("2026-11-26 16:15"))
    assert [local(o) for o in h.of("inactivity", "raised")] == ["16:15"]
    h.run(at("2026-11-26 16:16"), at("2026-11-26 18:00"))
    assert len(h.of("inactivity", "raised")) == 1
    out = h.report("pir-hall", at("2026-11-26 18:05"), motion=1)
    assert [(o.kind, o.payload["reason"]) for o in out] == [("alarm_cleared", "activity")]


def test_inactivity_counts_only_time_inside_the_window() -> None:
    h = Home(afternoon())
    h.report("pir-kitchen", at("2026-11-26 21:00"), motion=1)  # last motion, then sleep
    h.run(at("2026-11-26 21:00"), at("2026-11-27 11:59"), step=300)
    assert h.of("inactivity") == []  # 21:00-22:00 and 08:00-11:59 is under 4 h in window
    h.tick(at("2026-11-27 12:00"))
    assert [local(o) for o in h.of("inactivity", "raised")] == ["12:00"]


def test_inactivity_door_state_repeated_in_heartbeats_is_not_activity() -> None:
    h = Home(afternoon())
    h.report("door-1", at("2026-11-26 08:30"), door=0)
    for hh in range(9, 13):
        h.report("door-1", at(f"2026-11-26 {hh:02d}:30"), door=0)  # heartbeat, same state
    h.tick(at("2026-11-26 12:30"))
    assert len(h.of("inactivity", "raised")) == 1


# -- alarm button, fall --------------------------------------------------------------------

def test_button_press_is_an_immediate_critical_alarm_and_cancel_clears_it() -> None:
    h = Home(RulesConfig())
    out = h.report("pendant-1", at("2026-11-26 10:00"), button=bthome.BUTTON_PRESS)
    assert [(o.kind, o.priority, o.payload["type"], o.payload["trigger"]) for o in out] == [
        ("alarm", 1, "alarm_button", "press")]
    cancel = h.report("pendant-1", at("2026-11-26 10:00:20"), button=bthome.BUTTON_CANCEL)
    assert [(o.kind, o.payload["reason"], o.payload["alarm_id"]) for o in cancel] == [
        ("alarm_cleared", "cancelled_by_resident", out[0].payload["alarm_id"])]


def test_cancel_after_the_window_does_nothing_and_each_press_is_an_alarm() -> None:
    h = Home(RulesConfig())
    h.report("pendant-1", at("2026-11-26 10:00"), button=bthome.BUTTON_PRESS)
    h.run(at("2026-11-26 10:00"), at("2026-11-26 10:02"), step=10)
    assert h.report("pendant-1", at("2026-11-26 10:02"), button=bthome.BUTTON_CANCEL) == []
    h.report("pendant-1", at("2026-11-26 10:03"), button=bthome.BUTTON_LONG_PRESS)
    h.report("pendant-1", at("2026-11-26 10:04"), button=bthome.BUTTON_DOUBLE_PRESS)
    h.report("pendant-1", at("2026-11-26 10:05"), button=bthome.BUTTON_TRIPLE_PRESS)
    assert [o.payload["trigger"] for o in h.of("alarm_button", "raised")] == [
        "press", "long_press", "double_press", "triple_press"]


def test_fall_from_wearable_is_critical_alarm() -> None:
    h = Home(RulesConfig())
    out = h.report("watch-1", at("2026-11-26 10:00"), problem=1)
    assert [(o.kind, o.priority, o.payload["type"]) for o in out] == [("alarm", 1, "fall")]
    # Heartbeats carry the current state: still 1 is the same fall, not a new one.
    assert h.report("watch-1", at("2026-11-26 10:10"), problem=1, battery=80) == []
    assert h.report("watch-1", at("2026-11-26 10:11"), problem=0) == []
    assert len(h.report("watch-1", at("2026-11-26 11:00"), problem=1)) == 1


# -- battery -------------------------------------------------------------------------------

def test_low_battery_needs_confirmation_then_repeats_daily_and_clears() -> None:
    h = Home(RulesConfig(battery=BatteryRule(confirm_reports=3, repeat_h=24)))
    t0 = at("2026-11-01 06:00")
    h.report("door-1", t0, battery=18)  # one cold morning
    h.report("door-1", t0 + 3600, battery=22)
    assert h.of("battery_low") == []
    for i, pct in enumerate([19, 19, 18]):
        h.report("door-1", t0 + 86400 * (i + 1), battery=pct)
    assert len(h.of("battery_low", "raised")) == 1
    assert h.of("battery_low", "raised")[0].kind == "technical_alarm"
    h.run(t0 + 3 * 86400, t0 + 5 * 86400, step=3600)
    assert len(h.of("battery_low", "reminder")) == 2  # once a day, not every advert
    for i in range(3):
        h.report("door-1", t0 + 6 * 86400 + i * 60, battery=100)  # battery replaced
    assert [o.payload["reason"] for o in h.of("battery_low", "cleared")] == ["battery_ok"]


def test_battery_days_left_from_the_trend_and_critical_alarm() -> None:
    h = Home(RulesConfig())
    t0 = at("2026-11-01 06:00")
    pct = 40.0
    for day in range(40):
        for hour in (0, 12):
            h.report("pendant-1", t0 + day * 86400 + hour * 3600, battery=int(pct))
            pct -= 0.5  # one percent a day
        if h.of("battery_low", "raised"):
            break
    low = h.of("battery_low", "raised")[0]
    assert low.payload["battery"] <= 25
    assert 10 <= low.payload["days_left"] <= 18  # ~15 days to the 10 % critical level
    for i in range(20):
        h.report("pendant-1", t0 + (20 + i) * 86400, battery=9)
    crit = h.of("battery_critical", "raised")
    assert len(crit) == 1 and crit[0].priority == 3


# -- charging ------------------------------------------------------------------------------

def test_charging_complete_reminder_and_left_on_charger() -> None:
    h = Home(RulesConfig(charging=ChargingRule(remind_at_min=19 * 60, remind_below_percent=30,
                                               remind_after_days=3, complete_percent=95,
                                               off_charger_by_min=9 * 60), silent=QUIET))
    h.report("watch-1", at("2026-11-26 08:00"), battery=50, battery_charging=0)
    h.tick(at("2026-11-26 19:00"))
    assert h.of("charging_reminder") == []  # 50 % and seen charging less than 3 days ago
    h.report("watch-1", at("2026-11-26 21:00"), battery=25)
    h.tick(at("2026-11-27 19:00"))
    assert [o.payload["reason"] for o in h.of("charging_reminder")] == ["battery_low"]
    h.tick(at("2026-11-27 19:30"))
    assert len(h.of("charging_reminder")) == 1  # once a day
    h.report("watch-1", at("2026-11-27 22:00"), battery=26, battery_charging=1)
    h.report("watch-1", at("2026-11-28 01:00"), battery=96, battery_charging=1)
    assert [o.kind for o in h.of("charging_complete")] == ["event"]
    h.run(at("2026-11-28 08:00"), at("2026-11-28 08:59"))
    assert h.of("not_worn") == []
    h.tick(at("2026-11-28 09:00"))
    assert [o.priority for o in h.of("not_worn", "raised")] == [2]
    out = h.report("watch-1", at("2026-11-28 09:20"), battery=100, battery_charging=0)
    assert [o.payload["reason"] for o in out] == ["taken_off_charger"]


# -- silent devices ------------------------------------------------------------------------

def test_silent_pendant_reported_within_30_minutes_and_cleared_when_back() -> None:
    h = Home(RulesConfig(), devices={"pendant-1": DEVICES["pendant-1"]})
    h.report("pendant-1", at("2026-11-26 10:00"))  # heartbeat, every 10 minutes by default
    h.run(at("2026-11-26 10:00"), at("2026-11-26 10:29"))
    assert h.of("device_silent") == []
    h.tick(at("2026-11-26 10:30"))
    silent = h.of("device_silent", "raised")
    assert [(o.kind, o.priority, local(o)) for o in silent] == [("technical_alarm", 3, "10:30")]
    h.run(at("2026-11-26 10:31"), at("2026-11-26 12:00"))
    assert len(h.of("device_silent", "raised")) == 1
    back = h.report("pendant-1", at("2026-11-26 12:05"))
    assert [(o.kind, o.payload["state"]) for o in back] == [("technical_alarm", "cleared")]


def test_snapshot_is_json_and_round_trips() -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-11-26 03:00"), occupancy=0)
    h.report("pendant-1", at("2026-11-26 03:00"), button=1)
    snap = json.loads(json.dumps(h.engine.snapshot()))
    h2 = Home(besto())
    h2.engine.restore(snap)
    assert h2.engine.snapshot() == snap


def test_reload_keeps_running_timers_and_clears_alarms_of_removed_rules() -> None:
    h = Home(besto())
    h.report("bed-1", at("2026-11-26 03:00"), occupancy=0)
    h.tick(at("2026-11-26 03:30"))
    assert len(h.of("bed_exit", "raised")) == 1
    new, out = h.engine.reconfigured(DEVICES, RulesConfig(), at("2026-11-26 03:40"))
    assert [(o.kind, o.payload["reason"]) for o in out] == [("alarm_cleared", "rule_removed")]
    # Changing a parameter keeps the running timer of the same rule, with the new delay.
    h2 = Home(besto())
    h2.report("bed-1", at("2026-11-26 03:00"), occupancy=0)
    e2, out2 = h2.engine.reconfigured(DEVICES, besto(return_min=45), at("2026-11-26 03:10"))
    assert out2 == []
    assert e2.tick(at("2026-11-26 03:30")) == []
    assert [o.payload["type"] for o in e2.tick(at("2026-11-26 03:45"))] == ["bed_exit"]


@pytest.mark.parametrize("text", ["25:00-06:00", "20:30", "20:30-20:30", "8:00-9:00"])
def test_bad_windows_are_refused(text: str) -> None:
    from hub.rules.windows import WindowError

    with pytest.raises(WindowError):
        parse_window(text)


def test_no_charging_reminder_for_a_device_that_never_reports_charging() -> None:
    h = Home(RulesConfig(silent=QUIET))
    h.report("pendant-1", at("2026-11-26 18:59"), battery=5)  # primary cell, nearly empty
    h.run(at("2026-11-26 19:00"), at("2026-11-26 21:00"))
    assert h.of("charging_reminder") == []


def test_charging_reminder_is_due_at_its_time_not_when_first_heard() -> None:
    h = Home(RulesConfig(silent=QUIET))
    h.report("watch-1", at("2026-11-26 19:05"), battery=5, battery_charging=0)
    h.run(at("2026-11-26 19:05"), at("2026-11-26 21:00"))
    assert h.of("charging_reminder") == []
    h.run(at("2026-11-27 18:55"), at("2026-11-27 19:05"))
    assert [local(o) for o in h.of("charging_reminder")] == ["19:00"]


def test_wandering_on_the_night_dst_ends_counts_real_minutes_in_the_repeated_hour() -> None:
    h = Home(night_wandering())
    # 02:55 the second time (CET, fold=1): 10 real minutes later it is 03:05 CET.
    opened = datetime(2026, 10, 25, 2, 55, fold=1, tzinfo=OSLO).timestamp()
    h.report("door-1", opened, door=1)
    h.run(opened, opened + 9 * 60)
    assert h.of("wandering") == []
    h.tick(opened + 10 * 60)
    raised = h.of("wandering", "raised")
    assert [local(o) for o in raised] == ["03:05"] and raised[0].payload["time"].endswith("+01:00")


def test_inactivity_window_on_the_day_dst_starts() -> None:
    cfg = RulesConfig(inactivity=(InactivityRule("night", parse_window("00:00-06:00"), 3.0),),
                      silent=QUIET)
    h = Home(cfg)
    h.report("pir-kitchen", at("2026-03-29 00:30"), motion=1)
    # 00:30 CET + 3 real hours = 04:30 CEST (the clocks skip 02:00-03:00).
    h.run(at("2026-03-29 00:30"), at("2026-03-29 04:29"))
    assert h.of("inactivity") == []
    h.tick(at("2026-03-29 04:30"))
    assert [local(o) for o in h.of("inactivity", "raised")] == ["04:30"]
