"""protocols/ack.py: the hub -> device acknowledgement frame (format in protocols/ACK.md)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given
from hypothesis import strategies as st

from protocols import ack, bthome

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
MAC = bytes.fromhex("C0FFEE000042")
AES = ack.host_aes(KEY)


@given(counter=st.integers(0, 0xFFFFFFFF), state=st.sampled_from(ack.STATES))
def test_frame_is_aes_ccm_as_the_hub_computes_it(counter: int, state: int) -> None:
    frame = ack.encode(AES, MAC, counter, state)
    assert len(frame) == ack.FRAME_LEN
    body = bytes((state,)) + counter.to_bytes(4, "little")
    ref = AESCCM(KEY, tag_length=4).encrypt(ack.nonce(MAC, counter, state), body, None)
    assert frame == bytes((ack.VERSION,)) + body + ref
    assert ack.decode(AES, MAC, frame) == (counter, state)


@given(pos=st.integers(0, ack.FRAME_LEN * 8 - 1))
def test_any_flipped_bit_is_rejected(pos: int) -> None:
    frame = bytearray(ack.encode(AES, MAC, 1234, ack.DELIVERED))
    frame[pos // 8] ^= 1 << (pos % 8)
    with pytest.raises(ack.AckError):
        ack.decode(AES, MAC, bytes(frame))


def test_wrong_key_wrong_device_and_junk_are_rejected() -> None:
    frame = ack.encode(AES, MAC, 7, ack.RECEIVED)
    with pytest.raises(ack.AckError, match="MIC"):
        ack.decode(ack.host_aes(os.urandom(16)), MAC, frame)
    with pytest.raises(ack.AckError, match="MIC"):
        ack.decode(AES, bytes.fromhex("C0FFEE000043"), frame)  # an ack for another device
    for junk in (b"", b"\x01", frame + b"\x00", b"\x02" + frame[1:]):
        with pytest.raises(ack.AckError):
            ack.decode(AES, MAC, junk)
    with pytest.raises(ack.AckError):
        ack.encode(AES, MAC, 7, 3)


@given(info=st.integers(0, 255), counter=st.integers(0, 0xFFFFFFFF),
       state=st.sampled_from(ack.STATES))
def test_ack_nonces_never_meet_advert_nonces(info: int, counter: int, state: int) -> None:
    # Any BTHome v2 device-info byte: version bits 010 (the decoder refuses anything else).
    adv_info = (info & 0x1F) | bthome.INFO_VERSION_2
    adv_nonce = bthome.nonce(MAC, adv_info, counter.to_bytes(4, "little"))
    assert ack.nonce(MAC, counter, state) != adv_nonce
    assert ack.nonce(MAC, counter, ack.RECEIVED) != ack.nonce(MAC, counter, ack.DELIVERED)


def test_alarm_counter_of_encrypted_and_plain_adverts() -> None:
    payload = bthome.encode_objects([(bthome.PACKET_ID, 9), (bthome.BUTTON, 1)])
    enc = bthome.encrypt_service_data(AES, MAC, payload, 70000, trigger=True)
    assert ack.alarm_counter(enc) == 70000
    assert ack.alarm_counter(bthome.service_data(payload, trigger=True)) == 9
    with pytest.raises(ack.AckError):
        ack.alarm_counter(bthome.service_data(bthome.encode_objects([(bthome.BUTTON, 1)])))
