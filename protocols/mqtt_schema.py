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
    if kind in ("alarm", "technical_alarm") and "state" not in fields:
        msg["state"] = "raised"  # an alarm without a state is one being raised
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


# Limits on what the hub reads from the broker (receipts, commands): anything larger, deeper
# or naming more ids is refused before it is parsed, so one poison message cannot stop the
# link (a 100 kB nested receipt used to exhaust the parser's recursion).
MAX_INCOMING_BYTES = 65536
MAX_JSON_DEPTH = 8
MAX_RECEIPT_IDS = 1000
MAX_ID_LENGTH = 128
RECEIPT_MAC_PREFIX = "tryggheim/v1/receipt"


def json_depth(data, limit=MAX_JSON_DEPTH):
    """Nesting depth of the JSON text `data` (bytes), counted without parsing it; stops
    counting past `limit` (returns limit + 1)."""
    depth = top = 0
    in_str = escape = False
    for b in data:
        if in_str:
            if escape:
                escape = False
            elif b == 0x5C:  # backslash
                escape = True
            elif b == 0x22:  # quote
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b == 0x5B or b == 0x7B:  # [ {
            depth += 1
            if depth > top:
                top = depth
                if top > limit:
                    return top
        elif b == 0x5D or b == 0x7D:
            depth -= 1
    return top


def _sha256(data):
    import hashlib

    return hashlib.sha256(data).digest()


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104), written out because MicroPython has hashlib but no hmac."""
    if len(key) > 64:
        key = _sha256(key)
    key = key + b"\0" * (64 - len(key))
    inner = bytes(b ^ 0x36 for b in key)
    outer = bytes(b ^ 0x5C for b in key)
    return _sha256(outer + _sha256(inner + msg))


def receipt_mac_input(site, time_iso, ids):
    """The bytes a receipt's `mac` is computed over (protocols/MQTT.md, "Receipts")."""
    return "\n".join([RECEIPT_MAC_PREFIX, site, time_iso] + list(ids)).encode()


def receipt_mac(key, site, time_iso, ids):
    """Lower-case hex HMAC-SHA256 with the site's receipt key over receipt_mac_input."""
    import binascii

    return binascii.hexlify(hmac_sha256(key, receipt_mac_input(site, time_iso, ids))).decode()


def signed_receipt(ids, site, by, time_iso, key):
    body = receipt(ids, site, by, time_iso)
    body["mac"] = receipt_mac(key, site, time_iso, body["ids"])
    return body


def _same(a, b):
    # Constant time for equal lengths: the comparison must not tell a forger how much of a
    # guessed mac was right.
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= ord(a[i]) ^ ord(b[i])
    return diff == 0


def check_receipt(data, site, key=None):
    """(ids, "") for an acceptable receipt for `site` in the raw bytes `data`, else
    ([], why). With a key, the receipt must carry the right `mac`."""
    import json

    if len(data) > MAX_INCOMING_BYTES:
        return [], "too large"
    if json_depth(data) > MAX_JSON_DEPTH:
        return [], "nested too deeply"
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeError):
        return [], "not JSON"
    if not isinstance(payload, dict) or payload.get("kind") != "receipt":
        return [], "not a receipt"
    if payload.get("site") != site:
        return [], "for another site"
    ids = payload.get("ids")
    if not isinstance(ids, list) or not ids:
        return [], "no ids"
    if len(ids) > MAX_RECEIPT_IDS:
        return [], "too many ids"
    for i in ids:
        if not isinstance(i, str) or not i or len(i) > MAX_ID_LENGTH:
            return [], "malformed id"
    if key is not None:
        mac = payload.get("mac")
        t = payload.get("time")
        if not isinstance(mac, str) or not isinstance(t, str):
            return [], "not signed"
        if not _same(mac.lower(), receipt_mac(key, site, t, ids)):
            return [], "bad signature"
    return ids, ""
