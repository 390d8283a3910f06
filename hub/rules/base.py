"""What every rule sees: the alarm book, the site zone and the devices; its own state dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from hub.rules.alarms import AlarmBook
from hub.rules.outgoing import Outgoing

if TYPE_CHECKING:
    from hub.config import Device
    from hub.decode import Report

State = dict[str, Any]  # JSON-serialisable: persisted between restarts


@dataclass
class Ctx:
    book: AlarmBook
    tz: ZoneInfo
    devices: Mapping[str, Device]


class Rule(Protocol):
    key: str  # stable across restarts and reloads: the state is filed under it

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]: ...

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]: ...

    def causes(self) -> set[str]:
        """Alarm causes this rule may have raised (to clear them if the rule is removed)."""
        ...
