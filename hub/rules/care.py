"""Care rules: bed exit, wandering, inactivity. Timers are deadlines in the rule's state.

Every rule takes an event's time from the report (`event_time`), not from when it happens to
be handled, and a report older than the state a rule already holds is late: it cannot undo
that newer state (an "in bed" already applied is not undone by a delayed "out" from before).
docs/ADMIN.md states each rule's timing exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.clock import iso
from hub.rules.alarms import CARE
from hub.rules.base import Ctx, State, event_time, is_late, moved, shift_keys
from hub.rules.outgoing import Outgoing
from hub.rules.settings import CARRIED, BedExitRule, InactivityRule, WanderingRule
from protocols import mqtt_schema

if TYPE_CHECKING:
    from hub.decode.decoder import Report

HIGH = mqtt_schema.PRIORITY_HIGH


def door_value(values: dict[str, int]) -> int | None:
    v = values.get("door", values.get("opening"))
    return None if v is None else int(v)


class BedExit:
    """Out of bed and not back within N minutes; cleared when back in bed.

    require_in_bed = False: counted from the later of leaving the bed and the window opening
    (someone still up when the window opens is "out of bed" from then).
    require_in_bed = True: only leaving the bed inside the window starts the timer.
    Either way a timer started inside the window runs to its end after the window closes."""

    def __init__(self, cfg: BedExitRule) -> None:
        self.cfg = cfg
        self.key = f"bed_exit:{cfg.name}"
        self.cause = self.key

    def causes(self) -> set[str]:
        return {self.cause}

    def _due(self, ctx: Ctx, out_since: float, armed: bool) -> float | None:
        if self.cfg.require_in_bed:
            return out_since + self.cfg.return_min * 60 if armed else None
        occ = self.cfg.window.next_opening(out_since, ctx.tz)
        if occ is None:
            return None
        start = max(out_since, occ[0])
        return start + self.cfg.return_min * 60

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        if report.device.id != self.cfg.bed or "occupancy" not in report.values:
            return []
        t = event_time(report, now)
        if is_late(t, st.get("at"), now):
            return []
        st["at"] = t
        if report.values["occupancy"]:
            st.update(in_bed=True, out_since=None, due=None, fired=False)
            return ctx.book.clear(self.cause, now, "back_in_bed")
        if st.get("in_bed") is False:
            return []  # still out (a heartbeat repeating the state)
        # Left the bed inside the window: she has been in bed inside it (just now).
        armed = st.get("in_bed") is True and self.cfg.window.containing(t, ctx.tz) is not None
        st.update(in_bed=False, out_since=t, armed=armed, fired=False,
                  due=self._due(ctx, t, armed))
        return []

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        if st.get("in_bed") is not False or st.get("out_since") is None or st.get("fired"):
            return []
        out_since = float(st["out_since"])
        # Recomputed, not read back: a reload that changes the delay applies to a running timer.
        due = self._due(ctx, out_since, bool(st.get("armed")))
        st["due"] = due
        if due is None or now < due:
            return []
        st.update(due=None, fired=True)
        room = ctx.devices[self.cfg.bed].room if self.cfg.bed in ctx.devices else ""
        return ctx.book.raise_(
            self.cause, CARE, "bed_exit", self.cfg.bed, HIGH, now, rule=self.cfg.name,
            room=room, out_of_bed_since=iso(out_since, ctx.tz),
            minutes_out=round((now - out_since) / 60), window=str(self.cfg.window),
        )

    def shift(self, st: State, delta: float, since: float) -> None:
        shift_keys(st, ("at", "out_since", "due"), delta, since)


# A PIR's "motion" repeated sooner than this before its hold-off ends is the state it
# already reported (a heartbeat), not new motion; at the hold-off's end it is new motion.
RENEW_SLACK_S = 15.0
# How long after a PIR's hold-off ends the hub waits for its "motion" or "clear".
PIR_GRACE_S = 60.0


class Wandering:
    """The exit door opens inside the window; alarm unless the resident is back within N
    minutes (N = 0: at once). Back: the door closed and then new motion on an inside sensor,
    or into bed. Motion seen before the door closed proves nothing (it is also what leaving
    looks like); a sensor that saw it is blind for its hold-off, so the alarm waits for what
    it reports at the end of it: motion again (back inside) or clear (not back)."""

    def __init__(self, cfg: WanderingRule) -> None:
        self.cfg = cfg
        self.key = f"wandering:{cfg.name}"
        self.cause = self.key

    def causes(self) -> set[str]:
        return {self.cause}

    def mute(self, st: State, now: float, minutes: float) -> float:
        until = now + min(minutes, self.cfg.mute_max_min) * 60
        st["muted_until"] = until
        # Staff are in the home: the door they came in by is not the resident leaving.
        st.update(episode=False, due=None)
        return until

    def _was_in_bed(self, ctx: Ctx, st: State, window_start: float) -> bool:
        if st.get("in_bed"):
            return True
        left = st.get("left_bed_at")
        return left is not None and left >= window_start

    def _returned(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        st.update(episode=False, due=None, opened_at=None, closed_at=None)
        return ctx.book.clear(self.cause, now, "returned")

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        dev = report.device.id
        v = report.values
        t = event_time(report, now)
        out: list[Outgoing] = []
        if (self.cfg.bed is not None and dev == self.cfg.bed and "occupancy" in v
                and not is_late(t, st.get("bed_at"), now)):
            st["bed_at"] = t
            if v["occupancy"]:
                st["in_bed"] = True
                if st.get("episode") and t >= float(st["opened_at"]):
                    out += self._returned(ctx, st, now)
            elif st.get("in_bed"):
                st.update(in_bed=False, left_bed_at=t)
        d = door_value(v) if dev == self.cfg.door else None
        if d is not None and not is_late(t, st.get("door_at"), now):
            st["door_at"] = t
            if d == 1 and st.get("door_open") is not True:
                st["door_open"] = True
                out += self._opened(ctx, st, t, now)
            elif d == 0 and st.get("door_open") is not False:
                st["door_open"] = False
                if st.get("episode"):
                    st["closed_at"] = t
        if dev in self.cfg.inside and "motion" in v:
            out += self._motion(ctx, st, dev, int(v["motion"]), t, now)
        return out

    def _motion(self, ctx: Ctx, st: State, dev: str, value: int, t: float,
                now: float) -> list[Outgoing]:
        p = st.setdefault("pir", {}).setdefault(dev, {"on": False, "since": None, "at": None})
        since = p.get("since")
        new = value == 1 and (not p.get("on") or since is None
                              or t - float(since) >= self.cfg.pir_holdoff_s - RENEW_SLACK_S)
        if not is_late(t, p.get("at"), now):
            p["at"] = t
            if value == 1:
                if new:
                    p.update(on=True, since=t)
            else:
                p["on"] = False
        closed = st.get("closed_at")
        if (new and st.get("episode") and st.get("door_open") is False and closed is not None
                and t > float(closed)):
            return self._returned(ctx, st, now)
        return []

    def _opened(self, ctx: Ctx, st: State, t: float, now: float) -> list[Outgoing]:
        if st.get("episode"):
            st["closed_at"] = None  # out again: a new close must come before motion counts
            return []
        muted = st.get("muted_until")
        if muted is not None and t < muted:
            return []
        occ = self.cfg.window.containing(t, ctx.tz)
        if occ is None:
            return []
        if self.cfg.require_in_bed and not self._was_in_bed(ctx, st, occ[0]):
            return []
        st.update(episode=True, opened_at=t, closed_at=None,
                  due=t + self.cfg.return_min * 60)
        return self.tick(ctx, st, now)

    def _blind_until(self, st: State) -> float | None:
        """While the door is closed: the end of the hold-off of an inside sensor that saw
        motion before the close and cannot yet report new motion."""
        closed = st.get("closed_at")
        if closed is None or st.get("door_open") is not False or self.cfg.pir_holdoff_s <= 0:
            return None  # (a sensor without a hold-off reports new motion at once)
        until: float | None = None
        for dev in self.cfg.inside:
            p = st.get("pir", {}).get(dev)
            if p and p.get("on") and p.get("since") is not None and p["since"] <= closed:
                u = float(p["since"]) + self.cfg.pir_holdoff_s + PIR_GRACE_S
                until = u if until is None else max(until, u)
        return until

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        if not st.get("episode") or st.get("due") is None:
            return []
        due = float(st["opened_at"]) + self.cfg.return_min * 60  # the current delay
        if now < due:
            return []
        blind = self._blind_until(st)
        if blind is not None and now < blind:
            return []
        st["due"] = None
        room = ctx.devices[self.cfg.door].room if self.cfg.door in ctx.devices else ""
        return ctx.book.raise_(
            self.cause, CARE, "wandering", self.cfg.door, HIGH, now, rule=self.cfg.name,
            room=room, door_opened=iso(float(st["opened_at"]), ctx.tz),
            minutes_away=round((now - float(st["opened_at"])) / 60), window=str(self.cfg.window),
        )

    def shift(self, st: State, delta: float, since: float) -> None:
        shift_keys(st, ("opened_at", "closed_at", "due", "muted_until", "left_bed_at",
                        "bed_at", "door_at"), delta, since)
        for p in st.get("pir", {}).values():
            shift_keys(p, ("since", "at"), delta, since)


ACTIVITY_ROLES = ("pir", "door", "bed")


def is_activity(values: dict[str, int], changed: dict[str, int]) -> bool:
    """Motion, a button press, or a change of a door or bed: someone is up and about.
    A door or bed state repeated in a heartbeat is not a change."""
    return (values.get("motion") == 1 or bool(values.get("button")) or "door" in changed
            or "opening" in changed or "occupancy" in changed)


class Activity:
    """The latest activity per device, kept for rules that start without history of their
    own (an inactivity rule added by a reload, or renamed, counts from what the hub saw)."""

    key = "activity"

    def causes(self) -> set[str]:
        return set()

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        if is_activity(report.values, changed):
            t = event_time(report, now)
            dev = report.device.id
            st[dev] = max(float(st.get(dev, t)), t)
        return []

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        for dev in [d for d in st if d not in ctx.devices]:
            del st[dev]
        return []

    def shift(self, st: State, delta: float, since: float) -> None:
        for dev in st:
            st[dev] = moved(st[dev], delta, since)


# Ticks come every second; a longer silence means the hub was not running (or not running
# the rules) and heard nothing in between. The state is saved at least at every report
# (heartbeats every 10 minutes), so a quick restart is not counted as a gap.
GAP_S = 900.0


class Inactivity:
    """No activity on the chosen sensors for N hours inside the window.

    The quiet time is counted from the later of the last activity and the window's opening
    (so it starts again at each opening: it never adds up across days), and only while the
    hub was listening: with no history at all (a new hub, a new or renamed rule, a lost
    state file) it starts when the rule starts, and time the hub was down is not quiet time."""

    def __init__(self, cfg: InactivityRule) -> None:
        self.cfg = cfg
        self.key = f"inactivity:{cfg.name}"
        self.cause = self.key

    def causes(self) -> set[str]:
        return {self.cause}

    def _device_counts(self, dev: str, role: str | None) -> bool:
        if self.cfg.sensors:
            return dev in self.cfg.sensors
        # A carried device's only activity is a button press.
        return role in ACTIVITY_ROLES or role in CARRIED

    def _start(self, ctx: Ctx, st: State, now: float) -> None:
        """First sight of this rule: count from the activity the hub has seen, else from now."""
        if "known_from" in st:
            return
        st["known_from"] = now
        if st.get("last_activity") is None:
            seen = [t for d, t in ctx.activity.items()
                    if d in ctx.devices and self._device_counts(d, ctx.devices[d].role)]
            if seen:
                st["last_activity"] = max(seen)

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        self._start(ctx, st, now)
        dev = report.device
        if not self._device_counts(dev.id, dev.role) or not is_activity(report.values, changed):
            return []
        t = event_time(report, now)
        last = st.get("last_activity")
        if last is not None and t <= float(last):
            return []  # a late report of activity older than what the rule counts from
        st.update(last_activity=t, unheard=[])
        return ctx.book.clear(self.cause, now, "activity", sensor=dev.id)

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        self._start(ctx, st, now)
        prev = st.get("ticked_at")
        st["ticked_at"] = now
        if prev is not None and now - float(prev) > GAP_S:
            st.setdefault("unheard", []).append([float(prev), now])
        occ = self.cfg.window.containing(now, ctx.tz)
        if occ is None or ctx.book.is_active(self.cause):
            return []
        last = st.get("last_activity")
        base = float(last) if last is not None else float(st["known_from"])
        quiet_from = max(base, occ[0])
        # Drop gaps that ended before the count started; subtract those inside it.
        gaps = [g for g in st.get("unheard", []) if g[1] > quiet_from]
        st["unheard"] = gaps
        unheard = sum(min(b, now) - max(a, quiet_from) for a, b in gaps)
        if now - quiet_from - unheard < self.cfg.hours * 3600:
            return []
        extra: dict[str, Any] = {"unheard_min": round(unheard / 60)} if unheard else {}
        return ctx.book.raise_(
            self.cause, CARE, "inactivity", None, HIGH, now, rule=self.cfg.name,
            quiet_since=iso(quiet_from, ctx.tz), hours=self.cfg.hours,
            last_activity=None if last is None else iso(float(last), ctx.tz),
            window=str(self.cfg.window), **extra,
        )

    def shift(self, st: State, delta: float, since: float) -> None:
        shift_keys(st, ("last_activity", "known_from", "ticked_at"), delta, since)
        st["unheard"] = [[moved(a, delta, since), moved(b, delta, since)]
                         for a, b in st.get("unheard", [])]
