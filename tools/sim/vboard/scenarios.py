"""One short day in the life of each device app, for running the firmware in another
runtime or heap (tests/firmware/test_unix_port.py, tools/bench/heap.py): boot, its events,
an alarm with the hub's acks where the device has one, a heartbeat. Returns what the device
put on the air, decoded, so a caller can check it did its job."""

from __future__ import annotations

import random
from typing import Any

from protocols import ack, bthome
from tools.sim.vboard.board import VirtualBoard

KEY = "00112233445566778899aabbccddeeff"
MAC = "C0:FF:EE:00:00:42"
ROLES = ("door", "pir", "bed", "pendant", "wearable")
AES = ack.host_aes(bytes.fromhex(KEY))


def fall(seed: int = 1) -> list[tuple[float, float, float]]:
    """A synthetic fall at 50 Hz (g): upright, a short free fall, the impact, lying still."""
    rng = random.Random(seed)
    upright = [(rng.gauss(0, .01), -1 + rng.gauss(0, .01), rng.gauss(0, .01)) for _ in range(150)]
    dip = [(0.05, -0.3, 0.1)] * 20
    hit = [(1.5, -2.5, 4.0), (3.0, -2.5, 4.0), (1.8, -1.5, 2.4)]
    lying = [(rng.gauss(0, .01), rng.gauss(0, .01), 1 + rng.gauss(0, .01)) for _ in range(300)]
    return upright + dip + hit + lying


def board(role: str, **kw: Any) -> VirtualBoard:
    cfg: dict[str, Any] = {"id": f"{role}-1", "role": role, "key": KEY, "heartbeat_s": 60}
    if role == "pir":
        cfg["holdoff_s"] = 60  # the clear report falls inside the day
    kw.setdefault("battery_mv", 4000 if role in ("pendant", "wearable") else 3000)
    return VirtualBoard(cfg, mac=MAC, **kw)


def _ack(b: VirtualBoard, state: int) -> None:
    svc = b.adverts[-1].service_data
    b.hub_write(ack.encode(AES, bthome.mac_bytes(MAC), ack.alarm_counter(svc), state))


def run(b: VirtualBoard) -> list[dict[str, Any]]:
    """Drive the started board through its role's day; the decoded adverts it sent."""
    role = (b.config or {}).get("role")
    b.advance(1000)
    if role in ("door", "pir", "bed"):
        pin = {"door": "door", "pir": "motion", "bed": "mat"}[role]
        b.set_pin(pin, 1)
        b.advance(30_000)
        b.set_pin(pin, 0)
        b.advance(90_000)
    else:
        if role == "wearable":
            b.accel.feed(fall())
            b.advance(8000 + 30_000)  # detection, then the cancel window (firmware/fall_alert.py)
        else:
            b.press("button")
            b.advance(300)
        _ack(b, ack.RECEIVED)
        b.advance(500)
        _ack(b, ack.DELIVERED)
        b.advance(30_000)
        b.set_pin("charge", 1)
        b.advance(5000)
        b.set_pin("charge", 0)
        b.advance(60_000)
    return [bthome.decode(a.service_data, MAC, AES).as_dict() for a in b.adverts]
