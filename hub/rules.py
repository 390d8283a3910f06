"""Rules: reports in, outgoing messages out. Pure: time comes in as an argument."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from hub.clock import iso
from hub.decode import Report
from protocols import bthome, mqtt_schema


@dataclass(frozen=True, slots=True)
class Outgoing:
    kind: str
    device: str | None
    priority: int
    payload: dict[str, Any]

    @property
    def msg_id(self) -> str:
        return str(self.payload["id"])


def new_id() -> str:
    return uuid.uuid4().hex


class RuleEngine:
    def __init__(self, site: str, tz: ZoneInfo, id_factory: Callable[[], str] = new_id) -> None:
        self.site = site
        self.tz = tz
        self.new_id = id_factory

    def _message(
        self, kind: str, report: Report, type_: str, priority: int, now: float, **fields: Any
    ) -> Outgoing:
        payload = mqtt_schema.message(
            kind, self.new_id(), self.site, report.device.id, type_, priority, iso(now, self.tz),
            **fields,
        )
        return Outgoing(kind, report.device.id, priority, payload)

    def on_report(self, report: Report, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        button = report.values.get("button")
        if report.device.role in ("pendant", "wearable") and button in (
            bthome.BUTTON_PRESS,
            bthome.BUTTON_LONG_PRESS,
        ):
            out.append(
                self._message(
                    "alarm", report, "alarm_button", mqtt_schema.PRIORITY_CRITICAL, now,
                    state="raised", room=report.device.room,
                    trigger=bthome.BUTTON_EVENT_NAMES[button],
                )
            )
        return out
