"""Hub side of the wearable's fall cancel window: a cancelled fall is a status the response
centre sees, never silence; every fall advert is an alarm (protocols/BTHOME.md)."""

from __future__ import annotations

from hub.decode.decoder import Report
from protocols import bthome, scaip
from tests.hub.rules.test_rules import Home, RulesConfig, at


def advert(h: Home, t: float, trigger: bool = True, **values: int) -> list[tuple[str, str]]:
    r = Report(h.devices["watch-1"], t, -60, dict(values), None, trigger=trigger)
    out = h.engine.on_report(r, t)
    return [(o.kind, o.payload["type"]) for o in out]


def test_cancelled_fall_is_a_status_not_an_alarm_and_not_silence() -> None:
    h = Home(RulesConfig())
    objs = dict((bthome.OBJECTS[oid][0], v) for oid, v in bthome.FALL_CANCELLED)
    assert objs == {"problem": 1, "button": bthome.BUTTON_CANCEL}
    assert advert(h, at("2026-11-26 10:00"), **objs) == [("status", "fall_cancelled")]
    # The next fall is a fall, although the hub still holds problem = 1.
    assert advert(h, at("2026-11-26 10:30"), problem=1) == [("alarm", "fall")]


def test_every_fall_advert_is_an_alarm_but_heartbeats_are_not() -> None:
    h = Home(RulesConfig())
    assert advert(h, at("2026-11-26 10:00"), problem=1) == [("alarm", "fall")]
    assert advert(h, at("2026-11-26 10:10"), trigger=False, problem=1, battery=80) == []
    assert advert(h, at("2026-11-26 11:00"), problem=1) == [("alarm", "fall")]


def test_cancelled_fall_has_scaip_codes() -> None:
    assert scaip.codes("fall_cancelled") == {"dty": scaip.DTY_FALL_DETECTOR, "stc": scaip.STC_CANCEL}


def test_plain_cancel_still_clears_the_latest_alarm() -> None:
    h = Home(RulesConfig())
    advert(h, at("2026-11-26 10:00"), problem=1)
    assert advert(h, at("2026-11-26 10:00:20"), button=bthome.BUTTON_CANCEL) == [("alarm_cleared", "fall")]


def test_with_the_cancel_gesture_switched_off_a_cancelled_fall_is_still_an_alarm() -> None:
    from hub.rules.settings import ButtonRule

    h = Home(RulesConfig(button=ButtonRule(cancel_event="")))
    objs = dict((bthome.OBJECTS[oid][0], v) for oid, v in bthome.FALL_CANCELLED)
    assert advert(h, at("2026-11-26 10:00"), **objs) == [("alarm", "fall")]
