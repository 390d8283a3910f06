"""The alarm book: each alarm's lifecycle raised -> (acknowledged) -> cleared under one id.

An alarm is keyed by its cause ("bed_exit:bed-1", "device_silent:door-1"); while a cause is
active it is not raised again. Every message carries the alarm's id in `alarm_id`; the message
ids are derived from it (".cleared", ".r2", ".ack"), so re-emitting the same step after a
restart produces the same id, which the outbox and the response centre de-duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from hub.clock import iso
from hub.rules.outgoing import Outgoing
from protocols import mqtt_schema

CARE = "alarm"
TECHNICAL = "technical_alarm"


class AlarmBook:
    def __init__(self, site: str, tz: ZoneInfo, new_id: Callable[[], str]) -> None:
        self.site = site
        self.tz = tz
        self.new_id = new_id
        self.active: dict[str, dict[str, Any]] = {}
        # Causes changed since the rule state was last taken (hub/rules/store.py writes only
        # those); None: any may have changed (restored, clock shifted).
        self.touched: set[str] | None = None

    def is_active(self, cause: str) -> bool:
        return cause in self.active

    def _msg(self, kind: str, msg_id: str, device: str | None, type_: str, priority: int,
             now: float, **fields: Any) -> Outgoing:
        payload = mqtt_schema.message(kind, msg_id, self.site, device, type_, priority,
                                      iso(now, self.tz), **fields)
        return Outgoing(kind, device, priority, payload)

    def raise_(self, cause: str, kind: str, type_: str, device: str | None, priority: int,
               now: float, *, expires_at: float | None = None, alarm_id: str | None = None,
               **fields: Any) -> list[Outgoing]:
        """Raise unless already active. `expires_at`: the book forgets it then without a clear
        message (alarm button: cancellable by the resident only for a while; after that the
        response centre owns it). `alarm_id`: the id the event brings (Report.advert_id);
        else a new one."""
        if cause in self.active:
            return []
        alarm_id = alarm_id or self.new_id()
        self._touch(cause)
        self.active[cause] = {
            "alarm_id": alarm_id, "kind": kind, "type": type_, "device": device,
            "priority": priority, "raised_at": now, "acknowledged_at": None,
            "acknowledged_by": None, "reminders": 0, "expires_at": expires_at,
            "fields": fields,
        }
        return [self._msg(kind, alarm_id, device, type_, priority, now, alarm_id=alarm_id,
                          state="raised", cause=cause, **fields)]

    def remind(self, cause: str, now: float, **fields: Any) -> list[Outgoing]:
        a = self.active.get(cause)
        if a is None:
            return []
        a["reminders"] += 1
        self._touch(cause)
        return [self._msg(a["kind"], f"{a['alarm_id']}.r{a['reminders']}", a["device"],
                          a["type"], a["priority"], now, alarm_id=a["alarm_id"],
                          state="reminder", cause=cause, raised=iso(a["raised_at"], self.tz),
                          **fields)]

    def clear(self, cause: str, now: float, reason: str, **fields: Any) -> list[Outgoing]:
        a = self.active.pop(cause, None)
        if a is None:
            return []
        self._touch(cause)
        kind = "alarm_cleared" if a["kind"] == CARE else a["kind"]
        return [self._msg(kind, f"{a['alarm_id']}.cleared", a["device"], a["type"],
                          a["priority"], now, alarm_id=a["alarm_id"], state="cleared",
                          cause=cause, reason=reason, raised=iso(a["raised_at"], self.tz),
                          **fields)]

    def acknowledge(self, alarm_id: str, now: float, by: str) -> list[Outgoing]:
        for cause, a in self.active.items():
            if a["alarm_id"] == alarm_id and a["acknowledged_at"] is None:
                a["acknowledged_at"] = now
                a["acknowledged_by"] = by
                self._touch(cause)
                return [self._msg("status", f"{alarm_id}.ack", a["device"], a["type"],
                                  mqtt_schema.PRIORITY_INFO, now, alarm_id=alarm_id,
                                  state="acknowledged", cause=cause, by=by)]
        return []

    def expire(self, now: float) -> None:
        for cause in [c for c, a in self.active.items()
                      if a["expires_at"] is not None and now >= a["expires_at"]]:
            del self.active[cause]
            self._touch(cause)

    def _touch(self, cause: str) -> None:
        if self.touched is not None:
            self.touched.add(cause)

    def shift(self, delta: float, since: float) -> None:
        """The wall clock stepped (RuleEngine.clock_stepped): instants move with it."""
        self.touched = None
        for a in self.active.values():
            for k in ("raised_at", "acknowledged_at", "expires_at"):
                v = a.get(k)
                if v is not None and v > since:
                    a[k] = v + delta

    def event(self, type_: str, device: str | None, now: float,
              priority: int = mqtt_schema.PRIORITY_INFO, kind: str = "event",
              **fields: Any) -> list[Outgoing]:
        """A one-off message: "event" (stays local unless routed) or "status" (leaves)."""
        return [self._msg(kind, self.new_id(), device, type_, priority, now, **fields)]

    def listing(self, now: float) -> list[dict[str, Any]]:
        return [
            {"alarm_id": a["alarm_id"], "cause": c, "kind": a["kind"], "type": a["type"],
             "device": a["device"], "priority": a["priority"],
             "raised": iso(a["raised_at"], self.tz), "age_s": round(now - a["raised_at"], 1),
             "acknowledged_by": a["acknowledged_by"]}
            for c, a in sorted(self.active.items(), key=lambda kv: kv[1]["raised_at"])
        ]
