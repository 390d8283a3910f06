"""Device rules: alarm button and fall, battery, charging, silent devices."""

from __future__ import annotations

from datetime import datetime, time
from typing import TYPE_CHECKING, Any

from hub.clock import iso
from hub.rules.alarms import CARE, TECHNICAL
from hub.rules.base import Ctx, State, moved, shift_keys
from hub.rules.outgoing import Outgoing
from hub.rules.settings import CARRIED, BatteryRule, ButtonRule, ChargingRule, SilentRule
from protocols import bthome, mqtt_schema

if TYPE_CHECKING:
    from hub.decode.decoder import Report

_EVENT_IDS = {name: eid for eid, name in bthome.BUTTON_EVENT_NAMES.items()}
_FALL = bthome.OBJECTS[bthome.FALL][0]  # "problem" = 1 from the wearable (protocols/BTHOME.md)


class Immediate:
    """Alarm button (any press kind) and fall: an alarm at once, highest priority.

    Each press is its own alarm: a resident pressing again is asking again. The cancel
    gesture from the same device within the window clears the latest one (the clear is
    published, so the response centre sees the cancel too)."""

    key = "immediate"

    def __init__(self, button: ButtonRule, fall: bool) -> None:
        self.button = button
        self.fall = fall
        self.cancel_event = _EVENT_IDS.get(button.cancel_event) if button.cancel_event else None

    def causes(self) -> set[str]:
        return set()

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        dev = report.device
        if dev.role not in CARRIED:
            return []
        v = report.values
        press = v.get("button")
        if (self.fall and self.cancel_event is not None and dev.role == "wearable"
                and v.get(_FALL) == 1 and press == bthome.BUTTON_CANCEL):
            # bthome.FALL_CANCELLED: the resident cancelled a detected fall in the wearable's
            # window. No alarm, but never silence: the centre sees it. (With the cancel
            # gesture switched off, cancel_event = "", it stays a fall alarm.)
            return ctx.book.event("fall_cancelled", dev.id, now, kind="status",
                                  room=dev.room, by="resident")
        if self.cancel_event is not None and press == self.cancel_event:
            return self._cancel(ctx, st, dev.id, now)
        if press in bthome.ALARM_BUTTON_EVENTS:  # a frightened resident may press any way
            return self._raise(ctx, st, report, "alarm_button", now,
                               trigger=bthome.BUTTON_EVENT_NAMES[press])
        # A fall is the change to 1, or a fall advert (trigger set) while the hub still holds 1
        # (the wearable does not send 0 after a fall): heartbeats repeat the current state.
        if self.fall and dev.role == "wearable" and (
                changed.get(_FALL) == 1 or (v.get(_FALL) == 1 and report.trigger)):
            return self._raise(ctx, st, report, "fall", now)
        return []

    def _raise(self, ctx: Ctx, st: State, report: Report, type_: str, now: float,
               **fields: object) -> list[Outgoing]:
        device = report.device.id
        n = int(st.get("n", 0)) + 1
        st["n"] = n
        cause = f"{type_}:{device}:{n}"
        st.setdefault("latest", {})[device] = cause
        return ctx.book.raise_(cause, CARE, type_, device, mqtt_schema.PRIORITY_CRITICAL, now,
                               expires_at=now + self.button.cancel_window_s,
                               alarm_id=report.advert_id, room=report.device.room, **fields)

    def _cancel(self, ctx: Ctx, st: State, device: str, now: float) -> list[Outgoing]:
        cause = st.get("latest", {}).pop(device, None)
        if cause is None:
            return []
        return ctx.book.clear(cause, now, "cancelled_by_resident")

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        return []

    def shift(self, st: State, delta: float, since: float) -> None:
        pass  # no instants: the cancel window is the alarm book's expires_at


class Battery:
    """Low battery confirmed over several reports -> warning, repeated at an interval, with
    an estimate of days left; critical -> technical alarm. Cleared when confirmed back up."""

    key = "battery"
    HYSTERESIS = 5  # percent above the warning level to count as recovered
    SAMPLE_EVERY_S = 3600
    MAX_SAMPLES = 24 * 14

    def __init__(self, cfg: BatteryRule) -> None:
        self.cfg = cfg

    def causes(self) -> set[str]:
        return set()  # per device; never removed by a reload

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        pct = report.values.get("battery")
        limits = self.cfg.limits.get(report.device.role)
        if pct is None or limits is None:
            return []
        dev = report.device.id
        d = st.setdefault(dev, {"low": 0, "crit": 0, "ok": 0, "samples": [], "last_warn": None})
        samples: list[list[float]] = d["samples"]
        if not samples or now - samples[-1][0] >= self.SAMPLE_EVERY_S:
            samples.append([now, float(pct)])
            del samples[:-self.MAX_SAMPLES]
        d["pct"] = pct
        d["low"] = d["low"] + 1 if pct <= limits.warn_percent else 0
        d["crit"] = d["crit"] + 1 if pct <= limits.critical_percent else 0
        d["ok"] = d["ok"] + 1 if pct >= limits.warn_percent + self.HYSTERESIS else 0
        n = self.cfg.confirm_reports
        out: list[Outgoing] = []
        fields: dict[str, Any] = {"battery": pct,
                                  "days_left": self.days_left(samples, limits.critical_percent)}
        if d["crit"] >= n:
            out += ctx.book.raise_(f"battery_critical:{dev}", TECHNICAL, "battery_critical", dev,
                                   mqtt_schema.PRIORITY_TECHNICAL, now, **fields)
        if d["low"] >= n and not ctx.book.is_active(f"battery_low:{dev}"):
            d["last_warn"] = now
            out += ctx.book.raise_(f"battery_low:{dev}", TECHNICAL, "battery_low", dev,
                                   mqtt_schema.PRIORITY_INFO, now, **fields)
        if d["ok"] >= n:
            out += ctx.book.clear(f"battery_critical:{dev}", now, "battery_ok", battery=pct)
            out += ctx.book.clear(f"battery_low:{dev}", now, "battery_ok", battery=pct)
        return out

    @staticmethod
    def days_left(samples: list[list[float]], floor: float) -> float | None:
        """Least-squares trend over the samples; None when it does not show a decline."""
        if len(samples) < 3 or samples[-1][0] - samples[0][0] < 86400:
            return None
        n = len(samples)
        mt = sum(s[0] for s in samples) / n
        mp = sum(s[1] for s in samples) / n
        var = sum((s[0] - mt) ** 2 for s in samples)
        if var == 0:
            return None
        slope = sum((s[0] - mt) * (s[1] - mp) for s in samples) / var  # percent per second
        per_day = slope * 86400
        if per_day > -0.01:
            return None
        return round(max(0.0, (samples[-1][1] - floor) / -per_day), 1)

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        every = self.cfg.repeat_h * 3600
        for dev, d in st.items():
            last = d.get("last_warn")
            if last is None or now - last < every:
                continue
            for cause in (f"battery_critical:{dev}", f"battery_low:{dev}"):
                if ctx.book.is_active(cause):
                    d["last_warn"] = now
                    out += ctx.book.remind(cause, now, battery=d.get("pct"))
                    break
        return out

    def shift(self, st: State, delta: float, since: float) -> None:
        for d in st.values():
            shift_keys(d, ("last_warn",), delta, since)
            d["samples"] = [[moved(t, delta, since), p] for t, p in d.get("samples", [])]


class Charging:
    """Carried devices that report charging: reminder at a set time when low or not charged
    for N days; notice when charging completes; the wearable still on the charger at a set
    time is not being worn."""

    key = "charging"

    def __init__(self, cfg: ChargingRule) -> None:
        self.cfg = cfg

    def causes(self) -> set[str]:
        return set()

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        dev = report.device
        if dev.role not in CARRIED:
            return []
        if dev.id not in st:
            # First heard after today's reminder time: the first reminder is tomorrow's (a
            # reminder is due at its time, not whenever the hub happens to start).
            today = datetime.fromtimestamp(now, ctx.tz).date().isoformat()
            late = now >= self._today_at(ctx, now, self.cfg.remind_at_min)
            st[dev.id] = {"first_seen": now, "charging": None, "last_charged": None,
                          "since": None, "pct": None, "complete_sent": False,
                          "reminded": today if late else None}
        d = st[dev.id]
        v = report.values
        out: list[Outgoing] = []
        if "battery" in v:
            d["pct"] = v["battery"]
        if "battery_charging" in v:
            d["has_charger"] = True  # a primary-cell pendant never reports charging
        ch = v.get("battery_charging")
        if ch == 1 and d["charging"] is not True:
            d.update(charging=True, since=now, complete_sent=False)
        elif ch == 0 and d["charging"] is not False:
            if d["charging"]:
                d["last_charged"] = now
            d.update(charging=False, since=None)
            out += ctx.book.clear(f"not_worn:{dev.id}", now, "taken_off_charger")
        if (d["charging"] and not d["complete_sent"] and d["pct"] is not None
                and d["pct"] >= self.cfg.complete_percent):
            d.update(complete_sent=True, last_charged=now)
            out += ctx.book.event("charging_complete", dev.id, now, battery=d["pct"])
        return out

    def _today_at(self, ctx: Ctx, now: float, minute: int) -> float:
        day = datetime.fromtimestamp(now, ctx.tz).date()
        return datetime.combine(day, time(minute // 60, minute % 60), ctx.tz).timestamp()

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        today = datetime.fromtimestamp(now, ctx.tz).date().isoformat()
        remind_at = self._today_at(ctx, now, self.cfg.remind_at_min)
        for dev, d in st.items():
            # Reminder: evaluated once a day, within two hours of the set time.
            if (d.get("has_charger") and remind_at <= now < remind_at + 7200
                    and d.get("reminded") != today):
                d["reminded"] = today
                since = d.get("last_charged") or d.get("first_seen") or now
                days = (now - since) / 86400
                pct = d.get("pct")
                low = pct is not None and pct < self.cfg.remind_below_percent
                if not d.get("charging") and (low or days >= self.cfg.remind_after_days):
                    out += ctx.book.event(
                        "charging_reminder", dev, now, battery=pct,
                        days_since_charged=round(days, 1),
                        reason="battery_low" if low else "not_charged_recently")
            role = ctx.devices[dev].role if dev in ctx.devices else ""
            by = self.cfg.off_charger_by_min
            if role == "wearable" and by is not None and d.get("charging"):
                t = self._today_at(ctx, now, by)
                since = d.get("since")
                if now >= t and since is not None and since <= t:
                    out += ctx.book.raise_(
                        f"not_worn:{dev}", CARE, "not_worn", dev, mqtt_schema.PRIORITY_HIGH,
                        now, on_charger_since=iso(since, ctx.tz),
                        room=ctx.devices[dev].room)
        return out

    def shift(self, st: State, delta: float, since: float) -> None:
        for d in st.values():
            shift_keys(d, ("first_seen", "last_charged", "since"), delta, since)


class Silent:
    """No advert for K heartbeat intervals -> technical alarm; cleared when it reports."""

    key = "silent"

    def __init__(self, cfg: SilentRule) -> None:
        self.cfg = cfg

    def causes(self) -> set[str]:
        return set()

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]:
        dev = report.device.id
        st[dev] = now
        return ctx.book.clear(f"device_silent:{dev}", now, "reporting_again")

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for dev, d in ctx.devices.items():
            last = st.get(dev)
            if last is None:
                st[dev] = now  # counted from when the hub first knew of the device
                continue
            limit = self.cfg.limit_s(d.role, getattr(d, "heartbeat_s", None))
            if now - last >= limit:
                out += ctx.book.raise_(
                    f"device_silent:{dev}", TECHNICAL, "device_silent", dev,
                    mqtt_schema.PRIORITY_TECHNICAL, now, last_seen=iso(last, ctx.tz),
                    minutes_silent=round((now - last) / 60), room=d.room)
        for dev in [k for k in st if k not in ctx.devices]:
            del st[dev]
        return out

    def shift(self, st: State, delta: float, since: float) -> None:
        for dev in st:
            st[dev] = moved(st[dev], delta, since)

