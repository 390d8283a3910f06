"""`tryggheim watch`: the installer's walk test, live.

Every device of the home in one table that updates in place while the installer opens each
door, walks past each PIR, lies on the bed and presses the button: its state (door open or
closed, motion, in bed or out, the last button event, on the charger), battery, signal
strength, seconds since it was last heard, decrypt failures, and a mark on the row that has
just changed. `--json` streams the same as JSON lines.

The running hub serves it on its control socket (command "watch"), so it shows what the hub
itself hears, whichever radio the hub has (bleak, virtual, replay): a snapshot of every
device, then one item per report the hub accepted, and the whole table again every second
(ages move on, decrypt failures are counted even though a failing advert makes no report).
The state is built by `WatchBoard` (pure: reports in, rows out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.clock import iso
from protocols import bthome

if TYPE_CHECKING:
    from hub.admin.running import RunningHub
    from hub.config.settings import Device
    from hub.decode.decoder import Report

MARK_S = 5.0  # a row stays marked this long after its device changed
# Values that describe what the device senses; the rest (packet id, voltage) is bookkeeping.
STATE_KEYS = ("door", "opening", "motion", "occupancy", "button", "problem",
              "battery_charging")
FAILURES = ("bad_mic", "plaintext")


def state_of(values: Mapping[str, int], role: str = "") -> dict[str, str]:
    """What the device says, in words: {"door": "open", "bed": "in bed", ...}."""
    s: dict[str, str] = {}
    door = values.get("door", values.get("opening"))
    if door is not None:
        s["door"] = "open" if door else "closed"
    if "motion" in values:
        s["motion"] = "motion" if values["motion"] else "no motion"
    if "occupancy" in values:
        s["bed"] = "in bed" if values["occupancy"] else "out of bed"
    button = values.get("button")
    if button:
        s["button"] = bthome.BUTTON_EVENT_NAMES.get(button, f"event 0x{button:02x}")
    if "problem" in values and (role in ("wearable", "") or values["problem"]):
        s["fall"] = "fall" if values["problem"] else "no fall"
    if "battery_charging" in values:
        s["charger"] = "on charger" if values["battery_charging"] else "off charger"
    return s


def state_text(state: Mapping[str, str]) -> str:
    return ", ".join(state.values())


@dataclass
class _Dev:
    values: dict[str, int] = field(default_factory=dict)
    last_heard: float | None = None
    rssi: int | None = None
    reports: int = 0
    changed_at: float | None = None
    changed: list[str] = field(default_factory=list)  # what the latest change was
    events: dict[str, float] = field(default_factory=dict)  # "motion"/"button" -> when


class WatchBoard:
    """The live table: configured devices and what each last said."""

    def __init__(self, devices: Mapping[str, Device]) -> None:
        self.devices = dict(devices)
        self.state: dict[str, _Dev] = {d: _Dev() for d in self.devices}

    def seed(self, dev_id: str, values: Mapping[str, int], seen: float | None,
             rssi: int | None) -> None:
        """What the hub knew before the watch began (no mark: nothing changed now)."""
        d = self.state.setdefault(dev_id, _Dev())
        d.values = {k: int(v) for k, v in values.items()}
        d.last_heard, d.rssi = seen, rssi

    def on_report(self, report: Report) -> list[str]:
        """One accepted report; returns what changed (state keys, or events such as a new
        motion or button press even when the value repeats)."""
        dev = report.device.id
        d = self.state.setdefault(dev, _Dev())
        v = report.values
        # button = 0 is "no event" (a heartbeat may carry it), not a change of the last one.
        changed = [k for k in STATE_KEYS
                   if k in v and d.values.get(k) != v[k] and (k != "button" or v[k])]
        # An event repeats its value (motion = 1 again, another press): still news.
        for k in ("motion", "button", "problem"):
            if report.trigger and v.get(k) and k not in changed:
                changed.append(k)
        for k in ("motion", "button"):
            if v.get(k):
                d.events[k] = report.time
        # "button" keeps the last event: a heartbeat without one does not erase it.
        d.values.update({k: val for k, val in v.items() if k != "button" or val})
        d.last_heard = report.time
        d.rssi = report.rssi
        d.reports += 1
        if changed:
            d.changed_at = report.time
            d.changed = changed
        return changed

    def row(self, dev_id: str, now: float, failures: int = 0,
            tz: Any = None) -> dict[str, Any]:
        dev = self.devices.get(dev_id)
        d = self.state.get(dev_id, _Dev())
        role = dev.role if dev is not None else ""
        state = state_of(d.values, role)
        changed_s = None if d.changed_at is None else round(now - d.changed_at, 1)
        return {
            "id": dev_id, "role": role, "room": dev.room if dev is not None else "",
            "state": state,
            # Seconds since the last motion / button event (a PIR never says "no motion").
            "events_s": {k: round(now - t) for k, t in d.events.items()},
            "battery": d.values.get("battery"),
            "charging": d.values.get("battery_charging"),
            "rssi": d.rssi,
            "last_seen": (iso(d.last_heard, tz) if tz is not None and d.last_heard is not None
                          else d.last_heard),
            "age_s": None if d.last_heard is None else round(now - d.last_heard),
            "reports": d.reports,
            "decrypt_failures": failures,
            "changed": list(d.changed),
            "changed_s": changed_s,
            "mark": changed_s is not None and changed_s <= MARK_S,
        }


def _ago(s: float) -> str:
    s = max(0, int(s))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


# -- the hub side (served on the control socket) ------------------------------------------

def _failures(hub: RunningHub, dev_id: str) -> int:
    stats = hub.decoder.device_stats
    return sum(stats.get((dev_id, r), 0) for r in FAILURES)


def board_for(hub: RunningHub) -> WatchBoard:
    board = WatchBoard(hub.cfg.devices)
    eng = hub.rules
    for dev_id in hub.cfg.devices:
        seen = eng.seen.get(dev_id)
        board.seed(dev_id, eng.last_values.get(dev_id, {}),
                   seen[0] if seen else None, int(seen[1]) if seen else None)
    return board


async def stream(hub: RunningHub, interval_s: float = 1.0) -> AsyncIterator[dict[str, Any]]:
    """Snapshot, then a "report" item per accepted report and a "table" item every
    interval_s. Items are plain JSON objects (one line each on the socket)."""
    board = board_for(hub)
    q: asyncio.Queue[Report] = asyncio.Queue(maxsize=10000)

    def heard(report: Report) -> None:
        if not q.full():  # a client that stopped reading must not grow the hub's memory
            q.put_nowait(report)

    hooks = hub.on_report
    hooks.append(heard)
    tz = hub.cfg.timezone

    def table(kind: str) -> dict[str, Any]:
        now = hub.clock.now()
        for d in hub.cfg.devices:  # a reload may add devices
            board.devices.setdefault(d, hub.cfg.devices[d])
        return {"event": kind, "time": iso(now, tz), "devices": [
            board.row(d, now, _failures(hub, d), tz) for d in sorted(board.devices)]}

    try:
        yield table("snapshot")
        loop = asyncio.get_running_loop()
        next_table = loop.time() + interval_s
        while True:
            try:
                report = await asyncio.wait_for(q.get(), max(0.0, next_table - loop.time()))
            except TimeoutError:
                next_table = loop.time() + interval_s
                yield table("table")
                continue
            changed = board.on_report(report)
            now = hub.clock.now()
            row = board.row(report.device.id, now, _failures(hub, report.device.id), tz)
            yield {"event": "report", "time": iso(now, tz), "device": row,
                   "changed": changed}
    finally:
        if heard in hooks:
            hooks.remove(heard)


# -- the client (`tryggheim watch`) -------------------------------------------------------

HEAD = ("", "ID", "ROLE", "ROOM", "STATE", "BATT", "RSSI", "HEARD", "DECRYPT FAIL")


def render(rows: list[dict[str, Any]], title: str = "") -> str:
    table = [HEAD]
    for r in rows:
        state = dict(r["state"])
        for k, ago in r.get("events_s", {}).items():
            if k in state:
                state[k] = f"{state[k]} {_ago(ago)} ago"
        batt = "-" if r["battery"] is None else f"{r['battery']}%"
        heard = "never" if r["age_s"] is None else f"{r['age_s']}s ago"
        table.append(("*" if r["mark"] else " ", r["id"], r["role"], r["room"] or "-",
                      state_text(state) or "-", batt,
                      "-" if r["rssi"] is None else str(r["rssi"]), heard,
                      str(r["decrypt_failures"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(HEAD))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    if title:
        lines.insert(0, title)
    lines.append("* = changed in the last %d s.  Ctrl-C to stop." % MARK_S)
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="hub configuration (finds the control socket)")
    p.add_argument("--socket", help="the hub's control socket, if not from the config")
    p.add_argument("--json", action="store_true",
                   help="stream JSON lines: a snapshot of every device, then each report")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between full refreshes (default 1)")
    p.set_defaults(func=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    from hub.admin.cli import _socket
    from hub.admin.control import ControlError
    from hub.admin.control import stream as control_stream
    from hub.config import settings as config

    try:
        path = _socket(args)
    except config.ConfigError as e:
        print(f"tryggheim watch: {e}", file=sys.stderr)
        return 2
    tty = sys.stdout.isatty()
    rows: dict[str, dict[str, Any]] = {}
    failures: dict[str, int] = {}

    def line(event: str, time: str, row: dict[str, Any], **more: Any) -> None:
        print(json.dumps({"event": event, "time": time, **row, **more}, ensure_ascii=False),
              flush=True)

    try:
        for item in control_stream(path, "watch", {"interval_s": args.interval}):
            kind = item.get("event")
            if args.json:
                if kind in ("snapshot", "table"):
                    for r in item["devices"]:
                        if kind == "snapshot":
                            line("snapshot", item["time"], r)
                        elif r["decrypt_failures"] > failures.get(r["id"], 0):
                            # Refused adverts make no report: say so as they are counted.
                            line("decrypt_failure", item["time"], r)
                        failures[r["id"]] = r["decrypt_failures"]
                elif kind == "report":
                    line("report", item["time"], item["device"], changed=item["changed"])
                continue
            if kind in ("snapshot", "table"):
                rows = {r["id"]: r for r in item["devices"]}
            elif kind == "report":
                rows[item["device"]["id"]] = item["device"]
            else:
                continue
            if not tty and kind == "table":
                continue  # a log, not a screen: print only what changed
            text = render([rows[k] for k in sorted(rows)], f"Tryggheim walk test, hub time "
                          f"{item.get('time', '')[11:19]}")
            # In place: cursor home and clear, so the table stays put while it updates.
            print(("\x1b[H\x1b[J" if tty else "") + text + ("" if tty else "\n"), flush=True)
    except ControlError as e:
        print(f"tryggheim watch: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    print("tryggheim watch: the hub closed the connection (stopped or restarted)",
          file=sys.stderr)
    return 1
