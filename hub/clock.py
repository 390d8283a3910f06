"""Time is injected: logic takes `now` from a Clock and never reads the wall clock itself.

A Raspberry Pi has no real-time clock: it boots with the time it saved at shutdown and steps
to network time when that arrives, and NTP may step a running clock. `ClockWatch` compares
the wall clock with the monotonic clock on every rule tick: a step moves the rule engine's
instants with it (durations stay real), and a clock that is not synchronised is a technical
alarm. docs/ADMIN.md "The hub's clock" says what happens in each case.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from datetime import datetime
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

M = TypeVar("M")  # the messages a ClockFollower answers with (the rules' Outgoing)


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def synchronised(self) -> bool | None:
        return kernel_synchronised()


class ManualClock:
    """For tests and simulations: time moves only when told to. `step()` moves the wall
    clock alone (as NTP stepping it would); `synced` is what `synchronised()` answers."""

    def __init__(self, start: float = 0.0, synced: bool | None = True) -> None:
        self.t = start
        self.synced = synced
        self._stepped = 0.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - self._stepped

    def synchronised(self) -> bool | None:
        return self.synced

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def step(self, seconds: float) -> None:
        self.t += seconds
        self._stepped += seconds


def iso(ts: float, tz: ZoneInfo) -> str:
    """ISO 8601 with the site's offset, millisecond precision."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="milliseconds")


# -- is the clock synchronised? -------------------------------------------------------------

class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h); only the leading fields are read, the tail is padding.
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11),
    ]


STA_UNSYNC = 0x0040
TIME_ERROR = 5
MAXERROR_UNSYNCED_US = 16_000_000  # the kernel's NTP_PHASE_LIMIT: "no idea"


def timex_synchronised(rc: int, status: int, maxerror_us: int) -> bool:
    """What `timedatectl` shows as "System clock synchronized": systemd-timesyncd and chrony
    both tell the kernel (adjtimex) when they have disciplined the clock; the kernel marks it
    unsynchronised again when no daemon has for a while (maxerror grows to 16 s)."""
    return rc != TIME_ERROR and not status & STA_UNSYNC and maxerror_us < MAXERROR_UNSYNCED_US


_libc: ctypes.CDLL | None = None


def kernel_synchronised() -> bool | None:
    """The kernel's view via a read-only adjtimex(2); None where it cannot be asked."""
    global _libc
    try:
        if _libc is None:
            # find_library runs ldconfig: once, not on every check in the event loop.
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        tx = _Timex()  # modes = 0: read only, needs no privilege
        rc = _libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError, TypeError):
        return None
    if rc < 0:
        return None
    return timex_synchronised(rc, tx.status, tx.maxerror)


# -- watching the clock for the rules ---------------------------------------------------------

class ClockFollower(Protocol[M]):
    """What ClockWatch tells about the clock: the rule engine (hub/rules/engine.py), which
    this module must not import, since the rules take their time from here."""

    def newest_instant(self) -> float | None: ...

    def clock_stepped(self, delta: float, since: float, now: float) -> list[M]: ...

    def clock_sync(self, synchronised: bool, now: float, **fields: Any) -> list[M]: ...


class ClockWatch:
    """Feeds the rule engine what the clock does. Call `check(engine, now)` before each
    `engine.tick(now)`; it needs a clock with `monotonic()` (step detection) and
    `synchronised()` (sync status), and does nothing for either where the clock has none."""

    STEP_S = 2.0  # NTP slews smaller errors (at most 0.5 ms per second); a jump is a step
    CHECK_EVERY_S = 30.0
    # A Pi with network has network time within a minute of booting: unsynchronised for
    # longer is a problem someone must look at.
    UNSYNC_GRACE_S = 600.0

    def __init__(self, clock: Clock) -> None:
        self._mono = getattr(clock, "monotonic", None)
        self._sync = getattr(clock, "synchronised", None)
        self._last: tuple[float, float] | None = None  # (wall, monotonic) at the last check
        self.since: float | None = None  # wall time (current base) the hub's run started
        self.steps: list[float] = []
        self.synchronised: bool | None = None
        self._unsynced_at: float | None = None  # monotonic
        self._next_sync_check = float("-inf")

    def check(self, engine: ClockFollower[M], now: float) -> list[M]:
        out: list[M] = []
        mono = self._mono() if self._mono is not None else now
        if self._last is None:
            newest = engine.newest_instant()
            # The clock behind what the hub saved: a boot without network time. What was
            # recorded before the start is in true time and must not move with a step.
            # `since` is exclusive: what was recorded at the start itself is of this run.
            self.since = newest if newest is not None and newest >= now else now - 1e-3
            if newest is not None and now < newest - self.STEP_S and self._sync is not None:
                out += engine.clock_sync(False, now, reason="behind_saved_state",
                                         behind_s=round(newest - now))
        elif self._mono is not None:
            w0, m0 = self._last
            step = (now - w0) - (mono - m0)
            if abs(step) >= self.STEP_S and self.since is not None:
                self.steps.append(step)
                out += engine.clock_stepped(step, self.since, now)
                self.since += step
        self._last = (now, mono)
        if self._sync is not None and mono >= self._next_sync_check:
            self._next_sync_check = mono + self.CHECK_EVERY_S
            self.synchronised = self._sync()
            if self.synchronised is True:
                self._unsynced_at = None
                out += engine.clock_sync(True, now)
            elif self.synchronised is False:
                if self._unsynced_at is None:
                    self._unsynced_at = mono
                if mono - self._unsynced_at >= self.UNSYNC_GRACE_S:
                    out += engine.clock_sync(False, now, reason="not_synchronised",
                                             minutes=round((mono - self._unsynced_at) / 60))
        return out
