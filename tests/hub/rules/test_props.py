"""Property tests: for random event sequences and times, bed exit, wandering and inactivity
raise an alarm if and only if the stated condition holds, exactly once, at the right time,
and clear right.

The oracles below restate the rules from the issue in a different form (whole-history
interval arithmetic on instants, with local time taken from `datetime` in the site's zone),
independent of the engine's incremental state. The engine is ticked on a 5-minute grid;
events fall between ticks, so "alarm at the first tick at or after the deadline" has a single
right answer. The hub may restart between any two steps. The same machine runs in UTC and in
Europe/Oslo, starting on an ordinary day or on the day before either daylight-saving night,
so in Oslo the 22:00-06:00 window is also 7 hours (March) and 9 hours (October) long.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from hub.decode.decoder import Report
from hub.rules.engine import RuleEngine
from hub.rules.settings import BedExitRule, InactivityRule, RulesConfig, SilentRule, WanderingRule
from hub.rules.windows import parse_window
from tests.hub.rules.test_rules import DEVICES, counter_ids

UTC = ZoneInfo("UTC")
OSLO = ZoneInfo("Europe/Oslo")
# UTC midnights (multiples of the grid): an ordinary day and the days before the DST nights.
STARTS = {"ordinary": 1_795_651_200.0,  # 2026-11-26
          "spring": 1_774_656_000.0,  # 2026-03-28
          "autumn": 1_792_800_000.0}  # 2026-10-24
GRID = 300.0
W_START, W_END = 22, 6  # hours; the window crosses midnight
QUIET = SilentRule(missed_heartbeats=10_000)


class Oracle:
    """The window 22:00-06:00 in zone `tz`, computed from local dates and times."""

    def __init__(self, tz: ZoneInfo, t0: float) -> None:
        self.tz = tz
        self.t0 = t0

    def _at(self, d: object, hour: int) -> float:
        return datetime.combine(d, datetime.min.time().replace(hour=hour),  # type: ignore[arg-type]
                                self.tz).timestamp()

    def in_window(self, t: float) -> bool:
        h = datetime.fromtimestamp(t, self.tz).hour
        return h >= W_START or h < W_END

    def window_start_of(self, t: float) -> float:
        """Start of the night containing t (t must be in the window)."""
        local = datetime.fromtimestamp(t, self.tz)
        d = local.date() if local.hour >= W_START else local.date() - timedelta(days=1)
        return self._at(d, W_START)

    def first_in_window(self, t: float) -> float:
        if self.in_window(t):
            return t
        return self._at(datetime.fromtimestamp(t, self.tz).date(), W_START)

    def first_tick_at_or_after(self, t: float) -> float:
        k = -(-(t - self.t0) // GRID)
        return self.t0 + k * GRID


Expected = list[tuple[str, float]]


def bed_exit_oracle(o: Oracle, events: list[tuple[float, str, int]], end: float, n_min: int,
                    need_bed: bool) -> Expected:
    out: Expected = []
    state: int | None = None
    exits: list[tuple[float, float | None, bool]] = []  # (left, back, was in bed before)
    for t, dev, v in events:
        if dev != "bed-1":
            continue
        if v == 0 and state != 0:
            exits.append((t, None, state == 1))
        elif v == 1 and state == 0:
            exits[-1] = (exits[-1][0], t, exits[-1][2])
        state = v
    for left, back, was_in_bed in exits:
        if need_bed:
            # Armed only by leaving the bed inside the window; then N minutes from leaving.
            if not (was_in_bed and o.in_window(left)):
                continue
            alarm = o.first_tick_at_or_after(left + n_min * 60)
        else:
            alarm = o.first_tick_at_or_after(o.first_in_window(left) + n_min * 60)
        limit = back if back is not None else end + 1
        if alarm < limit and alarm <= end:
            out.append(("raised", alarm))
            if back is not None:
                out.append(("cleared", back))
    return out


def wandering_oracle(o: Oracle, events: list[tuple[float, str, int]], end: float, n_min: int,
                     need_bed: bool) -> Expected:
    out: Expected = []
    # Bed intervals [a, b) and door state as functions of time, from the whole history.
    in_bed: list[list[float]] = []
    bed: int | None = None
    for t, dev, v in events:
        if dev == "bed-1":
            if v == 1 and bed != 1:
                in_bed.append([t, float("inf")])
            elif v == 0 and bed == 1:
                in_bed[-1][1] = t
            bed = v

    def was_in_bed(since: float, until: float) -> bool:
        return any(a <= until and b > since for a, b in in_bed)

    door: int | None = None
    opened: float | None = None
    alarmed = False
    for t, dev, v in events:
        if opened is not None and not alarmed:
            alarm = o.first_tick_at_or_after(opened + n_min * 60)
            if n_min > 0 and alarm < t:
                out.append(("raised", alarm))
                alarmed = True
        back = opened is not None and (
            (dev == "bed-1" and v == 1) or (dev == "pir-hall" and v == 1 and door == 0))
        if back:
            if alarmed:
                out.append(("cleared", t))
            opened, alarmed = None, False
        if dev == "door-1":
            if v == 1 and door != 1 and opened is None and o.in_window(t) and (
                    not need_bed or was_in_bed(o.window_start_of(t), t)):
                opened = t
                if n_min == 0:
                    out.append(("raised", t))
                    alarmed = True
            door = v
    if opened is not None and not alarmed:
        alarm = o.first_tick_at_or_after(opened + n_min * 60)
        if n_min > 0 and alarm <= end:
            out.append(("raised", alarm))
    return out


def inactivity_oracle(o: Oracle, calls: list[tuple[str, float, str, int]], hours: float
                      ) -> Expected:
    """Walks the engine's calls in order ("event" or "tick"). Activity: motion, or a door or
    bed value different from that device's previous one. Quiet time at a tick: from the
    later of the latest activity (or, with none yet, the engine's first call) and the start of
    the night; one alarm per quiet spell, cleared by the next activity."""
    out: Expected = []
    first = calls[0][1] if calls else 0.0
    prev: dict[str, int] = {}
    last: float | None = None
    active = False
    for what, t, dev, v in calls:
        if what == "event":
            act = v == 1 if dev == "pir-hall" else prev.get(dev) != v
            prev[dev] = v
            if act and (last is None or t > last):
                last = t
                if active:
                    out.append(("cleared", t))
                    active = False
        elif not active and o.in_window(t):
            quiet_from = max(first if last is None else last, o.window_start_of(t))
            if t - quiet_from >= hours * 3600:
                out.append(("raised", t))
                active = True
    return out


class Night(RuleBasedStateMachine):
    """One home, random sensor events between ticks; both rules checked against oracles."""

    TZ = UTC

    @initialize(n_bed=st.sampled_from([5, 15, 30, 90]), n_door=st.sampled_from([0, 5, 10, 25]),
                need_bed=st.booleans(), bed_need_bed=st.booleans(),
                quiet_h=st.sampled_from([0.5, 1.0, 2.0]),
                day=st.sampled_from(sorted(STARTS)), start_cells=st.integers(0, 287))
    def setup(self, n_bed: int, n_door: int, need_bed: bool, bed_need_bed: bool,
              quiet_h: float, day: str, start_cells: int) -> None:
        self.quiet_h = quiet_h
        self.n_bed, self.n_door, self.need_bed = n_bed, n_door, need_bed
        self.bed_need_bed = bed_need_bed
        self.oracle = Oracle(self.TZ, STARTS[day])
        window = parse_window("22:00-06:00")
        cfg = RulesConfig(
            bed_exit=(BedExitRule("bed", "bed-1", window, n_bed, bed_need_bed),),
            # A PIR without a hold-off: every motion report is new motion (the hold-off and
            # its wait are scenario tests in test_rules_scenarios.py).
            wandering=(WanderingRule("door", "door-1", window, n_door, inside=("pir-hall",),
                                     bed="bed-1", require_in_bed=need_bed, pir_holdoff_s=0),),
            inactivity=(InactivityRule("quiet", window, quiet_h),),
            silent=QUIET,
        )
        self.cfg, self.ids = cfg, counter_ids()
        self.engine = RuleEngine("p", self.TZ, self.ids, devices=DEVICES, settings=cfg)
        self.now = STARTS[day] + start_cells * GRID  # start anywhere in the day
        self.k = 0  # events within the current grid cell
        self.events: list[tuple[float, str, int]] = []
        self.got: dict[str, Expected] = {"bed_exit": [], "wandering": [], "inactivity": []}
        self.calls: list[tuple[str, float, str, int]] = []  # in the order the engine saw them

    def _collect(self, outs: list) -> None:  # type: ignore[type-arg]
        for o in outs:
            if o.payload["type"] in self.got:
                t = o.payload["time"]
                from datetime import datetime

                self.got[o.payload["type"]].append(
                    (o.payload["state"], datetime.fromisoformat(t).timestamp()))

    def _event(self, dev: str, **values: int) -> None:
        self.k += 1
        t = self.now + 10 * self.k + 100  # strictly between two grid ticks
        self.events.append((t, dev, next(iter(values.values()))))
        self.calls.append(("event", t, dev, next(iter(values.values()))))
        self._collect(self.engine.on_report(Report(DEVICES[dev], t, -60, values, None), t))

    @rule(cells=st.integers(1, 30))
    def wait(self, cells: int) -> None:
        for _ in range(cells):
            self.now += GRID
            self.calls.append(("tick", self.now, "", 0))
            self._collect(self.engine.tick(self.now))
        self.k = 0

    @rule(v=st.sampled_from([0, 1]))
    def bed(self, v: int) -> None:
        self._event("bed-1", occupancy=v)

    @rule(v=st.sampled_from([0, 1]))
    def door(self, v: int) -> None:
        self._event("door-1", door=v)

    @rule()
    def motion(self) -> None:
        self._event("pir-hall", motion=1)

    @rule()
    def restart(self) -> None:
        """The hub restarts between two ticks: a new engine from the saved (JSON) state."""
        snap = json.loads(json.dumps(self.engine.snapshot()))
        self.engine = RuleEngine("p", self.TZ, self.ids, devices=DEVICES, settings=self.cfg)
        self.engine.restore(snap)

    @rule()
    def clear(self) -> None:
        self._event("pir-hall", motion=0)  # the PIR's "no motion" after its hold-off

    def teardown(self) -> None:
        if not hasattr(self, "engine"):
            return
        assert self.got["bed_exit"] == bed_exit_oracle(self.oracle, self.events, self.now,
                                                       self.n_bed, self.bed_need_bed)
        assert self.got["wandering"] == wandering_oracle(self.oracle, self.events, self.now,
                                                         self.n_door, self.need_bed)
        assert self.got["inactivity"] == inactivity_oracle(self.oracle, self.calls,
                                                           self.quiet_h)


class OsloNight(Night):
    TZ = OSLO


SETTINGS = settings(max_examples=150, stateful_step_count=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
Night.TestCase.settings = SETTINGS
OsloNight.TestCase.settings = SETTINGS
TestNight = Night.TestCase
TestOsloNight = OsloNight.TestCase


# -- wandering with a real PIR's hold-off --------------------------------------------------

HOLDOFF = 300  # firmware/pir.py HOLDOFF_S
NIGHT_STARTS = [datetime(2026, m, d, 22, 0, tzinfo=OSLO).timestamp()
                for m, d in ((11, 25), (3, 28), (10, 24))]


def _wandering_home() -> RuleEngine:
    cfg = RulesConfig(wandering=(WanderingRule("door", "door-1", parse_window("22:00-06:00"),
                                               10, inside=("pir-hall",)),), silent=QUIET)
    return RuleEngine("p", OSLO, counter_ids(), devices=DEVICES, settings=cfg)


def _drive(engine: RuleEngine, events: list[tuple[float, str, int]], end: float
           ) -> list[tuple[str, float]]:
    """Events in time order with a tick every 10 s in between, as the hub would."""
    got: list[tuple[str, float]] = []
    queue = sorted(events)
    t = 10 * ((queue[0][0] - 10) // 10)  # ticks on the 10 s grid
    while t <= end:
        while queue and queue[0][0] <= t:
            et, dev, v = queue.pop(0)
            key = {"door-1": "door", "pir-hall": "motion"}[dev]
            outs = engine.on_report(Report(DEVICES[dev], et, -60, {key: v}, None), et)
            got += [(o.payload["state"], et) for o in outs if o.payload["type"] == "wandering"]
        got += [(o.payload["state"], t) for o in engine.tick(t)
                if o.payload["type"] == "wandering"]
        t += 10
    return got


@settings(max_examples=100, deadline=None)
@given(night=st.sampled_from(NIGHT_STARTS), after_min=st.integers(0, 7 * 60),
       back_s=st.integers(0, 1200), close_s=st.integers(1, 30))
def test_resident_back_in_the_hall_with_a_holdoff_pir(night: float, after_min: int,
                                                      back_s: int, close_s: int) -> None:
    """He goes out without passing the sensor, comes back `back_s` after the door opened,
    triggers the hall PIR while the door is still open, shuts it and keeps moving in the hall
    (the PIR reports motion again at the end of its hold-off). An alarm comes if and only if
    he was not back by the deadline (10 minutes), and is then cleared."""
    opened = night + after_min * 60 + 0.5  # between the 10 s ticks
    assume(Oracle(OSLO, 0).in_window(opened))  # the spring night is an hour shorter
    due = opened + 600
    assume(abs(opened + back_s - due) > 20)
    events = [(opened, "door-1", 1), (opened + 1, "door-1", 0),  # out; door shut behind
              (opened + back_s + 2, "door-1", 1), (opened + back_s + 3, "pir-hall", 1),
              (opened + back_s + 3 + close_s, "door-1", 0),
              (opened + back_s + 3 + HOLDOFF, "pir-hall", 1)]
    got = _drive(_wandering_home(), events, opened + back_s + 3 + HOLDOFF + 600)
    if opened + back_s + 3 < due:
        assert got == []
    else:
        first_tick = 10 * -(-due // 10)
        assert got == [("raised", first_tick), ("cleared", opened + back_s + 3 + HOLDOFF)]


@settings(max_examples=100, deadline=None)
@given(night=st.sampled_from(NIGHT_STARTS), after_min=st.integers(0, 7 * 60),
       walk_s=st.integers(1, 60), close_s=st.integers(1, 30), n_min=st.sampled_from([3, 5, 10]))
def test_resident_leaving_past_a_holdoff_pir_is_alarmed_at_most_its_holdoff_late(
        night: float, after_min: int, walk_s: int, close_s: int, n_min: int) -> None:
    """He walks past the hall PIR, opens the door and shuts it behind him. The sensor reports
    "clear" at the end of its hold-off. Alarm at the deadline, or when the sensor can see
    again if that is later: never "back"."""
    cfg = RulesConfig(wandering=(WanderingRule("door", "door-1", parse_window("22:00-06:00"),
                                               n_min, inside=("pir-hall",)),), silent=QUIET)
    engine = RuleEngine("p", OSLO, counter_ids(), devices=DEVICES, settings=cfg)
    opened = night + after_min * 60 + 0.5
    assume(Oracle(OSLO, 0).in_window(opened))  # the spring night is an hour shorter
    motion = opened - walk_s
    events = [(motion, "pir-hall", 1), (opened, "door-1", 1),
              (opened + close_s, "door-1", 0), (motion + HOLDOFF, "pir-hall", 0)]
    got = _drive(engine, events, opened + 3600)
    expect = max(opened + n_min * 60, motion + HOLDOFF)
    first_tick = 10 * -(-expect // 10)
    assert got == [("raised", first_tick)]
    assert first_tick - (opened + n_min * 60) <= HOLDOFF + 10
