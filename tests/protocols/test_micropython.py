"""The firmware's encoder and CCM, run in real MicroPython (WebAssembly port, virtual board),
produce byte-identical adverts to the CPython reference, and Home Assistant's parser
(bthome-ble, written by others) decodes every one of them to the values we put in.

The AES block function comes from the board layer (board_esp32.aes_ecb; the port model's
cryptolib computes it on the host, as cryptolib does on the ESP32); everything above it
(objects, CCM, nonce, layout) is the
firmware's own code running in MicroPython.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bthome_ble import BTHomeBluetoothDeviceData
from bthome_ble.const import MEAS_TYPES
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from habluetooth import BluetoothServiceInfoBleak

from protocols import bthome
from tests.conftest import ROOT, requires_node
from tests.protocols.test_ccm import Ecb
from tools.sim.vboard import VirtualBoard

ENCODER_MAIN = '''
import json
import board as board_layer
from protocols import bthome

board = board_layer.get_board()
with open("config.json") as f:
    cases = json.load(f)["cases"]
ciphers = {}
for c in cases:
    payload = bthome.encode_objects([(o[0], o[1]) for o in c["objects"]])
    if c["key"]:
        aes = ciphers.get(c["key"])
        if aes is None:
            aes = ciphers[c["key"]] = board.aes_ecb(bytes.fromhex(c["key"]))
        svc = bthome.encrypt_service_data(aes, bytes.fromhex(c["mac"]), payload, c["counter"],
                                          c["trigger"])
    else:
        svc = bthome.service_data(payload, trigger=c["trigger"])
    print("ADV " + bthome.advert(svc).hex())
'''

BUTTON_VALUES = sorted(bthome.BUTTON_EVENT_NAMES)
BINARY = {oid for oid, m in MEAS_TYPES.items() if type(m.meas_format).__name__ ==
          "BaseBinarySensorDescription"}


def _random_value(rng: random.Random, oid: int) -> int:
    _, size, signed = bthome.OBJECTS[oid]
    if oid == bthome.BUTTON:
        return rng.choice(BUTTON_VALUES)
    if oid in BINARY:
        return rng.randint(0, 1)
    if signed:
        return rng.randint(-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1)
    return rng.randint(0, (1 << (8 * size)) - 1)


def make_cases(n: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    ids = [i for i in bthome.OBJECTS if i != bthome.PACKET_ID]
    cases = []
    for k in range(n):
        encrypted = k % 4 != 3
        budget = bthome.ENCRYPTED_OBJECT_BUDGET if encrypted else bthome.PLAIN_OBJECT_BUDGET
        objs = [(bthome.PACKET_ID, rng.randint(0, 255))]
        used = 2
        for oid in rng.sample(ids, len(ids)):
            size = 1 + bthome.OBJECTS[oid][1]
            if used + size <= budget and len(objs) < 5:
                objs.append((oid, _random_value(rng, oid)))
                used += size
        counter = rng.choice([0, 1, 99, 100, 2**31, bthome.COUNTER_MAX, rng.randint(0, 2**32 - 1)])
        cases.append({
            "objects": objs,
            "key": rng.randbytes(16).hex() if encrypted else "",
            "mac": rng.randbytes(6).hex(),
            "counter": counter,
            "trigger": rng.random() < 0.5,
        })
    # Every object id appears in at least one encrypted case.
    for oid in ids:
        cases.append({"objects": [(bthome.PACKET_ID, 1), (oid, _random_value(rng, oid))],
                      "key": rng.randbytes(16).hex(), "mac": rng.randbytes(6).hex(),
                      "counter": rng.randint(0, 2**32 - 1), "trigger": True})
    return cases


def reference_advert(case: dict[str, Any]) -> bytes:
    """Independent of protocols/ccm.py: `cryptography`'s AESCCM and the layout by hand."""
    payload = bthome.encode_objects([tuple(o) for o in case["objects"]])
    info = 0x40 | (0x04 if case["trigger"] else 0)
    if not case["key"]:
        svc = bytes([info]) + payload
    else:
        info |= 0x01
        ctr = case["counter"].to_bytes(4, "little")
        nonce = bytes.fromhex(case["mac"]) + b"\xd2\xfc" + bytes([info]) + ctr
        sealed = AESCCM(bytes.fromhex(case["key"]), tag_length=4).encrypt(nonce, payload, None)
        svc = bytes([info]) + sealed[:-4] + ctr + sealed[-4:]
    return b"\x02\x01\x06" + bytes([len(svc) + 3, 0x16]) + b"\xd2\xfc" + svc


CASES = make_cases(80)


@pytest.fixture(scope="module")
def micropython_adverts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[bytes]]:
    fw = tmp_path_factory.mktemp("encoder-fw")
    for name in ("board.py", "board_esp32.py"):
        shutil.copy(ROOT / "firmware" / name, fw / name)
    (fw / "main.py").write_text(ENCODER_MAIN)
    board = VirtualBoard({"cases": CASES}, firmware_dir=Path(fw))
    board.start()
    assert board.halted, "the encoder script did not finish"
    board.stop()
    adverts = [bytes.fromhex(line[4:]) for line in board.log if line.startswith("ADV ")]
    assert len(adverts) == len(CASES), "\n".join(board.log[-20:])
    yield adverts


@requires_node
def test_micropython_output_is_byte_identical(micropython_adverts: list[bytes]) -> None:
    for case, adv in zip(CASES, micropython_adverts, strict=True):
        key = case["key"]
        assert adv == reference_advert(case), case
        # ... and the CPython run of the same module gives the same bytes too.
        payload = bthome.encode_objects([tuple(o) for o in case["objects"]])
        if key:
            svc = bthome.encrypt_service_data(Ecb(bytes.fromhex(key)), bytes.fromhex(case["mac"]),
                                              payload, case["counter"], case["trigger"])
        else:
            svc = bthome.service_data(payload, trigger=case["trigger"])
        assert bthome.advert(svc) == adv


def service_info(mac6: bytes, svc: bytes, t: float) -> BluetoothServiceInfoBleak:
    address = ":".join(f"{b:02X}" for b in mac6)
    return BluetoothServiceInfoBleak(
        "dev", address, -60, {}, {bthome.SERVICE_UUID: svc}, [bthome.SERVICE_UUID], "local",
        None, None, False, t, None,
    )


def check_with_bthome_ble(case: dict[str, Any], adv: bytes) -> None:
    svc = bthome.service_data_from_advert(adv)
    assert svc is not None
    key = bytes.fromhex(case["key"]) if case["key"] else None
    parser = BTHomeBluetoothDeviceData(bindkey=key)
    update = parser.update(service_info(bytes.fromhex(case["mac"]), svc, time.time()))
    if key:
        assert parser.bindkey_verified and not parser.decryption_failed
        assert parser.encryption_counter == case["counter"]
    assert parser.sleepy_device == case["trigger"]
    values = {k.key: v.native_value for k, v in update.entity_values.items()}
    binary = {k.key: v.native_value for k, v in update.binary_entity_values.items()}
    events = {k.key: v.event_type for k, v in update.events.items()}
    for oid, value in case["objects"]:
        meas = MEAS_TYPES[oid]
        # Our object table agrees with theirs on length and signedness.
        assert meas.data_length == bthome.OBJECTS[oid][1]
        if oid == bthome.BUTTON:
            name = bthome.BUTTON_EVENT_NAMES[value]
            assert events.get("button") == (None if value == 0 else name)
        elif oid in BINARY:
            assert binary[meas.meas_format.device_class.value] is bool(value)
        elif meas.meas_format is None:  # device type / firmware version: device metadata
            continue
        else:
            assert meas.data_format == ("signed_integer" if bthome.OBJECTS[oid][2]
                                        else "unsigned_integer")
            got = values[meas.meas_format.device_class.value]
            assert got == pytest.approx(value * meas.factor), (hex(oid), value)


@requires_node
def test_bthome_ble_decodes_firmware_adverts(micropython_adverts: list[bytes]) -> None:
    for case, adv in zip(CASES, micropython_adverts, strict=True):
        check_with_bthome_ble(case, adv)


@requires_node
def test_pendant_press_decodes_in_bthome_ble(tmp_path: Path) -> None:
    """The real pendant app: its press advert is a "press" event for Home Assistant."""
    key = bytes(range(16))
    mac = "C0:FF:EE:00:00:07"
    with VirtualBoard({"id": "p", "role": "pendant", "key": key.hex()}, mac=mac) as board:
        board.advance(1000)
        board.press("button", hold_ms=300)
        board.advance(4000)
        adverts = list(board.adverts)
    assert len(adverts) >= 2
    parser = BTHomeBluetoothDeviceData(bindkey=key)
    seen = []
    for i, a in enumerate(adverts):
        upd = parser.update(service_info(bthome.mac_bytes(mac), a.service_data, 1000.0 + 10 * i))
        seen.append({k.key: v.event_type for k, v in upd.events.items()})
        assert parser.bindkey_verified
    assert {"button": "press"} in seen


def test_bthome_ble_encryption_helper_decodes_with_ours() -> None:
    """bthome-ble's own encryption helper (their reference for device makers) -> our decoder."""
    from bthome_ble.bthome_v2_encryption import encrypt_payload

    rng = random.Random(5)
    for _ in range(20):
        key, mac6 = rng.randbytes(16), rng.randbytes(6)
        objs = [(bthome.PACKET_ID, rng.randint(0, 255)), (bthome.DOOR, rng.randint(0, 1))]
        ctr = rng.randint(0, 2**32 - 1)
        data = encrypt_payload(bthome.encode_objects(objs), mac6, b"\xd2\xfc", b"\x41",
                               ctr.to_bytes(4, "little"), key)
        assert data[:2] == b"\xd2\xfc"
        d = bthome.decode(data[2:], mac6, Ecb(key))
        assert d.objects == objs and d.counter == ctr

