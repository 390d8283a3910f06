"""The radio's first filter: what one advert costs the hub's event loop in BleakRadio's bleak
callback, for someone else's device (dropped by a set lookup) and for one of ours (handed on
as an Advert), against the cheapest possible callback (a counter) as the baseline, in one
process. In a block of flats most adverts are other people's: the dropped path must stay cheap.
bleak's own work per advert (D-Bus signal parsing, AdvertisementData) is the same for all three
and is not measured here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from hub.clock import SystemClock
from hub.radio.bleak import BleakRadio
from hub.radio.scanner import Advert
from protocols import bthome

N = 200_000
OURS = [f"D4:00:00:00:00:{i:02X}" for i in range(10)]


def _inputs(macs: list[str]) -> list[tuple[BLEDevice, AdvertisementData]]:
    out = []
    for mac in macs:
        svc = bthome.service_data(bthome.encode_objects([(bthome.PACKET_ID, 1)]))
        adv = AdvertisementData(
            local_name=None, manufacturer_data={}, service_data={bthome.SERVICE_UUID: svc},
            service_uuids=[], tx_power=None, rssi=-70, platform_data=(),
        )
        out.append((BLEDevice(mac, None, {}), adv))
    return out


def _per_call(fn: Callable[[BLEDevice, AdvertisementData], None],
              inputs: list[tuple[BLEDevice, AdvertisementData]]) -> float:
    reps = N // len(inputs)
    t0 = time.perf_counter()
    for _ in range(reps):
        for dev, adv in inputs:
            fn(dev, adv)
    return (time.perf_counter() - t0) / (reps * len(inputs))


def run() -> None:
    radio = BleakRadio(SystemClock(), provisioned=OURS)
    handed_on: list[Advert] = []
    radio._on_advert = handed_on.append
    count = [0]

    def baseline(dev: BLEDevice, adv: AdvertisementData) -> None:
        count[0] += 1

    foreign = _inputs([f"E0:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}" for i in range(500)])
    ours = _inputs(OURS)
    base = _per_call(baseline, foreign)
    drop = _per_call(radio._detected, foreign)
    keep = _per_call(radio._detected, ours)
    assert radio.foreign > 0 and radio.stats["accepted"] == len(handed_on) > 0
    print(f"baseline callback      {base * 1e9:8.0f} ns/advert")
    print(f"foreign, dropped       {drop * 1e9:8.0f} ns/advert  ({drop / base:.1f}x baseline)")
    print(f"ours, handed on        {keep * 1e9:8.0f} ns/advert  ({keep / base:.1f}x baseline)")
    print(f"dropping costs {drop / keep:.2f}x of handing on")
