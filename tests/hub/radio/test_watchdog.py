"""The radio watchdog's decisions, on a virtual timeline (pure logic, no radio)."""

from __future__ import annotations

from hub.radio.watchdog import Action, Watchdog, WatchdogSettings, for_heartbeats

S = WatchdogSettings(silence_s=90, power_cycle_silence_s=180, deaf_alarm_s=600, backoff_s=2,
                     backoff_max_s=16, restarts_before_power_cycle=1)


def actions(wd: Watchdog, start: float, end: float, step: float = 1.0) -> list[tuple[float, Action]]:
    out = []
    t = start
    while t <= end:
        d = wd.poll(t)
        if d.action is not Action.NONE:
            out.append((t, d.action))
        t += step
    return out


def test_silence_climbs_the_ladder_restart_then_power_cycle() -> None:
    wd = Watchdog(S, now=0)
    assert actions(wd, 0, 89) == []
    # 90 s of silence: restart the scan; 90 s more: power-cycle the adapter; then again.
    assert actions(wd, 90, 400) == [
        (90, Action.RESTART_SCAN), (180, Action.POWER_CYCLE), (270, Action.RESTART_SCAN),
        (360, Action.POWER_CYCLE),
    ]
    # The first restart is a precaution (a quiet home can be silent for 90 s), not trouble.
    assert wd.counts["quiet_restart"] == 1 and wd.counts["restart_scan"] == 1
    assert wd.counts["power_cycle"] == 2


def test_hearing_anything_resets_the_ladder_and_counts_a_recovery() -> None:
    wd = Watchdog(S, now=0)
    assert wd.poll(90).action is Action.RESTART_SCAN
    assert wd.poll(180).action is Action.POWER_CYCLE
    wd.heard(200)
    assert wd.counts["recovered"] == 1
    assert actions(wd, 201, 289) == []
    assert wd.poll(290).action is Action.RESTART_SCAN  # bottom rung again
    wd.heard(291)
    assert wd.counts["recovered"] == 1  # a precautionary restart in silence is no recovery


def test_errors_act_at_once_then_back_off_exponentially_up_to_the_cap() -> None:
    wd = Watchdog(S, now=0)
    times = []
    t = 10.0
    wd.error(t, "InProgress")
    while t < 80:
        d = wd.poll(t)
        if d.action is not Action.NONE:
            times.append(t)
            wd.error(t, "InProgress")  # the recovery failed again
        t += 0.5
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 10.0
    assert gaps[:5] == [2.0, 4.0, 8.0, 16.0, 16.0]
    assert wd.counts["error_InProgress"] == len(times) + 1


def test_a_successful_restart_clears_the_error() -> None:
    wd = Watchdog(S, now=0)
    wd.error(5, "NotReady")
    assert wd.poll(5).action is Action.RESTART_SCAN
    wd.scanning(5.1)
    assert actions(wd, 6, 94) == []  # only silence counts now, from the recovery on


def test_returning_adapter_is_used_at_once_even_during_back_off() -> None:
    wd = Watchdog(S, now=0)
    for t in (1.0, 3.0, 7.0):
        wd.error(t, "adapter_gone")
        assert wd.poll(t).action is not Action.NONE
    wd.error(7.5, "adapter_gone")
    assert wd.poll(8).action is Action.NONE  # backing off
    wd.adapter_returned(8.5)
    assert wd.poll(8.5).action is Action.RESTART_SCAN


def test_deaf_alarm_once_when_silent_too_long_and_cleared_when_heard() -> None:
    wd = Watchdog(S, now=0)
    raised = [t for t in range(0, 1200, 10) if wd.poll(t).raise_deaf]
    assert raised == [600]
    assert wd.deaf and wd.counts["deaf_alarm"] == 1
    wd.heard(1200)
    d = wd.poll(1200)
    assert d.clear_deaf and not d.raise_deaf and not wd.deaf
    assert not wd.poll(1201).clear_deaf


def test_without_devices_silence_is_normal_but_errors_are_not() -> None:
    wd = Watchdog(S, now=0, expect_adverts=False)
    assert actions(wd, 0, 2000, 10) == []
    assert not wd.deaf
    wd.error(2000, "adapter_gone")
    d = wd.poll(2000)
    assert d.action is Action.RESTART_SCAN and not d.raise_deaf
    # An adapter that stays broken is a deaf hub even with nothing provisioned yet.
    raised = []
    for t in range(2001, 3000):
        wd.error(t, "adapter_gone")  # every recovery fails
        if wd.poll(t).raise_deaf:
            raised.append(t)
    assert raised == [2600]


def test_quiet_home_gets_scan_restarts_but_no_power_cycles_or_alarms() -> None:
    """Two devices with the default 10-minute heartbeat: minutes of silence are normal."""
    s = for_heartbeats([600, 600])
    assert (s.silence_s, s.power_cycle_silence_s, s.deaf_alarm_s) == (90, 750, 1500)
    wd = Watchdog(s, now=0)
    t = 0.0
    for gap in (590, 610, 300, 599):  # heartbeats, irregular as timers and radio make them
        for _, action in actions(wd, t + 1, t + gap):
            assert action is Action.RESTART_SCAN
        assert not wd.deaf
        t += gap
        wd.heard(t)
    assert wd.counts["power_cycle"] == 0 and wd.counts["restart_scan"] == 0
    assert wd.counts["quiet_restart"] > 0 and wd.counts["recovered"] == 0
    # Then nothing at all: past the normal gap the adapter is power-cycled, later the alarm.
    late = actions(wd, t + 1, t + 1600)
    assert any(a is Action.POWER_CYCLE for _, a in late)
    assert all(at - t >= 750 for at, a in late if a is Action.POWER_CYCLE)
    assert wd.deaf


def test_settings_without_devices() -> None:
    s = for_heartbeats([], silence_s=60)
    assert (s.silence_s, s.power_cycle_silence_s, s.deaf_alarm_s) == (60, 120, 600)
    assert for_heartbeats([60], deaf_alarm_s=300).deaf_alarm_s == 300
