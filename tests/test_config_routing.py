"""Alarm routing: the response centre gets everything unless narrowed; other receivers get
copies of only what their route selects, on their own topic, with their own message id."""

from __future__ import annotations

from hub.routing import Route, route
from hub.rules import Outgoing


def msg(kind: str, type_: str, priority: int) -> Outgoing:
    return Outgoing(kind, "d", priority, {"id": "m1", "alarm_id": "a1", "kind": kind,
                                          "type": type_, "priority": priority})


def test_default_alarms_and_status_to_the_centre_events_stay_home() -> None:
    for kind in ("alarm", "alarm_cleared", "technical_alarm", "status"):
        assert [t for t, _ in route("home", (), msg(kind, "x", 3))] == [
            f"tryggheim/v1/home/{kind}"]
    assert route("home", (), msg("event", "charging_reminder", 5)) == []


def test_relatives_get_copies_of_selected_alarms_only() -> None:
    routes = (Route("relatives", frozenset({"alarm", "alarm_cleared"}), max_priority=2),)
    alarm = route("home", routes, msg("alarm", "bed_exit", 2))
    assert [(t, o.msg_id) for t, o in alarm] == [
        ("tryggheim/v1/home/alarm", "m1"),
        ("tryggheim/v1/home/to/relatives/alarm", "m1:relatives")]
    assert alarm[1][1].payload["alarm_id"] == "a1"  # the same alarm, a different message
    assert alarm[0][1].payload["id"] == "m1"  # the original is not touched
    assert len(route("home", routes, msg("technical_alarm", "battery_low", 5))) == 1
    assert len(route("home", routes, msg("alarm", "test_alarm", 5))) == 1


def test_a_centre_route_narrows_what_leaves_for_the_centre() -> None:
    routes = (Route("centre", frozenset({"alarm", "alarm_cleared", "technical_alarm"})),)
    assert route("home", routes, msg("event", "charging_complete", 5)) == []
    assert len(route("home", routes, msg("alarm", "fall", 1))) == 1


def test_types_filter() -> None:
    routes = (Route("nurse", types=frozenset({"charging_reminder"})),)
    assert [t for t, _ in route("home", routes, msg("event", "charging_reminder", 5))] == [
        "tryggheim/v1/home/to/nurse/event"]
    both = routes + (Route("centre", frozenset({"alarm", "event"})),)
    assert [t for t, _ in route("home", both, msg("event", "charging_reminder", 5))] == [
        "tryggheim/v1/home/event", "tryggheim/v1/home/to/nurse/event"]
