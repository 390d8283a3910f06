# SCAIP (CLC/TS 50134-9, the IP protocol Nordic social-alarm response centres speak) codes for
# every message type the hub publishes: the one place the mapping lives, so that a bridge to a
# SCAIP receiver is a lookup, not a redesign. Codes from the public code lists of open SCAIP
# implementations (caruhome/scaip-gateway spec.py; see ../shared/notes/peers_standards.md B2).
# Documented in MQTT.md. Plain Python: everything under protocols/ also compiles for MicroPython.

# Device types (SCAIP <dty>)
DTY_LOCAL_UNIT = "0002"  # local unit + controller: the hub itself
DTY_PERSONAL_TRIGGER = "0003"
DTY_FIXED_TRIGGER = "0004"
DTY_FALL_DETECTOR = "0005"
DTY_ACTIVITY_DETECTOR = "0010"
DTY_BED_MONITOR = "0012"
DTY_MAT_SENSOR = "0013"
DTY_DOOR_SENSOR = "0014"
DTY_WANDERING_SENSOR = "0015"
DTY_LINK_MONITOR = "0032"  # communication-link monitor

# Status codes (SCAIP <stc>)
STC_AUTOMATIC_ALARM = "0009"
STC_MANUAL_ALARM = "0010"
STC_BATTERY_FAILURE = "0014"
STC_BATTERY_OK = "0015"
STC_BATTERY_LOW = "0016"
STC_CANCEL = "0019"
STC_OPEN_TOO_LONG = "0077"
STC_POWER_FAILURE = "0085"
STC_POWER_RESTORED = "0086"
STC_AUTOMATIC_RESET = "0092"
STC_MANUAL_RESET = "0093"
STC_TEST = "0102"
STC_LYING_IN_BED = "0117"
STC_MOVEMENT = "0119"
STC_SUPERVISION_MISSING = "0123"  # radio test transmission missing
STC_SUPERVISION_RESTORED = "0124"
STC_TAMPER = "0125"

# Our device roles (hub config [[device]] role) -> SCAIP device type.
ROLE_DTY = {
    "pendant": DTY_PERSONAL_TRIGGER,
    "wearable": DTY_FALL_DETECTOR,
    "door": DTY_DOOR_SENSOR,
    "pir": DTY_ACTIVITY_DETECTOR,
    "bed": DTY_BED_MONITOR,
}

# Message type -> (device type, or None = the sending device's role, or the hub for hub-level
# types; status when raised; status when cleared). Clear by the resident's cancel is always
# STC_CANCEL (see codes()).
TYPES = {
    # care alarms: someone may need help
    "alarm_button": (DTY_PERSONAL_TRIGGER, STC_MANUAL_ALARM, STC_MANUAL_RESET),
    "fall": (DTY_FALL_DETECTOR, STC_AUTOMATIC_ALARM, STC_AUTOMATIC_RESET),
    "bed_exit": (DTY_BED_MONITOR, STC_AUTOMATIC_ALARM, STC_AUTOMATIC_RESET),
    "not_back_in_bed": (DTY_BED_MONITOR, STC_AUTOMATIC_ALARM, STC_AUTOMATIC_RESET),
    "wandering": (DTY_WANDERING_SENSOR, STC_AUTOMATIC_ALARM, STC_AUTOMATIC_RESET),
    "door_open_too_long": (DTY_DOOR_SENSOR, STC_OPEN_TOO_LONG, STC_AUTOMATIC_RESET),
    "inactivity": (DTY_ACTIVITY_DETECTOR, STC_AUTOMATIC_ALARM, STC_AUTOMATIC_RESET),
    "test_alarm": (None, STC_TEST, STC_AUTOMATIC_RESET),
    # a fall the resident cancelled on the wearable (a status, not an alarm)
    "fall_cancelled": (DTY_FALL_DETECTOR, STC_CANCEL, STC_CANCEL),
    # technical alarms on a device
    "battery_low": (None, STC_BATTERY_LOW, STC_BATTERY_OK),
    "battery_critical": (None, STC_BATTERY_FAILURE, STC_BATTERY_OK),
    "device_silent": (None, STC_SUPERVISION_MISSING, STC_SUPERVISION_RESTORED),
    "tamper": (None, STC_TAMPER, STC_AUTOMATIC_RESET),
    # the hub refuses a device's adverts: replayed recordings, or failing authentication
    # (hub/decode/decoder.py); the closest SCAIP notion is tampering with the device's transmission
    "radio_replay": (None, STC_TAMPER, STC_AUTOMATIC_RESET),
    "radio_auth_failed": (None, STC_TAMPER, STC_AUTOMATIC_RESET),
    # technical alarms on the hub
    "radio_deaf": (DTY_LOCAL_UNIT, STC_SUPERVISION_MISSING, STC_SUPERVISION_RESTORED),
    "power_failure": (DTY_LOCAL_UNIT, STC_POWER_FAILURE, STC_POWER_RESTORED),
    "link_down": (DTY_LINK_MONITOR, STC_SUPERVISION_MISSING, STC_SUPERVISION_RESTORED),
    # the hub's clock is not synchronised: alarm times and timers cannot be trusted
    "clock_unsynchronised": (DTY_LOCAL_UNIT, STC_SUPERVISION_MISSING, STC_SUPERVISION_RESTORED),
    # the hub's own retained online/offline state (mqtt_schema.hub_state)
    "hub_offline": (DTY_LOCAL_UNIT, STC_SUPERVISION_MISSING, STC_SUPERVISION_RESTORED),
    "hub_online": (DTY_LOCAL_UNIT, STC_SUPERVISION_RESTORED, STC_SUPERVISION_RESTORED),
}

CANCEL_REASONS = ("cancelled_by_resident", "cancelled")


def codes(type_, state=None, role=None, reason=None):
    """{"dty": ..., "stc": ...} for a message, or None when SCAIP has no equivalent (e.g. an
    acknowledgement: in SCAIP that is the receiver's reply, not a message of its own).
    state: "raised" (default), "reminder", "cleared" or "acknowledged"."""
    entry = TYPES.get(type_)
    if entry is None or state == "acknowledged":
        return None
    dty, stc_raised, stc_cleared = entry
    if dty is None:
        dty = ROLE_DTY.get(role, DTY_LOCAL_UNIT)
    if state == "cleared":
        stc = STC_CANCEL if reason in CANCEL_REASONS else stc_cleared
    else:
        stc = stc_raised
    return {"dty": dty, "stc": stc}


def annotate(payload, role=None):
    """Add (or correct, now that the device's role is known) the payload's "scaip" field."""
    c = codes(payload.get("type"), payload.get("state"), role, payload.get("reason"))
    if c is not None:
        payload["scaip"] = c
    return payload
