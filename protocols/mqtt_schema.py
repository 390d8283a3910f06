# MQTT topics and payloads between the hub and the response centre: the one definition both
# sides use. Documented in protocols/MQTT.md. Plain Python (no CPython-only syntax) because
# everything under protocols/ is also compiled for MicroPython.

SCHEMA_VERSION = 1
TOPIC_ROOT = "tryggheim/v1"

# Priorities: lower number = more urgent; the outbox delivers in this order after an outage.
PRIORITY_CRITICAL = 1  # a person may need help now (alarm button, fall)
PRIORITY_HIGH = 2  # care alarms (wandering, not back in bed, inactivity)
PRIORITY_TECHNICAL = 3  # device or hub problems (battery critical, device silent)
PRIORITY_INFO = 5  # events and status telemetry

KINDS = ("alarm", "alarm_cleared", "technical_alarm", "event", "status", "hub")


def topic(site, kind, device=None):
    if kind not in KINDS and kind != "receipt":
        raise ValueError("unknown message kind " + kind)
    t = TOPIC_ROOT + "/" + site + "/" + kind
    if device is not None:
        t += "/" + device
    return t


def message(kind, msg_id, site, device, type_, priority, time_iso, **fields):
    """The common envelope every published message carries."""
    msg = {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "id": msg_id,
        "site": site,
        "device": device,
        "type": type_,
        "priority": priority,
        "time": time_iso,
    }
    msg.update(fields)
    return msg
