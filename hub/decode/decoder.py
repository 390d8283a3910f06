"""Advert -> Report: identify the device, verify and decrypt BTHome, reject replays. Never raises.

Every advert from a device with a key must be encrypted with that key (AES-CCM, BTHome v2)
and carry a counter strictly greater than the last one accepted from that device; the last
counters are persisted (hub/decode/counters.py), so a recording played back after a hub restart is
still refused. What is dropped is counted by reason in `stats`:

  unknown_device  MAC not in the configuration
  malformed       not BTHome v2, truncated, or objects we cannot parse
  plaintext       unencrypted advert from a device that has a key (downgrade attempt)
  bad_mic         MIC does not verify: forged, corrupted, or the wrong key
  replay          authentic, but its counter is below the last accepted one
  repeat          the same frame again (a device repeats each advert in a burst; an authentic
                  frame with the last accepted counter is that frame): not an attack
  accepted        new, authentic: turned into a Report

Some drops mean a device's adverts cannot get through, which for an alarm button is as bad as
a flat battery: an authentic old advert (someone replaying a recording, or a device whose
counter went backwards and needs re-provisioning), or repeated adverts from a known device
that fail authentication (wrong key after a swap, a device that lost its key, forgery
attempts). For these the decoder calls `on_alert(device, type, detail)` once, until that
device's next accepted advert; the hub turns it into a technical alarm.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from hub.config.settings import Device
from hub.decode import shelly
from hub.decode.counters import CounterStore
from hub.radio.scanner import Advert
from protocols import bthome

log = logging.getLogger(__name__)

_NAMES = {oid: spec[0] for oid, spec in bthome.OBJECTS.items()}
_V2 = bthome.INFO_VERSION_2
_MIN_ENCRYPTED = 1 + 2 + bthome.COUNTER_LEN + bthome.MIC_LEN
# Authentication failures from one device, without an accepted advert in between, before the
# hub is told: one corrupted advert is noise, three in a row are not.
AUTH_FAILURES_ALERT = 3
ALERT_REPLAY = "radio_replay"
ALERT_AUTH = "radio_auth_failed"

AlertCallback = Callable[[Device, str, dict[str, object]], None]


@dataclass(frozen=True, slots=True)
class Report:
    """What one device said in one (new, authentic) advert."""

    device: Device
    time: float
    rssi: int
    values: dict[str, int]
    packet_id: int | None
    counter: int | None = None  # encryption counter; None for a key-less (plain) device
    trigger: bool = False  # device-info trigger flag: set on events, clear on heartbeats
    # The same for every copy of this one advert and for no other (advert_id): a press's
    # alarm takes it as its id, so the device's repeat of a press the hub already delivered
    # (after its database was lost) is de-duplicated by the centre, not a second call.
    advert_id: str | None = None

    @property
    def heartbeat(self) -> bool:
        return not self.trigger and not self.values.get("button")


class _Peer:
    """Per-device decoder state; the AESCCM object is built once per key, not per advert."""

    __slots__ = ("device", "mac6", "aead", "last_frame", "last_packet", "auth_failures",
                 "alerted")

    def __init__(self, device: Device) -> None:
        self.device = device
        self.mac6 = bthome.mac_bytes(device.mac)
        self.aead = AESCCM(device.key, tag_length=bthome.MIC_LEN) if device.key else None
        self.last_frame: bytes | None = None
        self.last_packet: int | None = None
        self.auth_failures = 0
        self.alerted = False


def _values(objects: list[tuple[int, int]]) -> dict[str, int]:
    values = {_NAMES[oid]: v for oid, v in objects}
    if len(values) != len(objects):  # repeated object ids get BTHome's _1, _2 suffixes
        values = bthome.Decoded(0, objects).as_dict()
    return values


class AdvertDecoder:
    def __init__(
        self,
        devices_by_mac: dict[str, Device],
        counters: CounterStore | None = None,
        on_alert: AlertCallback | None = None,
    ) -> None:
        self.devices = devices_by_mac
        self.on_alert = on_alert
        self.counters = counters if counters is not None else CounterStore(":memory:")
        self.stats: Counter[str] = Counter()
        self.device_stats: Counter[tuple[str, str]] = Counter()
        self._peers = {mac: _Peer(d) for mac, d in devices_by_mac.items()}

    def decode(self, advert: Advert) -> Report | None:
        try:
            return self._decode(advert)
        except Exception:  # one bad advert must never stop the others
            self.stats["error"] += 1
            log.exception("decoder error on advert from %s", advert.mac)
            return None

    def _count(self, device: Device | None, reason: str) -> int:
        """Count one advert of this kind; how many this device has had so far."""
        self.stats[reason] += 1
        k = (device.id if device is not None else "?", reason)
        n = self.device_stats[k] = self.device_stats[k] + 1
        return n

    def _drop(self, device: Device | None, reason: str, detail: str = "") -> None:
        n = self._count(device, reason)
        # Warn on the 1st, 10th, 100th, ... of a kind per device: visible, but a flood of
        # forged adverts cannot flood the log.
        if reason not in ("repeat", "unknown_device") and _power_of_ten(n):
            log.warning("dropped advert from %s: %s (%d so far) %s",
                        device.id if device is not None else "?", reason, n, detail)

    def _accepted(self, peer: _Peer, counter: int, svc: bytes) -> None:
        """An authentic new advert: its counter is the one to beat, and the device's
        failures and alert start over."""
        self.counters.accept(peer.device.id, counter)
        peer.last_frame = svc
        peer.auth_failures = 0
        peer.alerted = False
        self.stats["accepted"] += 1

    def _auth_failed(self, peer: _Peer, reason: str) -> None:
        peer.auth_failures += 1
        if peer.auth_failures >= AUTH_FAILURES_ALERT:
            self._alert(peer, ALERT_AUTH, {"reason": reason, "failures": peer.auth_failures})

    def _alert(self, peer: _Peer, type_: str, detail: dict[str, object]) -> None:
        if peer.alerted or self.on_alert is None:
            return
        peer.alerted = True
        self.on_alert(peer.device, type_, detail)

    def _open(self, peer: _Peer, svc: bytes, what: str) -> tuple[bytes, int] | None:
        """Authenticate and decrypt an encrypted v2 advert and check its counter against the
        last one accepted: (plaintext, counter), or None with the drop counted (and an alert
        raised where due). One path for our devices and for off-the-shelf ones (shelly.py)."""
        device, aead = peer.device, peer.aead
        if aead is None:  # callers send a keyless device elsewhere first
            raise ValueError(f"{device.id}: no key to open an encrypted advert with")
        if not svc[0] & bthome.INFO_ENCRYPTED:
            self._drop(device, "plaintext", f"unencrypted advert from {what}")
            self._auth_failed(peer, "plaintext")
            return None
        if svc == peer.last_frame:
            self.stats["repeat"] += 1
            return None
        if len(svc) < _MIN_ENCRYPTED:
            self._drop(device, "malformed", "encrypted advert too short")
            return None
        ctr = svc[-8:-4]
        try:
            pt = aead.decrypt(
                peer.mac6 + bthome.UUID_BYTES + svc[:1] + ctr, svc[1:-8] + svc[-4:], None
            )
        except InvalidTag:
            self._drop(device, "bad_mic")
            self._auth_failed(peer, "bad_mic")
            return None
        counter = int.from_bytes(ctr, "little")
        last = self.counters.last(device.id)
        if last is not None and counter <= last:
            if counter == last and (peer.last_frame is None or peer.last_frame == svc):
                # The frame last accepted (e.g. its burst still on the air after a hub restart).
                self.stats["repeat"] += 1
                peer.last_frame = svc
                return None
            self._drop(device, "replay", f"counter {counter} <= last accepted {last}")
            self._alert(peer, ALERT_REPLAY, {"counter": counter, "last_counter": last})
            return None
        return pt, counter

    def _decode_shelly(self, peer: _Peer, advert: Advert) -> Report | None:
        """The path for a device with a Shelly `model` (shelly.py): same authentication and
        replay rules as our own devices, Shelly's objects, packet id and button semantics."""
        device = peer.device
        svc = advert.service_data
        if peer.aead is None:  # hub/config/keys.py gives every device its key; tests may not
            self._drop(device, "malformed", "a Shelly device needs its bindkey")
            return None
        opened = self._open(peer, svc, "a Shelly with a bindkey")
        if opened is None:
            return None
        pt, counter = opened
        objects, stopped = shelly.parse_objects(pt)
        if stopped is not None:
            # Counted and logged, not dropped: it is authentic, and what came before is sound.
            n = self._count(device, "shelly_unknown_object")
            if _power_of_ten(n):
                log.warning("advert from %s: object 0x%02x unknown or truncated; used the"
                            " objects before it (%d so far)", device.id, stopped, n)
        self._accepted(peer, counter, svc)
        values = shelly.values_for(device.role, objects)
        trigger = bool(svc[0] & bthome.INFO_TRIGGER)
        packet_id = values.get("packet_id")
        if packet_id is not None and packet_id == peer.last_packet:
            # The same packet id again: the same event re-sent. State and liveness count;
            # the event has been acted on already.
            self.stats["shelly_repeat_event"] += 1
            values.pop("button", None)
            values.pop("button_event", None)
            trigger = False
        peer.last_packet = packet_id
        return Report(device, advert.received_at, advert.rssi, values, packet_id, counter,
                      trigger, advert_id(peer.mac6, svc))

    def _decode(self, advert: Advert) -> Report | None:
        peer = self._peers.get(advert.mac)
        if peer is None:
            self._drop(None, "unknown_device")
            return None
        device = peer.device
        svc = advert.service_data
        if not svc or svc[0] & bthome.VERSION_MASK != _V2:
            self._drop(device, "malformed", "not BTHome v2")
            return None
        if device.model:  # an off-the-shelf sensor: its own objects and packet id
            return self._decode_shelly(peer, advert)
        if peer.aead is None:
            return self._decode_plain(peer, advert)
        opened = self._open(peer, svc, "a device with a key")
        if opened is None:
            return None
        pt, counter = opened
        try:
            objects = bthome.decode_objects(pt)
        except bthome.DecodeError as e:
            self._drop(device, "malformed", str(e))
            return None
        self._accepted(peer, counter, svc)
        values = _values(objects)
        return Report(
            device, advert.received_at, advert.rssi, values, values.get("packet_id"), counter,
            bool(svc[0] & bthome.INFO_TRIGGER), advert_id(peer.mac6, svc),
        )

    def _decode_plain(self, peer: _Peer, advert: Advert) -> Report | None:
        # Only for devices configured without a key (unit tests, bench rigs): the running
        # hub attaches a key to every device (hub/config/keys.py) and so never takes this path.
        try:
            decoded = bthome.decode_plain(advert.service_data)
        except bthome.DecodeError as e:
            self._drop(peer.device, "malformed", str(e))
            return None
        values = _values(decoded.objects)
        packet_id = values.get("packet_id")
        # A device repeats each advert for a few seconds so that one gets through; the packet
        # id tells a repeat from a new event.
        if packet_id is not None:
            if peer.last_packet == packet_id:
                self.stats["repeat"] += 1
                return None
            peer.last_packet = packet_id
        self.stats["accepted"] += 1
        return Report(
            peer.device, advert.received_at, advert.rssi, values, packet_id, None, decoded.trigger
        )


def advert_id(mac6: bytes, svc: bytes) -> str:
    """An id for one encrypted advert: a hash of the device's address and the frame. The
    frame holds the counter (never reused with a key) and the MIC (made with the key), so a
    new press, or the same counter under a new key, gets a new id."""
    return hashlib.blake2b(mac6 + svc, digest_size=16, person=b"tryggheim-advert").hexdigest()


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


def inspect(data: bytes, mac: str, keys: dict[str, bytes]) -> dict[str, Any]:
    """Everything one advert says, for `tryggheim decode` (installers, bug reports).
    data: BTHome service data from the device-info byte, optionally with the D2FC UUID in
    front, or a complete advertising payload. keys: candidate device id -> key; the one
    whose MIC verifies is named. Never raises for bad data: the problem is in "error"."""
    out: dict[str, Any] = {"mac": mac.upper()}
    svc = data
    try:
        if data[:3] == b"\x02\x01\x06":
            found = bthome.service_data_from_advert(data)
            if found is None:
                raise bthome.DecodeError("no BTHome (0xFCD2) service data in the advert")
            svc = found
        elif data[:2] == bthome.UUID_BYTES and len(data) > 2 and data[2] & 0xE0 == _V2:
            svc = data[2:]
        out["service_data"] = svc.hex()
        info = bthome.check_header(svc)
        out["info"] = f"0x{info:02x}"
        out["trigger"] = bool(info & bthome.INFO_TRIGGER)
        out["encrypted"] = bool(info & bthome.INFO_ENCRYPTED)
        if out["encrypted"]:
            info, ct, ctr, mic = bthome.split_encrypted(svc)
            out["counter"] = int.from_bytes(ctr, "little")
            out["mic_verified"] = False
            nonce = bthome.mac_bytes(mac) + bthome.UUID_BYTES + svc[:1] + ctr
            pt = None
            for dev, key in keys.items():
                try:
                    pt = AESCCM(key, tag_length=bthome.MIC_LEN).decrypt(nonce, ct + mic, None)
                except InvalidTag:
                    continue
                out["mic_verified"] = True
                out["key_of"] = dev
                break
            if pt is None:
                raise bthome.DecodeError(
                    "MIC does not verify with any given key" if keys else "encrypted: no key given"
                )
            objects = shelly.inspect_objects(pt)
        else:
            objects = shelly.inspect_objects(svc[1:])
        out["objects"] = [
            {"id": f"0x{oid:02x}", "name": shelly.object_name(oid), "value": v}
            for oid, v in objects
        ]
        out["values"] = shelly.values_for("", objects)
        button = out["values"].get("button")
        if button is not None:
            out["button_event"] = bthome.BUTTON_EVENT_NAMES.get(button, "unknown")
    except (bthome.DecodeError, ValueError) as e:
        out["error"] = str(e)
    return out
