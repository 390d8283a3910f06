"""The hub's clock: whether it is synchronised (the kernel's view, as timedatectl shows it),
and the messages the clock watch makes, which must validate like every published message."""

from __future__ import annotations

from hub.clock import (
    MAXERROR_UNSYNCED_US,
    STA_UNSYNC,
    TIME_ERROR,
    ClockWatch,
    ManualClock,
    SystemClock,
    kernel_synchronised,
    timex_synchronised,
)
from hub.rules.settings import RulesConfig
from tests.hub.rules.test_rules import QUIET, Home, at
from tests.protocols.test_mqtt_schema import errors


def test_what_counts_as_synchronised() -> None:
    assert timex_synchronised(0, 0x2001, 120_000)  # TIME_OK, PLL + nano, small error
    assert not timex_synchronised(0, STA_UNSYNC, 120_000)  # never disciplined since boot
    assert not timex_synchronised(0, 0, MAXERROR_UNSYNCED_US)  # no daemon for a long while
    assert not timex_synchronised(TIME_ERROR, 0, 1000)


def test_this_machine_can_be_asked_without_privileges() -> None:
    # Whatever this machine's state is, the question is answered, not raised.
    assert kernel_synchronised() in (True, False, None)
    assert SystemClock().synchronised() in (True, False, None)
    c = SystemClock()
    a = c.monotonic()
    assert c.monotonic() >= a


def test_clock_messages_validate_against_their_schemas() -> None:
    clock = ManualClock(at("2026-11-26 06:00"), synced=False)
    h = Home(RulesConfig(silent=QUIET))
    watch = ClockWatch(clock)
    out = watch.check(h.engine, clock.now())
    for _ in range(70):
        clock.advance(10)
        out += watch.check(h.engine, clock.now())
    clock.step(-90)
    clock.synced = True
    for _ in range(4):
        clock.advance(10)
        out += watch.check(h.engine, clock.now())
    types = [(o.kind, o.payload["type"], o.payload.get("state")) for o in out]
    assert types == [("technical_alarm", "clock_unsynchronised", "raised"),
                     ("event", "clock_stepped", None),
                     ("technical_alarm", "clock_unsynchronised", "cleared")]
    for o in out:
        assert errors(o.payload) == [], o.payload


def test_a_clock_without_monotonic_or_sync_status_is_left_alone() -> None:
    class Bare:
        def now(self) -> float:
            return 1_800_000_000.0

    h = Home(RulesConfig(silent=QUIET))
    watch = ClockWatch(Bare())
    assert watch.check(h.engine, 1_800_000_000.0) == []
    assert watch.check(h.engine, 1_800_000_000.0 - 3600) == []  # no monotonic: no step known
