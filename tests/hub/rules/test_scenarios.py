"""False and late alarms, each case from the field, on an ordinary night and on both
daylight-saving nights in Europe/Oslo, with and without a hub restart in the middle.

Local times are written as the nurse would say them and turned into UTC instants (`at`);
delays are checked in real seconds, so "30 minutes after 01:50" is right on the night the
clocks jump as well. A restart writes the engine's state to disk and starts a new engine from
the file, as the hub does.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hub.clock import ClockWatch, ManualClock
from hub.decode.decoder import Report
from hub.rules.settings import BedExitRule, InactivityRule, RulesConfig, WanderingRule
from hub.rules.store import RuleStateStore
from hub.rules.windows import parse_window
from tests.hub.rules.test_rules import DEVICES, OSLO, QUIET, Home, at

# The evening each night starts; DST 2026 in Oslo: 29 March 02:00 -> 03:00, 25 October
# 03:00 -> 02:00.
NIGHTS = {"ordinary": ("2026-11-25", "2026-11-26"), "spring": ("2026-03-28", "2026-03-29"),
          "autumn": ("2026-10-24", "2026-10-25")}
CASES = [(n, r) for n in NIGHTS for r in (False, True)]
IDS = [f"{n}-{'restart' if r else 'no restart'}" for n, r in CASES]


def evening(night: str, hhmm: str) -> float:
    return at(f"{NIGHTS[night][0]} {hhmm}")


def morning(night: str, hhmm: str) -> float:
    """Times after midnight; in the repeated October hour this is the first pass (CEST)."""
    return at(f"{NIGHTS[night][1]} {hhmm}")


class Scenario:
    """A Home that can be restarted from its state file at any moment."""

    def __init__(self, settings: RulesConfig, tmp: Path, restart: bool) -> None:
        self.settings = settings
        self.home = Home(settings)
        self.path = tmp / "rules_state.json"
        self.restart_wanted = restart
        self.sent: list[Any] = []

    def report(self, device: str, t: float, now: float | None = None, **values: int) -> None:
        r = Report(DEVICES[device], t, -60, dict(values), None)
        out = self.home.engine.on_report(r, t if now is None else now)
        self.home.sent += out
        self.sent += out

    def run(self, start: float, end: float, step: float = 60) -> None:
        t = start
        while t <= end:
            self.sent += self.home.tick(t)
            t += step

    def maybe_restart(self) -> None:
        """The hub stops and starts again (a crash, an update): state from the file."""
        if not self.restart_wanted:
            return
        RuleStateStore(self.path).save(self.home.engine)
        self.home = Home(self.settings)
        assert RuleStateStore(self.path).load_into(self.home.engine)

    def raised(self, type_: str) -> list[float]:
        return [datetime.fromisoformat(o.payload["time"]).timestamp() for o in self.sent
                if o.payload["type"] == type_ and o.payload.get("state") == "raised"]


# -- inactivity with no history -------------------------------------------------------------

def night_quiet(hours: float = 3.0, name: str = "night") -> RulesConfig:
    return RulesConfig(inactivity=(InactivityRule(name, parse_window("22:00-07:00"), hours),),
                       silent=QUIET)


@pytest.mark.parametrize("night, restart", CASES, ids=IDS)
def test_a_new_hub_counts_quiet_time_from_its_start_not_from_the_window(
        tmp_path: Path, night: str, restart: bool) -> None:
    s = Scenario(night_quiet(), tmp_path, restart)
    start = morning(night, "01:00")  # installed (or reinstalled) in the night
    s.run(start, start + 3600)
    assert s.raised("inactivity") == []  # the window opened at 22:00: 3 h are not yet known
    s.maybe_restart()
    s.run(start + 3600 + 60, start + 3 * 3600 - 60)
    assert s.raised("inactivity") == []
    s.run(start + 3 * 3600, start + 3 * 3600)
    assert s.raised("inactivity") == [start + 3 * 3600]  # 3 real hours, whatever the clocks do


@pytest.mark.parametrize("night, restart", CASES, ids=IDS)
def test_a_corrupt_state_file_starts_the_count_at_the_restart(tmp_path: Path, night: str,
                                                               restart: bool) -> None:
    s = Scenario(night_quiet(), tmp_path, restart)
    s.report("pir-kitchen", evening(night, "23:00"), motion=1)
    s.run(evening(night, "23:00"), morning(night, "00:30"))
    s.maybe_restart()
    RuleStateStore(s.path).save(s.home.engine)
    s.path.write_text(s.path.read_text()[:40])  # torn by a power cut
    s.home = Home(s.settings)
    assert not RuleStateStore(s.path).load_into(s.home.engine)
    back = morning(night, "00:31")
    s.run(back, back + 3 * 3600 - 60)
    assert s.raised("inactivity") == []  # 23:00 + 3 h has passed, but the hub no longer knows
    s.run(back + 3 * 3600, back + 3 * 3600)
    assert s.raised("inactivity") == [back + 3 * 3600]


def test_a_reload_that_adds_the_rule_counts_from_the_activity_just_seen() -> None:
    h = Home(RulesConfig(silent=QUIET))
    h.report("pir-kitchen", at("2026-11-26 12:00"), motion=1)
    h.tick(at("2026-11-26 15:00"))
    day = RulesConfig(inactivity=(InactivityRule("day", parse_window("08:00-22:00"), 4.0),),
                      silent=QUIET)
    h.engine, out = h.engine.reconfigured(DEVICES, day, at("2026-11-26 15:00"))
    assert out == []
    h.run(at("2026-11-26 15:00"), at("2026-11-26 15:59"))
    assert h.of("inactivity") == []  # not at once: there was motion at 12:00
    h.tick(at("2026-11-26 16:00"))
    assert [o.payload["last_activity"][11:16] for o in h.of("inactivity", "raised")] == ["12:00"]


def test_a_renamed_rule_keeps_counting_from_the_last_activity() -> None:
    h = Home(RulesConfig(inactivity=(InactivityRule("day", parse_window("08:00-22:00"), 4.0),),
                         silent=QUIET))
    h.run(at("2026-11-26 08:00"), at("2026-11-26 09:00"))
    h.report("door-1", at("2026-11-26 14:00"), door=1)
    renamed = RulesConfig(inactivity=(InactivityRule("daytime", parse_window("08:00-22:00"),
                                                     4.0),), silent=QUIET)
    h.engine, _ = h.engine.reconfigured(DEVICES, renamed, at("2026-11-26 15:00"))
    h.run(at("2026-11-26 15:00"), at("2026-11-26 17:59"))
    assert h.of("inactivity") == []
    h.tick(at("2026-11-26 18:00"))
    assert len(h.of("inactivity", "raised")) == 1


def test_time_the_hub_was_down_is_not_quiet_time(tmp_path: Path) -> None:
    s = Scenario(RulesConfig(inactivity=(InactivityRule("day", parse_window("08:00-22:00"),
                                                        4.0),), silent=QUIET), tmp_path, True)
    s.report("pir-kitchen", at("2026-11-26 10:00"), motion=1)
    s.run(at("2026-11-26 10:00"), at("2026-11-26 10:30"))
    s.maybe_restart()  # down from 10:30 to 15:00: nobody heard anything
    s.run(at("2026-11-26 15:00"), at("2026-11-26 18:29"))
    assert s.raised("inactivity") == []
    s.run(at("2026-11-26 18:30"), at("2026-11-26 18:30"))
    assert s.raised("inactivity") == [at("2026-11-26 18:30")]  # 0.5 h before + 3.5 h after
    alarm = [o for o in s.sent if o.payload["type"] == "inactivity"][0]
    assert alarm.payload["unheard_min"] == 270


def test_a_quick_restart_still_fires_on_time(tmp_path: Path) -> None:
    s = Scenario(RulesConfig(inactivity=(InactivityRule("day", parse_window("08:00-22:00"),
                                                        4.0),), silent=QUIET), tmp_path, True)
    s.report("pir-kitchen", at("2026-11-26 10:00"), motion=1)
    s.run(at("2026-11-26 10:00"), at("2026-11-26 13:55"))
    s.maybe_restart()
    s.run(at("2026-11-26 13:57"), at("2026-11-26 14:00"))
    assert s.raised("inactivity") == [at("2026-11-26 14:00")]


# -- bed exit: late bedtimes ----------------------------------------------------------------

def bed_rule(require_in_bed: bool) -> RulesConfig:
    return RulesConfig(bed_exit=(BedExitRule("night in bed", "bed-1", parse_window("20:30-06:00"),
                                             30, require_in_bed),), silent=QUIET)


@pytest.mark.parametrize("night, restart", CASES, ids=IDS)
def test_armed_in_bed_a_late_bedtime_is_no_alarm_and_a_night_exit_is(
        tmp_path: Path, night: str, restart: bool) -> None:
    s = Scenario(bed_rule(require_in_bed=True), tmp_path, restart)
    s.report("bed-1", evening(night, "18:00"), occupancy=0)  # up from her nap
    s.run(evening(night, "18:00"), evening(night, "21:59"))
    s.report("bed-1", evening(night, "22:00"), occupancy=1)  # bedtime
    s.run(evening(night, "22:00"), morning(night, "01:49"))
    assert s.raised("bed_exit") == []  # nothing at 21:00
    left = morning(night, "01:50")
    s.report("bed-1", left, occupancy=0)
    s.run(left, left + 15 * 60)
    s.maybe_restart()
    s.run(left + 16 * 60, left + 29 * 60)
    assert s.raised("bed_exit") == []
    s.run(left + 30 * 60, left + 30 * 60)
    assert s.raised("bed_exit") == [left + 30 * 60]


@pytest.mark.parametrize("night, restart", CASES, ids=IDS)
def test_counted_from_the_window_the_same_evening_alarms_at_2100(
        tmp_path: Path, night: str, restart: bool) -> None:
    s = Scenario(bed_rule(require_in_bed=False), tmp_path, restart)
    s.report("bed-1", evening(night, "18:00"), occupancy=0)
    s.run(evening(night, "18:00"), evening(night, "20:40"))
    s.maybe_restart()
    s.run(evening(night, "20:41"), evening(night, "21:00"))
    assert s.raised("bed_exit") == [evening(night, "21:00")]  # today's behaviour, by choice


@pytest.mark.parametrize("require_in_bed", [False, True])
def test_a_timer_started_in_the_window_runs_past_its_end(require_in_bed: bool) -> None:
    h = Home(bed_rule(require_in_bed))
    h.report("bed-1", at("2026-11-25 22:00"), occupancy=1)
    h.report("bed-1", at("2026-11-26 05:45"), occupancy=0)
    h.run(at("2026-11-26 05:45"), at("2026-11-26 06:15"))
    assert [o.payload["time"][11:16] for o in h.of("bed_exit", "raised")] == ["06:15"]


def test_armed_in_bed_an_exit_before_the_window_is_not_watched() -> None:
    h = Home(bed_rule(require_in_bed=True))
    h.report("bed-1", at("2026-11-25 19:00"), occupancy=1)  # a nap before the window
    h.report("bed-1", at("2026-11-25 19:45"), occupancy=0)
    h.run(at("2026-11-25 19:45"), at("2026-11-26 06:00"))
    assert h.of("bed_exit") == []


# -- event order: report times, late reports ------------------------------------------------

@pytest.mark.parametrize("night, restart", CASES, ids=IDS)
def test_a_delayed_out_of_bed_after_the_in_is_history_not_an_alarm(
        tmp_path: Path, night: str, restart: bool) -> None:
    s = Scenario(bed_rule(require_in_bed=False), tmp_path, restart)
    s.report("bed-1", evening(night, "21:00"), occupancy=1)
    out_t, in_t = morning(night, "01:50"), morning(night, "01:55")
    s.report("bed-1", in_t, occupancy=1)  # heard at once
    s.maybe_restart()
    s.report("bed-1", out_t, now=in_t + 60, occupancy=0)  # its "out" arrives a minute late
    s.run(in_t + 60, in_t + 3600)
    assert s.raised("bed_exit") == []


@pytest.mark.parametrize("night, restart", CASES, ids=IDS)
def test_the_timer_counts_from_the_report_time_not_from_when_it_arrived(
        tmp_path: Path, night: str, restart: bool) -> None:
    s = Scenario(bed_rule(require_in_bed=False), tmp_path, restart)
    s.report("bed-1", evening(night, "21:00"), occupancy=1)
    left = morning(night, "01:50")
    s.report("bed-1", left, now=left + 120, occupancy=0)  # held up for two minutes
    s.maybe_restart()
    s.run(left + 120, left + 30 * 60)
    assert s.raised("bed_exit") == [left + 30 * 60]


def test_a_late_door_close_still_places_the_return_and_a_late_press_still_alarms() -> None:
    h = Home(RulesConfig(wandering=(WanderingRule("door", "door-1", parse_window("22:00-06:00"),
                                                  10, inside=("pir-hall",)),), silent=QUIET))
    h.report("door-1", at("2026-11-26 02:00"), door=1)
    h.report("door-1", at("2026-11-26 02:04"), door=0)
    # The "open" at 02:03 arrives after the close at 02:04: it does not reopen the door.
    h.engine.on_report(Report(DEVICES["door-1"], at("2026-11-26 02:03"), -60, {"door": 1},
                              None), at("2026-11-26 02:04:30"))
    h.report("pir-hall", at("2026-11-26 02:05"), motion=1)
    h.run(at("2026-11-26 02:05"), at("2026-11-26 02:30"))
    assert h.of("wandering") == []
    press = Report(DEVICES["pendant-1"], at("2026-11-26 02:31"), -60, {"button": 1}, None)
    out = h.engine.on_report(press, at("2026-11-26 02:40"))
    assert [o.payload["type"] for o in out] == ["alarm_button"]


# -- wandering: the PIR's hold-off ----------------------------------------------------------

def hall_only(return_min: int = 10) -> RulesConfig:
    """No bed in the rule: only the hall sensor can tell that he is back."""
    return RulesConfig(wandering=(WanderingRule("front door", "door-1",
                                                parse_window("22:00-06:00"), return_min,
                                                inside=("pir-hall",)),), silent=QUIET)


@pytest.mark.parametrize("night, restart", CASES, ids=IDS)
def test_back_inside_and_staying_in_the_hall_is_back(tmp_path: Path, night: str,
                                                     restart: bool) -> None:
    s = Scenario(hall_only(), tmp_path, restart)
    opened = morning(night, "01:55")
    s.report("door-1", opened, door=1)
    s.run(opened, opened + 9 * 60)
    s.report("pir-hall", opened + 9 * 60 + 50, motion=1)  # he steps in (door still open)
    s.report("door-1", opened + 9 * 60 + 55, door=0)  # and shuts it behind him
    s.maybe_restart()
    # The PIR cannot report again for 300 s; its deadline at opened + 10 min waits for it.
    s.run(opened + 10 * 60, opened + 9 * 60 + 50 + 299, step=10)
    assert s.raised("wandering") == []
    s.report("pir-hall", opened + 9 * 60 + 50 + 300, motion=1)  # still moving about the hall
    s.run(opened + 15 * 60, opened + 60 * 60)
    assert s.raised("wandering") == []


@pytest.mark.parametrize("night, restart", CASES, ids=IDS)
def test_motion_seconds_before_the_door_closes_is_not_back_inside(
        tmp_path: Path, night: str, restart: bool) -> None:
    s = Scenario(hall_only(), tmp_path, restart)
    opened = morning(night, "01:55")
    s.report("pir-hall", opened - 5, motion=1)  # he walks past the sensor to the door
    s.report("door-1", opened, door=1)
    s.report("door-1", opened + 20, door=0)  # out, door shut behind him
    s.maybe_restart()
    s.report("pir-hall", opened - 5 + 300, motion=0)  # the hold-off ends: clear
    s.run(opened, opened + 20 * 60)
    assert s.raised("wandering") == [opened + 10 * 60]


def test_a_heartbeat_repeating_motion_during_the_hold_off_is_not_back_inside() -> None:
    h = Home(hall_only(return_min=5))
    opened = at("2026-11-26 02:00")
    h.report("door-1", opened, door=1)
    h.report("pir-hall", opened + 60, motion=1)  # on his way out
    h.report("door-1", opened + 70, door=0)
    h.run(opened, opened + 190, step=10)
    h.report("pir-hall", opened + 200, motion=1)  # a heartbeat: the state it reported at +60
    h.run(opened + 200, opened + 350, step=10)
    assert h.of("wandering") == []  # due at +300, but the sensor is still blind
    h.report("pir-hall", opened + 360, motion=0)  # hold-off over: nobody there
    h.run(opened + 360, opened + 600, step=10)
    assert [o.payload["time"][11:19] for o in h.of("wandering", "raised")] == ["02:06:00"]


def test_a_sensor_that_never_reports_clear_delays_the_alarm_by_at_most_its_hold_off() -> None:
    h = Home(hall_only(return_min=5))
    opened = at("2026-11-26 02:00")
    h.report("door-1", opened, door=1)
    h.report("pir-hall", opened + 240, motion=1)
    h.report("door-1", opened + 250, door=0)
    h.run(opened, opened + 900, step=10)
    # Due at +300; the sensor is blind until +540 and gets a minute to speak: alarm at +600.
    assert [o.payload["time"][11:19] for o in h.of("wandering", "raised")] == ["02:10:00"]


# -- the clock ------------------------------------------------------------------------------

class Watched:
    """An engine driven the way the hub drives it: ClockWatch.check, then tick, each second
    (here each 10 s) of the monotonic clock."""

    def __init__(self, settings: RulesConfig, clock: ManualClock) -> None:
        self.home = Home(settings)
        self.clock = clock
        self.watch = ClockWatch(clock)

    def step(self) -> None:
        now = self.clock.now()
        self.home.sent += self.watch.check(self.home.engine, now)
        self.home.tick(now)

    def run_for(self, seconds: float, step: float = 10) -> None:
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end:
            self.clock.advance(step)
            self.step()


@pytest.mark.parametrize("night", list(NIGHTS))
@pytest.mark.parametrize("step_min", [-40, 40])
def test_a_clock_step_does_not_move_a_running_timer(night: str, step_min: int) -> None:
    left = morning(night, "01:50")
    clock = ManualClock(left - 60)
    w = Watched(bed_rule(require_in_bed=False), clock)
    w.step()
    w.home.report("bed-1", left - 60, occupancy=1)
    w.run_for(60)
    w.home.report("bed-1", clock.now(), occupancy=0)
    w.run_for(10 * 60)
    clock.step(step_min * 60)  # NTP steps the clock 40 minutes back (or forward)
    w.run_for(19 * 60 + 50)
    assert w.home.of("bed_exit") == []
    w.run_for(10)
    raised = w.home.of("bed_exit", "raised")
    # 30 real minutes after she left, stamped with the corrected clock.
    assert [datetime.fromisoformat(o.payload["time"]).timestamp() for o in raised] == [
        left + 30 * 60 + step_min * 60]
    assert raised[0].payload["minutes_out"] == 30
    assert [o.payload["step_s"] for o in w.home.of("clock_stepped")] == [step_min * 60]


def test_an_unsynchronised_clock_is_a_technical_alarm_after_ten_minutes_then_cleared() -> None:
    clock = ManualClock(at("2026-11-26 06:00"), synced=False)
    w = Watched(RulesConfig(silent=QUIET), clock)
    w.step()
    w.run_for(9 * 60)
    assert w.home.of("clock_unsynchronised") == []  # a normal boot gets network time sooner
    w.run_for(90)
    raised = w.home.of("clock_unsynchronised", "raised")
    assert [(o.kind, o.priority, o.device) for o in raised] == [("technical_alarm", 3, None)]
    w.run_for(3600)
    assert len(w.home.of("clock_unsynchronised", "raised")) == 1
    clock.synced = True
    w.run_for(60)
    assert [o.payload["reason"] for o in w.home.of("clock_unsynchronised", "cleared")] == [
        "synchronised"]


def test_a_boot_with_the_clock_behind_the_saved_state_is_an_alarm_at_once_and_the_step_to_network_time_keeps_what_was_saved(  # noqa: E501
        tmp_path: Path) -> None:
    path = tmp_path / "rules_state.json"
    h = Home(bed_rule(require_in_bed=False))
    h.report("bed-1", at("2026-11-25 22:00"), occupancy=1)
    h.report("bed-1", at("2026-11-26 03:00"), occupancy=0)  # out at 03:00: due 03:30
    h.run(at("2026-11-26 03:00"), at("2026-11-26 03:05"))
    RuleStateStore(path).save(h.engine)
    # Down from 03:05; it boots at 03:45 with the clock at 02:30 (saved an hour before).
    clock = ManualClock(at("2026-11-26 02:30"), synced=False)
    w = Watched(bed_rule(require_in_bed=False), clock)
    RuleStateStore(path).load_into(w.home.engine)
    w.step()
    assert [o.payload["reason"] for o in w.home.of("clock_unsynchronised", "raised")] == [
        "behind_saved_state"]
    w.run_for(120)
    assert w.home.of("bed_exit") == []  # the hub cannot know yet how long she has been out
    clock.step(at("2026-11-26 03:47") - clock.now())  # network time arrives
    clock.synced = True
    w.run_for(30)
    raised = w.home.of("bed_exit", "raised")
    assert [o.payload["time"][11:16] for o in raised] == ["03:47"]  # out 47 min: at once
    assert raised[0].payload["out_of_bed_since"][11:16] == "03:00"
    assert len(w.home.of("clock_unsynchronised", "cleared")) == 1


def test_the_oslo_helper_turns_local_times_into_utc() -> None:
    # The October night's 02:30 happens twice; `at` takes the first (CEST).
    assert datetime.fromtimestamp(morning("autumn", "02:30"), OSLO).utcoffset().total_seconds() \
        == 7200  # type: ignore[union-attr]


def test_a_window_edge_in_the_repeated_october_hour_is_its_first_pass() -> None:
    ends = next(parse_window("22:00-02:30").occurrences(at("2026-10-24 12:00"), OSLO))
    starts = next(parse_window("02:30-05:00").occurrences(at("2026-10-25 00:00"), OSLO))
    first_0230 = datetime(2026, 10, 25, 2, 30, fold=0, tzinfo=OSLO).timestamp()
    assert ends[1] == first_0230 and ends[1] - ends[0] == 4.5 * 3600
    assert starts[0] == first_0230 and starts[1] - starts[0] == 3.5 * 3600


def test_the_example_config_chooses_the_bed_exit_behaviour_deliberately() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs/example-config/rules.toml").read_text()
    section = text.split("[[bed_exit]]")[1].split("\n[")[0]
    assert "\nrequire_in_bed = " in section


def test_a_forward_clock_step_does_not_make_every_device_look_silent() -> None:
    clock = ManualClock(at("2026-11-26 10:00"))
    w = Watched(RulesConfig(), clock)
    w.step()
    for dev in DEVICES:
        w.home.report(dev, clock.now())
    w.run_for(5 * 60)
    clock.step(3600)  # the clock was an hour slow
    w.run_for(60)
    assert w.home.of("device_silent") == []
    w.run_for(25 * 60)  # 30 real minutes after the last heartbeat (default limit)
    assert len(w.home.of("device_silent", "raised")) == len(DEVICES)


def test_with_the_clock_behind_the_saved_state_a_fresh_report_is_still_news(
        tmp_path: Path) -> None:
    path = tmp_path / "rules_state.json"
    h = Home(bed_rule(require_in_bed=False))
    h.report("bed-1", at("2026-11-25 22:00"), occupancy=1)
    h.report("bed-1", at("2026-11-26 03:00"), occupancy=0)
    RuleStateStore(path).save(h.engine)
    clock = ManualClock(at("2026-11-26 02:30"), synced=False)
    w = Watched(bed_rule(require_in_bed=False), clock)
    RuleStateStore(path).load_into(w.home.engine)
    w.step()
    w.run_for(60)
    # Back in bed, reported with the (wrong) clock's time, which is before the saved "out".
    w.home.report("bed-1", clock.now(), occupancy=1)
    clock.step(at("2026-11-26 03:45") - clock.now())
    clock.synced = True
    w.run_for(3600)
    assert w.home.of("bed_exit") == []
