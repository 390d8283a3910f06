"""The device's encryption counter never repeats: across deep sleep (RTC memory) and across
power loss (flash high-water mark), with a bounded number of flash writes."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hub.config.settings import Device as HubDevice
from hub.decode.decoder import AdvertDecoder
from hub.radio.scanner import Advert
from protocols import bthome
from tests.conftest import ROOT, requires_node
from tests.hil.helpers import rtc_state
from tests.protocols.test_ccm import Ecb
from tools.sim.vboard import VirtualBoard

KEY = bytes(range(16, 32))
MAC = "C0:FF:EE:00:00:09"


def counter_of(svc: bytes) -> int:
    return int.from_bytes(svc[-8:-4], "little")


@requires_node
def test_counter_survives_deep_sleep_and_power_loss_on_the_virtual_board() -> None:
    # A door contact: it reports every change and sleeps in between (no alarm follow-up).
    with VirtualBoard({"id": "d", "role": "door", "key": KEY.hex()}, mac=MAC) as board:
        board.advance(1000)
        for level in (1, 0, 1):
            board.set_pin("door", level)
            board.advance(5000)
            assert board.sleeping
        n_before = len(board.adverts)
        before = distinct_counters(board.adverts)
        assert len(before) >= 4, before  # boot advert and three changes, across deep sleeps
        assert rtc_state(board)["ctr"] == before[-1] + 1
        # Power loss: RTC memory is gone, the flash is not.
        board.rtc = b""
        board.set_pin("door", 0)
        board.advance(5000)
        after = distinct_counters(board.adverts[n_before:])
    assert after and min(after) > max(before)
    # The hub takes every new one, in order: none looks like a replay or a forgery.
    decoder = AdvertDecoder({MAC: HubDevice("d", "door", MAC, key=KEY)})
    for i, a in enumerate(board.adverts):
        decoder.decode(Advert(MAC, -60, a.service_data, float(i)))
    assert decoder.stats["accepted"] == len(before) + len(after), decoder.stats
    assert set(decoder.stats) <= {"accepted", "repeat"}, decoder.stats


def distinct_counters(adverts: list[Any]) -> list[int]:
    """Counters in order of first use. A counter may be re-advertised (the same frame again),
    never with different content: CCM with a reused counter leaks the plaintexts' XOR."""
    frames: dict[int, bytes] = {}
    order: list[int] = []
    for a in adverts:
        c = counter_of(a.service_data)
        if c in frames:
            assert frames[c] == a.service_data, f"counter {c} reused with different content"
        else:
            frames[c] = a.service_data
            order.append(c)
    assert order == sorted(order) and len(set(order)) == len(order), order
    return order


def _load_device_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fw_device", ROOT / "firmware" / "device.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeBoard:
    """Only what Device.build needs; RTC memory is a field the test can wipe."""

    def __init__(self) -> None:
        self.rtc = b""

    def rtc_load(self) -> bytes:
        return self.rtc

    def rtc_save(self, data: bytes) -> None:
        self.rtc = bytes(data)

    def battery_mv(self) -> int:
        return 2900

    def mac(self) -> bytes:
        return bthome.mac_bytes(MAC)

    def aes_ecb(self, key: bytes) -> Ecb:
        return Ecb(key)

    def log(self, msg: str) -> None:
        pass


def test_power_loss_never_reuses_a_counter_and_flash_writes_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev_mod = _load_device_module()
    monkeypatch.chdir(tmp_path)
    writes = []
    real_write = dev_mod.write_counter_hwm

    def counting_write(value: int, path: str = dev_mod.COUNTER_HWM_PATH) -> None:
        writes.append(value)
        real_write(value, path)

    monkeypatch.setattr(dev_mod, "write_counter_hwm", counting_write)
    cfg: dict[str, Any] = {"id": "p", "role": "pendant", "key": KEY.hex()}
    board = FakeBoard()
    used: list[int] = []
    power_losses = 0
    for i in range(1000):
        dev = dev_mod.Device(board, cfg)  # every wake builds a new Device, as main.py does
        adv = dev.build([], trigger=False)
        dev.save_state()
        used.append(counter_of(bthome.service_data_from_advert(adv)))
        if i % 97 == 96:
            board.rtc = b""  # power loss
            power_losses += 1
    assert used == sorted(set(used)), "a counter was reused or went backwards"
    assert len(writes) <= len(used) // dev_mod.COUNTER_HWM_STEP + power_losses + 1
    assert int((tmp_path / dev_mod.COUNTER_HWM_PATH).read_text()) > used[-1]
    assert not (tmp_path / (dev_mod.COUNTER_HWM_PATH + ".new")).exists()


def test_unreadable_mark_starts_at_zero_and_bad_key_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev_mod = _load_device_module()
    monkeypatch.chdir(tmp_path)
    assert dev_mod.read_counter_hwm() == 0
    (tmp_path / "config.json").write_text(json.dumps({"id": "p", "role": "pendant", "key": "zz"}))
    with pytest.raises(dev_mod.ConfigError, match="32 hex"):
        dev_mod.load_config(str(tmp_path / "config.json"))
    os.remove(tmp_path / "config.json")


def test_flash_failure_does_not_stop_an_advert(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    dev_mod = _load_device_module()
    monkeypatch.chdir(tmp_path)
    real_write = dev_mod.write_counter_hwm
    fail = [True]

    def flaky(value: int, path: str = dev_mod.COUNTER_HWM_PATH) -> None:
        if fail[0]:
            raise OSError(28, "No space left on device")
        real_write(value, path)

    monkeypatch.setattr(dev_mod, "write_counter_hwm", flaky)
    board = FakeBoard()
    dev = dev_mod.Device(board, {"id": "p", "role": "pendant", "key": KEY.hex()})
    first = counter_of(bthome.service_data_from_advert(dev.build([], trigger=True)))
    assert not (tmp_path / dev_mod.COUNTER_HWM_PATH).exists()
    fail[0] = False  # the next advert retries the write
    second = counter_of(bthome.service_data_from_advert(dev.build([], trigger=True)))
    assert second == first + 1
    assert int((tmp_path / dev_mod.COUNTER_HWM_PATH).read_text()) > second
