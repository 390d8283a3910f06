"""`tryggheim scan`: what an installer needs to see in the home before leaving it.

Listens for N seconds and lists every Tryggheim (BTHome) device nearby: who it is in the
configuration (id, role, room), how well the hub hears it (RSSI now, average, weakest), its
battery, whether the hub holds its key and its adverts decrypt with it. Configured devices that
were not heard are listed too: a pendant missing from this list is one whose alarm nobody hears.
The table is built from adverts (pure, tested without a radio); `scan()` feeds it from a radio:
the Pi's adapter (bleak), the virtual air, or a capture file replayed (`--radio`, default the
configuration's [radio] kind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from hub.config.settings import Device, HubConfig
from hub.decode.decoder import inspect
from hub.radio.scanner import Advert, Scanner

GOOD_DBM = -75  # comfortable margin for a body-worn pendant turning away from the hub
WEAK_DBM = -85  # adverts start to go missing; move the hub or the device


@dataclass
class Seen:
    mac: str
    rssi: int
    rssi_sum: int = 0
    rssi_min: int = 0
    adverts: int = 0
    # hub.decode.decoder.inspect() of the last advert
    last: dict[str, Any] = field(default_factory=dict)
    decrypt_failures: int = 0


class ScanTable:
    def __init__(self, devices: dict[str, Device] | None = None,
                 keys: dict[str, bytes] | None = None) -> None:
        self.devices = {d.mac: d for d in (devices or {}).values()}
        self.keys = keys or {}
        self.seen: dict[str, Seen] = {}

    def add(self, advert: Advert) -> None:
        s = self.seen.get(advert.mac)
        if s is None:
            s = self.seen[advert.mac] = Seen(advert.mac, advert.rssi, rssi_min=advert.rssi)
        s.rssi = advert.rssi
        s.rssi_sum += advert.rssi
        s.rssi_min = min(s.rssi_min, advert.rssi)
        s.adverts += 1
        dev = self.devices.get(advert.mac)
        if dev is not None:
            candidates = {dev.id: self.keys[dev.id]} if dev.id in self.keys else {}
        else:
            # An unknown address whose adverts open with a configured key: a device whose
            # MAC was typed wrong in the configuration.
            candidates = self.keys
        result = inspect(advert.service_data, advert.mac, candidates)
        if "error" in result and result.get("encrypted"):
            s.decrypt_failures += 1
        s.last = result

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for mac, s in self.seen.items():
            dev = self.devices.get(mac)
            avg = s.rssi_sum / s.adverts
            last = s.last
            if not last.get("encrypted"):
                decrypt = "plain"
            elif last.get("mic_verified"):
                decrypt = "ok"
            elif dev is not None and dev.id not in self.keys:
                decrypt = "no key"
            else:
                decrypt = "fails"
            notes = []
            if avg < WEAK_DBM:
                notes.append("weak signal: move the hub or the device closer")
            elif avg < GOOD_DBM:
                notes.append("marginal signal")
            if dev is None and last.get("key_of"):
                notes.append(f"decrypts with the key of {last['key_of']}: is its MAC wrong "
                             "in the configuration?")
            if dev is not None and decrypt == "fails":
                notes.append("key does not match the device: re-provision it")
            if dev is not None and decrypt == "plain":
                notes.append("device sends unencrypted adverts: the hub will drop them")
            rows.append({
                "mac": mac,
                "id": dev.id if dev else None,
                "role": dev.role if dev else None,
                "room": dev.room if dev else None,
                "configured": dev is not None,
                "heard": True,
                "rssi": s.rssi,
                "rssi_avg": round(avg, 1),
                "rssi_min": s.rssi_min,
                "adverts": s.adverts,
                "battery": last.get("values", {}).get("battery"),
                "key": (dev.id in self.keys) if dev else None,
                "decrypt": decrypt,
                "notes": notes,
            })
        for mac, dev in self.devices.items():
            if mac not in self.seen:
                rows.append({
                    "mac": mac, "id": dev.id, "role": dev.role, "room": dev.room,
                    "configured": True, "heard": False, "rssi": None, "rssi_avg": None,
                    "rssi_min": None, "adverts": 0, "battery": None, "key": dev.id in self.keys,
                    "decrypt": None,
                    "notes": ["not heard: check that it is powered and within range"],
                })
        # Configured devices first, then the strongest signal.
        rows.sort(key=lambda r: (not r["configured"], -(r["rssi_avg"] or -999)))
        return rows

    def all_ok(self) -> bool:
        return all(r["heard"] and r["decrypt"] == "ok" and (r["rssi_avg"] or -999) >= WEAK_DBM
                   for r in self.rows() if r["configured"])


def render(rows: list[dict[str, Any]]) -> str:
    head = ("MAC", "ID", "ROLE", "ROOM", "RSSI", "AVG", "MIN", "ADV", "BATT", "KEY", "DECRYPT")
    table = [head]
    for r in rows:
        def opt(v: Any) -> str:
            return "-" if v is None else str(v)

        key = "-" if r["key"] is None else ("yes" if r["key"] else "NO")
        batt = "-" if r["battery"] is None else f"{r['battery']}%"
        table.append((r["mac"], opt(r["id"]) if r["configured"] else "(not ours)",
                      opt(r["role"]), opt(r["room"]), opt(r["rssi"]), opt(r["rssi_avg"]),
                      opt(r["rssi_min"]), str(r["adverts"]), batt, key,
                      opt(r["decrypt"]) if r["heard"] else "NOT HEARD"))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    for r in rows:
        for note in r["notes"]:
            lines.append(f"{r['mac']} {r['id'] or ''}: {note}".replace("  ", " "))
    return "\n".join(lines)


async def scan(radio: Scanner, seconds: float, table: ScanTable) -> None:
    await radio.start(table.add)
    try:
        done = getattr(radio, "done", None)  # a replayed capture ends by itself
        if isinstance(done, asyncio.Event):
            try:
                await asyncio.wait_for(done.wait(), seconds)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(seconds)  # listening for a while is the point of this tool
    finally:
        await radio.stop()


def make_radio(args: argparse.Namespace, cfg: HubConfig | None) -> tuple[Scanner, str, str]:
    """The radio to listen on: --radio, else the configuration's [radio] kind, else bleak.
    Returns (radio, kind, where) with `where` the adapter, air socket or capture file."""
    from hub.clock import SystemClock

    kind = args.radio or (cfg.radio_kind if cfg else "bleak")
    if kind == "virtual":
        from hub.radio.virtual import VirtualRadio

        air = args.air or (cfg.radio_air if cfg and cfg.radio_kind == "virtual" else None)
        if not air:
            raise ValueError("--radio virtual needs --air SOCKET (or a config with radio.air)")
        return VirtualRadio(air, SystemClock()), kind, air
    if kind == "replay":
        from hub.radio.capture import ReplayScanner

        path = args.replay or (cfg.radio_replay if cfg and cfg.radio_kind == "replay" else None)
        if not path:
            raise ValueError("--radio replay needs --replay FILE (or a config with "
                             "radio.replay)")
        return ReplayScanner(path, SystemClock()), kind, path
    from hub.radio.bleak import BleakRadio, BleakSettings

    adapter = args.adapter or (cfg.radio.adapter if cfg else "hci0")
    mode = cfg.radio.scan_mode if cfg else "auto"
    # provisioned=None: list every BTHome device, not only ours.
    return BleakRadio(SystemClock(), BleakSettings(adapter=adapter, scan_mode=mode)), kind, \
        adapter


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=15.0,
                   help="how long to listen (default 15; heartbeats may be minutes apart, "
                        "so press the pendant's button during the scan)")
    p.add_argument("--config", help="hub configuration: names devices and checks their keys")
    p.add_argument("--adapter", help="Bluetooth adapter (default: from the config, or hci0)")
    p.add_argument("--radio", choices=("bleak", "virtual", "replay"),
                   help="radio kind (default: the config's [radio] kind, or bleak)")
    p.add_argument("--air", help="virtual air socket (--radio virtual)")
    p.add_argument("--replay", metavar="FILE", help="capture file to scan (--radio replay)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_scan)


def cmd_scan(args: argparse.Namespace) -> int:
    from hub.config import keys
    from hub.config import settings as config

    cfg: HubConfig | None = None
    key_map: dict[str, bytes] = {}
    if args.config:
        try:
            cfg = config.load(args.config)
        except config.ConfigError as e:
            print(f"tryggheim scan: configuration is not valid:\n{e}", file=sys.stderr)
            return 2
        try:
            key_map = keys.load(cfg.keys_file)
        except config.ConfigError as e:
            print(f"tryggheim scan: keys not usable, decryption is not checked:\n{e}",
                  file=sys.stderr)
    table = ScanTable(cfg.devices if cfg else None, key_map)
    try:
        radio, kind, where = make_radio(args, cfg)
    except ValueError as e:
        print(f"tryggheim scan: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(scan(radio, args.seconds, table))
    except OSError as e:  # no air socket, no capture file
        print(f"tryggheim scan: cannot listen on {where}: {e}", file=sys.stderr)
        return 2
    # The bleak radio says how it scanned (passive/active; None: it could not).
    mode = getattr(radio, "mode", kind) if kind == "bleak" else kind
    rows = table.rows()
    if args.json:
        print(json.dumps({"radio": kind, "adapter": where if kind == "bleak" else None,
                          "source": where, "mode": mode, "devices": rows}, indent=2))
    else:
        if mode is None:
            print(f"tryggheim scan: could not scan on {where} (see docs/INSTALL.md)",
                  file=sys.stderr)
        elif kind == "bleak":
            print(f"Scanned {args.seconds:g} s on {where} ({mode} scanning).")
        elif kind == "replay":
            print(f"Scanned the capture {where}.")
        else:
            print(f"Scanned {args.seconds:g} s on the virtual air {where}.")
        print(render(rows) if rows else "No Tryggheim devices heard.")
    if mode is None:
        return 2
    return 0 if table.all_ok() else 1
