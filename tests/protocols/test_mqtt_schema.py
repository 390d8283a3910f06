"""MQTT payload schemas (protocols/schemas/*.json) and SCAIP codes (protocols/scaip.py):
every message the hub publishes validates against the schema of its kind."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from protocols import mqtt_schema, scaip
from tests.conftest import requires_mosquitto, requires_node

KINDS = list(mqtt_schema.KINDS) + ["receipt"]


def validator(kind: str) -> Draft202012Validator:
    text = resources.files("protocols").joinpath(mqtt_schema.schema_file(kind)).read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(msg: dict[str, Any]) -> list[str]:
    body = {k: v for k, v in msg.items() if not k.startswith("_")}
    return [e.message for e in validator(str(body.get("kind"))).iter_errors(body)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_valid_schema(kind: str) -> None:
    validator(kind)


def test_scaip_codes_for_our_types() -> None:
    assert scaip.codes("alarm_button") == {"dty": "0003", "stc": "0010"}
    assert scaip.codes("alarm_button", "cleared", reason="cancelled_by_resident") == {
        "dty": "0003", "stc": "0019"}
    assert scaip.codes("fall", "raised", "wearable") == {"dty": "0005", "stc": "0009"}
    assert scaip.codes("bed_exit")["dty"] == "0012"
    assert scaip.codes("wandering")["dty"] == "0015"
    assert scaip.codes("battery_low", "raised", "door") == {"dty": "0014", "stc": "0016"}
    assert scaip.codes("battery_low", "cleared", "door") == {"dty": "0014", "stc": "0015"}
    assert scaip.codes("device_silent", "raised", "pir") == {"dty": "0010", "stc": "0123"}
    assert scaip.codes("device_silent", "cleared", "pir")["stc"] == "0124"
    assert scaip.codes("tamper", "raised", "bed") == {"dty": "0012", "stc": "0125"}
    assert scaip.codes("alarm_button", "acknowledged") is None
    assert scaip.codes("charging_complete") is None
    for dty, raised, cleared in scaip.TYPES.values():
        for code in (dty or "0000", raised, cleared):
            assert len(code) == 4 and code.isdigit()


def _sample(type_: str, state: str) -> dict[str, Any]:
    care = scaip.TYPES[type_][0] not in (None, scaip.DTY_LOCAL_UNIT, scaip.DTY_LINK_MONITOR)
    kind = ("alarm_cleared" if state == "cleared" else "alarm") if care else "technical_alarm"
    if type_.startswith("hub_"):
        return mqtt_schema.hub_state("h1-" + state, "site-1", "hub-1", type_[4:],
                                     "2026-11-26T21:04:05.123+01:00")
    msg = mqtt_schema.message(kind, "m-1", "site-1", "dev-1", type_, 1 if care else 3,
                              "2026-11-26T21:04:05.123+01:00", state=state, alarm_id="a-1",
                              reason="cancelled_by_resident" if state == "cleared" else None)
    return scaip.annotate(msg, "door")


@pytest.mark.parametrize("type_", sorted(scaip.TYPES))
@pytest.mark.parametrize("state", ["raised", "cleared"])
def test_built_messages_validate_and_carry_scaip(type_: str, state: str) -> None:
    msg = _sample(type_, state)
    assert errors(msg) == []
    assert msg["scaip"] == scaip.codes(type_, msg["state"], "door", msg.get("reason"))


@pytest.mark.parametrize("bad", [
    {"time": "2026-11-26T21:04:05"},  # no offset: ambiguous across the DST change
    {"id": ""},
    {"site": "a/b"},  # would change the topic
    {"scaip": {"dty": "3", "stc": "0010"}},
    {"priority": 5},  # an alarm is never mere information
    {"schema": 2},
])
def test_schema_rejects(bad: dict[str, Any]) -> None:
    msg = _sample("alarm_button", "raised")
    msg.update(bad)
    assert errors(msg)


def test_alarm_without_scaip_is_rejected() -> None:
    msg = _sample("alarm_button", "raised")
    del msg["scaip"]
    assert any("scaip" in e for e in errors(msg))


@requires_node
@requires_mosquitto
def test_everything_the_hub_publishes_validates(tmp_path: Path) -> None:
    from tools.sim.virtual_home import VirtualHome

    with VirtualHome(tmp_path) as home:
        assert home.centre is not None
        pendant = home.boards["pendant-1"]
        pendant.press("button", hold_ms=300)
        pendant.advance(5000)
        alarm = home.centre.get(timeout=20)
        received = list(home.centre.all)
    assert alarm["scaip"] == {"dty": "0003", "stc": "0010"}
    assert received
    for msg in received:
        assert errors(msg) == [], msg


@requires_node
@requires_mosquitto
def test_hub_state_validates(tmp_path: Path) -> None:
    import time

    from tools.sim.virtual_home import VirtualHome

    with VirtualHome(tmp_path) as home:
        assert home.centre is not None
        deadline = time.monotonic() + 10
        while not home.centre.hub_states and time.monotonic() < deadline:
            time.sleep(0.02)
        states = list(home.centre.hub_states)
    assert states
    for msg in states:
        assert errors(msg) == [], msg
