"""When to recover the radio: pure decisions from what the scanner heard and when.

BlueZ scanners stall without telling anyone (bluez#1126, #1554), adapters vanish and come back,
and discovery calls fail with InProgress/NotReady. The only dependable symptom of a stall is
silence, so the watchdog watches two things: errors the scanner reports, and the time since the
last advert of any kind. Recovery climbs a ladder (restart the scan, then power-cycle the adapter)
with exponential back-off, and a hub that stays deaf past a limit raises a technical alarm: a home
whose alarm button cannot be heard must be visited. The pattern follows habluetooth's scanner
watchdog (see shared/notes/reliability.md section 1.3). No I/O and no clock here: `now` comes in.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass


class Action(enum.Enum):
    NONE = "none"
    RESTART_SCAN = "restart_scan"
    POWER_CYCLE = "power_cycle"


@dataclass(frozen=True)
class WatchdogSettings:
    # Silence after which the scan is restarted. A restart costs a few milliseconds of not
    # scanning, so it is done early (habluetooth's 90 s) even though a quiet home can be this
    # silent: a stalled scan must not sit on an alarm button for a heartbeat interval.
    silence_s: float = 90.0
    # Silence that is abnormal for this home (longer than the gap between heartbeats): only
    # then, or on errors, does the adapter get power-cycled (`for_heartbeats`).
    power_cycle_silence_s: float = 180.0
    # Silence after which the response centre is told the home is unprotected.
    deaf_alarm_s: float = 600.0
    # First wait between two recoveries; doubles each time nothing comes back.
    backoff_s: float = 2.0
    backoff_max_s: float = 300.0
    # Scan restarts tried before the adapter is power-cycled (then the ladder repeats).
    restarts_before_power_cycle: int = 1


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    raise_deaf: bool = False  # the deaf alarm starts now
    clear_deaf: bool = False  # the radio hears again after a deaf alarm
    routine: bool = False  # a precaution in a quiet home, not a sign of trouble


class Watchdog:
    def __init__(self, settings: WatchdogSettings, now: float, expect_adverts: bool = True) -> None:
        self.s = settings
        self.expect_adverts = expect_adverts
        self.last_heard = now  # start counts as heard: give the first scan a full period
        self.last_recovery = now
        self.attempts = 0  # recoveries since the radio last heard anything
        self.deaf = False
        self._deaf_reported = False
        self._error: str | None = None
        self._error_since = now
        self._trouble = False  # an error or abnormal silence since the radio last heard
        self._next_allowed = now
        self.counts: Counter[str] = Counter()

    # -- what happened ------------------------------------------------------------------------
    def heard(self, now: float) -> None:
        self.last_heard = now
        if self._trouble:
            self.counts["recovered"] += 1
            self._trouble = False
        self.attempts = 0
        self._error = None
        self._next_allowed = now

    def error(self, now: float, kind: str) -> None:
        """The scanner reports it is broken (adapter gone, discovery refused, ...)."""
        self.counts[f"error_{kind}"] += 1
        if self._error is None:
            self._error_since = now
        self._error = kind

    def adapter_returned(self, now: float) -> None:
        """The adapter (re)appeared: scan on it now, from the bottom of the ladder."""
        self._error = "adapter_returned"
        self.attempts = 0
        self._next_allowed = now

    def scanning(self, now: float) -> None:
        """A scan (re)started without an error: the error, if any, is dealt with."""
        self._error = None

    # -- what to do ---------------------------------------------------------------------------
    def backoff(self) -> float:
        return float(min(self.s.backoff_max_s, self.s.backoff_s * (2 ** max(0, self.attempts - 1))))

    def poll(self, now: float) -> Decision:
        raise_deaf = clear_deaf = False
        silent_for = now - self.last_heard
        # With no devices provisioned, silence is normal; a radio broken for as long is not.
        deaf = (self.expect_adverts and silent_for >= self.s.deaf_alarm_s) or (
            self._error is not None and now - self._error_since >= self.s.deaf_alarm_s
        )
        if deaf and not self._deaf_reported:
            self._deaf_reported = raise_deaf = True
            self.counts["deaf_alarm"] += 1
        elif not deaf and self._deaf_reported:
            self._deaf_reported = False
            clear_deaf = True
        self.deaf = self._deaf_reported

        reason = ""
        if self._error is not None:
            reason = self._error
        elif self.expect_adverts and now - max(self.last_heard, self.last_recovery) >= (
            self.s.silence_s
        ):
            reason = "silence"
        if not reason or now < self._next_allowed:
            return Decision(Action.NONE, reason, raise_deaf, clear_deaf)

        rung = self.attempts % (self.s.restarts_before_power_cycle + 1)
        action = (
            Action.POWER_CYCLE if rung == self.s.restarts_before_power_cycle else Action.RESTART_SCAN
        )
        routine = reason == "silence" and now - self.last_heard < self.s.power_cycle_silence_s
        if routine:
            action = Action.RESTART_SCAN  # silence this short may just be a quiet home
        else:
            self._trouble = True
        self.attempts += 1
        self.last_recovery = now
        self._next_allowed = now + self.backoff()
        self.counts["quiet_restart" if routine else action.value] += 1
        return Decision(action, reason, raise_deaf, clear_deaf, routine)


def for_heartbeats(
    heartbeats_s: list[float], silence_s: float = 90.0, deaf_alarm_s: float | None = None
) -> WatchdogSettings:
    """Settings for a home whose devices send heartbeats at these intervals (at least every
    heartbeat_s each, more often when something happens). The longest normal silence is about
    the shortest heartbeat; beyond it something is wrong with the radio, not the home."""
    if not heartbeats_s:
        return WatchdogSettings(silence_s=silence_s, power_cycle_silence_s=2 * silence_s,
                                deaf_alarm_s=deaf_alarm_s or 600.0)
    gap = 1.25 * min(heartbeats_s)  # timer drift and a missed advert or two
    power_cycle = max(2 * silence_s, gap)
    return WatchdogSettings(
        silence_s=silence_s,
        power_cycle_silence_s=power_cycle,
        deaf_alarm_s=deaf_alarm_s if deaf_alarm_s is not None else max(600.0, 2 * gap),
    )
