"""Time is injected: logic takes `now` from a Clock and never reads the wall clock itself."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """For tests and simulations: time moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def iso(ts: float, tz: ZoneInfo) -> str:
    """ISO 8601 with the site's offset, millisecond precision."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="milliseconds")
