# Alarm acknowledgement from the hub to the resident's device (ACK.md has the why).
# Runs on MicroPython (the device decodes) and CPython (the hub encodes); keep it free of
# CPython-only syntax and modules: mpy-cross compiles it.
#
# Frame (15 bytes):  version(1)=1 | state(1) | counter(4, LE) | ciphertext(5) | MIC(4)
#   plaintext = state(1) | counter(4, LE); AES-CCM with the device key exactly as BTHome
#   encrypts adverts (protocols/ccm.py: 13-byte nonce, 4-byte MIC, no AAD).
#   nonce(13) = device MAC(6, display order) | 0xD2 0xFC | 0xA0|state | counter(4, LE)
# The device's own adverts put the BTHome device-info byte (0b010xxxxx, version 2) where the
# ack puts 0xA0|state (0b101xxxxx): the two nonce spaces never meet, so an ack never reuses an
# advert nonce under the same key. Each (counter, state) has its own nonce, and a repeat of
# the same ack is byte-identical, which CCM allows.

from protocols import bthome, ccm

# GATT service the device exposes while it advertises connectable after an alarm; the hub
# connects and writes one frame to the characteristic (write with response).
SERVICE_UUID = "5e1f0001-7472-7967-6768-65696d000001"
CHAR_UUID = "5e1f0002-7472-7967-6768-65696d000001"

VERSION = 1
RECEIVED = 1  # the hub stored the alarm durably
DELIVERED = 2  # the response centre's receipt came back
STATES = (RECEIVED, DELIVERED)
FRAME_LEN = 15
_NONCE_MARK = 0xA0


class AckError(ValueError):
    """Any frame this module will not accept (length, version, state, MIC)."""


def _le32(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF))


def nonce(mac, counter, state):
    mac = bytes(mac)
    if len(mac) != 6:
        raise AckError("MAC must be 6 bytes")
    return mac + bthome.UUID_BYTES + bytes((_NONCE_MARK | state,)) + _le32(counter)


def encode(aes, mac, counter, state):
    """Ack frame for the alarm advert with `counter`. aes: AES-ECB object for the device key
    (hub: host_aes(key)); mac: the device's 6 bytes in display order."""
    if state not in STATES:
        raise AckError("unknown ack state %r" % (state,))
    if counter < 0 or counter > 0xFFFFFFFF:
        raise AckError("counter out of range")
    body = bytes((state,)) + _le32(counter)
    ct, mic = ccm.encrypt(aes, nonce(mac, counter, state), body)
    return bytes((VERSION,)) + body + ct + mic


def decode(aes, mac, frame):
    """(counter, state) of a valid frame for this device and key; AckError otherwise."""
    frame = bytes(frame)
    if len(frame) != FRAME_LEN:
        raise AckError("ack frame is %d bytes, expected %d" % (len(frame), FRAME_LEN))
    if frame[0] != VERSION:
        raise AckError("unknown ack version %d" % frame[0])
    state = frame[1]
    if state not in STATES:
        raise AckError("unknown ack state %d" % state)
    counter = frame[2] | (frame[3] << 8) | (frame[4] << 16) | (frame[5] << 24)
    try:
        pt = ccm.decrypt(aes, nonce(mac, counter, state), frame[6:11], frame[11:])
    except ccm.CCMError:
        raise AckError("MIC does not verify (wrong key or forged ack)") from None
    if pt != frame[1:6]:
        raise AckError("encrypted header does not match the clear one")
    return counter, state


def alarm_counter(svc):
    """The counter an ack for this alarm advert carries, from its service data (device-info
    byte on): the BTHome encryption counter, or for a plain advert (bench device without a
    key) its packet id."""
    info = bthome.check_header(svc)
    if info & bthome.INFO_ENCRYPTED:
        c = svc[-8:-4]
        return c[0] | (c[1] << 8) | (c[2] << 16) | (c[3] << 24)
    pid = bthome.decode_plain(svc).get(bthome.PACKET_ID)
    if pid is None:
        raise AckError("plain advert without a packet id cannot be acknowledged")
    return pid


def host_aes(key):
    """CPython only (hub, tests): an ECB object like MicroPython's cryptolib.aes(key, 1)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    class _Ecb:
        def __init__(self, k):
            self._enc = Cipher(algorithms.AES(bytes(k)), modes.ECB()).encryptor()

        def encrypt(self, block):
            return self._enc.update(bytes(block))

    return _Ecb(key)
