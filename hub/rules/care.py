"""Care rules: bed exit, wandering, inactivity. Timers are deadlines in the rule's state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.clock import iso
from hub.rules.alarms import CARE
from hub.rules.base import Ctx, State
from hub.rules.outgoing import Outgoing
from hub.rules.settings import BedExitRule, InactivityRule, WanderingRule
from protocols import mqtt_schema

if TYPE_CHECKING:
    from hub.decode import Report

HIGH = mqtt_schema.PRIORITY_HIGH


def door_value(values: dict[str, int]) -> int | None:
    v = values.get("door", values.get("opening"))
    return None if v is None else int(v)


class BedExit:
    """Out of bed and not back within N minutes, counted from the later of leaving the bed
    and the window opening; cleared when back in bed."""

    def __init__(self, cfg: BedExitRule) -> None:
        self.cfg = cfg
        self.key = f"bed_exit:{cfg.name}"
        self.cause = self.key

    def causes(self) -> set[str]:
        return {self.cause}

    def _due(self, ctx: Ctx, out_since: float) -> float | None:
        occ = self.cfg.window.next_opening(out_since, ctx.tz)
        if occ is None:
            return None
        start = max(out_since, occ[0])
        return start + self.cfg.return_min * 60

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        if report.device.id != self.cfg.bed or "occupancy" not in report.values:
            return []
        if report.values["occupancy"]:
            st.update(in_bed=True, out_since=None, due=None)
            return ctx.book.clear(self.cause, now, "back_in_bed")
        if st.get("in_bed") is False:
            return []  # still out (a heartbeat repeating the state)
        st.update(in_bed=False, out_since=now, due=self._due(ctx, now))
        return []

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        if st.get("in_bed") is not False or st.get("due") is None:
            return []
        out_since = float(st["out_since"])
        # Recomputed, not read back: a reload that changes the delay applies to a running timer.
        due = self._due(ctx, out_since)
        st["due"] = due
        if due is None or now < due:
            return []
        st["due"] = None
        room = ctx.devices[self.cfg.bed].room if self.cfg.bed in ctx.devices else ""
        return ctx.book.raise_(
            self.cause, CARE, "bed_exit", self.cfg.bed, HIGH, now, rule=self.cfg.name,
            room=room, out_of_bed_since=iso(out_since, ctx.tz),
            minutes_out=round((now - out_since) / 60), window=str(self.cfg.window),
        )


class Wandering:
    """The exit door opens inside the window; alarm unless the resident is back (door closed
    again and then motion inside, or in bed) within N minutes; N = 0 alarms at once."""

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
        out: list[Outgoing] = []
        if self.cfg.bed is not None and dev == self.cfg.bed and "occupancy" in v:
            if v["occupancy"]:
                st["in_bed"] = True
                if st.get("episode"):
                    out += self._returned(ctx, st, now)
            elif st.get("in_bed"):
                st.update(in_bed=False, left_bed_at=now)
        if dev == self.cfg.door:
            d = door_value(v)
            if d == 1 and st.get("door_open") is not True:
                st["door_open"] = True
                out += self._opened(ctx, st, now)
            elif d == 0 and st.get("door_open") is not False:
                st["door_open"] = False
                if st.get("episode"):
                    st["closed_at"] = now
        if dev in self.cfg.inside and v.get("motion") == 1 and st.get("episode"):
            if st.get("door_open") is False and st.get("closed_at") is not None:
                out += self._returned(ctx, st, now)
        return out

    def _opened(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        if st.get("episode"):
            st["closed_at"] = None  # out again: a new close must come before motion counts
            return []
        muted = st.get("muted_until")
        if muted is not None and now < muted:
            return []
        occ = self.cfg.window.containing(now, ctx.tz)
        if occ is None:
            return []
        if self.cfg.require_in_bed and not self._was_in_bed(ctx, st, occ[0]):
            return []
        st.update(episode=True, opened_at=now, closed_at=None,
                  due=now + self.cfg.return_min * 60)
        return self.tick(ctx, st, now)

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        if not st.get("episode") or st.get("due") is None:
            return []
        due = float(st["opened_at"]) + self.cfg.return_min * 60  # the current delay
        if now < due:
            return []
        st["due"] = None
        room = ctx.devices[self.cfg.door].room if self.cfg.door in ctx.devices else ""
        return ctx.book.raise_(
            self.cause, CARE, "wandering", self.cfg.door, HIGH, now, rule=self.cfg.name,
            room=room, door_opened=iso(float(st["opened_at"]), ctx.tz),
            minutes_away=round((now - float(st["opened_at"])) / 60), window=str(self.cfg.window),
        )


ACTIVITY_ROLES = ("pir", "door", "bed")


class Inactivity:
    """No activity on the chosen sensors for N hours, counting only time inside the window."""

    def __init__(self, cfg: InactivityRule) -> None:
        self.cfg = cfg
        self.key = f"inactivity:{cfg.name}"
        self.cause = self.key

    def causes(self) -> set[str]:
        return {self.cause}

    def _counts(self, report: Report, changed: dict[str, int]) -> bool:
        dev = report.device
        if self.cfg.sensors:
            if dev.id not in self.cfg.sensors:
                return False
        elif dev.role not in ACTIVITY_ROLES and not report.values.get("button"):
            return False
        v = report.values
        return (v.get("motion") == 1 or bool(v.get("button")) or "door" in changed
                or "opening" in changed or "occupancy" in changed)

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        if not self._counts(report, changed):
            return []
        st["last_activity"] = now
        return ctx.book.clear(self.cause, now, "activity", sensor=report.device.id)

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        occ = self.cfg.window.containing(now, ctx.tz)
        if occ is None or ctx.book.is_active(self.cause):
            return []
        last = st.get("last_activity")
        quiet_from = occ[0] if last is None else max(float(last), occ[0])
        if now - quiet_from < self.cfg.hours * 3600:
            return []
        return ctx.book.raise_(
            self.cause, CARE, "inactivity", None, HIGH, now, rule=self.cfg.name,
            quiet_since=iso(quiet_from, ctx.tz), hours=self.cfg.hours,
            last_activity=None if last is None else iso(float(last), ctx.tz),
            window=str(self.cfg.window),
        )
