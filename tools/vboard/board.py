"""Host side of the virtual board: a discrete-event simulator around real MicroPython.

The firmware runs unchanged in the MicroPython WebAssembly port (runner.mjs). Every board
call arrives here as one JSON line and is answered with one; the board blocks meanwhile, so
virtual time only moves when this side says. Tests stimulate pins at exact instants, advance
hours in milliseconds, and read the adverts and LED patterns the device produced.

What the simulated board has, each behind the board call the ESP32 layer implements:
- pins (`set_pin`, `schedule`, `press`), the charger input ("charge"), the battery through
  its divider (`set_battery`, also as a ramp over device time);
- an LIS3DH accelerometer on I2C (`accel`, tools/vboard/lis3dh.py) sampling on its own clock
  into its FIFO, its INT1 on the "accel_int" pin; `accel_present=False` for a dead sensor;
- the radio: adverts (to `radio`, the virtual air) and ack frames the hub writes while the
  device advertises connectable (`hub_write`, or the air's hub frames);
- RTC memory (`rtc`: survives deep sleep and resets, not power loss) and flash (the device's
  files, mirrored to `flash_dir`: survives `power_cycle`);
- the watchdog (a call that hangs longer than its timeout resets the chip: `hang_next_call`)
  and hardware faults (`fail_calls`); `boots` lists every start with its wake reason.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tools.vboard.lis3dh import Lis3dh

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("runner.mjs")
# Files that exist only on a real ESP32 or only for the host are not copied.
HOST_ONLY = {"board_esp32.py"}
# Data files provisioning puts next to the firmware (the pin map the defaults read).
DATA_FILES = (ROOT / "hardware" / "pinmap.json",)
ACCEL_INT = "accel_int"  # the pin the accelerometer's INT1 drives


class Radio(Protocol):
    """Where the board's adverts go and where its scans listen (tools.vboard.air.Air)."""

    def broadcast(self, mac: str, rssi: int, service_data: bytes) -> None: ...

    def hub_frames(self) -> list[tuple[str, bytes]]: ...


class BoardCrashed(RuntimeError):
    pass


@dataclass
class Advert:
    t_ms: int
    adv: bytes  # the complete legacy advertising payload

    @property
    def service_data(self) -> bytes:
        from protocols import bthome

        svc = bthome.service_data_from_advert(self.adv)
        assert svc is not None
        return svc


@dataclass
class Usage:
    """Where the device spent its time, for the battery model (tools/battery_model.py):
    the simulator runs the firmware's real schedule, the model prices each state."""

    deep_ms: int = 0  # deep sleep
    adv_ms: int = 0  # awake with the radio advertising (the CPU idles at the active current)
    adv_events: float = 0.0  # advertising events sent (3 channels each)
    light_ms: int = 0  # awake without advertising: light sleep on the ESP32 (board_esp32.wait)
    light_wakes: int = 0  # returns from such a light sleep (each costs a short active burst)


@dataclass
class _Edge:
    t_ms: int
    pin: str
    level: int


@dataclass
class VirtualBoard:
    """One simulated device. `config` becomes /config.json on its flash (None = missing)."""

    config: dict[str, Any] | None
    mac: str = "C0:FF:EE:00:00:01"
    battery_mv: int = 3900  # a charged LiPo (~70 %); two AA cells read full (curve ends 3.1 V)
    rssi: int = -60
    radio: Radio | None = None
    repeat_ms: int = 1000  # how often an active advert is re-sent into the air
    firmware_dir: Path = ROOT / "firmware"
    protocols_dir: Path = ROOT / "protocols"
    now_ms: int = 0
    adverts: list[Advert] = field(default_factory=list)
    indications: list[tuple[int, str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)
    is_charging: bool = False
    rtc: bytes = b""
    sleeping: bool = False
    halted: bool = False
    accel: Lis3dh = field(default_factory=Lis3dh)
    accel_present: bool = True  # False: nothing answers on the I2C bus (a broken sensor)
    boots: list[tuple[int, str]] = field(default_factory=list)  # (t_ms, wake reason)
    pin_map: dict[str, Any] = field(default_factory=dict)  # what the firmware configured
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self._edges: list[_Edge] = []
        self._pending: dict[str, Any] | None = None
        self._wake: tuple[str, str | None] = ("power_on", None)
        self._adv_active: bytes | None = None
        self._next_repeat = 0
        self._proc: subprocess.Popen[str] | None = None
        self._flash: str | None = None
        self._power_on_ms = self.now_ms
        self._boot_ms = self.now_ms
        self._connectable = False
        self._rx: list[tuple[int, bytes]] = []  # (time, frame) the hub writes to this device
        self._air_seen: set[bytes] = set()
        self._wdt_ms: int | None = None
        self._wdt_fed = 0
        self._hang_ms = 0
        self._hang_op: str | None = None
        self._faults: dict[str, str] = {}
        self._deep = False  # in deep sleep (for `usage`)
        self._adv_interval = 100
        self._ramp: tuple[int, int, int, int] | None = None  # t0, mv0, t1, mv1

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> VirtualBoard:
        self._flash = tempfile.mkdtemp(prefix="vboard-")
        flash = Path(self._flash)
        for src in self.firmware_dir.glob("*.py"):
            if src.name not in HOST_ONLY:
                shutil.copy(src, flash / src.name)
        (flash / "protocols").mkdir()
        for src in self.protocols_dir.glob("*.py"):
            shutil.copy(src, flash / "protocols" / src.name)
        for data in DATA_FILES:
            if data.exists():
                shutil.copy(data, flash / data.name)
        if self.config is not None:
            (flash / "config.json").write_text(json.dumps(self.config))
        self._power_on()
        return self

    @property
    def flash_dir(self) -> Path:
        """The device's flash filesystem (what survives power loss)."""
        assert self._flash is not None
        return Path(self._flash)

    def power_cycle(self, off_ms: int = 1000) -> None:
        """Battery out and back in: RAM and RTC memory are lost, flash is kept."""
        self._kill()
        self.now_ms += off_ms
        self.rtc = b""
        self.halted = False
        self.sleeping = False
        self._pending = None
        self._adv_active = None
        self._wdt_ms = None
        self._deep = False
        self._wake = ("power_on", None)
        self._power_on()

    def _power_on(self) -> None:
        assert self._flash is not None
        self._power_on_ms = self.now_ms
        self._boot_ms = self.now_ms
        self.accel = type(self.accel)()  # the sensor loses power too
        self._proc = subprocess.Popen(
            ["node", str(RUNNER), self._flash],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._run(self.now_ms)

    def stop(self) -> None:
        self._kill()
        if self._flash:
            shutil.rmtree(self._flash, ignore_errors=True)
            self._flash = None

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            assert self._proc.stderr is not None
            self.log.extend(self._proc.stderr.read().splitlines())
            for f in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                if f is not None:
                    f.close()
            self._proc = None

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the device-under-test interface ----------------------------------------------
    def set_pin(self, pin: str, level: int) -> None:
        """Apply a stimulus now and let the device react to it."""
        self.schedule(self.now_ms, pin, level)
        self._run(self.now_ms)

    def schedule(self, t_ms: int, pin: str, level: int) -> None:
        self._edges.append(_Edge(t_ms, pin, level))
        self._edges.sort(key=lambda e: e.t_ms)

    def press(self, pin: str = "button", hold_ms: int = 200) -> None:
        self.set_pin(pin, 1)
        self.advance(hold_ms)
        self.set_pin(pin, 0)

    def advance(self, ms: int) -> None:
        self._run(self.now_ms + ms)

    def hub_write(self, frame: bytes, at_ms: int | None = None) -> None:
        """The hub writes an ack frame to this device (GATT write) at at_ms (default now)."""
        self._rx.append((self.now_ms if at_ms is None else at_ms, bytes(frame)))
        self._rx.sort(key=lambda x: x[0])

    def set_battery(self, mv: int, over_ms: int = 0) -> None:
        """Battery voltage goes to mv, linearly over over_ms of device time (0 = at once)."""
        start = self.battery_at(self.now_ms)
        self._ramp = (self.now_ms, start, self.now_ms + over_ms, mv) if over_ms > 0 else None
        self.battery_mv = mv

    def battery_at(self, t: int) -> int:
        if self._ramp is None:
            return self.battery_mv
        t0, v0, t1, v1 = self._ramp
        if t >= t1:
            return v1
        return v0 + (v1 - v0) * (max(t, t0) - t0) // (t1 - t0)

    def hang_next_call(self, ms: int, op: str | None = None) -> None:
        """The firmware's next board call (of kind op, e.g. "adv", "i2c_read") takes ms: a
        stuck bus or driver. The watchdog resets the board if it runs and ms exceeds it."""
        self._hang_ms = ms
        self._hang_op = op

    def fail_calls(self, op: str, error: str = "EIO") -> None:
        """From now on every board call `op` (e.g. "battery", "i2c_read") fails with OSError,
        as a broken part would; fail_calls(op, "") repairs it."""
        if error:
            self._faults[op] = error
        else:
            self._faults.pop(op, None)

    def indication(self) -> str:
        return self.indications[-1][1] if self.indications else "off"

    def adverts_since(self, t_ms: int) -> list[Advert]:
        return [a for a in self.adverts if a.t_ms >= t_ms]

    # -- simulator core ----------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            assert self._proc.stderr is not None
            raise BoardCrashed("virtual board exited:\n" + self._proc.stderr.read())
        request: dict[str, Any] = json.loads(line)
        return request

    def _reply(self, value: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(value) + "\n")
        self._proc.stdin.flush()

    def _repeat_adverts(self, until: int) -> None:
        while self._adv_active is not None and self._next_repeat <= until:
            self._emit(self._adv_active)
            self._next_repeat += self.repeat_ms

    def _emit(self, adv: bytes) -> None:
        if self.radio is None:
            return
        from protocols import bthome

        svc = bthome.service_data_from_advert(adv)
        if svc is not None:
            self.radio.broadcast(self.mac, self.rssi, svc)

    def _set_time(self, t: int) -> None:
        self._repeat_adverts(t)
        dt = t - self.now_ms
        if dt > 0:
            if self._deep:
                self.usage.deep_ms += dt
            elif self._adv_active is not None:
                self.usage.adv_ms += dt
                self.usage.adv_events += dt / self._adv_interval
            else:
                self.usage.light_ms += dt
        self.now_ms = max(self.now_ms, t)

    def _apply_edges_until(self, t: int, watched: Iterable[str]) -> _Edge | None:
        """Apply due edges up to t; stop at and return the first one on a watched pin."""
        watched = set(watched)
        while self._edges and self._edges[0].t_ms <= t:
            edge = self._edges.pop(0)
            changed = self.levels.get(edge.pin, 0) != edge.level
            self.levels[edge.pin] = edge.level
            if changed and edge.pin in watched:
                return edge
        return None

    def _run(self, until: int) -> None:
        if self.halted:
            return
        while True:
            fresh = self._pending is None
            req = self._pending if self._pending is not None else self._read()
            self._pending = None
            op = req["op"]
            if (fresh and self._hang_ms and op not in ("halt", "crash")
                    and self._hang_op in (None, op)):
                hang, self._hang_ms = self._hang_ms, 0
                if self._wdt_ms is not None and hang > self._wdt_ms:
                    self._set_time(self._wdt_fed + self._wdt_ms)
                    self._reset("watchdog")
                    continue
                self._set_time(self.now_ms + hang)
            if op in ("wait", "deep_sleep", "sleep"):  # sleep: board.sleep_ms, awake
                self._deep = op == "deep_sleep"
                if self._deep:
                    self._adv_active = None  # board_esp32.deep_sleep stops the radio first
                if "_deadline" not in req:  # fixed when the call is made, not when resumed
                    ms = req.get("ms")
                    req["_deadline"] = math.inf if ms is None else self.now_ms + int(ms)
                deadline = req["_deadline"]
                horizon = min(deadline, until)
                pins = req.get("pins", [])
                t_int = self.accel.next_int1_rise(self.now_ms) if ACCEL_INT in pins else None
                if t_int is not None and t_int <= horizon:
                    edge = self._apply_edges_until(t_int, pins)
                    if edge is None:
                        self._set_time(t_int)
                        self._finish_wait(op, ACCEL_INT)
                        continue
                else:
                    edge = self._apply_edges_until(int(min(horizon, 2**62)), pins)
                if edge is not None:
                    self._set_time(edge.t_ms)
                    self._finish_wait(op, edge.pin)
                elif deadline <= until:
                    self._set_time(int(deadline))
                    self._finish_wait(op, None)
                else:
                    self._set_time(until)
                    self.sleeping = op == "deep_sleep"
                    self._pending = req
                    return
                continue
            if op == "halt":
                self.halted = True
                return
            if op == "crash":
                self.halted = True
                raise BoardCrashed(req.get("error", ""))
            if op in self._faults:
                self._reply({"_error": self._faults[op]})
                continue
            self._reply(self._immediate(op, req))

    def _finish_wait(self, op: str, pin: str | None) -> None:
        self.sleeping = False
        self._deep = False
        if op == "sleep":  # time.sleep_ms: no light sleep, and nothing feeds the watchdog
            self._reply({"pin": pin, "t": self.now_ms})
            return
        if op == "wait" and self._adv_active is None:
            self.usage.light_wakes += 1
        if op == "deep_sleep":
            self._wake = ("pin", pin) if pin else ("timer", None)
            self._adv_active = None
            self._wdt_ms = None  # deep sleep resets the chip, and the watchdog with it
        else:
            self._wdt_fed = self.now_ms  # the board's idle loop feeds it (board_esp32.wait)
        self._reply({"pin": pin, "t": self.now_ms})

    def _reset(self, reason: str) -> None:
        """A chip reset while the firmware is inside a board call: RTC memory survives."""
        self._wake = (reason, None)
        self._adv_active = None
        self._wdt_ms = None
        self._reply({"_reset": reason})

    def _level(self, name: str) -> int:
        if name == ACCEL_INT:
            self.accel.sync(self.now_ms)
            return self.accel.int1()
        return self.levels.get(name, 0)

    def _immediate(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        if op == "boot":
            kind, pin = self._wake
            self._boot_ms = self.now_ms
            self.boots.append((self.now_ms, kind))
            return {"wake": kind, "pin": pin}
        if op == "configure":
            self.pin_map = dict(req.get("pins", {}))
            return {}
        if op == "ticks":
            return {"t": self.now_ms - self._boot_ms}
        if op == "clock":
            return {"t": self.now_ms - self._power_on_ms}
        if op == "pin":
            self._apply_edges_until(self.now_ms, ())
            return {"v": self._level(req["name"])}
        if op == "battery":
            return {"mv": self.battery_at(self.now_ms)}
        if op == "charging":
            self._apply_edges_until(self.now_ms, ())
            return {"v": bool(self.is_charging or self.levels.get("charge", 0))}
        if op == "adv":
            self._connectable = bool(req.get("connectable"))
            self._adv_interval = max(20, int(req.get("interval") or 100))
            if req["data"] is None:
                self._adv_active = None
            else:
                adv = bytes.fromhex(req["data"])
                self.adverts.append(Advert(self.now_ms, adv))
                self._adv_active = adv
                self._emit(adv)
                self._next_repeat = self.now_ms + self.repeat_ms
            return {}
        if op == "receive":
            return {"frames": [f.hex() for f in self._receive(int(req["ms"]))]}
        if op == "wdt":
            self._wdt_ms, self._wdt_fed = int(req["ms"]), self.now_ms
            return {}
        if op == "wdt_feed":
            self._wdt_fed = self.now_ms
            return {}
        if op in ("i2c_read", "i2c_write"):
            if req["addr"] != self.accel.ADDRESS or not self.accel_present:
                return {"error": "ENODEV: no device at 0x%02x" % req["addr"]}
            if op == "i2c_write":
                self.accel.write(req["reg"], bytes.fromhex(req["data"]), self.now_ms)
                return {}
            return {"data": self.accel.read(req["reg"], int(req["n"]), self.now_ms).hex()}
        if op == "scan":
            frames = self.radio.hub_frames() if self.radio is not None else []
            self._set_time(self.now_ms + int(req["ms"]))
            return {"adverts": [[m.replace(":", ""), d.hex()] for m, d in frames]}
        if op == "indicate":
            self.indications.append((self.now_ms, req["pattern"]))
            return {}
        if op == "rtc":
            if "data" in req:
                self.rtc = bytes.fromhex(req["data"])
            return {"data": self.rtc.hex()}
        if op == "mac":
            return {"mac": self.mac.replace(":", "")}
        if op == "aes":
            enc = Cipher(algorithms.AES(bytes.fromhex(req["key"])), modes.ECB()).encryptor()
            return {"out": (enc.update(bytes.fromhex(req["block"])) + enc.finalize()).hex()}
        raise BoardCrashed(f"unknown board call {op!r}")


    def _air_frames(self) -> list[bytes]:
        if self.radio is None or not self._connectable or self._adv_active is None:
            return []  # a GATT write needs the device advertising connectable
        mine = self.mac.replace(":", "").upper()
        new = []
        for mac, data in self.radio.hub_frames():
            if mac.replace(":", "").upper() == mine and data not in self._air_seen:
                self._air_seen.add(data)
                new.append(data)
        return new

    def _receive(self, ms: int) -> list[bytes]:
        """Frames due by now, else wait (virtual time) for the first one up to ms."""
        got = self._air_frames()
        due = [f for t, f in self._rx if t <= self.now_ms + (0 if got else ms)]
        if not got and due:
            first = self._rx[0][0]
            self._set_time(max(self.now_ms, first))
            due = [f for t, f in self._rx if t <= self.now_ms]
        elif not got:
            self._set_time(self.now_ms + ms)
        if not self._connectable:
            due = []  # written while we were not listening: the hub gets a failed write
        self._rx = [(t, f) for t, f in self._rx if t > self.now_ms]
        return got + due


def node_available() -> bool:
    return shutil.which("node") is not None and (
        ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
    ).exists()


__all__ = ["VirtualBoard", "Advert", "BoardCrashed", "node_available"]
