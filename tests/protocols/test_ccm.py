"""protocols/ccm.py (AES-CCM built on AES-ECB, for MicroPython) against `cryptography`'s AESCCM."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given
from hypothesis import strategies as st

from protocols import ccm


class Ecb:
    """What the device's board layer gives: an AES-ECB object with encrypt(16 bytes)."""

    def __init__(self, key: bytes) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self.calls = 0

    def encrypt(self, block: bytes) -> bytes:
        assert len(block) == 16
        self.calls += 1
        return self._enc.update(bytes(block))


# BTHome's documented example (bthome.io/encryption; notes/bthome.md §3, step by step).
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
NONCE = bytes.fromhex("5448e68f80a5d2fc4133221100")
PLAIN = bytes.fromhex("02ca0903bf13")


def test_documented_vector() -> None:
    ct, mic = ccm.encrypt(Ecb(KEY), NONCE, PLAIN)
    assert ct.hex() == "e445f3c9962b"
    assert mic.hex() == "6c7c4519"
    assert ccm.decrypt(Ecb(KEY), NONCE, ct, mic) == PLAIN


def test_short_advert_costs_four_block_operations() -> None:
    # B0, one CBC-MAC block, S0, S1: what the device pays per advert (15 bytes or less).
    aes = Ecb(KEY)
    ccm.encrypt(aes, NONCE, bytes(15))
    assert aes.calls == 4


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=13, max_size=13),
       st.binary(max_size=70))
def test_matches_cryptography(key: bytes, nonce: bytes, pt: bytes) -> None:
    ct, mic = ccm.encrypt(Ecb(key), nonce, pt)
    assert ct + mic == AESCCM(key, tag_length=4).encrypt(nonce, pt, None)
    assert ccm.decrypt(Ecb(key), nonce, ct, mic) == pt


@given(st.binary(min_size=1, max_size=40), st.data())
def test_any_flipped_bit_is_rejected(pt: bytes, data: st.DataObject) -> None:
    ct, mic = ccm.encrypt(Ecb(KEY), NONCE, pt)
    blob = bytearray(NONCE + ct + mic)
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    n, c, m = bytes(blob[:13]), bytes(blob[13:-4]), bytes(blob[-4:])
    with pytest.raises(ccm.CCMError):
        ccm.decrypt(Ecb(KEY), n, c, m)


def test_bad_lengths_are_errors() -> None:
    with pytest.raises(ccm.CCMError):
        ccm.encrypt(Ecb(KEY), NONCE[:12], PLAIN)
    with pytest.raises(ccm.CCMError):
        ccm.decrypt(Ecb(KEY), NONCE, PLAIN, b"\x00\x00")
