"""Off-the-shelf Shelly BLU sensors (Button1, Door/Window, Motion) as Tryggheim devices.

They speak standard BTHome v2 with AES-CCM under their bindkey: the nonce is the device's MAC
(display order), the UUID, the device-info byte and the counter, exactly as for our own
devices, so the MIC and counter checks are the same. What differs, and is handled here:

- Objects our own devices never send: illuminance (0x05, uint24, 0.01 lx), window (0x2D,
  their door/window contact), rotation (0x3F, sint16, 0.1 deg), and any other object a newer
  Shelly firmware may add. BTHome objects carry no length, so this module knows the length of
  every object in the BTHome v2 table; at an id it does not know, the rest of that advert
  cannot be parsed: what came before it is used (it is authentic, the MIC covers all of it),
  the rest is counted as `shelly_unknown_object` and logged, never guessed at.
- The packet id (0x00) is theirs: Shelly repeats an event in several adverts, and BTHome says
  a receiver should act only on a packet id different from the previous one. An authentic
  advert whose packet id equals the last accepted one counts for liveness and state, but its
  button event is not acted on again (so one press is one alarm, whatever the counter does).
- Button events: Button1 sends press (1), double (2), triple (3), long press (4) and "hold",
  0x80 from firmware 1.0.20 and 0xFE before (Shelly's BLE API docs, docs-ble/Devices/button
  and docs-ble/Devices/dw). On the resident's alarm button every event is a call for help:
  hold and any other non-zero event become long_press (an alarm). A Shelly button has no
  cancel gesture and no way to show "help is coming" (it cannot receive our acknowledgements).
- Window (0x2D) is reported as `door`, the value the door and wandering rules read; motion
  (0x21) and battery % (0x01) are the same as ours.
"""

from __future__ import annotations

from protocols import bthome

ILLUMINANCE = 0x05
ROTATION = 0x3F
HOLD_OLD_FIRMWARE = 0xFE  # Shelly's "button hold" before firmware 1.0.20 (0x80 after)

# Value length (bytes) and signedness of every fixed-length object of the BTHome v2 format
# table (https://bthome.io/format/), so that an object we do not use is stepped over, not a
# reason to drop the advert. Objects with a length byte after the id: _VARIABLE.
_U, _S = False, True
_LENGTHS: dict[int, tuple[int, bool]] = {
    **{i: (1, _U) for i in (0x00, 0x01, 0x09, 0x2E, 0x2F, 0x3A, 0x46, 0x60, 0x64, 0x65)},
    **{i: (1, _U) for i in range(0x0F, 0x12)}, **{i: (1, _U) for i in range(0x15, 0x2E)},
    **{i: (2, _U) for i in (0x03, 0x06, 0x07, 0x0C, 0x0D, 0x0E, 0x12, 0x13, 0x14, 0x3C, 0x3D,
                            0x40, 0x41, 0x43, 0x44, 0x47, 0x48, 0x49, 0x4A, 0x51, 0x52, 0x56,
                            0x5E, 0x5F, 0x61, 0xF0)},
    **{i: (2, _S) for i in (0x02, 0x08, 0x3F, 0x45, 0x5A, 0x5D)},
    **{i: (1, _S) for i in (0x57, 0x58, 0x59)},
    **{i: (3, _U) for i in (0x04, 0x05, 0x0A, 0x0B, 0x42, 0x4B, 0xF2)},
    **{i: (4, _U) for i in (0x3E, 0x4C, 0x4D, 0x4E, 0x4F, 0x50, 0x55, 0xF1)},
    **{i: (4, _S) for i in (0x5B, 0x5C, 0x62, 0x63)},
}
_VARIABLE = (0x3B, 0x53, 0x54)  # command, text, raw: a length byte follows the id

# The objects we keep (the rest is stepped over): our names where they mean the same.
_NAMES = {oid: spec[0] for oid, spec in bthome.OBJECTS.items()}
_NAMES.update({ILLUMINANCE: "illuminance_centi_lux", ROTATION: "rotation_deci_deg",
               0x2E: "humidity_pct", 0x45: "temperature_deci_c", 0x64: "light_level"})


def parse_objects(payload: bytes) -> tuple[list[tuple[int, int]], int | None]:
    """(objects we keep, in wire order; the id at which parsing stopped, or None).
    Never raises: a truncated or unknown object ends the walk."""
    objects: list[tuple[int, int]] = []
    i, n = 0, len(payload)
    while i < n:
        oid = payload[i]
        if oid in _VARIABLE:
            if i + 1 >= n or i + 2 + payload[i + 1] > n:
                return objects, oid
            i += 2 + payload[i + 1]
            continue
        spec = _LENGTHS.get(oid)
        if spec is None or i + 1 + spec[0] > n:
            return objects, oid
        size, signed = spec
        if oid in _NAMES:
            if size == 1:
                value = payload[i + 1]
                if signed and value > 127:
                    value -= 256
            else:
                value = int.from_bytes(payload[i + 1:i + 1 + size], "little", signed=signed)
            objects.append((oid, value))
        i += 1 + size
    return objects, None


def inspect_objects(payload: bytes) -> list[tuple[int, int]]:
    """For `tryggheim decode`/`scan`: our objects, or an off-the-shelf sensor's; a
    bthome.DecodeError when neither reads the whole payload."""
    try:
        return list(bthome.decode_objects(payload))
    except bthome.DecodeError:
        objects, stopped = parse_objects(payload)
        if stopped is not None:
            raise
        return objects


def object_name(oid: int) -> str:
    return _NAMES[oid]


def values_for(role: str, objects: list[tuple[int, int]]) -> dict[str, int]:
    """Report values in the vocabulary the rules read (see the module docstring)."""
    values: dict[str, int] = {}
    for oid, v in objects:
        name = _NAMES[oid]
        if name in values:  # repeated objects (multi-button devices): BTHome's _1, _2
            return _suffixed(role, objects)
        values[name] = v
    return _normalise(role, values)


def _suffixed(role: str, objects: list[tuple[int, int]]) -> dict[str, int]:
    values = bthome.Decoded(0, [o for o in objects if o[0] in bthome.OBJECTS]).as_dict()
    values.update({_NAMES[o]: v for o, v in objects if o not in bthome.OBJECTS})
    return _normalise(role, values)


def _normalise(role: str, values: dict[str, int]) -> dict[str, int]:
    if "window" in values and "door" not in values:
        values["door"] = values.pop("window")
    event = values.get("button")
    if event == HOLD_OLD_FIRMWARE:
        event = values["button"] = bthome.BUTTON_HOLD_PRESS
    if role == "pendant" and event and event not in bthome.ALARM_BUTTON_EVENTS:
        values["button_event"] = event  # what the device sent, for the logs
        values["button"] = bthome.BUTTON_LONG_PRESS  # every event is a call for help
    return values


def build_service_data(key: bytes, mac: str, objects: list[tuple[int, int]], counter: int,
                       trigger: bool = False) -> bytes:
    """An encrypted advert as a Shelly BLU sends it (tests and the virtual home).
    objects: (id, value) with any id of the BTHome table (sorted by id, as BTHome asks)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    payload = bytearray()
    for oid, value in sorted(objects, key=lambda o: o[0]):
        size, signed = _LENGTHS[oid]
        payload.append(oid)
        payload += int(value).to_bytes(size, "little", signed=signed)
    info = bthome.INFO_VERSION_2 | bthome.INFO_ENCRYPTED | (bthome.INFO_TRIGGER if trigger else 0)
    ctr = counter.to_bytes(4, "little")
    sealed = AESCCM(key, tag_length=bthome.MIC_LEN).encrypt(
        bthome.mac_bytes(mac) + bthome.UUID_BYTES + bytes((info,)) + ctr, bytes(payload), None)
    return bytes((info,)) + sealed[:-4] + ctr + sealed[-4:]
