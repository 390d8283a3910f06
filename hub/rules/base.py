"""What every rule sees: the alarm book, the site zone and the devices; its own state dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from hub.rules.alarms import AlarmBook
from hub.rules.outgoing import Outgoing

if TYPE_CHECKING:
    from hub.config.settings import Device
    from hub.decode.decoder import Report

State = dict[str, Any]  # JSON-serialisable: persisted between restarts

# A report handled within this many seconds of its own time is news, whatever its time says
# (after a clock step the newest report may carry an "older" time than the state it replaces).
# Only a report that waited longer and is older than what a rule already knows is late.
FRESH_S = 2.0


@dataclass
class Ctx:
    book: AlarmBook
    tz: ZoneInfo
    devices: Mapping[str, Device]
    # device id -> time of its latest activity (hub/rules/care.py Activity), for rules that
    # start without history of their own
    activity: Mapping[str, float] = field(default_factory=dict)


class Rule(Protocol):
    key: str  # stable across restarts and reloads: the state is filed under it

    def on_report(self, ctx: Ctx, st: State, report: Report, changed: dict[str, int],
                  now: float) -> list[Outgoing]: ...

    def tick(self, ctx: Ctx, st: State, now: float) -> list[Outgoing]: ...

    def causes(self) -> set[str]:
        """Alarm causes this rule may have raised (to clear them if the rule is removed)."""
        ...

    def shift(self, st: State, delta: float, since: float) -> None:
        """The wall clock stepped by `delta`: move the instants in `st` recorded at or after
        `since` (in the old time base) with it, so that durations stay real durations."""
        ...


def event_time(report: Report, now: float) -> float:
    """When the reported thing happened: the report's own time, never later than now."""
    return min(float(report.time), now)


def is_late(t: float, known: Any, now: float) -> bool:
    """A report of time `t` is late if a rule already holds newer state (from time `known`)
    and the report is not fresh news: it cannot undo that newer state."""
    return known is not None and t < float(known) and now - t > FRESH_S


def moved(value: Any, delta: float, since: float) -> Any:
    """`value` shifted by `delta` if it is an instant after `since`; else unchanged."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > since:
        return value + delta
    return value


def shift_keys(d: dict[str, Any], keys: tuple[str, ...], delta: float, since: float) -> None:
    for k in keys:
        if k in d:
            d[k] = moved(d[k], delta, since)
