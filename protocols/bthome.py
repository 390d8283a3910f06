# BTHome v2 service data: one module for both sides.
# The encoder runs on MicroPython (ESP32 and the virtual board); the decoder runs on CPython
# in the hub. Keep this file free of CPython-only syntax and modules: mpy-cross compiles it.
# Format: https://bthome.io/format/ (see ../shared/notes/bthome.md for the cited details).

from protocols import ccm

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


UUID16 = const(0xFCD2)
UUID_BYTES = b"\xd2\xfc"  # 0xFCD2 little-endian, as sent on air
SERVICE_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"

# Device-info byte bits
INFO_ENCRYPTED = const(0x01)
INFO_TRIGGER = const(0x04)
INFO_VERSION_2 = const(0x40)
VERSION_MASK = const(0xE0)

# Object ids (BTHome v2 table): the ones our devices send, plus temperature and humidity so
# that the published BTHome example adverts decode too.
PACKET_ID = const(0x00)
BATTERY = const(0x01)
TEMPERATURE = const(0x02)
HUMIDITY = const(0x03)
VOLTAGE = const(0x0C)
GENERIC = const(0x0F)
OPENING = const(0x11)
BATTERY_LOW = const(0x15)
BATTERY_CHARGING = const(0x16)
DOOR = const(0x1A)
MOTION = const(0x21)
MOVING = const(0x22)
OCCUPANCY = const(0x23)
PROBLEM = const(0x26)
TAMPER = const(0x2B)
VIBRATION = const(0x2C)
WINDOW = const(0x2D)
BUTTON = const(0x3A)
DEVICE_TYPE = const(0xF0)
FIRMWARE_VERSION_32 = const(0xF1)  # uint32: major.minor.patch.build
FIRMWARE_VERSION = const(0xF2)  # uint24: major.minor.patch (what our devices send)

# Button event values (object 0x3A).
BUTTON_NONE = const(0x00)
BUTTON_PRESS = const(0x01)
BUTTON_DOUBLE_PRESS = const(0x02)
BUTTON_TRIPLE_PRESS = const(0x03)
BUTTON_LONG_PRESS = const(0x04)
BUTTON_HOLD_PRESS = const(0x80)
BUTTON_HOLD_RELEASE = const(0x81)

BUTTON_EVENT_NAMES = {
    BUTTON_NONE: "none",
    BUTTON_PRESS: "press",
    BUTTON_DOUBLE_PRESS: "double_press",
    BUTTON_TRIPLE_PRESS: "triple_press",
    BUTTON_LONG_PRESS: "long_press",
    0x05: "long_double_press",
    0x06: "long_triple_press",
    BUTTON_HOLD_PRESS: "hold_press",
    BUTTON_HOLD_RELEASE: "hold_release",
}

# Our mapping onto BTHome (BTHOME.md explains the choices). There is no BTHome "fall" or
# "cancel" object, so:
#   fall detected  -> 0x26 problem = 1 (the wearer has a problem); 0 = no fall / cleared.
#                     Not 0x28 safety: Home Assistant shows its 1 as "unsafe" but the spec
#                     says "safe", an ambiguity a life-safety signal must not carry.
#   alarm          -> 0x3A press / double press / long press: every one of them raises it
#                     (a frightened resident may press any way at all).
#   cancel         -> 0x3A hold_release (0x81): only a deliberate hold cancels.
#   heartbeat      -> an advert with the trigger flag clear and no event (0x3A absent or 0),
#                     carrying battery, voltage and the sensor's current state.
#   charging       -> 0x16 battery charging.
FALL = PROBLEM
BUTTON_CANCEL = BUTTON_HOLD_RELEASE
# A fall the resident cancelled on the wearable in its cancel window (firmware/fall_alert.py):
# the fall and the cancel gesture in one advert. The hub reports it ("fall_cancelled"), as a
# status the response centre sees, and raises no alarm.
FALL_CANCELLED = ((FALL, 1), (BUTTON, BUTTON_CANCEL))
ALARM_BUTTON_EVENTS = (BUTTON_PRESS, BUTTON_DOUBLE_PRESS, BUTTON_TRIPLE_PRESS, BUTTON_LONG_PRESS)

# id -> (name, value length in bytes, signed). Factors are applied by the hub, not here:
# the wire carries integers and so does this module, which keeps encode/decode exact.
OBJECTS = {
    PACKET_ID: ("packet_id", 1, False),
    BATTERY: ("battery", 1, False),
    TEMPERATURE: ("temperature_centi_c", 2, True),
    HUMIDITY: ("humidity_centi_pct", 2, False),
    VOLTAGE: ("voltage_mv", 2, False),
    GENERIC: ("generic", 1, False),
    OPENING: ("opening", 1, False),
    BATTERY_LOW: ("battery_low", 1, False),
    BATTERY_CHARGING: ("battery_charging", 1, False),
    DOOR: ("door", 1, False),
    MOTION: ("motion", 1, False),
    MOVING: ("moving", 1, False),
    OCCUPANCY: ("occupancy", 1, False),
    PROBLEM: ("problem", 1, False),
    TAMPER: ("tamper", 1, False),
    VIBRATION: ("vibration", 1, False),
    WINDOW: ("window", 1, False),
    BUTTON: ("button", 1, False),
    DEVICE_TYPE: ("device_type", 2, False),
    FIRMWARE_VERSION_32: ("firmware_version", 4, False),
    FIRMWARE_VERSION: ("firmware_version", 3, False),
}

# Legacy advertising payload limit, and what is left for objects after flags (3),
# the service-data header (len, type, uuid = 4) and the device-info byte (1).
ADV_MAX = const(31)
PLAIN_OBJECT_BUDGET = const(23)
# Encrypted service data: info byte, ciphertext (as long as the objects), counter, MIC.
COUNTER_LEN = const(4)
MIC_LEN = const(4)
ENCRYPTED_OBJECT_BUDGET = const(15)
COUNTER_MAX = 0xFFFFFFFF  # not const(): larger than a MicroPython small int


class DecodeError(ValueError):
    """Raised for any service data this module cannot accept. Never anything else."""


class EncodeError(ValueError):
    pass


def encode_objects(objects):
    """objects: iterable of (object_id, int value). Returns the object bytes in ascending id
    order (the format requires it); repeated ids keep their order. MicroPython's sort is not
    stable, so the position is part of the key."""
    objects = list(objects)
    order = sorted(range(len(objects)), key=lambda i: (objects[i][0], i))
    out = bytearray()
    for oid, value in (objects[i] for i in order):
        spec = OBJECTS.get(oid)
        if spec is None:
            raise EncodeError("unknown object id 0x%02x" % oid)
        size = spec[1]
        value = int(value)
        if spec[2]:
            lo = -(1 << (8 * size - 1))
            hi = (1 << (8 * size - 1)) - 1
        else:
            lo = 0
            hi = (1 << (8 * size)) - 1
        if value < lo or value > hi:
            raise EncodeError("value %d out of range for %s" % (value, spec[0]))
        if value < 0:
            value += 1 << (8 * size)
        out.append(oid)
        for i in range(size):
            out.append((value >> (8 * i)) & 0xFF)
    return bytes(out)


def service_data(payload, trigger=False, encrypted=False):
    """Service data for UUID 0xFCD2 as a scanner reports it: device-info byte, then payload.
    For encrypted adverts the payload is ciphertext + counter + MIC (see ccm)."""
    info = INFO_VERSION_2
    if trigger:
        info |= INFO_TRIGGER
    if encrypted:
        info |= INFO_ENCRYPTED
    return bytes((info,)) + payload


def advert(svc_data, name=None):
    """A complete legacy advertising payload: flags + service data (+ optional short name)."""
    adv = b"\x02\x01\x06" + bytes((len(svc_data) + 3, 0x16)) + UUID_BYTES + svc_data
    if name:
        adv += bytes((len(name) + 1, 0x09)) + name
    if len(adv) > ADV_MAX:
        raise EncodeError("advert is %d bytes, the limit is %d" % (len(adv), ADV_MAX))
    return adv


def service_data_from_advert(adv):
    """Extract the 0xFCD2 service data (after the UUID) from a raw advertising payload.
    Returns None when the advert carries no BTHome service data."""
    i = 0
    n = len(adv)
    while i < n:
        length = adv[i]
        if length == 0:
            break
        if i + 1 + length > n:
            raise DecodeError("AD element runs past the end of the advert")
        if adv[i + 1] == 0x16 and length >= 3 and adv[i + 2 : i + 4] == UUID_BYTES:
            return bytes(adv[i + 4 : i + 1 + length])
        i += 1 + length
    return None


class Decoded:
    """The objects of one advert, in wire order, plus the header facts."""

    __slots__ = ("info", "objects", "counter")

    def __init__(self, info, objects, counter=None):
        self.info = info
        self.objects = objects  # list of (object_id, value)
        self.counter = counter

    @property
    def encrypted(self):
        return bool(self.info & INFO_ENCRYPTED)

    @property
    def trigger(self):
        return bool(self.info & INFO_TRIGGER)

    def get(self, oid, default=None):
        for k, v in self.objects:
            if k == oid:
                return v
        return default

    def as_dict(self):
        """Names -> values; repeated objects get _1, _2 suffixes as BTHome prescribes."""
        counts = {}  # type: dict[int, int]
        for oid, _ in self.objects:
            counts[oid] = counts.get(oid, 0) + 1
        seen = {}  # type: dict[int, int]
        out = {}
        for oid, value in self.objects:
            name = OBJECTS[oid][0]
            if counts[oid] > 1:
                seen[oid] = seen.get(oid, 0) + 1
                name = "%s_%d" % (name, seen[oid])
            out[name] = value
        return out


def check_header(svc):
    if len(svc) < 1:
        raise DecodeError("empty service data")
    info = svc[0]
    if info & VERSION_MASK != INFO_VERSION_2:
        raise DecodeError("not BTHome v2 (device info 0x%02x)" % info)
    return info


def decode_objects(payload):
    """Walk the object list. An unknown id makes the rest unparseable (no length bytes), so it is
    an error here: our devices only send ids we know."""
    objects = []
    i = 0
    n = len(payload)
    while i < n:
        oid = payload[i]
        spec = OBJECTS.get(oid)
        if spec is None:
            raise DecodeError("unknown object id 0x%02x at offset %d" % (oid, i))
        size = spec[1]
        if i + 1 + size > n:
            raise DecodeError("object 0x%02x truncated" % oid)
        if size == 1:
            value = payload[i + 1]
        else:
            value = int.from_bytes(payload[i + 1 : i + 1 + size], "little")
        if spec[2] and value & (1 << (8 * size - 1)):
            value -= 1 << (8 * size)
        objects.append((oid, value))
        i += 1 + size
    return objects


def decode_plain(svc):
    """Decode unencrypted service data (starting at the device-info byte)."""
    info = check_header(svc)
    if info & INFO_ENCRYPTED:
        raise DecodeError("advert is encrypted")
    return Decoded(info, decode_objects(svc[1:]))


# -- encryption (BTHome v2: AES-CCM, 13-byte nonce, 4-byte MIC, no associated data) ------------


def mac_bytes(mac):
    """'AA:BB:CC:DD:EE:FF' (or 6 bytes) -> 6 bytes in display order, as the nonce uses them."""
    if isinstance(mac, str):
        b = bytes.fromhex(mac.replace(":", ""))
    else:
        b = bytes(mac)
    if len(b) != 6:
        raise ValueError("a MAC address has 6 bytes")
    return b


def nonce(mac6, info, counter_bytes):
    """MAC (display order) + UUID (as on air) + device-info byte + counter (LE, as on air)."""
    return mac6 + UUID_BYTES + bytes((info,)) + counter_bytes


def encrypt_service_data(aes, mac6, payload, counter, trigger=False):
    """Encrypted service data (from the device-info byte on) for object bytes `payload`.
    aes: an AES-ECB object with .encrypt(16 bytes); counter: 0..2**32-1, new for every new
    payload. A repeat of the same advert in a burst reuses the same bytes, never the counter
    with different content (that would reuse the keystream)."""
    if counter < 0 or counter > COUNTER_MAX:
        raise EncodeError("counter out of range")
    if len(payload) < 2:
        raise EncodeError("BTHome needs at least 2 encrypted bytes")
    info = INFO_VERSION_2 | INFO_ENCRYPTED | (INFO_TRIGGER if trigger else 0)
    ctr = counter.to_bytes(COUNTER_LEN, "little")
    ct, mic = ccm.encrypt(aes, nonce(mac6, info, ctr), payload)
    return bytes((info,)) + ct + ctr + mic


def split_encrypted(svc):
    """Encrypted service data -> (info, ciphertext, counter bytes, mic). Checks only layout."""
    info = check_header(svc)
    if not info & INFO_ENCRYPTED:
        raise DecodeError("advert is not encrypted")
    if len(svc) < 1 + 2 + COUNTER_LEN + MIC_LEN:
        raise DecodeError("encrypted advert too short (%d bytes)" % len(svc))
    return info, svc[1:-8], svc[-8:-4], svc[-4:]


def decode(svc, mac=None, aes=None):
    """Decode service data, plain or encrypted. Encrypted needs the sender's MAC and an
    AES-ECB object for its key; a MIC that does not verify is a DecodeError. This is the
    portable path (MicroPython-friendly); the hub has a faster one over the same layout."""
    info = check_header(svc)
    if not info & INFO_ENCRYPTED:
        if aes is not None:  # a key is expected: a plain advert is a downgrade, not data
            raise DecodeError("advert is not encrypted but a key was given")
        return Decoded(info, decode_objects(svc[1:]))
    if aes is None or mac is None:
        raise DecodeError("advert is encrypted and no key was given")
    info, ct, ctr, mic = split_encrypted(svc)
    try:
        pt = ccm.decrypt(aes, nonce(mac_bytes(mac), info, ctr), ct, mic)
    except ccm.CCMError:
        raise DecodeError("MIC does not verify (wrong key or forged advert)") from None
    return Decoded(info, decode_objects(pt), int.from_bytes(ctr, "little"))
