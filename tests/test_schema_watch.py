"""The schema watch in tests/conftest.py: it must catch what does not match."""

from __future__ import annotations

import json

from protocols import mqtt_schema
from tests.conftest import hub_kind, schema_problems


def _alarm(**over: object) -> bytes:
    msg = mqtt_schema.message("alarm", "a1", "site-1", "d1", "fall", 1,
                              "2026-01-01T00:00:00.000+01:00", state="raised", alarm_id="a1")
    msg.update(over)
    return json.dumps(msg).encode()


def test_watch_validates_hub_topics_and_ignores_the_rest() -> None:
    assert hub_kind("tryggheim/v1/s/alarm") == "alarm"
    assert hub_kind("tryggheim/v1/s/event/door-1") == "event"
    assert hub_kind("tryggheim/v1/s/to/relatives/alarm") == "alarm"
    assert hub_kind("tryggheim/v1/s/receipt") is None
    assert hub_kind("tryggheim/v1/s/command") is None
    assert hub_kind("other/topic") is None
    assert schema_problems("tryggheim/v1/s/alarm", _alarm()) == []
    assert schema_problems("tryggheim/v1/s/alarm", _alarm(priority=7))
    assert schema_problems("tryggheim/v1/s/to/r/alarm", _alarm(id="a1@r"))
    assert schema_problems("tryggheim/v1/s/to/r/alarm", _alarm(id="a1:r")) == []
    assert schema_problems("tryggheim/v1/s/status", _alarm())  # kind does not match topic
    assert schema_problems("tryggheim/v1/s/alarm", b"not json")


def test_the_three_mismatches_the_hub_used_to_publish_now_validate() -> None:
    # As RuleEngine.test_alarm makes it: priority 5, state "test", no alarm_id.
    test_alarm = mqtt_schema.message("alarm", "t1", "s", None, "test_alarm",
                                     mqtt_schema.PRIORITY_INFO,
                                     "2026-01-01T00:00:00.000+01:00", state="test", test=True)
    assert schema_problems("tryggheim/v1/s/alarm", json.dumps(test_alarm).encode()) == []
    care = dict(test_alarm, type="fall", state="raised", alarm_id="t1")
    assert schema_problems("tryggheim/v1/s/alarm", json.dumps(care).encode())  # 5 > 2
    assert schema_problems("tryggheim/v1/s/alarm",
                           json.dumps(dict(care, priority=1, state="test")).encode())
    for type_ in ("config_applied", "config_rejected"):
        status = mqtt_schema.message("status", "c1", "s", None, type_,
                                     mqtt_schema.PRIORITY_INFO,
                                     "2026-01-01T00:00:00.000+01:00", hub="hub-1", by="root")
        assert schema_problems("tryggheim/v1/s/status", json.dumps(status).encode()) == []


def test_technical_alarms_need_scaip_exactly_where_scaip_has_a_code() -> None:
    from protocols import scaip
    from tests.conftest import schema_validator

    schema = schema_validator("technical_alarm").schema
    listed = set(schema["allOf"][0]["if"]["properties"]["type"]["enum"])
    care = {"alarm_button", "fall", "bed_exit", "not_back_in_bed", "wandering",
            "door_open_too_long", "inactivity", "test_alarm", "hub_offline", "hub_online",
            "fall_cancelled"}  # a status to the centre (docs/ADMIN.md), not a technical alarm
    assert listed == set(scaip.TYPES) - care
    hub_fault = mqtt_schema.message("technical_alarm", "f1", "s", None, "outbox_filling", 3,
                                    "2026-01-01T00:00:00.000+01:00", hub="h")
    assert hub_fault["state"] == "raised" and "scaip" not in hub_fault
    assert schema_problems("tryggheim/v1/s/technical_alarm",
                           json.dumps(hub_fault).encode()) == []
    battery = dict(hub_fault, type="battery_low")
    assert schema_problems("tryggheim/v1/s/technical_alarm", json.dumps(battery).encode())
