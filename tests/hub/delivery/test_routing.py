"""Alarm routing: the response centre gets everything unless narrowed; other receivers get
copies of only what their route selects, on their own topic, with their own message id."""

from __future__ import annotations

from pathlib import Path

from hub.delivery.routing import Route, route
from hub.rules.outgoing import Outgoing


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


# -- [mqtt] delivery settings and route delivery rules: ranges, named by file, line, field ----
import pytest  # noqa: E402

from hub.config import settings as config  # noqa: E402

BASE = """\
[site]
id = "{site}"

[hub]
id = "hub-7"

[mqtt]
{mqtt}

[radio]
kind = "virtual"
"""


def _problems(tmp_path: Path, mqtt: str = "", site: str = "home-7", tail: str = "") -> str:
    path = tmp_path / "hub.toml"
    path.write_text(BASE.format(site=site, mqtt=mqtt) + tail)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    return str(e.value)


@pytest.mark.parametrize("line,field", [
    ("window = 0", "mqtt.window"),  # stored alarms and never published
    ("keepalive = -1", "mqtt.keepalive"),  # crashed at start
    ("keepalive = 0", "mqtt.keepalive"),  # a dead link would never be noticed
    ("window = 100000", "mqtt.window"),
    ("port = 0", "mqtt.port"),
    ("receipt_timeout_s = 0", "mqtt.receipt_timeout_s"),
    ("receipt_timeout_s = 1e9", "mqtt.receipt_timeout_s"),
    ("heartbeat_s = 0", "mqtt.heartbeat_s"),
    ('window = "20"', "mqtt.window"),
])
def test_delivery_settings_out_of_range_name_file_line_and_field(
    tmp_path: Path, line: str, field: str,
) -> None:
    text = _problems(tmp_path, line)
    assert f"hub.toml:8: {field}:" in text, text


@pytest.mark.parametrize("site", ["home/7", "home+", "home#", "home 7", "x" * 65, ""])
def test_site_id_must_be_topic_safe(tmp_path: Path, site: str) -> None:
    text = _problems(tmp_path, site=site)
    assert "hub.toml:2: site.id:" in text, text


def test_receipt_key_file_is_checked(tmp_path: Path) -> None:
    key = tmp_path / "receipt.key"
    key.write_text("00" * 32 + "\n")
    key.chmod(0o644)
    text = _problems(tmp_path, 'receipt_key_file = "receipt.key"')
    assert "hub.toml:8: mqtt.receipt_key_file:" in text and "chmod 600" in text
    key.write_text("abc\n")
    key.chmod(0o600)
    assert "hex" in _problems(tmp_path, 'receipt_key_file = "receipt.key"')
    key.write_text("ab" * 32 + "\n")
    (tmp_path / "hub.toml").write_text(BASE.format(site="home-7", mqtt='receipt_key_file = '
                                                   '"receipt.key"'))
    cfg = config.load(tmp_path / "hub.toml")
    assert cfg.mqtt.receipt_key_file == key


def test_routes_say_whether_their_receiver_confirms(tmp_path: Path) -> None:
    key = tmp_path / "rel.key"
    key.write_text("cd" * 32 + "\n")
    key.chmod(0o600)
    tail = ('\n[[route]]\nreceiver = "relatives"\nconfirms = true\n'
            'receipt_key_file = "rel.key"\n\n[[route]]\nreceiver = "homecare"\n')
    (tmp_path / "hub.toml").write_text(BASE.format(site="home-7", mqtt="") + tail)
    cfg = config.load(tmp_path / "hub.toml")
    assert cfg.mqtt.receivers == (config.Receiver("relatives", True, key),
                                  config.Receiver("homecare", False, None))
    bad = '\n[[route]]\nreceiver = "relatives"\nconfirms = "yes"\n'
    assert "hub.toml:15: route[0].confirms:" in _problems(tmp_path, tail=bad)
    centre = '\n[[route]]\nreceiver = "centre"\nconfirms = false\n'
    assert "route[0].confirms:" in _problems(tmp_path, tail=centre)
    # A receiver that confirms without a key would take receipts from anyone on its topic.
    unsigned = '\n[[route]]\nreceiver = "relatives"\nconfirms = true\n'
    assert "hub.toml:13: route[0].receipt_key_file: a receiver that confirms signs" in \
        _problems(tmp_path, tail=unsigned)
