"""Time-of-day windows in the site's time zone, with days of week, possibly crossing midnight.

A window is named by the day it starts on: "mon 22:00-06:00" is Monday night into Tuesday.
Wall-clock times are turned into instants with zoneinfo, so on the night daylight saving time
starts or ends a window lasts an hour less or more, as it does on the nurse's watch. A start
time that does not exist that night (02:30 when clocks jump 02:00 -> 03:00) maps to the instant
the clocks jump past it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = frozenset(range(7))


class WindowError(ValueError):
    pass


@dataclass(frozen=True)
class Window:
    start_min: int  # minutes after local midnight, 0..1439
    end_min: int  # 1..1440; <= start_min means the window ends the next day
    days: frozenset[int] = ALL_DAYS  # weekday (0 = Monday) the window starts on

    @property
    def crosses_midnight(self) -> bool:
        return self.end_min <= self.start_min

    def occurrences(self, after: float, tz: ZoneInfo, limit_days: int = 9) -> Iterator[tuple[float, float]]:
        """Occurrences (start, end) in epoch seconds whose end is after `after`, in order."""
        first = datetime.fromtimestamp(after, tz).date() - timedelta(days=1)
        for i in range(limit_days):
            d = first + timedelta(days=i)
            if d.weekday() not in self.days:
                continue
            s = _instant(d, self.start_min, tz)
            end_day = d + timedelta(days=1) if self.crosses_midnight else d
            e = _instant(end_day, self.end_min, tz)
            if e > after:
                yield s, e

    def containing(self, ts: float, tz: ZoneInfo) -> tuple[float, float] | None:
        """The occurrence that contains instant `ts` (start inclusive, end exclusive)."""
        for s, e in self.occurrences(ts, tz, limit_days=3):
            if s <= ts < e:
                return s, e
            if s > ts:
                return None
        return None

    def next_opening(self, ts: float, tz: ZoneInfo) -> tuple[float, float] | None:
        """The occurrence containing `ts`, or else the next one to start."""
        for s, e in self.occurrences(ts, tz):
            return s, e
        return None

    def __str__(self) -> str:
        days = "" if self.days == ALL_DAYS else ",".join(DAYS[d] for d in sorted(self.days)) + " "
        return f"{days}{_hhmm(self.start_min)}-{_hhmm(self.end_min)}"


def _instant(d: date, minute: int, tz: ZoneInfo) -> float:
    if minute >= 1440:
        d, minute = d + timedelta(days=1), minute - 1440
    local = datetime.combine(d, time(minute // 60, minute % 60), tz)
    t = local.timestamp()
    # Round trip to see whether the wall time exists that night (spring forward skips an hour).
    if datetime.fromtimestamp(t, tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return t
    # Non-existent: fold=0 put us as far past the jump as the wall time is into the gap; step
    # back minute by minute (gaps are at most a couple of hours) to the jump itself.
    offset = datetime.fromtimestamp(t, tz).utcoffset()
    while datetime.fromtimestamp(t - 60, tz).utcoffset() == offset:
        t -= 60
    return t


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_clock(text: str, allow_24: bool = False) -> int:
    """"HH:MM" -> minutes after midnight."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise WindowError(f"{text!r} is not a time of day (HH:MM)")
    h, m = int(parts[0]), int(parts[1])
    if h == 24 and m == 0 and allow_24:
        return 1440
    if h > 23 or m > 59:
        raise WindowError(f"{text!r} is not a time of day (00:00-23:59)")
    return h * 60 + m


def parse_days(value: str | list[str]) -> frozenset[int]:
    """"mon-fri", "sat,sun", ["mon", "wed"], "all" -> weekday numbers."""
    items = value if isinstance(value, list) else value.replace(" ", "").split(",")
    days: set[int] = set()
    for item in items:
        item = str(item).strip().lower()
        if item in ("all", "daily", "*"):
            days.update(ALL_DAYS)
        elif "-" in item:
            a, _, b = item.partition("-")
            if a not in DAYS or b not in DAYS:
                raise WindowError(f"{item!r} is not a day range like mon-fri")
            i, j = DAYS.index(a), DAYS.index(b)
            days.update((i + k) % 7 for k in range((j - i) % 7 + 1))
        elif item in DAYS:
            days.add(DAYS.index(item))
        else:
            raise WindowError(f"{item!r} is not a day (mon, tue, ..., sun)")
    if not days:
        raise WindowError("no days given")
    return frozenset(days)


def parse_window(text: str, days: str | list[str] = "all") -> Window:
    """"20:30-06:00" (crossing midnight) or "08:00-22:00"; "00:00-24:00" is the whole day."""
    start, sep, end = text.partition("-")
    if not sep:
        raise WindowError(f"{text!r} is not a window like 20:30-06:00")
    s = parse_clock(start)
    e = parse_clock(end, allow_24=True)
    if s == e:
        raise WindowError(f"{text!r} is empty (start equals end); use 00:00-24:00 for all day")
    return Window(s, e, parse_days(days))
