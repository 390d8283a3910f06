"""[radio] settings for the bleak scanner: parsed, defaulted, and bad values named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import settings as config
from hub.config.settings import RadioSettings
from hub.radio.watchdog import for_heartbeats

BASE = """
[site]
id = "home-1"
[hub]
id = "hub-1"
"""


def test_radio_settings_parsed_and_defaulted(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    f.write_text(BASE)
    assert config.load(f).radio == RadioSettings()
    f.write_text(BASE + """
[radio]
kind = "bleak"
adapter = "hci1"
scan_mode = "active"
watchdog_s = 120
deaf_alarm_s = 900
ack_connections = 3
""")
    r = config.load(f).radio
    assert (r.adapter, r.scan_mode, r.watchdog_s, r.deaf_alarm_s, r.ack_connections) == (
        "hci1", "active", 120, 900, 3)


def test_bad_radio_settings_name_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    f.write_text(BASE + """
[radio]
scan_mode = "sometimes"
watchdog_s = 1
ack_connections = 0
antenna = "big"
""")
    with pytest.raises(config.ConfigError) as e:
        config.load(f)
    text = str(e.value)
    for field in ("radio.scan_mode", "radio.watchdog_s", "radio.ack_connections",
                  "radio.antenna"):
        assert field in text
    assert str(f) in text


def test_deaf_alarm_defaults_follow_the_heartbeats() -> None:
    # One door sensor reporting every 10 minutes: 25 minutes of silence before the alarm.
    assert for_heartbeats([600]).deaf_alarm_s == 1500
    # Frequent reporters: never below 10 minutes (a technical alarm must not cry wolf).
    assert for_heartbeats([60, 120]).deaf_alarm_s == 600
    assert for_heartbeats([600], deaf_alarm_s=300).deaf_alarm_s == 300
