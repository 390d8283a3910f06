"""Off-the-shelf sensors and Home Assistant, per advert, in one process:

- the hub's Shelly path (hub/decode/shelly.py, behind AdvertDecoder) against bthome-ble's parser on
  the same encrypted Shelly BLU Door/Window adverts (packet id, battery, illuminance, window,
  rotation), and against our own devices' path on adverts of the same size;
- what [home_assistant] adds to each accepted report (rendering the states and comparing
  them with what was published), as a ratio to decoding the advert.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hub.config.settings import Device
from hub.decode.decoder import AdvertDecoder
from hub.decode.shelly import build_service_data
from hub.radio.scanner import Advert
from protocols import bthome

DEVICES = 10
PER_DEVICE = 500


def _best(fn: Callable[[], int], repeat: int = 5) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t0)
    return best, count


def _streams(model: str) -> tuple[dict[str, Device], list[Advert]]:
    rng = random.Random(7)
    devices: dict[str, Device] = {}
    streams = []
    for i in range(DEVICES):
        mac = "7C:C6:B6:00:00:%02X" % i
        key = rng.randbytes(16)
        devices[mac] = Device(f"door-{i}", "door", mac, key=key, model=model)
        stream = []
        for n in range(1, PER_DEVICE + 1):
            if model:
                objs = [(0x00, n & 0xFF), (0x01, 90), (0x05, 1000 + n), (0x2D, n & 1),
                        (0x3F, 0)]
            else:  # the same length with objects our own decoder reads
                objs = [(0x00, n & 0xFF), (0x01, 90), (0x0C, 2950), (0x1A, n & 1), (0x2B, 0)]
            stream.append(Advert(mac, -60, build_service_data(key, mac, objs, 1000 + n, True),
                                 0.0))
        streams.append(stream)
    return devices, [s[n] for n in range(PER_DEVICE) for s in streams]


def run() -> dict[str, float]:
    from bthome_ble import BTHomeBluetoothDeviceData
    from habluetooth import BluetoothServiceInfoBleak

    devices, adverts = _streams("shelly-blu-door-window")
    own_devices, own_adverts = _streams("")
    n = len(adverts)

    def shelly() -> int:
        dec = AdvertDecoder(devices)
        return sum(1 for a in adverts if dec.decode(a) is not None)

    def ours() -> int:
        dec = AdvertDecoder(own_devices)
        return sum(1 for a in own_adverts if dec.decode(a) is not None)

    infos = [BluetoothServiceInfoBleak(
        "SBDW-002C", a.mac, a.rssi, {}, {bthome.SERVICE_UUID: a.service_data},
        [bthome.SERVICE_UUID], "local", None, None, False, 5.0 * i, None)
        for i, a in enumerate(adverts)]

    def theirs() -> int:
        parsers = {mac: BTHomeBluetoothDeviceData(bindkey=d.key) for mac, d in devices.items()}
        ok = 0
        for info in infos:
            p = parsers[info.address]
            if p.update(info).binary_entity_values and not p.decryption_failed:
                ok += 1
        return ok

    t_shelly, ok_shelly = _best(shelly)
    t_ours, _ = _best(ours)
    t_theirs, ok_theirs = _best(theirs, repeat=3)
    print(f"{n} encrypted Shelly BLU Door/Window adverts from {DEVICES} devices, best of runs:")
    print(f"  hub, Shelly path  : {n / t_shelly:10.0f} adverts/s  ({1e6 * t_shelly / n:.2f} us"
          f" each, {ok_shelly} accepted)")
    print(f"  hub, our devices  : {n / t_ours:10.0f} adverts/s  (same size; Shelly/ours"
          f" time {t_shelly / t_ours:.2f})")
    print(f"  bthome-ble        : {n / t_theirs:10.0f} adverts/s  ({ok_theirs} decoded;"
          f" ratio {t_theirs / t_shelly:.1f}x)")
    t_ha = _home_assistant(devices, adverts[:2000])
    per_decode = t_shelly / n
    print(f"  + Home Assistant state of the reporting device (door, battery,"
          f" alarm), per accepted report: {1e6 * t_ha:.1f} us, {t_ha / per_decode:.1f}x the decode")
    return {"shelly": n / t_shelly, "bthome_ble": n / t_theirs, "ha_us": 1e6 * t_ha}


def _home_assistant(devices: dict[str, Device], adverts: list[Advert]) -> float:
    from hub.clock import ManualClock
    from hub.config import settings as config
    from hub.delivery.home_assistant import HomeAssistant, HubView
    from hub.rules.engine import RuleEngine

    with tempfile.TemporaryDirectory() as d:
        lines = ['[site]\nid = "bench"\n[hub]\nid = "h"\n[home_assistant]\nenabled = true\n'
                 'host = "127.0.0.1"\npublish = ["door", "battery", "alarm"]\n']
        lines += [f'[[device]]\nid = "{dev.id}"\nrole = "door"\nmac = "{dev.mac}"\n'
                  f'model = "{dev.model}"\n' for dev in devices.values()]
        (Path(d) / "hub.toml").write_text("\n".join(lines))
        cfg = config.load(Path(d) / "hub.toml")
    assert cfg.home_assistant is not None
    engine = RuleEngine(cfg.site, cfg.timezone, devices=cfg.devices, settings=cfg.rules)
    clock = ManualClock(1.79e9)
    ha = HomeAssistant(cfg.home_assistant, HubView(lambda: cfg, lambda: engine, clock.now))
    ha.connected = True  # no broker: publishing is recorded, not sent
    ha._publish = lambda topic, payload: ha._sent.__setitem__(topic, payload)  # type: ignore[method-assign]
    dec = AdvertDecoder(devices)
    reports = [r for r in (dec.decode(a) for a in adverts) if r is not None]
    t0 = time.perf_counter()
    for r in reports:
        engine.on_report(r, clock.now())
    t_rules = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in reports:
        engine.on_report(r, clock.now())
        ha.changed(r.device.id)
    return (time.perf_counter() - t0 - t_rules) / len(reports)


if __name__ == "__main__":
    run()
