"""The real-board backend of the device-under-test interface (tools/hil/dut.py), over the REPL.

`HilSerialBoard(config, port=HIL_PORT)` does what `VirtualBoard(config)` does, on an ESP32 on a
serial port: the firmware of this tree is put on the board (only files that changed), the
test's config.json is written, RTC memory is cleared (a reset between tests), and
tools/hil/board_driver.py is started through the raw REPL. It wraps the board layer: stimulus and
device time come from here as lines on the serial port, everything else is the board's own.

Adverts are what the hub's real bleak scanner hears from the board's MAC (`adverts="bleak"`,
the CI runner's own Bluetooth adapter), or, where there is no radio, what the board reports it
put on the air (`adverts="serial"`, the default; tests against tools/sim/rawrepl_board.py use it).
Every line the board printed is kept in `.log`; the pytest hook below attaches it to a
failing test's report.

With `accel` (a tools/sim/vboard/lis3dh.py model, as on the virtual board) the board's I2C bus is
answered from here, so a test scripts the wearable's accelerometer (`accel.feed(samples)`);
`accel=None` leaves the board its own bus and sensor.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tools.installer.flash import Repl, compile_app, install_app
from tools.sim.vboard.board import Advert, BoardCrashed
from tools.sim.vboard.lis3dh import Lis3dh

DRIVER = Path(__file__).with_name("board_driver.py")
COMMAND_TIMEOUT_S = 60.0
# Firmware put on a port once per test session (the board keeps it between tests).
_synced: set[tuple[str, str]] = set()
_active: dict[str, HilSerialBoard] = {}
RAMP_STEP_MS = 1000
KEEP_FILES = ("config.json", "pinmap.json")  # data on the flash that is not test state


class HilError(RuntimeError):
    pass


def fresh_state(repl: Repl, config: dict[str, Any] | None) -> None:
    """The test's config.json, and nothing else the firmware keeps on flash or in RTC memory
    (counter mark, an unacknowledged alarm ...): that belongs to the previous test, and a
    virtual board starts from a fresh flash too."""
    if config is None:
        if repl.exists("config.json"):
            repl.remove("config.json")
    else:
        repl.write("config.json", json.dumps(config).encode())
    for name, is_dir in repl.listdir(""):
        if not is_dir and not name.endswith((".py", ".mpy")) and name not in KEEP_FILES:
            repl.remove(name)
    repl.exec("import machine\nmachine.RTC().memory(b'')")


@dataclass
class HilSerialBoard:
    config: dict[str, Any] | None
    port: str = ""
    mac: str | None = None  # None: read from the board
    battery_mv: int | None = None  # None: the board's own ADC
    adverts_from: str = "serial"  # or "bleak"
    firmware: str = "mpy"  # "mpy" (as flashed), "source" (.py: tracebacks), "keep"
    now_ms: int = 0
    adverts: list[Advert] = field(default_factory=list)
    indications: list[tuple[int, str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    sleeping: bool = False
    boots: list[tuple[int, str]] = field(default_factory=list)  # (t_ms, wake reason)
    levels: dict[str, int] = field(default_factory=dict)  # inputs as the test set them
    pin_map: dict[str, Any] = field(default_factory=dict)  # what the firmware configured
    accel: Lis3dh | None = None  # None: the board's own I2C bus and accelerometer
    accel_present: bool = True  # False: nothing answers on the host's I2C bus

    def __post_init__(self) -> None:
        self._repl: Repl | None = None
        self._buf = b""
        self._halted = False
        self._seq = 0  # number of the last command sent
        self._running = False  # the driver is running on the board
        self._rtc = b""
        self._rx: list[tuple[int, bytes]] = []  # hub writes due later: (device ms, frame)
        self._ramp: tuple[int, int, int, int] | None = None  # battery: t0, mv0, t1, mv1
        self._scanner: _BleakListener | None = None
        self._sync: list[tuple[float, int]] = []  # (host monotonic, device ms) at each idle
        self._files: list[str] = []
        self._faults: dict[str, str] = {}  # board call -> error, kept through power cycles

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> HilSerialBoard:
        if not self.port:
            raise HilError("HilSerialBoard needs a port (HIL_PORT=/dev/ttyUSB0)")
        # One board per port: a test that starts a second device ends the first one's run.
        previous = _active.get(self.port)
        if previous is not None and previous is not self:
            previous.stop()
        _active[self.port] = self
        # A soft reset clears the board's Python state; RTC memory is cleared below, so each
        # test starts as from power-on, as a fresh virtual board does.
        self._repl = Repl(self.port, wait_s=15, soft_reset=True)
        repl = self._repl
        self._sync_firmware(repl)
        fresh_state(repl, self.config)
        if self.mac is None:
            mac = repl.eval("(lambda b: (b.active(True), b.config('mac')[1])[1])"
                            "(__import__('bluetooth').BLE())")
            self.mac = ":".join(f"{x:02X}" for x in bytes(mac))
        if self.adverts_from == "bleak":
            self._scanner = _BleakListener(self.mac)
            self._scanner.start()
        self._run_driver()
        return self

    def _run_driver(self) -> None:
        assert self._repl is not None
        self._halted = False
        self._seq = 0
        self._running = True
        self._repl.t.exec_raw_no_follow(
            f"import hil_board\nhil_board.run({self.now_ms}, {self.battery_mv!r}, None, "
            f"{self.levels!r}, {self.accel is not None}, {self._faults!r})")
        self._until_idle()

    def _sync_firmware(self, repl: Repl) -> None:
        if self.firmware == "keep" or (self.port, self.firmware) in _synced:
            return
        with tempfile.TemporaryDirectory(prefix="hil-") as build:
            files = compile_app(Path(build), compiled=self.firmware == "mpy")
        files["hil_board.py"] = DRIVER.read_bytes()
        install_app(repl, files, keep=("boot.py",), only_changed=True)
        _synced.add((self.port, self.firmware))

    def stop(self) -> None:
        if self._scanner is not None:
            self._scanner.stop()
            self._scanner = None
        if _active.get(self.port) is self:
            del _active[self.port]
        if self._repl is None:
            return
        try:
            if self._running:
                self._write("Q")
                self._read_until(lambda line: False, timeout=5, until_eof=True)
        except (HilError, BoardCrashed, OSError):
            pass
        try:
            self._repl.close()
        except OSError:
            pass
        self._repl = None

    def __enter__(self) -> HilSerialBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the device-under-test interface ----------------------------------------------
    def set_pin(self, pin: str, level: int) -> None:
        self.levels[pin] = int(level)
        self._send(f"P {pin} {int(level)}")

    def press(self, pin: str = "button", hold_ms: int = 200) -> None:
        self.set_pin(pin, 1)
        self.advance(hold_ms)
        self.set_pin(pin, 0)

    def advance(self, ms: int) -> None:
        """Device time passes; hub writes and battery changes scheduled in it happen on time."""
        target = self.now_ms + int(ms)
        while True:
            due = [t for t, _ in self._rx if t <= target]
            stop = min(due) if due else target
            if self._ramp is not None and self._ramp[2] <= self.now_ms:
                self._ramp = None  # the ramp is over: the final voltage from now on
                self._send(f"B {self.battery_mv}")
            if self._ramp is not None:
                stop = min(stop, self.now_ms + RAMP_STEP_MS)
                self._send(f"B {self._battery_at(self.now_ms)}")
            if stop > self.now_ms:
                self._send(f"A {stop - self.now_ms}")
            for t, frame in [x for x in self._rx if x[0] <= self.now_ms]:
                self._rx.remove((t, frame))
                self._send(f"W {frame.hex()}")
            if self.now_ms >= target:
                return

    def adverts_since(self, t_ms: int) -> list[Advert]:
        if self._scanner is not None:
            return [Advert(self._device_time(h), adv) for h, adv in self._scanner.heard()
                    if self._device_time(h) >= t_ms]
        return [a for a in self.adverts if a.t_ms >= t_ms]

    def indication(self) -> str:
        return self.indications[-1][1] if self.indications else "off"

    @property
    def rtc(self) -> bytes:
        """The board's RTC memory now (what survives deep sleep, not power loss)."""
        self._rtc = b""
        self._send("R")
        return self._rtc

    def hub_write(self, frame: bytes, at_ms: int | None = None) -> None:
        """The hub writes an ack frame to this device at at_ms (default now); the board's
        receive() returns it."""
        if at_ms is None or at_ms <= self.now_ms:
            self._send(f"W {frame.hex()}")
        else:
            self._rx.append((at_ms, bytes(frame)))

    def set_battery(self, mv: int, over_ms: int = 0) -> None:
        """Battery voltage goes to mv, linearly over over_ms of device time (in 1 s steps)."""
        start = self._battery_at(self.now_ms) if self.battery_mv is not None else int(mv)
        self._ramp = (self.now_ms, start, self.now_ms + over_ms, int(mv)) if over_ms else None
        self.battery_mv = int(mv)
        self._send(f"B {self._battery_at(self.now_ms)}")

    def _battery_at(self, t: int) -> int:
        if self._ramp is None or t >= self._ramp[2]:
            return int(self.battery_mv or 0)
        t0, v0, t1, v1 = self._ramp
        return v0 + (v1 - v0) * (t - t0) // (t1 - t0)

    def power_cycle(self, off_ms: int = 1000) -> None:
        """Power lost and back: RTC memory is gone, the flash (counter mark) stays."""
        assert self._repl is not None
        self._write("Q")
        self._read_until(lambda line: False, timeout=10, until_eof=True)
        self.now_ms += off_ms
        if self.accel is not None:
            self.accel = type(self.accel)()  # the sensor loses power too
        self._repl.t.enter_raw_repl(soft_reset=True)  # the Python heap is gone too
        self._repl.exec("import machine\nmachine.RTC().memory(b'')")
        self._run_driver()

    def fail_calls(self, op: str, error: str = "EIO") -> None:
        """From now on every board call `op` (e.g. "battery", "adv") fails with OSError, as a
        broken part would; fail_calls(op, "") repairs it."""
        if error:
            self._faults[op] = error
        else:
            self._faults.pop(op, None)
        self._send(f"X {op} {error or '-'}")

    def hang_next_call(self, ms: int, op: str | None = None) -> None:
        """The firmware's next board call (of kind op, e.g. "adv") takes ms: a stuck driver.
        The (emulated) watchdog resets the device if it runs and ms exceeds its timeout."""
        self._send(f"H {op or '-'} {int(ms)}")

    def write_file(self, name: str, data: bytes) -> None:
        """Write a file on the board's flash (the board writes it, while the firmware runs)."""
        self._send(f"F {name} {data.hex()}")

    def files(self) -> list[str]:
        """Names of the files in the board's flash root."""
        self._send("L")
        return list(self._files)

    # -- the serial line ------------------------------------------------------------------
    def _write(self, line: str) -> None:
        assert self._repl is not None
        self._repl.t.serial.write(line.encode() + b"\n")

    def _send(self, line: str) -> None:
        if self._halted:
            raise HilError(f"the firmware has returned (halted); cannot {line!r}")
        self._seq += 1
        self._write(f"{line} #{self._seq}")
        self._until_idle()

    def _until_idle(self) -> None:
        def done(line: str) -> bool:
            parts = line.split()
            return line.startswith("@hil halt") or (
                line.startswith("@hil idle") and int(parts[3]) >= self._seq)

        self._read_until(done)

    def _read_until(self, done: Any, timeout: float = COMMAND_TIMEOUT_S,
                    until_eof: bool = False) -> None:
        assert self._repl is not None
        s = self._repl.t.serial
        s.timeout = 0.2  # mpremote opens the port blocking; a dead board must not hang us
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.read(max(1, s.in_waiting))
            if not chunk:
                continue
            self._buf += chunk
            if b"\x04" in self._buf:
                # The driver ended: raw REPL sends output \x04 error-text \x04 ">". Take all
                # of it, so the REPL is at its prompt for what comes next.
                if self._buf.count(b"\x04") < 2 or not self._buf.rstrip().endswith(b">"):
                    continue
                text = self._buf.replace(b"\r", b"").decode(errors="replace")
                out, err, _ = text.split("\x04", 2)
                for line in (out + "\n" + err).splitlines():
                    if line:
                        self._line(line)
                self._buf = b""
                self._running = False
                # The ">" prompt was read here; Ctrl-A prints a fresh one for mpremote's next
                # command to find.
                s.write(b"\x01")
                if until_eof and not err.strip():
                    return
                raise BoardCrashed(f"the board's program stopped:\n{err.strip()}")
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode(errors="replace")
                self._line(line)
                if not until_eof and done(line):
                    return
        raise HilError(f"the board on {self.port} did not answer in {timeout:.0f} s; "
                       "serial log:\n" + "\n".join(self.log[-15:]))

    def _line(self, line: str) -> None:
        self.log.append(line)
        if not line.startswith("@hil "):
            return
        parts = line.split()
        kind = parts[1]
        if kind == "idle":
            self.now_ms = int(parts[2])
            self._sync.append((time.monotonic(), self.now_ms))
        elif kind == "adv":
            self.now_ms = int(parts[2])
            self.sleeping = False
            if parts[3] != "-":
                self.adverts.append(Advert(self.now_ms, bytes.fromhex(parts[3])))
        elif kind == "ind":
            self.indications.append((int(parts[2]), parts[3]))
        elif kind == "sleep":
            self.sleeping = True
        elif kind == "boot":
            self.sleeping = False
            self.boots.append((int(parts[2]), parts[3]))
        elif kind == "pins":
            self.pin_map = json.loads(parts[2])
        elif kind == "rtc":
            self._rtc = b"" if parts[2] == "-" else bytes.fromhex(parts[2])
        elif kind == "halt":
            self._halted = True
        elif kind == "files":
            self._files = [] if parts[2] == "-" else parts[2].split(",")
        elif kind in ("i2c", "int1"):
            self._write(self._bus(parts))  # the board waits for this answer

    def _bus(self, parts: list[str]) -> str:
        """Answer the board's I2C transfer or INT1 question from the host's accelerometer."""
        acc = self.accel
        if acc is None:
            return "I !19 0"
        t = int(parts[3] if parts[1] == "i2c" else parts[2])
        if parts[1] == "int1":
            rise = acc.next_int1_rise(t)
            return f"I {'-' if rise is None else rise} {acc.int1()}"
        op, addr, reg, arg = parts[2], int(parts[4]), int(parts[5]), parts[6]
        if addr != acc.ADDRESS or not self.accel_present:
            return "I !19 0"  # ENODEV: nothing answers at that address
        if op == "w":
            acc.write(reg, b"" if arg == "-" else bytes.fromhex(arg), t)
            data = "-"
        else:
            data = acc.read(reg, int(arg), t).hex() or "-"
        return f"I {data} {acc.int1()}"

    def _device_time(self, host_t: float) -> int:
        t = 0
        for h, d in self._sync:
            if h > host_t:
                break
            t = d
        return t


class _BleakListener:
    """The hub's real scanner (hub/radio/bleak.py) on this machine's adapter, filtered to one
    MAC, in its own event loop thread."""

    def __init__(self, mac: str) -> None:
        self.mac = mac.upper()
        self._heard: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="hil-bleak")
        self._radio: Any = None

    def start(self) -> None:
        from hub.clock import SystemClock
        from hub.radio.bleak import BleakRadio

        self._thread.start()
        self._radio = BleakRadio(SystemClock(), provisioned=[self.mac])

        def heard(advert: Any) -> None:
            from protocols import bthome

            with self._lock:
                self._heard.append((time.monotonic(), bthome.advert(advert.service_data)))

        asyncio.run_coroutine_threadsafe(self._radio.start(heard), self._loop).result(30)

    def heard(self) -> list[tuple[float, bytes]]:
        with self._lock:
            return list(self._heard)

    def write(self, frame: bytes) -> None:
        """The hub's GATT write of an ack frame (hub/radio/bleak.py transmit)."""
        asyncio.run_coroutine_threadsafe(self._radio.transmit(self.mac, frame),
                                         self._loop).result(60)

    def stop(self) -> None:
        if self._radio is not None:
            asyncio.run_coroutine_threadsafe(self._radio.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# -- a real board on the HIL fixture: nothing emulated -------------------------------------
# Stimulus GPIO on the stimulus board per DUT input (hardware/hil_fixture.md).
FIXTURE = {"door": 16, "motion": 16, "mat": 16, "button": 16, "charge": 17}
_ROM_RESET = ("rst:0x1 ", "rst:0x5 ", "rst:0xc ", "rst:0x10 ")  # power-on, deep sleep, sw, rtc wdt
_RESET_KIND = {"rst:0x1 ": "power_on", "rst:0x5 ": "deep_sleep", "rst:0xc ": "reset",
               "rst:0x10 ": "watchdog"}


def fixture_level(name: str, level: int, active_low: list[str]) -> int:
    """The electrical level the stimulus board drives for a logical input level."""
    return 1 - level if name in active_low else level


@dataclass
class FixtureBoard:
    """The device-under-test interface on a real ESP32 on the HIL fixture (two boards,
    hardware/hil_fixture.md). The DUT runs the unchanged firmware from main.py: its own board
    layer, real pins, real light and deep sleep and wakes, its own watchdog. Only the stimulus
    comes from here, through the stimulus board's GPIOs (`stimulus_port`); adverts are what
    the hub's bleak scanner hears, acks are the hub's GATT writes, indications and boots come
    from the DUT's serial console. Time is real: advance(ms) waits ms."""

    config: dict[str, Any] | None
    port: str = ""
    stimulus_port: str = ""
    mac: str | None = None
    now_ms: int = 0
    log: list[str] = field(default_factory=list)
    boots: list[tuple[int, str]] = field(default_factory=list)
    indications: list[tuple[int, str]] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)
    rtc: bytes = b""  # not readable while the firmware runs (no REPL): empty

    def start(self) -> FixtureBoard:
        import serial

        repl = Repl(self.port, wait_s=15, soft_reset=True)
        with tempfile.TemporaryDirectory(prefix="hil-") as build:
            install_app(repl, compile_app(Path(build)), keep=("boot.py",) + KEEP_FILES)
        fresh_state(repl, self.config)
        mac = repl.eval("(lambda b: (b.active(True), b.config('mac')[1])[1])"
                        "(__import__('bluetooth').BLE())")
        self.mac = ":".join(f"{x:02X}" for x in bytes(mac))
        pinmap = json.loads((Path(__file__).resolve().parents[2] / "hardware" /
                             "pinmap.json").read_text())
        role = (self.config or {}).get("role")
        self._active_low = list(pinmap["roles"].get(role, {}).get("active_low", ()))
        self._stim = Repl(self.stimulus_port, wait_s=15, soft_reset=True)
        for name in FIXTURE:
            self._drive(name, 0)
        self._scanner = _BleakListener(self.mac)
        self._scanner.start()
        repl.close()
        self._t0 = time.monotonic()
        self._console = serial.Serial(self.port, 115200, timeout=0.1)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_console, daemon=True)
        self._reader.start()
        # A hard reset through EN (RTS): the firmware starts from main.py, as at power-on.
        self._console.rts = True
        time.sleep(0.1)
        self._console.rts = False
        return self

    def _ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def _read_console(self) -> None:
        buf = b""
        while not self._stop.is_set():
            buf += self._console.read(256)
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace").rstrip("\r")
                self.log.append(line)
                for mark in _ROM_RESET:
                    if line.startswith(mark):
                        self.boots.append((self._ms(), _RESET_KIND[mark]))
                if line.startswith("ind "):
                    self.indications.append((self._ms(), line[4:].strip()))

    def _drive(self, name: str, level: int) -> None:
        gpio = FIXTURE.get(name)
        if gpio is None:
            raise HilError(f"the fixture does not drive {name!r} (hardware/hil_fixture.md)")
        v = fixture_level(name, level, self._active_low)
        self._stim.exec(f"import machine\nmachine.Pin({gpio}, machine.Pin.OUT, value={v})")
        self.levels[name] = level

    def set_pin(self, pin: str, level: int) -> None:
        self._drive(pin, level)
        self.now_ms = self._ms()

    def press(self, pin: str = "button", hold_ms: int = 200) -> None:
        self.set_pin(pin, 1)
        self.advance(hold_ms)
        self.set_pin(pin, 0)

    def advance(self, ms: int) -> None:
        time.sleep(max(0, ms) / 1000)
        self.now_ms = self._ms()

    def hub_write(self, frame: bytes, at_ms: int | None = None) -> None:
        if at_ms is not None and at_ms > self._ms():
            time.sleep((at_ms - self._ms()) / 1000)
        self._scanner.write(frame)

    @property
    def adverts(self) -> list[Advert]:
        return [Advert(int((t - self._t0) * 1000), adv) for t, adv in self._scanner.heard()]

    def adverts_since(self, t_ms: int) -> list[Advert]:
        return [a for a in self.adverts if a.t_ms >= t_ms]

    def indication(self) -> str:
        return self.indications[-1][1] if self.indications else "off"

    def stop(self) -> None:
        if getattr(self, "_reader", None) is not None:
            self._stop.set()
            self._reader.join(2)
            self._console.close()
        if getattr(self, "_scanner", None) is not None:
            self._scanner.stop()
        if getattr(self, "_stim", None) is not None:
            for name in FIXTURE:
                self._drive(name, 0)
            self._stim.close()


# -- pytest: backend choice and the serial log on failure ---------------------------------
def hil_port() -> str | None:
    return os.environ.get("HIL_PORT") or None


def stimulus_port() -> str | None:
    """The stimulus board of the HIL fixture (hardware/hil_fixture.md)."""
    return os.environ.get("HIL_STIMULUS_PORT") or None


def make_board(config: dict[str, Any] | None, **kw: Any) -> HilSerialBoard | FixtureBoard:
    """The real-board DUT for HIL_PORT; virtual-board-only keywords are ignored (a real board
    has its own MAC, battery and radio). With HIL_STIMULUS_PORT (the fixture's stimulus
    board) nothing on the board is emulated: FixtureBoard. HIL_EMULATE=1 instead runs
    tools/hil/board_driver.py, which emulates time and sleep (a bench without the fixture; not a
    test of the board's sleep and wake)."""
    port = hil_port()
    assert port is not None
    stim = stimulus_port()
    if stim is not None:
        return FixtureBoard(config, port=port, stimulus_port=stim)
    if os.environ.get("HIL_EMULATE") != "1":
        raise HilError("a real board is tested on the HIL fixture: set HIL_STIMULUS_PORT to "
                       "the stimulus board's port (hardware/hil_fixture.md); HIL_EMULATE=1 "
                       "runs tools/hil/board_driver.py instead, which emulates time and sleep")
    return HilSerialBoard(
        config, port=port,
        battery_mv=kw.get("battery_mv"),
        # The tests script the accelerometer; HIL_ACCEL=board uses the board's own sensor.
        accel=None if os.environ.get("HIL_ACCEL") == "board" else Lis3dh(),
        accel_present=kw.get("accel_present", True),
        adverts_from=os.environ.get("HIL_ADVERTS", "serial"),
        firmware=os.environ.get("HIL_FIRMWARE", "mpy"),
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        duts = getattr(item, "hil_duts", [])
        for i, d in enumerate(duts):
            if not isinstance(d, HilSerialBoard):
                d.stop()  # a virtual board hands over its console output when it stops
            log = getattr(d, "log", None)
            if log:
                name = getattr(d, "port", "") or f"virtual board {i}"
                report.sections.append((f"serial log {name}", "\n".join(log[-400:])))
