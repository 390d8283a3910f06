"""BTHome v2 encoding/decoding of the objects the devices send."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import bthome

# Object rows from the BTHome v2 format page (bthome.io/format): packet id 0x09 = 9,
# battery 0x61 = 97 %, voltage 0x0C02 = 3074 mV, button 0x01 = press; device info 0x40.
DOC_VECTOR = bytes.fromhex("40" "0009" "0161" "0c020c" "3a01")


def test_decodes_documented_vector():
    d = bthome.decode_plain(DOC_VECTOR)
    assert d.as_dict() == {"packet_id": 9, "battery": 97, "voltage_mv": 3074, "button": 1}
    assert not d.encrypted and not d.trigger


def test_encodes_documented_vector_in_id_order():
    objs = [(bthome.BUTTON, 1), (bthome.VOLTAGE, 3074), (bthome.PACKET_ID, 9), (bthome.BATTERY, 97)]
    assert bthome.service_data(bthome.encode_objects(objs)) == DOC_VECTOR


def test_full_advert_round_trip():
    svc = bthome.service_data(bthome.encode_objects([(bthome.BUTTON, 4)]), trigger=True)
    adv = bthome.advert(svc)
    assert adv[:3] == b"\x02\x01\x06"
    assert bthome.service_data_from_advert(adv) == svc
    assert bthome.decode_plain(svc).trigger


def test_advert_over_31_bytes_is_refused():
    with pytest.raises(bthome.EncodeError):
        bthome.advert(bthome.service_data(bytes(30)))


def test_value_out_of_range_is_refused():
    with pytest.raises(bthome.EncodeError):
        bthome.encode_objects([(bthome.BATTERY, 256)])


def _range(oid):
    _, size, signed = bthome.OBJECTS[oid]
    if signed:
        return st.integers(-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1)
    return st.integers(0, (1 << (8 * size)) - 1)


@given(st.lists(st.sampled_from(sorted(bthome.OBJECTS)), max_size=6).flatmap(
    lambda ids: st.tuples(*[st.tuples(st.just(i), _range(i)) for i in ids])
))
def test_round_trip(objs):
    svc = bthome.service_data(bthome.encode_objects(objs))
    decoded = bthome.decode_plain(svc).objects
    assert decoded == sorted(objs, key=lambda o: o[0])


@given(st.binary(max_size=40))
def test_arbitrary_bytes_raise_only_decode_error(data):
    try:
        bthome.decode_plain(data)
    except bthome.DecodeError:
        pass


def test_signed_values_and_their_limits():
    assert bthome.decode_objects(bthome.encode_objects([(bthome.TEMPERATURE, -1)])) == [
        (bthome.TEMPERATURE, -1)]
    assert bthome.encode_objects([(bthome.TEMPERATURE, -2506)]) == bytes.fromhex("0236f6")
    with pytest.raises(bthome.EncodeError):
        bthome.encode_objects([(bthome.TEMPERATURE, 32768)])
    with pytest.raises(bthome.EncodeError):
        bthome.encode_objects([(0x99, 1)])


def test_our_device_mapping_uses_bthome_objects():
    # BTHOME.md: fall = problem, cancel = hold_release, every press kind raises an alarm.
    assert bthome.FALL == 0x26 and bthome.BUTTON_CANCEL == 0x81
    assert bthome.BUTTON_CANCEL not in bthome.ALARM_BUTTON_EVENTS
    for oid in (bthome.DOOR, bthome.MOTION, bthome.OCCUPANCY, bthome.TAMPER, bthome.PROBLEM,
                bthome.BATTERY_CHARGING, bthome.BATTERY_LOW, bthome.BUTTON):
        assert bthome.OBJECTS[oid][1] == 1


@given(st.binary(max_size=40))
def test_arbitrary_bytes_raise_only_decode_error_on_every_entry_point(data):
    for fn in (bthome.decode, bthome.decode_objects, bthome.service_data_from_advert,
               bthome.split_encrypted):
        try:
            fn(data)
        except bthome.DecodeError:
            pass
