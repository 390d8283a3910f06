"""A simulated ESP32 on a serial port, speaking MicroPython's REPL protocols as mpremote uses them.

Stands in for the board on a USB cable where this machine has none, so `make flash`, the
provisioning tool and the hardware-in-the-loop harness run their real serial code paths
(pyserial, mpremote's SerialTransport) against it:

- a pseudo-terminal (os.openpty) in raw mode is the "USB serial port"; its path is printed on
  the first line of stdout;
- friendly REPL (banner, `>>> `), raw REPL (Ctrl-A, `OK`, output `\\x04` errors `\\x04` `>`),
  raw-paste mode (Ctrl-E A Ctrl-A with window flow control) and soft reset (Ctrl-D) behave as
  MicroPython's pyexec.c does, byte for byte where mpremote looks;
- the board's flash filesystem is a host directory (FLASH_DIR): absolute paths are mapped into it
  and nothing outside it can be touched by code sent to the board;
- code sent to the board runs in CPython with the MicroPython modules the firmware uses on ESP32
  (machine, esp32, bluetooth, cryptolib, time.ticks_*, os.ilistdir) provided as stand-ins:
  GPIO levels and the radio are what this machine lacks. Adverts given to bluetooth.gap_advertise
  go to FLASH_DIR/../air.log (one JSON line each) so tests can see what would have been on air.

It runs as its own process (python -m tools.sim.rawrepl_board FLASH_DIR) because it replaces
builtins and os functions to confine the board's code to its flash directory.
Use `SimBoardProcess` from tests.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
import traceback
import tty
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BANNER = (
    "MicroPython v1.29.0 on 2026-01-01; Generic ESP32 module with ESP32 (Tryggheim simulated)\r\n"
    'Type "help()" for more information.\r\n'
)
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PASTE_WINDOW = 128

# errno names as MicroPython prints them: mpremote maps "OSError: [Errno 2] ENOENT" back to errno.
_ERRNO_NAMES = {2: "ENOENT", 13: "EACCES", 17: "EEXIST", 20: "ENOTDIR", 21: "EISDIR",
                22: "EINVAL", 28: "ENOSPC", 39: "ENOTEMPTY"}


class _Interrupted(Exception):
    """Ctrl-C arrived while the board's code waited for input."""


@dataclass
class SimConfig:
    flash: Path
    mac: str = "24:0A:C4:00:00:01"
    chip: str = "ESP32"
    battery_mv: int = 3000
    failing_files: tuple[str, ...] = ()  # names whose writes do not stick (a failing flash)


class Board:
    """The serial-side state machine: one byte stream in, MicroPython's responses out."""

    def __init__(self, fd: int, cfg: SimConfig) -> None:
        self.fd = fd
        self.cfg = cfg
        self.buf = b""
        self.raw = False
        self.globals: dict[str, Any] = {}
        self.base_modules = set(sys.modules)
        self.rtc = b""  # RTC slow memory: survives soft reset, as on the chip
        self.air = cfg.flash.parent / "air.log"
        self.jig: dict[int, int] = {}  # GPIO levels a test jig drives (pin number -> level)
        self.host_open: Any = open  # the host's open(); the board's own is confined to flash

    # -- bytes on the wire ------------------------------------------------------------
    def write(self, data: bytes) -> None:
        while data:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return  # nobody on the other end: a real UART just drops it too
            data = data[n:]

    def getc(self) -> bytes:
        while not self.buf:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                # The host closed the port (EIO on a pty): wait for the next one to open it.
                time.sleep(0.01)
                continue
            self.buf += chunk
        c, self.buf = self.buf[:1], self.buf[1:]
        return c

    # -- REPL modes -------------------------------------------------------------------
    def serve(self) -> None:
        self.write(BANNER.encode() + b">>> ")
        line = b""
        while True:
            c = self.getc()
            if self.raw:
                self.raw_repl(c)
                continue
            if c == b"\x01":
                self.raw = True
                self.write(b"\r\n" + RAW_BANNER + b">")
            elif c == b"\x03":
                line = b""
                self.write(b"\r\n>>> ")
            elif c == b"\x04":
                self.soft_reset()
                self.write(BANNER.encode() + b">>> ")
            elif c == b"\x02":
                self.write(b"\r\n" + BANNER.encode() + b">>> ")
            elif c in (b"\r", b"\n"):
                self.write(b"\r\n")
                if line.strip():
                    err = self.execute(line.decode(errors="replace"), single=True)
                    self.write(err.replace(b"\n", b"\r\n"))
                line = b""
                self.write(b">>> ")
            else:
                line += c
                self.write(c)

    def raw_repl(self, first: bytes) -> None:
        c = first
        code = b""
        while True:
            if c == b"\x01":
                self.write(b"\r\n" + RAW_BANNER + b">")
                code = b""
            elif c == b"\x02":
                self.raw = False
                self.write(b"\r\n" + BANNER.encode() + b">>> ")
                return
            elif c == b"\x03":
                code = b""
            elif c == b"\x05" and not code:
                c2 = self.getc()
                if c2 == b"A":
                    self.getc()  # the \x01 of Ctrl-E A Ctrl-A
                    self.raw_paste()
                    return
                code += c + c2
            elif c == b"\x04":
                if not code:
                    self.write(b"OK\r\nMPY: soft reboot\r\n")
                    self.soft_reset()
                    self.write(RAW_BANNER + b">")
                    return
                self.write(b"OK")
                self.run_and_report(code)
                return
            else:
                code += c
            c = self.getc()

    def raw_paste(self) -> None:
        self.write(b"R\x01" + PASTE_WINDOW.to_bytes(2, "little") + b"\x01")
        code = b""
        got = 0
        while True:
            c = self.getc()
            if c == b"\x04":
                self.write(b"\x04")
                break
            code += c
            got += 1
            if got % PASTE_WINDOW == 0:
                self.write(b"\x01")
        self.run_and_report(code)

    def run_and_report(self, code: bytes) -> None:
        err = self.execute(code.decode(errors="replace"))  # its output has streamed already
        self.write(b"\x04" + err.replace(b"\n", b"\r\n") + b"\x04>")

    def soft_reset(self) -> None:
        self.globals = {}
        for name in list(sys.modules):
            if name not in self.base_modules:
                del sys.modules[name]

    # -- running the board's code -----------------------------------------------------
    def execute(self, source: str, single: bool = False) -> bytes:
        """Run code as the board's REPL does; its output streams to the port as it comes.
        Returns the error text (a MicroPython-style traceback), empty on success."""
        saved = sys.stdout, sys.stdin
        sys.stdout = _BoardStdout(self)  # type: ignore[assignment]
        sys.stdin = _BoardStdin(self)  # type: ignore[assignment]
        err = b""
        try:
            self.globals.setdefault("__name__", "__main__")
            code = compile(source, "<stdin>", "single" if single else "exec")
            exec(code, self.globals)
        except (KeyboardInterrupt, _Interrupted):
            err = b"Traceback (most recent call last):\n  File \"<stdin>\"\nKeyboardInterrupt: \n"
        except SystemExit:
            pass
        except BaseException as e:  # the board reports every error and keeps its REPL
            err = _micropython_traceback(e).encode()
        finally:
            sys.stdout, sys.stdin = saved
        return err


class _FailingFile:
    """A file on worn-out flash: the last byte written does not stick."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.write = f.write

    def close(self) -> None:
        self._f.flush()
        size = self._f.tell()
        if size:
            self._f.seek(size - 1)
            self._f.write(b"\xff" if "b" in self._f.mode else "?")
        self._f.close()

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BoardStdout(io.TextIOBase):
    """Print output streams to the port as it is produced (the HIL driver's lines need that)."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def write(self, s: str) -> int:
        self.board.write(s.encode().replace(b"\n", b"\r\n"))
        return len(s)


class _BoardStdin(io.TextIOBase):
    """sys.stdin of code running on the board: bytes the host sends while it runs."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def read(self, n: int | None = -1) -> str:
        out = b""
        while n is None or n < 0 or len(out) < n:
            c = self.board.getc()
            if c == b"\x03":
                raise _Interrupted()
            out += c
        return out.decode(errors="replace")

    def readline(self, size: int | None = -1) -> str:
        out = b""
        while True:
            c = self.board.getc()
            if c == b"\x03":
                raise _Interrupted()
            out += c
            if c == b"\n":
                return out.decode(errors="replace")


def _micropython_traceback(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    lines = ["Traceback (most recent call last):"]
    for fr in tb[1:]:
        lines.append(f'  File "{fr.filename}", line {fr.lineno}, in {fr.name}')
    if isinstance(e, OSError) and e.errno is not None:
        lines.append(f"OSError: [Errno {e.errno}] {_ERRNO_NAMES.get(e.errno, str(e.errno))}")
    else:
        lines.append(f"{type(e).__name__}: {e}")
    return "\n".join(lines) + "\n"


# -- the chip's filesystem and MicroPython modules, confined to the flash directory ------
def _install_board_environment(board: Board) -> None:
    flash = board.cfg.flash.resolve()
    real_open = builtins.open
    real = {n: getattr(os, n) for n in ("stat", "mkdir", "remove", "rmdir", "rename", "listdir")}

    def fs(path: Any) -> str:
        p = os.fspath(path)
        if isinstance(p, bytes):
            p = p.decode()
        full = (flash / p.lstrip("/")) if p.startswith("/") else (Path(os.getcwd()) / p)
        resolved = Path(os.path.normpath(full))
        if resolved != flash and flash not in resolved.parents:
            raise OSError(2, "ENOENT")
        return str(resolved)

    def board_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        if isinstance(file, int):
            return real_open(file, mode, *a, **k)
        f = real_open(fs(file), mode, *a, **k)
        if "w" in mode and os.path.basename(fs(file)) in board.cfg.failing_files:
            return _FailingFile(f)
        return f

    def ilistdir(path: str = "") -> Any:
        d = fs(path or ".")
        for name in sorted(real["listdir"](d)):
            st = real["stat"](os.path.join(d, name))
            kind = 0x4000 if stat.S_ISDIR(st.st_mode) else 0x8000
            yield (name, kind, 0, st.st_size if kind == 0x8000 else 0)

    def board_stat(path: str) -> tuple[int, ...]:
        st = real["stat"](fs(path))
        kind = 0x4000 if stat.S_ISDIR(st.st_mode) else 0x8000
        return (kind, 0, 0, 0, 0, 0, st.st_size, 0, 0, 0)

    board.host_open = real_open
    builtins.open = board_open
    os.stat = board_stat  # type: ignore[assignment]
    os.mkdir = lambda p, *a: real["mkdir"](fs(p))  # type: ignore[assignment]
    os.remove = lambda p: real["remove"](fs(p))  # type: ignore[assignment]
    os.rmdir = lambda p: real["rmdir"](fs(p))  # type: ignore[assignment]
    os.rename = lambda a, b: real["rename"](fs(a), fs(b))  # type: ignore[assignment]
    os.listdir = lambda p="": real["listdir"](fs(p or "."))  # type: ignore[assignment]
    os.ilistdir = ilistdir  # type: ignore[attr-defined]
    os.sync = lambda: None
    machine_name = f"Generic ESP32 module with {board.cfg.chip}"
    os.uname = lambda: types.SimpleNamespace(  # type: ignore[assignment]
        sysname="esp32", nodename="esp32", release="1.29.0", version="v1.29.0",
        machine=machine_name)
    os.chdir(flash)
    sys.path.insert(0, str(flash))

    # MicroPython's time extensions, on CPython's time module so `import time` finds them.
    t0 = time.monotonic()
    time.ticks_ms = lambda: int((time.monotonic() - t0) * 1000) & 0x3FFFFFFF  # type: ignore[attr-defined]
    time.ticks_diff = lambda a, b: ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000  # type: ignore[attr-defined]
    time.ticks_add = lambda a, b: (a + b) & 0x3FFFFFFF  # type: ignore[attr-defined]
    time.sleep_ms = lambda ms: time.sleep(ms / 1000)  # type: ignore[attr-defined]
    time.sleep_us = lambda us: time.sleep(us / 1e6)  # type: ignore[attr-defined]

    mac = bytes.fromhex(board.cfg.mac.replace(":", ""))
    sys.modules["machine"] = _machine_module(board, mac)
    sys.modules["esp32"] = types.SimpleNamespace(  # type: ignore[assignment]
        WAKEUP_ANY_HIGH=1, WAKEUP_ALL_LOW=0, wake_on_ext0=lambda *a, **k: None,
        wake_on_ext1=lambda *a, **k: None)
    sys.modules["bluetooth"] = _bluetooth_module(board, mac)
    sys.modules["cryptolib"] = _cryptolib_module()
    sys.modules["micropython"] = types.SimpleNamespace(  # type: ignore[assignment]
        const=lambda x: x, mem_info=lambda *a: None)
    board.base_modules = set(sys.modules)


def _machine_module(board: Board, mac: bytes) -> types.ModuleType:
    m = types.ModuleType("machine")

    class Pin:
        IN, OUT, PULL_UP, PULL_DOWN = 1, 3, 2, 1
        IRQ_RISING, IRQ_FALLING = 1, 2

        def __init__(self, num: int, mode: int = 1, pull: int | None = None,
                     value: int | None = None) -> None:
            self.num = num
            if value is not None:
                board.jig[num] = int(value)

        def value(self, v: int | None = None) -> int | None:
            if v is None:
                return board.jig.get(self.num, 0)
            board.jig[self.num] = int(v)
            return None

        __call__ = value

    class ADC:
        ATTN_11DB = 3

        def __init__(self, pin: Pin) -> None:
            pass

        def atten(self, a: int) -> None:
            pass

        def read_uv(self) -> int:
            return board.cfg.battery_mv * 1000 // 2  # behind the 1:2 divider

    class RTC:
        def memory(self, data: bytes | None = None) -> bytes | None:
            if data is None:
                return board.rtc
            board.rtc = bytes(data)
            return None

    class WDT:
        def __init__(self, timeout: int = 5000) -> None:
            pass

        def feed(self) -> None:
            pass

    class Timer:
        ONE_SHOT, PERIODIC = 0, 1

        def __init__(self, timer_id: int = 0) -> None:
            pass

        def init(self, *a: Any, **k: Any) -> None:
            pass  # LED blink timing: nothing here watches the LED's phase

        def deinit(self) -> None:
            pass

    class PWM:
        def __init__(self, pin: Pin, *a: Any, **k: Any) -> None:
            pass

        def deinit(self) -> None:
            pass

    class I2C:
        """A bus with nothing on it: every device address stays silent (ENODEV)."""

        def __init__(self, *a: Any, **k: Any) -> None:
            pass

        def readfrom_mem(self, addr: int, reg: int, n: int) -> bytes:
            raise OSError(19, "ENODEV")

        def readfrom_mem_into(self, addr: int, reg: int, buf: bytearray) -> None:
            raise OSError(19, "ENODEV")

        def writeto_mem(self, addr: int, reg: int, buf: bytes) -> None:
            raise OSError(19, "ENODEV")

    def reset() -> None:
        # The USB bridge stays; the chip reboots into the friendly REPL.
        board.soft_reset()
        board.raw = False
        board.write(b"\r\nets Jul 29 2019 12:21:46\r\nrst:0xc (SW_CPU_RESET)\r\n" + BANNER.encode()
                    + b">>> ")
        raise SystemExit

    m.Pin = Pin  # type: ignore[attr-defined]
    m.ADC = ADC  # type: ignore[attr-defined]
    m.RTC = RTC  # type: ignore[attr-defined]
    m.WDT = WDT  # type: ignore[attr-defined]
    m.I2C = I2C  # type: ignore[attr-defined]
    m.Timer = Timer  # type: ignore[attr-defined]
    m.PWM = PWM  # type: ignore[attr-defined]
    m.reset_cause = lambda: 1  # type: ignore[attr-defined]
    m.PWRON_RESET, m.HARD_RESET, m.WDT_RESET, m.DEEPSLEEP_RESET, m.SOFT_RESET = 1, 2, 3, 4, 5  # type: ignore[attr-defined]
    m.reset = reset  # type: ignore[attr-defined]
    m.soft_reset = lambda: (_ for _ in ()).throw(SystemExit)  # type: ignore[attr-defined]
    m.unique_id = lambda: mac  # type: ignore[attr-defined]
    m.freq = lambda *a: 160_000_000  # type: ignore[attr-defined]
    m.wake_reason = lambda: 0  # type: ignore[attr-defined]
    m.deepsleep = lambda ms=0: reset()  # type: ignore[attr-defined]
    m.lightsleep = lambda ms=0: time.sleep(ms / 1000)  # type: ignore[attr-defined]
    m.EXT0_WAKE, m.EXT1_WAKE, m.TIMER_WAKE = 2, 3, 4  # type: ignore[attr-defined]
    return m


def _bluetooth_module(board: Board, mac: bytes) -> types.ModuleType:
    m = types.ModuleType("bluetooth")

    class UUID:
        def __init__(self, value: Any) -> None:
            self.value = value

    class BLE:
        def __init__(self) -> None:
            self._values: dict[int, bytes] = {}

        def active(self, on: bool | None = None) -> bool:
            return True

        def gatts_register_services(self, services: Any) -> tuple[tuple[int, ...], ...]:
            handles = []
            n = 1
            for _uuid, chars in services:
                row = []
                for _char in chars:
                    n += 2
                    row.append(n)
                    self._values[n] = b""
                handles.append(tuple(row))
            return tuple(handles)

        def gatts_read(self, handle: int) -> bytes:
            return self._values.get(handle, b"")

        def gatts_write(self, handle: int, data: bytes) -> None:
            self._values[handle] = bytes(data)

        def config(self, name: str) -> Any:
            if name == "mac":
                return (0, mac)
            raise ValueError("unknown config param")

        def gap_advertise(self, interval_us: int | None, adv_data: bytes | None = None,
                          connectable: bool = True) -> None:
            # The port's rule, as in the port model (tests/esp32_fakes/bluetooth.py): NimBLE
            # refuses scannable adverts under 100 ms and connectable ones under 20 ms.
            if interval_us is not None and interval_us < (20000 if connectable else 100000):
                raise OSError(-interval_us)
            # The radio this machine lacks: what would be on air goes to air.log.
            with board.host_open(board.air, "a", encoding="utf-8") as f:  # outside the flash
                f.write(json.dumps({"t": time.time(), "interval_us": interval_us,
                                    "adv": None if adv_data is None else bytes(adv_data).hex()})
                        + "\n")

        def irq(self, handler: Any) -> None:
            pass

        def gap_scan(self, *a: Any) -> None:
            pass

    m.BLE = BLE  # type: ignore[attr-defined]
    m.UUID = UUID  # type: ignore[attr-defined]
    m.FLAG_READ, m.FLAG_WRITE, m.FLAG_NOTIFY = 0x0002, 0x0008, 0x0010  # type: ignore[attr-defined]
    return m


def _cryptolib_module() -> types.ModuleType:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    m = types.ModuleType("cryptolib")

    class aes:  # noqa: N801  (MicroPython's name)
        def __init__(self, key: bytes, mode: int) -> None:
            self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

        def encrypt(self, block: bytes) -> bytes:
            return self._enc.update(bytes(block))

    m.aes = aes  # type: ignore[attr-defined]
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.sim.rawrepl_board",
                                description=__doc__.splitlines()[0])
    p.add_argument("flash", type=Path, help="host directory that is the board's filesystem")
    p.add_argument("--mac", default="24:0A:C4:00:00:01")
    p.add_argument("--chip", default="ESP32")
    p.add_argument("--battery-mv", type=int, default=3000)
    p.add_argument("--failing-file", action="append", default=[],
                   help="a file name whose writes do not stick (tests of verification)")
    args = p.parse_args(argv)
    args.flash.mkdir(parents=True, exist_ok=True)
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    cfg = SimConfig(args.flash, args.mac, args.chip, args.battery_mv, tuple(args.failing_file))
    board = Board(master, cfg)
    print(os.ttyname(slave), flush=True)
    # The slave stays open here so the port survives the host closing and reopening it.
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    _install_board_environment(board)
    board.serve()
    return 0


class SimBoardProcess:
    """Starts the simulated board as a subprocess; `.port` is the serial device to open."""

    def __init__(self, flash: Path, mac: str = "24:0A:C4:00:00:01", chip: str = "ESP32",
                 battery_mv: int = 3000, failing_files: tuple[str, ...] = ()) -> None:
        self.flash = Path(flash)
        self.mac = mac
        self.flash.parent.mkdir(parents=True, exist_ok=True)
        # A file, not a pipe: nothing reads the board's stderr while it runs, and a full pipe
        # would stop it.
        self._stderr = open(self.flash.parent / "sim.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.sim.rawrepl_board", str(self.flash), "--mac", mac,
             "--chip", chip, "--battery-mv", str(battery_mv),
             *(a for f in failing_files for a in ("--failing-file", f))],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("/dev/"):
            self.close()
            err = (self.flash.parent / "sim.log").read_text(errors="replace")
            raise RuntimeError(f"simulated board did not start: {err}")
        self.port = line

    @property
    def air_log(self) -> Path:
        return self.flash.parent / "air.log"

    def adverts(self) -> list[bytes]:
        if not self.air_log.exists():
            return []
        rows = [json.loads(x) for x in self.air_log.read_text().splitlines() if x]
        return [bytes.fromhex(r["adv"]) for r in rows if r["adv"]]

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.flash)): p.read_bytes()
                for p in sorted(self.flash.rglob("*")) if p.is_file()}

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> SimBoardProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
