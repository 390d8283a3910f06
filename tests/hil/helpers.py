"""What the device tests read off the air: decoded adverts, built acks.

Adverts and acks are sealed with the device's own MAC in the nonce: `dut.mac`, so the same
helpers work on the virtual board and on a real board with its factory address."""

from __future__ import annotations

import json
from typing import Any

from protocols import ack, bthome
from tests.hil.conftest import KEY, MAC  # noqa: F401  (MAC: the virtual boards' address)
from tools.hil.dut import DeviceUnderTest

AES = ack.host_aes(bytes.fromhex(KEY))


def mac_of(dut: DeviceUnderTest) -> str:
    mac = getattr(dut, "mac", None)
    assert mac, "the device under test has no MAC yet (not started?)"
    return str(mac)


def values(
    dut: DeviceUnderTest, since: int = 0, distinct: bool = False
) -> list[tuple[int, dict[str, Any]]]:
    """(time, decoded objects) of every advert the device started since `since`; distinct:
    only the first of identical adverts (an alarm repeated until acknowledged)."""
    out = []
    seen = set()
    mac = mac_of(dut)
    for a in dut.adverts_since(since):
        if distinct and a.service_data in seen:
            continue
        seen.add(a.service_data)
        d = bthome.decode(a.service_data, mac, AES)
        v = d.as_dict()
        v["_trigger"] = d.trigger
        out.append((a.t_ms, v))
    return out


def events(
    dut: DeviceUnderTest, name: str, since: int = 0, distinct: bool = False
) -> list[tuple[int, int]]:
    return [(t, v[name]) for t, v in values(dut, since, distinct) if name in v and v["_trigger"]]


def ack_for(dut: DeviceUnderTest, svc: bytes, state: int) -> bytes:
    """The hub's ack of the alarm advert svc, sealed for this device."""
    return ack.encode(AES, bthome.mac_bytes(mac_of(dut)), ack.alarm_counter(svc), state)


def write_flash(dut: DeviceUnderTest, name: str, data: bytes) -> None:
    """Put a file on the device's flash now (a real board writes it itself, over serial)."""
    flash = getattr(dut, "flash_dir", None)
    if flash is not None:
        (flash / name).write_bytes(data)
    else:
        dut.write_file(name, data)  # type: ignore[attr-defined]


def flash_files(dut: DeviceUnderTest) -> set[str]:
    """Names of the files on the device's flash."""
    flash = getattr(dut, "flash_dir", None)
    if flash is not None:
        return {p.name for p in flash.iterdir() if p.is_file()}
    return set(dut.files())  # type: ignore[attr-defined]


def rtc_state(dut: DeviceUnderTest) -> dict[str, Any]:
    """The firmware's state in RTC memory (board_esp32 keeps its wake-pin note after it)."""
    raw = dut.rtc
    if b"\x00L" in raw:
        raw = raw[:raw.rindex(b"\x00L")]
    state: dict[str, Any] = json.loads(raw)
    return state
