"""Published BTHome test vectors decode with our decoder; our encoder reproduces them.

Encrypted vectors: bthome.io/encryption and bthome-ble's tests (notes/bthome.md §3, V1-V5),
key 231d39c1d7cc1ab1aee224cd096db932, MAC 54:48:E6:8F:80:A5. Plain ones: bthome.io/format.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import bthome
from tests.protocols.test_ccm import Ecb

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "54:48:E6:8F:80:A5"
T_H = [(bthome.TEMPERATURE, 2506), (bthome.HUMIDITY, 5055)]  # 25.06 °C, 50.55 %

# (plaintext objects, counter, service data after the UUID)
ENCRYPTED = [
    ("V1", "02ca0903bf13", 0x00112233, "41e445f3c9962b332211006c7c4519"),
    ("V2", "02ca0903bf13", 0x00112234, "413e932cc7175f34221100553876af"),
    ("V3", "2101", 0x33221100, "4187b90011223372b0231f"),
    ("V4", "02ca0903bf13", 0x33221100, "41a47266c95f730011223378237214"),
    ("V5a", "02cb0903bf13", 0xFFFFFFFF, "41ba0db07aeef6ffffffff21fd4600"),
    ("V5b", "02cb0903bf13", 0x00000000, "41de40b50e676600000000d7cb95de"),
]


@pytest.mark.parametrize("name,plain,counter,svc", ENCRYPTED, ids=[e[0] for e in ENCRYPTED])
def test_encrypted_vectors(name: str, plain: str, counter: int, svc: str) -> None:
    data = bytes.fromhex(svc)
    d = bthome.decode(data, MAC, Ecb(KEY))
    assert d.encrypted and not d.trigger
    assert d.counter == counter
    assert d.objects == bthome.decode_objects(bytes.fromhex(plain))
    ours = bthome.encrypt_service_data(
        Ecb(KEY), bthome.mac_bytes(MAC), bytes.fromhex(plain), counter
    )
    assert ours == data


def test_v1_objects_and_complete_advert() -> None:
    d = bthome.decode(bytes.fromhex(ENCRYPTED[0][3]), MAC, Ecb(KEY))
    assert d.objects == T_H
    svc = bthome.encrypt_service_data(
        Ecb(KEY), bthome.mac_bytes(MAC), bthome.encode_objects(T_H), 1122867
    )
    assert bthome.advert(svc).hex() == "0201061216d2fc41e445f3c9962b332211006c7c4519"


PLAIN = [
    # bthome.io/format: the example advert (name "DIY-sensor", 25.00 °C, 50.55 %).
    ("format-example", "0201060b094449592d73656e736f720a16d2fc4002c40903bf13",
     {"temperature_centi_c": 2500, "humidity_centi_pct": 5055}),
    # notes §7: six binary objects plus a button press, as bthome-ble decodes it.
    ("six-objects", "020106" "15" "16d2fc44000c01630cd00b1a00210023012b003a01",
     {"packet_id": 12, "battery": 99, "voltage_mv": 3024, "door": 0, "motion": 0,
      "occupancy": 1, "tamper": 0, "button": 1}),
]


@pytest.mark.parametrize("name,adv,values", PLAIN, ids=[p[0] for p in PLAIN])
def test_plain_vectors(name: str, adv: str, values: dict[str, int]) -> None:
    svc = bthome.service_data_from_advert(bytes.fromhex(adv))
    assert svc is not None
    assert bthome.decode(svc).as_dict() == values


# bthome-ble's own plain test vectors (tests/test_parser_v2.py, the named tests), service data
# from the device-info byte, with the values bthome-ble asserts for them.
BTHOME_BLE_PLAIN = [
    ("test_bthome_voltage", "400c020c", {"voltage_mv": 3074}),  # 3.074 V
    ("test_bthome_binary_sensor", "400f01", {"generic": 1}),
    ("test_bthome_binary_sensor_opening", "401100", {"opening": 0}),
    ("test_bthome_binary_sensor_window", "402d01", {"window": 1}),
    ("test_bthome_event_button_long_press", "403a04", {"button": bthome.BUTTON_LONG_PRESS}),
    ("test_bthome_event_button_hold_press", "403a80", {"button": bthome.BUTTON_HOLD_PRESS}),
    ("test_bthome_event_triple_button_device", "403a003a013a03",
     {"button_1": 0, "button_2": bthome.BUTTON_PRESS, "button_3": bthome.BUTTON_TRIPLE_PRESS}),
]


@pytest.mark.parametrize("name,svc,values", BTHOME_BLE_PLAIN, ids=[v[0] for v in BTHOME_BLE_PLAIN])
def test_bthome_ble_plain_vectors(name: str, svc: str, values: dict[str, int]) -> None:
    assert bthome.decode(bytes.fromhex(svc)).as_dict() == values


def test_repeated_button_objects_get_suffixes() -> None:
    # bthome.io/format: 3A00 3A01 = no event on button 1, press on button 2.
    d = bthome.decode(bytes.fromhex("403a003a01"))
    assert d.as_dict() == {"button_1": 0, "button_2": 1}


OBJ_IDS = sorted(bthome.OBJECTS)


def _value(oid: int) -> st.SearchStrategy[int]:
    _, size, signed = bthome.OBJECTS[oid]
    if signed:
        return st.integers(-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1)
    return st.integers(0, (1 << (8 * size)) - 1)


objects_st = st.lists(st.sampled_from(OBJ_IDS), min_size=1, max_size=5).flatmap(
    lambda ids: st.tuples(*[st.tuples(st.just(i), _value(i)) for i in ids])
)
mac_st = st.binary(min_size=6, max_size=6)
key_st = st.binary(min_size=16, max_size=16)


@given(objects_st, st.integers(0, bthome.COUNTER_MAX), mac_st, key_st, st.booleans())
def test_encrypted_round_trip(objs, counter, mac6, key, trigger) -> None:
    payload = bthome.encode_objects(objs)
    svc = bthome.encrypt_service_data(Ecb(key), mac6, payload, counter, trigger)
    assert len(svc) == len(payload) + 9
    d = bthome.decode(svc, mac6, Ecb(key))
    assert d.objects == sorted(objs, key=lambda o: o[0])
    assert d.counter == counter and d.trigger == trigger


@given(objects_st, st.integers(0, bthome.COUNTER_MAX), st.data())
def test_flipped_bit_anywhere_is_rejected(objs, counter, data) -> None:
    mac6 = bthome.mac_bytes(MAC)
    svc = bytearray(bthome.encrypt_service_data(Ecb(KEY), mac6, bthome.encode_objects(objs),
                                                counter))
    bit = data.draw(st.integers(0, len(svc) * 8 - 1))
    svc[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(bthome.DecodeError):
        bthome.decode(bytes(svc), mac6, Ecb(KEY))


@given(objects_st, st.integers(0, 2**32 - 1))
def test_wrong_mac_or_key_is_rejected(objs, counter) -> None:
    svc = bthome.encrypt_service_data(Ecb(KEY), bthome.mac_bytes(MAC), bthome.encode_objects(objs),
                                      counter)
    with pytest.raises(bthome.DecodeError):
        bthome.decode(svc, "54:48:E6:8F:80:A6", Ecb(KEY))
    with pytest.raises(bthome.DecodeError):
        bthome.decode(svc, MAC, Ecb(bytes(16)))


@given(st.binary(max_size=40))
def test_arbitrary_bytes_with_key_raise_only_decode_error(data: bytes) -> None:
    try:
        bthome.decode(data, MAC, Ecb(KEY))
    except bthome.DecodeError:
        pass


def test_encoder_refuses_what_bthome_cannot_carry() -> None:
    mac6 = bthome.mac_bytes(MAC)
    with pytest.raises(bthome.EncodeError):
        bthome.encrypt_service_data(Ecb(KEY), mac6, b"\x21", 1)  # under 2 bytes
    with pytest.raises(bthome.EncodeError):
        bthome.encrypt_service_data(Ecb(KEY), mac6, b"\x21\x01", 2**32)
    # 16 bytes of objects no longer fit a legacy advert once encrypted (15 is the budget).
    big = bthome.encrypt_service_data(Ecb(KEY), mac6, bytes(16), 1)
    with pytest.raises(bthome.EncodeError):
        bthome.advert(big)
    bthome.advert(bthome.encrypt_service_data(Ecb(KEY), mac6, bytes(15), 1))
