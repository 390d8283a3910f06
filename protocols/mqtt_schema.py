# MQTT topics and payloads between the hub and the response centre: the one definition both
# sides use. Documented in protocols/MQTT.md. Plain Python (no CPython-only syntax) because
# everything under protocols/ is also compiled for MicroPython.

from protocols import scaip

SCHEMA_VERSION = 1
TOPIC_ROOT = "tryggheim/v1"

# Priorities: lower number = more urgent; the outbox delivers in this order after an outage.
PRIORITY_CRITICAL = 1  # a person may need help now (alarm button, fall)
PRIORITY_HIGH = 2  # care alarms (wandering, not back in bed, inactivity)
PRIORITY_TECHNICAL = 3  # device or hub problems (battery critical, device silent)
PRIORITY_INFO = 5  # events and status telemetry

KINDS = ("alarm", "alarm_cleared", "technical_alarm", "event", "status", "hub")
# Kinds the response centre confirms with a receipt; the hub keeps them until it comes back.
RECEIPT_KINDS = ("alarm", "alarm_cleared", "technical_alarm")


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
    # SCAIP device-type and status codes; the hub corrects dty with the device's role
    # (scaip.annotate) before it stores the message.
    scaip.annotate(msg, fields.get("role"))
    return msg


def hub_state(msg_id, site, hub_id, state, time_iso, **fields):
    """The retained hub online/offline message on topic(site, "hub") (also the MQTT will)."""
    return message("hub", msg_id, site, None, "hub_" + state, PRIORITY_INFO, time_iso,
                   hub=hub_id, state=state, **fields)


# protocols/schemas/<kind>.json: one JSON Schema per message kind (the files ship with the
# package; tests validate every message the hub publishes against them).
def schema_file(kind):
    return "schemas/" + kind + ".json"


# End-to-end receipts (docs/DELIVERY.md): the response centre publishes one on
# topic(site, "receipt") once it has taken responsibility for messages; the hub keeps each
# alarm until a receipt names its id. Several ids may share one receipt.
def receipt(ids, site, by, time_iso):
    return {
        "schema": SCHEMA_VERSION,
        "kind": "receipt",
        "site": site,
        "ids": list(ids),
        "by": by,
        "time": time_iso,
    }


def receipt_ids(payload):
    """The message ids a receipt confirms; [] for anything that is not a valid receipt."""
    if not isinstance(payload, dict) or payload.get("kind") != "receipt":
        return []
    ids = payload.get("ids")
    if not isinstance(ids, list):
        return []
    return [i for i in ids if isinstance(i, str) and i]
