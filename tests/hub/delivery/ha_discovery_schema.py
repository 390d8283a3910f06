"""Home Assistant's MQTT discovery schema for the components the hub publishes, written from
Home Assistant's documentation (home-assistant.io, source/_integrations/mqtt.markdown:
"Discovery topic", "Discovery payload", "Supported abbreviations", "Supported abbreviations
for device registry configuration", "... for origin info", "Using Availability topics";
binary_sensor.mqtt.markdown and sensor.mqtt.markdown: configuration variables).

Stricter than Home Assistant in one way on purpose: HA ignores unknown keys, this check
rejects them, so a misspelt key (which HA would silently drop) fails the test.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Entity-level abbreviations (the subset that can occur in binary_sensor/sensor configs).
ABBREVIATIONS = {
    "avty": "availability", "avty_mode": "availability_mode", "avty_t": "availability_topic",
    "avty_tpl": "availability_template", "dev": "device", "dev_cla": "device_class",
    "e": "encoding", "ent_cat": "entity_category", "ent_pic": "entity_picture",
    "exp_aft": "expire_after", "frc_upd": "force_update", "ic": "icon",
    "json_attr_t": "json_attributes_topic", "json_attr_tpl": "json_attributes_template",
    "name": "name", "o": "origin", "obj_id": "object_id", "off_dly": "off_delay",
    "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off", "pl_on": "payload_on", "stat_cla": "state_class",
    "stat_t": "state_topic", "t": "topic", "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS = {
    "cu": "configuration_url", "cns": "connections", "ids": "identifiers", "name": "name",
    "mf": "manufacturer", "mdl": "model", "mdl_id": "model_id", "hw": "hw_version",
    "sw": "sw_version", "sa": "suggested_area", "sn": "serial_number",
}
DEVICE_KEYS = set(DEVICE_ABBREVIATIONS.values()) | {"via_device"}
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}
AVAILABILITY_ENTRY_KEYS = {"topic", "payload_available", "payload_not_available",
                           "value_template"}

_COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "expire_after", "force_update", "icon", "json_attributes_template",
    "json_attributes_topic", "name", "object_id", "origin", "payload_available",
    "payload_not_available", "qos", "state_topic", "unique_id", "value_template", "~",
}
COMPONENT_KEYS = {
    "binary_sensor": _COMMON | {"off_delay", "payload_off", "payload_on"},
    "sensor": _COMMON | {"last_reset_value_template", "options", "state_class",
                         "suggested_display_precision", "unit_of_measurement"},
}
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}}
DEVICE_CLASSES = {
    "binary_sensor": {
        "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
        "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
        "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety",
        "smoke", "sound", "tamper", "update", "vibration", "window"},
    "sensor": {
        "apparent_power", "aqi", "atmospheric_pressure", "battery", "carbon_dioxide",
        "carbon_monoxide", "current", "data_rate", "data_size", "date", "distance", "duration",
        "energy", "frequency", "gas", "humidity", "illuminance", "moisture", "monetary",
        "pm1", "pm10", "pm25", "power", "power_factor", "pressure", "signal_strength",
        "sound_pressure", "speed", "temperature", "timestamp", "voltage", "volume", "weight"},
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
ENTITY_CATEGORIES = {"config", "diagnostic"}
_WORD = r"[a-zA-Z0-9_-]+"


class SchemaError(AssertionError):
    pass


def expand(payload: dict[str, Any]) -> dict[str, Any]:
    """Abbreviations to full names, `~` substituted into *_topic values, as HA does."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        full = ABBREVIATIONS.get(key, key)
        if full in out:
            raise SchemaError(f"{key!r} given twice (as {full!r})")
        out[full] = value
    base = out.get("~")

    def based(value: Any) -> Any:
        if isinstance(base, str) and isinstance(value, str):
            if value.startswith("~"):
                return base + value[1:]
            if value.endswith("~"):
                return value[:-1] + base
        return value

    for key, value in list(out.items()):
        if key.endswith("_topic"):
            out[key] = based(value)
    if isinstance(out.get("device"), dict):
        out["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in out["device"].items()}
    if isinstance(out.get("origin"), dict):
        out["origin"] = {ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in out["origin"].items()}
    if isinstance(out.get("availability"), list):
        # Home Assistant expands abbreviations and the base topic in each entry's topic too.
        out["availability"] = [
            {ABBREVIATIONS.get(k, k): based(v) if ABBREVIATIONS.get(k, k) == "topic" else v
             for k, v in a.items()} if isinstance(a, dict) else a
            for a in out["availability"]]
    return out


def validate(topic: str, raw: bytes | str, prefix: str = "homeassistant") -> dict[str, Any]:
    """Check one discovery message; returns the expanded payload. Raises SchemaError."""
    m = re.fullmatch(rf"{re.escape(prefix)}/({_WORD})/(?:({_WORD})/)?({_WORD})/config", topic)
    if not m:
        raise SchemaError(f"{topic}: not <prefix>/<component>/[<node_id>/]<object_id>/config")
    component = m.group(1)
    if component not in COMPONENT_KEYS:
        raise SchemaError(f"{topic}: component {component!r} is not checked here")
    try:
        payload = json.loads(raw)
    except ValueError as e:
        raise SchemaError(f"{topic}: payload is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise SchemaError(f"{topic}: payload must be a JSON object")
    p = expand(payload)
    unknown = set(p) - COMPONENT_KEYS[component]
    if unknown:
        raise SchemaError(f"{topic}: unknown keys {sorted(unknown)}")
    missing = REQUIRED[component] - set(p)
    if missing:
        raise SchemaError(f"{topic}: missing required {sorted(missing)}")
    for key in [k for k in p if k.endswith("_topic")]:
        if not isinstance(p[key], str) or not p[key] or any(c in p[key] for c in "+#"):
            raise SchemaError(f"{topic}: {key} must be a topic without wildcards")
    if "availability" in p and "availability_topic" in p:
        raise SchemaError(f"{topic}: availability and availability_topic must not be used together")
    if "availability" in p:
        av = p["availability"]
        if not isinstance(av, list) or not av:
            raise SchemaError(f"{topic}: availability must be a non-empty list")
        for i, a in enumerate(av):
            if not isinstance(a, dict) or not isinstance(a.get("topic"), str) or not a["topic"]:
                raise SchemaError(f"{topic}: availability[{i}].topic is required")
            if set(a) - AVAILABILITY_ENTRY_KEYS:
                raise SchemaError(f"{topic}: availability[{i}]: unknown keys"
                                  f" {sorted(set(a) - AVAILABILITY_ENTRY_KEYS)}")
            for k in ("payload_available", "payload_not_available"):
                if k in a and not isinstance(a[k], str):
                    raise SchemaError(f"{topic}: availability[{i}].{k} must be a string")
    if "availability_mode" in p and p["availability_mode"] not in ("all", "any", "latest"):
        raise SchemaError(f"{topic}: availability_mode must be all, any or latest")
    if "device" in p:
        dev = p["device"]
        if not isinstance(dev, dict):
            raise SchemaError(f"{topic}: device must be a map")
        if set(dev) - DEVICE_KEYS:
            raise SchemaError(f"{topic}: device: unknown keys {sorted(set(dev) - DEVICE_KEYS)}")
        if not dev.get("identifiers") and not dev.get("connections"):
            raise SchemaError(f"{topic}: device needs identifiers or connections")
        if "unique_id" not in p:
            raise SchemaError(f"{topic}: device info works only with unique_id")
    if "origin" in p:
        o = p["origin"]
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise SchemaError(f"{topic}: origin needs a name")
        if set(o) - set(ORIGIN_ABBREVIATIONS.values()):
            raise SchemaError(f"{topic}: origin: unknown keys")
    if "device_class" in p and p["device_class"] not in DEVICE_CLASSES[component]:
        raise SchemaError(f"{topic}: {p['device_class']!r} is not a {component} device class")
    if "state_class" in p and p["state_class"] not in STATE_CLASSES:
        raise SchemaError(f"{topic}: state_class {p['state_class']!r}")
    if "entity_category" in p and p["entity_category"] not in ENTITY_CATEGORIES:
        raise SchemaError(f"{topic}: entity_category {p['entity_category']!r}")
    if "qos" in p and p["qos"] not in (0, 1, 2):
        raise SchemaError(f"{topic}: qos must be 0, 1 or 2")
    return p
