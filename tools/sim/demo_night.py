"""One night in a home, in virtual time: `make demo`, i.e. `python -m tools.sim.demo_night`
(`--scenario NAME` or SCENARIO=name runs one part of it, `--scenario help` lists them).

All five devices run the real firmware on the virtual board (MicroPython in WebAssembly under
Node, tools/sim/vboard), the hub runs its real code (hub.service.Hub) with a real Mosquitto and
the response-centre consumer (tools/centre/response_centre.py). Device time and the hub's clock are
one virtual clock in Europe/Oslo: the simulator moves both together, in 10 s strides while
every device sleeps and 200 ms steps while one is awake, and lets the hub, the broker and the
centre finish their (wall-time) work before virtual time moves on, so what the response
centre received is stamped with the virtual instant it arrived.

Why the hub runs in this process: its rules take `now` from an injected clock (hub/clock.py);
here that clock is the simulator's, which a separate `tryggheim run` process cannot share.
Everything else is the same code path: adverts cross the virtual air (a Unix socket) into the
hub's virtual radio, alarms go through the outbox to Mosquitto, receipts come back, acks go
back over the air to the pendant.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hub.admin.watch import state_of, state_text
from hub.clock import ManualClock
from hub.config import keys as hub_keys
from hub.config import settings as hub_config
from hub.decode.decoder import Report
from hub.rules.outgoing import Outgoing
from hub.service import Hub
from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre
from tools.sim.vboard import Air, VirtualBoard
from tools.sim.virtual_home import HomeDevice, receipt_key_of, write_hub_config

TZ = ZoneInfo("Europe/Oslo")
EVENING = date(2026, 11, 19)  # a Thursday night in November (no daylight-saving change)
ACTIVE_STEP_MS = 200  # while a device is awake: its bursts and ack slices are this fine
IDLE_STEP_MS = 10_000  # every device asleep: the rules' timers are checked this often
SETTLE_S = 30.0  # longest the simulator waits (wall time) for the hub to take its adverts
DELIVERY_WAIT_S = 5.0  # ... and for the response centre's receipt (see Night.settle)
RECONNECT_WAIT_S = 40.0  # the hub's MQTT reconnect back-off is capped at 30 s
LIPO_MV = 3900  # 71 % on the firmware's LiPo curve (firmware/device.py)
CELLS_MV = 2900  # two fresh alkaline cells, ~90 %
BOOT_LEAD_S = 13
DOOR_LOW_MV = 2230  # 12 %: below the door's warning level (20 %)

HOME = [
    HomeDevice("pendant-1", "pendant", "C0:FF:EE:00:00:01", "living room"),
    HomeDevice("bed-1", "bed", "C0:FF:EE:00:00:02", "bedroom"),
    HomeDevice("door-front", "door", "C0:FF:EE:00:00:03", "hall"),
    HomeDevice("pir-hall", "pir", "C0:FF:EE:00:00:04", "hall"),
    HomeDevice("wearable-1", "wearable", "C0:FF:EE:00:00:05", "bedroom"),
]

RULES = """
[rules.button]
cancel_window_s = 60

[[rules.bed_exit]]
name = "night in bed"
bed = "bed-1"
window = "20:30-06:00"
return_min = 30

[[rules.wandering]]
name = "front door at night"
door = "door-front"
window = "22:00-06:00"
return_min = 10
inside = ["pir-hall"]
bed = "bed-1"

[rules.silent]
missed_heartbeats = 3

[rules.battery]
confirm_reports = 3
"""


def at(hhmm: str) -> datetime:
    """A local time of the night: from noon on it is the evening, before noon the morning."""
    h, m, *s = (int(x) for x in hhmm.split(":"))
    day = EVENING if h >= 12 else EVENING + timedelta(days=1)
    return datetime(day.year, day.month, day.day, h, m, s[0] if s else 0, tzinfo=TZ)


@dataclass
class Step:
    time: str  # local "HH:MM[:SS]"
    device: str  # who acts (a device id, or "broker")
    what: str  # said on the timeline
    act: Callable[[Night], None]


@dataclass(frozen=True)
class Expect:
    type: str  # message type at the response centre
    state: str  # "raised" / "cleared"
    device: str | None


@dataclass
class Scenario:
    name: str
    title: str
    start: str
    end: str
    steps: list[Step]
    expect: list[Expect]
    in_bed: bool = True  # where the resident is when this part starts


def _pin(dev: str, pin: str, level: int) -> Callable[[Night], None]:
    return lambda n: n.set_pin(dev, pin, level)


def _press(dev: str) -> Callable[[Night], None]:
    return lambda n: n.press(dev)


def _battery(dev: str, mv: int) -> Callable[[Night], None]:
    return lambda n: n.boards[dev].set_battery(mv)


def _fall(n: Night) -> None:
    n.boards["wearable-1"].accel.feed(fall_samples())


def fall_samples() -> list[tuple[float, float, float]]:
    """Worn upright, a short free fall, the impact, then lying still (g, the sensor's axes)."""
    upright = [(0.0, -1.0, 0.0)] * 150
    dip = [(0.05, -0.3, 0.1)] * 20
    hit = [(1.5, -2.5, 4.0), (3.0, -2.5, 4.0), (1.8, -1.5, 2.4)]
    lying = [(0.0, 0.01, 1.0)] * 300
    return upright + dip + hit + lying


SCENARIOS = [
    Scenario("bed-exit", "up at 02:00 and not back: bed-exit alarm; back at 02:45: cleared",
             "01:55", "02:50", [
                 Step("02:00", "bed-1", "the resident gets out of bed", _pin("bed-1", "mat", 0)),
                 Step("02:01", "pir-hall", "walks through the hall", _pin("pir-hall", "motion", 1)),
                 Step("02:01:05", "pir-hall", "", _pin("pir-hall", "motion", 0)),
                 Step("02:45", "bed-1", "goes back to bed", _pin("bed-1", "mat", 1)),
             ], [Expect("bed_exit", "raised", "bed-1"), Expect("bed_exit", "cleared", "bed-1")]),
    Scenario("wandering", "the front door opens at 03:10 and she does not come back in: "
             "wandering alarm; back inside: cleared", "03:00", "03:35", [
                 Step("03:05", "bed-1", "the resident gets up", _pin("bed-1", "mat", 0)),
                 Step("03:10", "door-front", "opens the front door", _pin("door-front", "door", 1)),
                 Step("03:10:30", "door-front", "goes out and closes it behind her",
                      _pin("door-front", "door", 0)),
                 Step("03:27", "door-front", "comes back: opens the door",
                      _pin("door-front", "door", 1)),
                 Step("03:27:20", "door-front", "closes it", _pin("door-front", "door", 0)),
                 Step("03:27:40", "pir-hall", "walks into the hall", _pin("pir-hall", "motion", 1)),
                 Step("03:27:45", "pir-hall", "", _pin("pir-hall", "motion", 0)),
                 Step("03:30", "bed-1", "back to bed", _pin("bed-1", "mat", 1)),
             ], [Expect("wandering", "raised", "door-front"),
                 Expect("wandering", "cleared", "door-front")]),
    Scenario("outage", "the broker goes down and she presses the pendant: \"received\" from "
             "the hub's outbox, \"help is coming\" once broker and centre are back",
             "03:58", "04:20", [
                 Step("04:00", "broker", "the response centre's broker goes down "
                      "(the centre is unreachable)",
                      lambda n: n.broker_down()),
                 Step("04:05", "pendant-1", "the resident presses the alarm button",
                      _press("pendant-1")),
                 Step("04:12", "broker", "broker and response centre are back",
                      lambda n: n.broker_up()),
             ], [Expect("alarm_button", "raised", "pendant-1")]),
    Scenario("silent", "the hall PIR falls off the wall and goes silent: supervision alarm",
             "04:15", "05:00", [
                 Step("04:20", "pir-hall", "falls off the wall, batteries out",
                      lambda n: n.power_off("pir-hall")),
             ], [Expect("device_silent", "raised", "pir-hall")]),
    Scenario("battery", "the door sensor's battery: one cold low reading is not a warning; "
             "low three times in a row is", "04:25", "05:30", [
                 Step("04:28", "door-front", "a cold draught: one low battery reading",
                      _battery("door-front", DOOR_LOW_MV)),
                 Step("04:38", "door-front", "warmer again: battery back up",
                      _battery("door-front", CELLS_MV)),
                 Step("04:50", "door-front", "the cells are really running down",
                      _battery("door-front", DOOR_LOW_MV)),
             ], [Expect("battery_low", "raised", "door-front")]),
    Scenario("fall", "she takes the wearable off the charger and falls: fall alarm, "
             "\"help is coming\" on the wearable", "06:25", "06:40", [
                 Step("06:30", "wearable-1", "the resident takes the wearable off its charger",
                      _pin("wearable-1", "charge", 0)),
                 Step("06:33", "wearable-1", "she falls in the bedroom", _fall),
             ], [Expect("fall", "raised", "wearable-1")]),
]
BY_NAME = {s.name: s for s in SCENARIOS}
EVENING_STEPS = [
    Step("21:05", "wearable-1", "the wearable goes on its charger for the night",
         _pin("wearable-1", "charge", 1)),
    Step("21:10", "bed-1", "the resident goes to bed", _pin("bed-1", "mat", 1)),
]
NIGHT = Scenario("night", "the whole night, 21:00 to 06:40", "21:00", "06:40",
                 EVENING_STEPS + [st for s in SCENARIOS for st in s.steps],
                 [e for s in SCENARIOS for e in s.expect], in_bed=False)


def scenario(name: str) -> Scenario:
    return NIGHT if name in ("", "night", "all") else BY_NAME[name]


def describe() -> str:
    lines = ["Scenarios (make demo SCENARIO=<name>; without SCENARIO the whole night):",
             f"  {'night':10} {NIGHT.title}"]
    lines += [f"  {s.name:10} {s.start}-{s.end}  {s.title}" for s in SCENARIOS]
    return "\n".join(lines)


@dataclass
class Line:
    t: float  # epoch seconds (virtual)
    who: str
    text: str
    kind: str = "note"  # device / hub / centre / receipt / light / note, for the picture


class CountingAir:
    """The boards' radio: the virtual air, counting adverts so the simulator knows when the
    hub has taken every one of them."""

    def __init__(self, air: Air) -> None:
        self.air = air
        self.sent = 0

    def broadcast(self, mac: str, rssi: int, service_data: bytes) -> None:
        self.air.broadcast(mac, rssi, service_data)
        self.sent += 1

    def hub_frames(self) -> list[tuple[str, bytes]]:
        return self.air.hub_frames()


class NightHub(Hub):
    """The hub, counting the adverts it has taken off the air (for the simulator's sync)."""

    heard = 0

    def on_advert(self, advert: Any) -> None:
        self.heard += 1
        super().on_advert(advert)

    def tick_now(self) -> None:
        # The same as the hub's once-a-second tick, at each simulator step.
        self._dispatch(self.rules.tick(self.clock.now()))

    def idle(self) -> bool:
        return not self._tasks and self.committer.waiting == 0


class Night:
    def __init__(self, workdir: Path, sc: Scenario, echo: Callable[[str], None] = print) -> None:
        self.workdir = workdir
        self.sc = sc
        self.echo = echo
        # The devices start a little before the hour, so their heartbeats (every 10 min from
        # power-on) do not fall on the very instants the scenario acts.
        self.t0 = at(sc.start).timestamp() - BOOT_LEAD_S
        self.clock = ManualClock(self.t0)
        self.lines: list[Line] = []
        self._lock = threading.Lock()
        self.boards: dict[str, VirtualBoard] = {}
        self.devices = {d.id: d for d in HOME}
        self.broker: Mosquitto | None = None
        self.centre: ResponseCentre | None = None
        self.receipt_keys: dict[str, bytes] = {}
        self.air: Air | None = None
        self.radio: CountingAir | None = None
        self.hub: NightHub | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.broker_is_up = True
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.stored_at: dict[str, float] = {}
        self._lights: dict[str, int] = {}
        self._shown: dict[str, str] = {}
        self.reports: list[tuple[float, str, dict[str, int], bool]] = []
        self._values: dict[str, dict[str, int]] = {}
        self._low: dict[str, int] = {}
        self.confirm = 3  # [rules.battery] confirm_reports in RULES
        self.off: set[str] = set()
        self.wall = 0.0
        self._waited = 0.0

    # -- the timeline ------------------------------------------------------------------
    def note(self, who: str, text: str, kind: str = "note", t: float | None = None) -> None:
        line = Line(self.clock.now() if t is None else t, who, text, kind)
        with self._lock:
            self.lines.append(line)
        self.echo(self.format(line))

    @staticmethod
    def format(line: Line) -> str:
        hhmmss = datetime.fromtimestamp(line.t, TZ).strftime("%H:%M:%S")
        return f"{hhmmss}  {line.who:<16} {line.text}"

    # -- hooks from the hub (its event loop thread) --------------------------------------
    def _report(self, report: Report) -> None:
        v = report.values
        dev = report.device
        with self._lock:
            self.reports.append((report.time, dev.id, dict(v), report.trigger))
        prev = self._values.get(dev.id)
        self._values[dev.id] = {**(prev or {}), **v}
        low = bool(v.get("battery_low"))
        streak = self._low[dev.id] = self._low.get(dev.id, 0) + 1 if low else 0
        now_state = state_of(v, dev.role)
        if prev is None:
            parts = [state_text(now_state)] if now_state else []
            if "battery" in v:
                parts.append(f"battery {v['battery']} %")
            self.note(dev.id, "starts up: " + ", ".join(parts), "device", report.time)
            return
        before = state_of(prev, dev.role)
        # What changed, and events (a press, motion) even when they repeat a value.
        shown = {k: s for k, s in now_state.items()
                 if before.get(k) != s or (report.trigger and k in ("button", "motion", "fall"))}
        text = state_text(shown)
        battery = v.get("battery")
        if battery is not None and (battery != prev.get("battery") and (low or prev.get(
                "battery_low")) or 0 < streak <= self.confirm):
            text = (text + ", " if text else "") + f"battery {battery} %" + (
                f" (low, {streak} in a row)" if low else "")
        if not text:
            return  # a plain heartbeat: on the picture as "heard", not on the timeline
        if not report.trigger:
            text = "heartbeat: " + text
        self.note(dev.id, "says: " + text, "device", report.time)

    def _stored(self, out: Outgoing) -> None:
        p = out.payload
        if out.kind == "event" or p.get("type") in ("hub_online",):
            return
        self.stored_at[out.msg_id] = self.clock.now()
        why = _why(p)
        self.note("hub", f"decides: {_title(p)}{': ' + why if why else ''}"
                  " -> stored in its outbox", "hub")

    def _delivered(self, msg_id: str, payload: dict[str, Any]) -> None:
        self._drain_centre()  # the centre had it before its receipt came back
        self.note("hub", f"receipt from the response centre for {_title(payload)}", "receipt")

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        wd = self.workdir
        wd.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(wd / "broker").start()
        path = write_hub_config(wd, self.broker.port, HOME, extra=RULES)
        cfg = hub_keys.attach(hub_config.load(path))
        self.air = Air(wd / "air.sock")
        self.radio = CountingAir(self.air)
        # The centre signs its receipts with the site's key: the hub refuses unsigned ones.
        self.receipt_keys = {cfg.site: receipt_key_of(path)}
        self.centre = ResponseCentre("127.0.0.1", self.broker.port,
                                     receipt_keys=self.receipt_keys).start()
        ready = threading.Event()
        failed: list[BaseException] = []

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                hub = NightHub(cfg, clock=self.clock, capture=wd / "capture.jsonl")
            except BaseException as e:
                failed.append(e)
                ready.set()
                raise
            hub.on_stored.append(self._stored)
            hub.on_delivered.append(self._delivered)
            hub.on_report.append(self._report)
            self.hub = hub
            task = asyncio.create_task(hub.run(self._stop))
            ready.set()
            await task

        def thread_main() -> None:
            try:
                asyncio.run(main())
            except BaseException as e:  # noqa: BLE001  (reported by stop())
                failed.append(e)

        self._failed = failed
        self._thread = threading.Thread(target=thread_main, name="hub", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failed:
            raise RuntimeError(f"the hub did not start: {failed[0]!r}")
        self.air.wait_for_listener()
        in_bed = self.sc.in_bed
        for d in HOME:
            lipo = d.role in ("pendant", "wearable")
            levels = {"mat": 1} if d.role == "bed" and in_bed else {}
            if d.role == "wearable" and (in_bed or self.sc is not NIGHT):
                levels["charge"] = 1  # on its charger at night
            board = VirtualBoard(d.board_config(heartbeat_s=600), mac=d.mac, radio=self.radio,
                                 battery_mv=LIPO_MV if lipo else CELLS_MV,
                                 levels=dict(levels))
            self.boards[d.id] = board.start()
        self.settle()

    def stop(self) -> None:
        for b in self.boards.values():
            b.stop()
        if self.loop is not None and self._stop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        if self.centre is not None:
            self.centre.stop()
        if self.air is not None:
            self.air.close()
        if self.broker is not None:
            self.broker.close()

    # -- actions the scenarios take ----------------------------------------------------
    def set_pin(self, dev: str, pin: str, level: int) -> None:
        b = self.boards[dev]
        b.schedule(b.now_ms, pin, level)
        b.advance(0)

    def press(self, dev: str, hold_ms: int = 300) -> None:
        b = self.boards[dev]
        b.schedule(b.now_ms, "button", 1)
        b.schedule(b.now_ms + hold_ms, "button", 0)
        b.advance(0)

    def power_off(self, dev: str) -> None:
        self.boards[dev].stop()
        self.off.add(dev)

    def broker_down(self) -> None:
        """The link to the response centre is gone: its broker stops, the centre with it."""
        assert self.broker is not None and self.centre is not None
        self._drain_centre()
        self.centre.stop()
        self.broker.stop()
        self.broker_is_up = False

    def broker_up(self) -> None:
        assert self.broker is not None
        self.broker.start()  # same port, same persistence
        # The centre comes back with its persistent session (same client id).
        self.centre = ResponseCentre("127.0.0.1", self.broker.port,
                                     receipt_keys=self.receipt_keys).start()
        self.broker_is_up = True
        self._waited = 0.0

    # -- the simulator -----------------------------------------------------------------
    def _in_hub(self, fn: Callable[[], Any]) -> Any:
        assert self.loop is not None

        async def call() -> Any:
            await asyncio.sleep(0)  # one loop turn: readers woken by our datagrams run first
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(SETTLE_S)

    def settle(self) -> None:
        """Wait (wall time) until the hub has taken every advert, stored what the rules
        decided and, while the broker is up, has the centre's receipt for all of it."""
        assert self.hub is not None and self.radio is not None
        hub = self.hub
        deadline = time.monotonic() + SETTLE_S
        while not (hub.heard >= self.radio.sent and self._in_hub(hub.idle)):
            if self._failed:
                raise RuntimeError(f"the hub stopped: {self._failed[0]!r}")
            if time.monotonic() > deadline:
                self.note("demo", "the hub did not take its adverts in time (see hub.log)")
                break
            time.sleep(0.002)
        # Delivery is wall-time work (broker, centre, receipt): virtual time waits for it, up
        # to DELIVERY_WAIT_S per undelivered stretch. Past that the hub is waiting on one of
        # its own (virtual-time) retry timers, and virtual time must move for it to fire.
        # While the hub is still reconnecting (its back-off runs in wall time) it waits on
        # nothing virtual, so there is no budget then, only the reconnect cap.
        reconnect_deadline = time.monotonic() + RECONNECT_WAIT_S
        while self.broker_is_up and self._waited < DELIVERY_WAIT_S:
            if self._in_hub(lambda: hub.outbox.stats().depth) == 0:
                self._waited = 0.0
                break
            t = time.monotonic()
            time.sleep(0.002)
            if hub.link.connected or t > reconnect_deadline:
                self._waited += time.monotonic() - t
        self._drain_centre()

    def _drain_centre(self) -> None:
        assert self.centre is not None
        while True:
            with self._lock:  # from the simulator and from the hub's receipt hook
                try:
                    msg = self.centre.received.get_nowait()
                except queue.Empty:
                    return
            now = self.clock.now()
            self.received.append((now, msg))
            sent = self.stored_at.get(str(msg.get("id")))
            late = "" if sent is None or now - sent < 1 else \
                f", held {now - sent:.0f} s in the hub's outbox"
            self.note("response centre", f"received {_title(msg)}{late}", "centre")

    def _lights_check(self) -> None:
        for dev in ("pendant-1", "wearable-1"):
            b = self.boards[dev]
            seen = self._lights.get(dev, 0)
            for t_ms, pattern in b.indications[seen:]:
                if pattern != self._shown.get(dev, "off"):
                    self.note(dev, f"light: {LIGHTS.get(pattern, pattern)}", "light",
                              self.t0 + t_ms / 1000)
                self._shown[dev] = pattern
            self._lights[dev] = len(b.indications)

    def _awake(self) -> bool:
        return any(not b.sleeping for d, b in self.boards.items() if d not in self.off)

    def run(self) -> list[str]:
        """Run the scenario; returns what was expected and did not arrive."""
        w0 = time.monotonic()
        sc = self.sc
        steps = sorted(sc.steps, key=lambda s: at(s.time))
        end_ms = int((at(sc.end).timestamp() - self.t0) * 1000)
        self.note("demo", f"{sc.name}: {sc.title}")
        t = 0
        i = 0
        self._lights_check()
        while t < end_ms:
            due = int((at(steps[i].time).timestamp() - self.t0) * 1000) if i < len(steps) \
                else end_ms
            stride = ACTIVE_STEP_MS if self._awake() else IDLE_STEP_MS
            nxt = min(t + stride, max(due, t), end_ms)
            self.clock.t = self.t0 + nxt / 1000
            for d, b in self.boards.items():
                if d not in self.off:
                    b.advance(max(0, nxt - b.now_ms))
            t = nxt
            while i < len(steps) and int((at(steps[i].time).timestamp() - self.t0) * 1000) <= t:
                st = steps[i]
                if st.what:
                    self.note(st.device, st.what, "action")
                st.act(self)
                i += 1
            assert self.hub is not None
            self._lights_check()  # the device's own light comes before anything the hub does
            self._in_hub(self.hub.tick_now)
            self.settle()
        self._lights_check()
        self.wall = time.monotonic() - w0
        return self.missing()

    def missing(self) -> list[str]:
        got = [(m.get("type"), m.get("state"), m.get("device")) for _, m in self.received]
        out = []
        for e in self.sc.expect:
            if (e.type, e.state, e.device) not in got:
                out.append(f"{e.type} {e.state} for {e.device}")
        return out


LIGHTS = {"sending": "sending (blinking)", "received": "received: the hub has the alarm",
          "help_coming": "help is coming", "not_received": "not received, trying again",
          "cancelled": "cancelled", "off": "off", "fault": "fault"}

TITLES = {"bed_exit": "bed-exit alarm", "wandering": "wandering alarm",
          "alarm_button": "alarm button", "fall": "fall alarm",
          "device_silent": "supervision alarm (device silent)",
          "battery_low": "low battery warning", "battery_critical": "battery critical",
          "not_worn": "wearable not worn"}


def _title(p: dict[str, Any]) -> str:
    name = TITLES.get(str(p.get("type")), str(p.get("type")))
    state = p.get("state")
    dev = f" ({p['device']})" if p.get("device") else ""
    return f"{name} {state}{dev}" if state and state != "raised" else f"{name}{dev}"


def _why(p: dict[str, Any]) -> str:
    """The rule's reason, from the message's own fields."""
    def hm(key: str) -> str:
        return str(p.get(key, ""))[11:16]

    if p.get("state") == "cleared":
        return str(p.get("reason", "")).replace("_", " ")
    match p.get("type"):
        case "bed_exit":
            return f"out of bed since {hm('out_of_bed_since')}, {p.get('minutes_out')} min"
        case "wandering":
            return f"door opened {hm('door_opened')}, not back in {p.get('minutes_away')} min"
        case "device_silent":
            return f"last heard {hm('last_seen')}, silent {p.get('minutes_silent')} min"
        case "battery_low" | "battery_critical":
            return f"battery {p.get('battery')} %, confirmed"
        case "alarm_button":
            return str(p.get("trigger", "press"))
    return ""


def run_demo(workdir: Path, name: str = "", echo: Callable[[str], None] = print,
             svg: bool = True) -> tuple[int, Night]:
    """Run a scenario (or the whole night); 0 when every expected alarm arrived."""
    from tools.sim import night_svg

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    handler = logging.FileHandler(workdir / "hub.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    night = Night(workdir, scenario(name), echo)
    try:
        night.start()
        missing = night.run()
    finally:
        night.stop()
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
    if svg:
        path = night_svg.write(night, workdir / "night.svg")
        try:
            shown = path.relative_to(Path.cwd())
        except ValueError:
            shown = path
        echo(f"\nThe night as a picture: {shown}")
    if missing:
        echo("\nEXPECTED BUT NOT RECEIVED at the response centre: " + "; ".join(missing))
        return 1, night
    n = len(night.sc.expect)
    echo(f"\nEvery expected alarm message ({n}) reached the response centre "
         f"({night.wall:.0f} s wall time for {_span(night.sc)} of night).")
    return 0, night


def _span(sc: Scenario) -> str:
    s = int((at(sc.end) - at(sc.start)).total_seconds())
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", default=os.environ.get("DEMO_DIR", "demo-out"))
    p.add_argument("--scenario", default=os.environ.get("SCENARIO", ""),
                   help="one part of the night (help: list them); default the whole night")
    args = p.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    if args.scenario == "help":
        print(describe())
        return 0
    if args.scenario and args.scenario not in ("night", "all") and args.scenario not in BY_NAME:
        print(f"unknown scenario {args.scenario!r}\n" + describe(), file=sys.stderr)
        return 2
    rc, _ = run_demo(workdir, args.scenario)
    print(f"Logs are in {_shown(workdir)}/ (hub.log, broker/mosquitto.log). Every advert the hub"
          f" heard is in {_shown(workdir)}/capture.jsonl; read it with:\n"
          f"  {_tryggheim()} decode --capture {_shown(workdir)}/capture.jsonl"
          f" --keys {_shown(workdir)}/keys.toml")
    return rc


def _shown(path: Path) -> str:
    """A path as the user can type it from where they are."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _tryggheim() -> str:
    """How to run the CLI from here: on PATH only inside an activated venv."""
    if shutil.which("tryggheim"):
        return "tryggheim"
    return _shown(Path(sys.executable).with_name("tryggheim"))


__all__ = ["Night", "SCENARIOS", "NIGHT", "run_demo", "describe", "scenario"]


if __name__ == "__main__":
    sys.exit(main())
