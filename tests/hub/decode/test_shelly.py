"""Shelly BLU sensors (hub/decode/shelly.py): the adverts published in bthome-ble's own test suite,
adverts built to the same format, what differs from our own devices (objects, packet id,
button events) and config validation (registration: tests/hub/installer/test_add_shelly.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.config import models
from hub.config import settings as hub_config
from hub.config.settings import Device
from hub.decode import shelly
from hub.decode.counters import CounterStore
from hub.decode.decoder import AdvertDecoder
from hub.radio.scanner import Advert
from protocols import bthome

# Published Shelly BLU adverts, from Bluetooth-Devices/bthome-ble tests/test_parser_v2.py
# (version 3.20.0, commit d55bd3a): service data from the device-info byte, sender, key.
# test_encrypted_shelly_blu_button_event: a Shelly BLU Button1 (SBBT-002C), encrypted.
PUB_BUTTON = (bytes.fromhex("450aeb84467f85ba0100003188788c"), "B4:35:22:F5:3D:A4",
              bytes.fromhex("90bffd73cb6b26ef58a7a8eba9232036"))
# test_bthome_motion: a Shelly BLU Motion (SBMO-003Z), encrypted, motion detected.
PUB_MOTION = (bytes.fromhex("4187b90011223372b0231f"), "54:48:E6:8F:80:A5",
              bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932"))
# Plain ones (a Shelly with encryption off): the objects are what an encrypted one carries.
PUB_PLAIN = {
    "test_bthome_binary_sensor_window (SBDW-002C)": (b"\x40\x2d\x01", "door", {"door": 1}),
    "test_bthome_event_button_long_press (SBBT-002C)": (b"\x40\x3a\x04", "pendant",
                                                        {"button": 4}),
    "test_bthome_shelly_button": (b"@\x00R\x01d:\x01", "pendant",
                                  {"packet_id": 82, "battery": 100, "button": 1}),
    "test_bthome_shelly_button_no_press (press)": (b"\x44\x00\x21\x01\x5e\x3a\x01", "pendant",
                                                   {"packet_id": 33, "battery": 94, "button": 1}),
    "test_bthome_shelly_button_no_press (none)": (b"\x44\x00\x23\x01\x5e\x3a\x00", "pendant",
                                                  {"packet_id": 35, "battery": 94, "button": 0}),
    # bthome-ble fires no event for 0xFE ("invalid"); for Shelly it is "hold" before
    # firmware 1.0.20, and on the resident's alarm button it must call for help.
    "test_bthome_invalid_button_event (SBBT-002C)": (b"\x40\x3a\xfe", "pendant",
                                                     {"button": 4, "button_event": 0x80}),
}

KEY = bytes(range(16))
DOOR = Device("door-1", "door", "7C:C6:B6:00:00:01", "hall", KEY, model="shelly-blu-door-window")
PIR = Device("pir-1", "pir", "7C:C6:B6:00:00:02", "hall", KEY, model="shelly-blu-motion")
BUTTON = Device("button-1", "pendant", "7C:C6:B6:00:00:03", "bedroom", KEY,
                model="shelly-blu-button1")


def decoder(*devices: Device, tmp_path: Path | None = None) -> AdvertDecoder:
    store = CounterStore(tmp_path / "counters.sqlite") if tmp_path else None
    return AdvertDecoder({d.mac: d for d in devices}, store)


def adv(dev: Device, svc: bytes, t: float = 0.0) -> Advert:
    return Advert(dev.mac, -60, svc, t)


def built(dev: Device, counter: int, objects: list[tuple[int, int]], trigger: bool = True,
          key: bytes = KEY) -> bytes:
    return shelly.build_service_data(key, dev.mac, objects, counter, trigger)


# -- the published adverts -------------------------------------------------------------------
def test_published_encrypted_button_press_is_an_alarm_press() -> None:
    svc, mac, key = PUB_BUTTON
    dev = Device("pendant-2", "pendant", mac, key=key, model="shelly-blu-button1")
    r = decoder(dev).decode(Advert(mac, -60, svc, 1.0))
    assert r is not None
    assert r.values == {"packet_id": 7, "battery": 100, "button": 1}
    assert r.counter == 442 and r.trigger and not r.heartbeat


def test_published_encrypted_motion() -> None:
    svc, mac, key = PUB_MOTION
    dev = Device("pir-2", "pir", mac, key=key, model="shelly-blu-motion")
    r = decoder(dev).decode(Advert(mac, -60, svc, 1.0))
    assert r is not None and r.values == {"motion": 1} and r.counter == 0x33221100


@pytest.mark.parametrize("name", sorted(PUB_PLAIN))
def test_published_plain_objects(name: str) -> None:
    svc, role, values = PUB_PLAIN[name]
    objects, stopped = shelly.parse_objects(svc[1:])
    assert stopped is None
    assert shelly.values_for(role, objects) == values


def test_published_plain_advert_from_a_keyed_shelly_is_a_downgrade() -> None:
    d = decoder(DOOR)
    for _ in range(3):
        assert d.decode(adv(DOOR, b"\x40\x2d\x01")) is None
    assert d.stats["plaintext"] == 3


def test_wrong_bindkey_fails_authentication() -> None:
    svc, mac, _ = PUB_BUTTON
    dev = Device("pendant-2", "pendant", mac, key=bytes(16), model="shelly-blu-button1")
    d = decoder(dev)
    assert d.decode(Advert(mac, -60, svc, 1.0)) is None
    assert d.stats["bad_mic"] == 1


def test_published_advert_from_another_address_fails_authentication() -> None:
    # The MAC is in the nonce: the same bytes relayed by another sender do not verify.
    svc, _, key = PUB_BUTTON
    dev = Device("pendant-2", "pendant", "B4:35:22:F5:3D:A5", key=key,
                 model="shelly-blu-button1")
    d = decoder(dev)
    assert d.decode(Advert(dev.mac, -60, svc, 1.0)) is None
    assert d.stats["bad_mic"] == 1


# -- adverts built to the same format --------------------------------------------------------
def test_our_builder_reproduces_the_published_encrypted_adverts() -> None:
    svc, mac, key = PUB_BUTTON
    assert shelly.build_service_data(key, mac, [(0x00, 7), (0x01, 100), (0x3A, 1)], 442,
                                     trigger=True) == svc
    svc, mac, key = PUB_MOTION
    assert shelly.build_service_data(key, mac, [(0x21, 1)], 0x33221100) == svc


def test_bthome_ble_reads_built_door_advert_like_we_do() -> None:
    from bthome_ble import BTHomeBluetoothDeviceData
    from habluetooth import BluetoothServiceInfoBleak

    svc = built(DOOR, 1000, [(0x00, 9), (0x01, 87), (0x05, 12345), (0x2D, 1), (0x3F, -125)])
    info = BluetoothServiceInfoBleak(
        "SBDW-002C", DOOR.mac, -60, {}, {bthome.SERVICE_UUID: svc}, [bthome.SERVICE_UUID],
        "local", None, None, False, 0.0, None)
    theirs = BTHomeBluetoothDeviceData(bindkey=KEY)
    update = theirs.update(info)
    assert theirs.bindkey_verified
    got = {k.key: v.native_value for k, v in update.entity_values.items()}
    assert got["battery"] == 87 and got["illuminance"] == pytest.approx(123.45)
    assert got["rotation"] == pytest.approx(-12.5)
    assert [v.native_value for k, v in update.binary_entity_values.items()
            if k.key == "window"] == [True]
    r = decoder(DOOR).decode(adv(DOOR, svc))
    assert r is not None
    assert r.values == {"packet_id": 9, "battery": 87, "illuminance_centi_lux": 12345,
                        "door": 1, "rotation_deci_deg": -125}


def test_object_lengths_agree_with_bthome_ble() -> None:
    from bthome_ble.const import MEAS_TYPES

    for oid, (size, signed) in shelly._LENGTHS.items():
        meas = MEAS_TYPES[oid]
        assert meas.data_length == size, hex(oid)
        if meas.data_format in ("signed_integer", "unsigned_integer"):
            assert (meas.data_format == "signed_integer") == signed, hex(oid)


def test_repeated_packet_id_is_one_press_even_with_a_new_counter() -> None:
    d = decoder(BUTTON)
    first = d.decode(adv(BUTTON, built(BUTTON, 10, [(0x00, 5), (0x01, 90), (0x3A, 1)])))
    again = d.decode(adv(BUTTON, built(BUTTON, 11, [(0x00, 5), (0x01, 90), (0x3A, 1)])))
    same_frame = d.decode(adv(BUTTON, built(BUTTON, 11, [(0x00, 5), (0x01, 90), (0x3A, 1)])))
    nxt = d.decode(adv(BUTTON, built(BUTTON, 12, [(0x00, 6), (0x01, 90), (0x3A, 2)])))
    assert first is not None and first.values["button"] == 1
    assert again is not None and "button" not in again.values and again.heartbeat
    assert same_frame is None
    assert nxt is not None and nxt.values["button"] == 2
    assert d.stats["shelly_repeat_event"] == 1


@pytest.mark.parametrize("event", [0x80, 0xFE, 0x05, 0x06, 0x81])
def test_every_button_event_of_a_shelly_alarm_button_is_an_alarm(event: int) -> None:
    r = decoder(BUTTON).decode(adv(BUTTON, built(BUTTON, 1, [(0x00, 1), (0x3A, event)])))
    assert r is not None
    assert r.values["button"] in bthome.ALARM_BUTTON_EVENTS
    assert r.values["button"] != bthome.BUTTON_CANCEL  # a Shelly has no cancel gesture


def test_replayed_counter_is_refused_and_counters_persist(tmp_path: Path) -> None:
    d = decoder(DOOR, tmp_path=tmp_path)
    assert d.decode(adv(DOOR, built(DOOR, 50, [(0x00, 1), (0x2D, 1)]))) is not None
    d.counters.flush()
    d.counters.close()
    d2 = decoder(DOOR, tmp_path=tmp_path)
    assert d2.decode(adv(DOOR, built(DOOR, 49, [(0x00, 2), (0x2D, 0)]))) is None
    assert d2.stats["replay"] == 1


def test_unknown_object_keeps_what_came_before_and_is_counted() -> None:
    d = decoder(DOOR)
    # 0x2D window, then an id the BTHome table does not have (0xA0), then more bytes.
    svc = built(DOOR, 1, [(0x00, 3), (0x2D, 1)])
    pt_objects = bytes.fromhex("0003" "2d01" "a0ffff" "2101")
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    ctr = (2).to_bytes(4, "little")
    info = svc[0]
    sealed = AESCCM(KEY, tag_length=4).encrypt(
        bthome.mac_bytes(DOOR.mac) + bthome.UUID_BYTES + bytes((info,)) + ctr, pt_objects, None)
    r = d.decode(adv(DOOR, bytes((info,)) + sealed[:-4] + ctr + sealed[-4:]))
    assert r is not None and r.values == {"packet_id": 3, "door": 1}
    assert d.stats["shelly_unknown_object"] == 1


def test_objects_we_do_not_use_are_stepped_over() -> None:
    # Text (length byte), temperature, device type and firmware: none stop the walk.
    payload = bytes.fromhex("0001" "0150" "45e100" "5303616263" "2d01" "f00100" "f2000106")
    objects, stopped = shelly.parse_objects(payload)
    assert stopped is None
    assert shelly.values_for("door", objects) == {
        "packet_id": 1, "battery": 80, "temperature_deci_c": 225, "door": 1,
        "device_type": 1, "firmware_version": 0x060100}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_arbitrary_service_data_never_raises(data: bytes) -> None:
    d = decoder(BUTTON)
    d.decode(adv(BUTTON, bytes((0x45,)) + data))
    d.decode(adv(BUTTON, data))
    assert d.stats.get("error", 0) == 0
    objects, _ = shelly.parse_objects(data)
    shelly.values_for("pendant", objects)


# -- configuration and provisioning ----------------------------------------------------------
HUB = """[site]
id = "home-1"

[hub]
id = "hub-1"
"""


def test_config_rejects_unknown_model_and_wrong_role(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    f.write_text(HUB + '\n[[device]]\nid = "b"\nrole = "door"\nmac = "7C:C6:B6:00:00:03"\n'
                 'model = "shelly-blu-button1"\n\n[[device]]\nid = "c"\nrole = "pir"\n'
                 'mac = "7C:C6:B6:00:00:04"\nmodel = "shelly-blu-moton"\n')
    with pytest.raises(hub_config.ConfigError) as e:
        hub_config.load(f)
    text = str(e.value)
    assert f"{f}:9: device[0].role: a Shelly BLU Button1 is a pendant, not a door" in text
    assert f"{f}:17: device[1].model: 'shelly-blu-moton' is not one of" in text


def test_devices_listing_says_a_shelly_button_gives_no_feedback() -> None:
    assert "no 'help is coming' feedback" in (models.note(BUTTON) or "")
    assert models.note(DOOR) == "Shelly BLU Door/Window"
    assert models.note(Device("p", "pendant", "C0:FF:EE:00:00:01")) is None


def test_installer_tools_read_shelly_objects() -> None:
    # `tryggheim decode` and `tryggheim scan` use inspect(): a Shelly door's light and tilt
    # must not look like a decryption failure to the installer.
    from hub.decode.decoder import inspect

    svc = built(DOOR, 7, [(0x00, 4), (0x01, 77), (0x05, 500), (0x2D, 1), (0x3F, 30)])
    out = inspect(svc, DOOR.mac, {"door-1": KEY})
    assert "error" not in out and out["mic_verified"] and out["key_of"] == "door-1"
    assert out["values"] == {"packet_id": 4, "battery": 77, "illuminance_centi_lux": 500,
                             "door": 1, "rotation_deci_deg": 30}
    assert [o["name"] for o in out["objects"]][2] == "illuminance_centi_lux"
    bad = inspect(built(DOOR, 8, [(0x00, 5)]), DOOR.mac, {"door-1": bytes(16)})
    assert bad["error"].startswith("MIC does not verify")
