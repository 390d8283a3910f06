"""What the device tests read off the air: decoded adverts, built acks."""

from __future__ import annotations

from typing import Any

from protocols import ack, bthome
from tests.hil.conftest import KEY, MAC
from tools.dut import DeviceUnderTest

AES = ack.host_aes(bytes.fromhex(KEY))
MAC_BYTES = bthome.mac_bytes(MAC)


def values(
    dut: DeviceUnderTest, since: int = 0, distinct: bool = False
) -> list[tuple[int, dict[str, Any]]]:
    """(time, decoded objects) of every advert the device started since `since`; distinct:
    only the first of identical adverts (an alarm repeated until acknowledged)."""
    out = []
    seen = set()
    for a in dut.adverts_since(since):
        if distinct and a.service_data in seen:
            continue
        seen.add(a.service_data)
        d = bthome.decode(a.service_data, MAC, AES)
        v = d.as_dict()
        v["_trigger"] = d.trigger
        out.append((a.t_ms, v))
    return out


def events(
    dut: DeviceUnderTest, name: str, since: int = 0, distinct: bool = False
) -> list[tuple[int, int]]:
    return [(t, v[name]) for t, v in values(dut, since, distinct) if name in v and v["_trigger"]]


def ack_for(svc: bytes, state: int) -> bytes:
    return ack.encode(AES, MAC_BYTES, ack.alarm_counter(svc), state)
