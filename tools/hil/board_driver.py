# Hardware-in-the-loop driver for the simulated serial board (tools/sim/rawrepl_board.py), started
# by tools/hil/serial_board.py through the raw REPL. It emulates time, sleep and wake, so it is no
# test of a real board's: a real ESP32 is tested on the HIL fixture instead
# (FixtureBoard in tools/hil/serial_board.py, hardware/hil_fixture.md), where nothing is
# emulated; on a real board this driver runs only when asked for (HIL_EMULATE=1, a bench without fixture).
#
# It wraps the board layer so the unchanged firmware (main.py and the role apps) runs with the
# board's own radio, AES, RTC memory, flash and sensors, while the test host drives what a test
# must control exactly, one line per command on the serial port:
#   P <pin> <level>   stimulus: a named input changes its logical level (1 = door open, button
#                     pressed, on the charger ...), applied in the board layer
#   A <ms>            let <ms> of device time pass
#   W <hex>           an ack frame the hub wrote for this device (board.receive returns it)
#   B <mv> / C <0|1>  battery voltage / on the charger
#   R                 report RTC memory ("@hil rtc <hex>")
#   X <op> <err|->    from now on board call <op> ("battery", "adv" ...) fails with OSError
#                     <err> (a broken part); "-" repairs it
#   H <op|-> <ms>     the next board call <op> (any: "-") hangs for <ms> (a stuck driver);
#                     longer than the watchdog timeout resets the device, as the chip would
#   F <name> <hex>    write a file on the board's flash / L: list them ("@hil files ...")
#   Q                 stop
# each optionally followed by "#<n>", echoed in the idle line that ends it,
# and the board reports, one line each: "@hil boot|adv|ind|sleep|log|idle|halt ...".
# With host_i2c, the I2C bus is the host's (a scripted accelerometer, tools/sim/vboard/lis3dh.py):
# each transfer is a request "@hil i2c r|w <now> <addr> <reg> <n|hex>" answered at once by a
# line "I <hex|!errno> <accel_int level>"; before device time passes the board asks when INT1
# rises next ("@hil int1 <now>", answer "I <t|-> <level>").
#
# Device time is the host's, as on the virtual board: tests step through hours in moments.
# While an advert is on the air, time also passes for real (capped per step), so the hub's
# scanner really hears the burst. Deep sleep is emulated (the app is re-run with the wake
# reason) because a real deep sleep would drop the USB serial link the host drives; for the
# same reason the hardware watchdog is not started here but emulated in device time.
import json
import sys
import time

import board as board_layer

try:
    from binascii import hexlify, unhexlify
except ImportError:  # pragma: no cover
    from ubinascii import hexlify, unhexlify

REALTIME_CAP_MS = 3000


class Reboot(BaseException):
    pass


class Quit(BaseException):
    pass


def out(*parts):
    print("@hil " + " ".join(str(p) for p in parts))


def _ticks():
    return time.ticks_ms()


class HilBoard:
    def __init__(self, real):
        self._real = real
        self.now = 0
        self.budget = 0
        self.levels = {}
        self.frames = []
        self.wake = ("power_on", None)
        self.adv = None
        self.battery = None
        self.on_charger = None
        self.seq = 0
        self.boot_ms = 0
        self.power_on_ms = 0
        self.host_i2c = False
        self.faults = {}  # board call -> errno it fails with
        self.hang = None  # (op or None, ms): the next such call takes that long
        self.wdt = None  # emulated watchdog timeout (ms) while it runs
        self.wdt_fed = 0
        self.show_until = 0  # board_esp32.deep_sleep keeps an indication visible this long

    def __getattr__(self, name):
        # mac, aes_ecb, rtc_load, rtc_save, scan, i2c: the board's own.
        return getattr(self._real, name)

    def configure(self, cfg):
        self._real.configure(cfg)
        out("pins", json.dumps(cfg.get("pins", {})).replace(" ", ""))

    # -- time, owned by the host --------------------------------------------------------
    def ticks_ms(self):
        return self.now - self.boot_ms  # since this boot, as on the chip

    def clock_ms(self):
        return self.now - self.power_on_ms  # the RTC counts through deep sleep

    def wake_reason(self):
        return self.wake

    def watchdog(self, timeout_ms):
        self.wdt, self.wdt_fed = timeout_ms, self.now

    def watchdog_feed(self):
        self.wdt_fed = self.now

    def _call(self, op):
        """Injected faults for a board call: a hang (the watchdog resets past its timeout), an
        error."""
        if self.hang is not None and self.hang[0] in (None, op):
            ms = self.hang[1]
            self.hang = None
            before = self.now
            if self.wdt is not None and ms > self.wdt:
                self.now = max(self.now, self.wdt_fed + self.wdt)
                self.budget = max(0, self.budget - (self.now - before))  # the stuck time
                self.wdt = None
                self._real.advertise(None)  # a chip reset stops the radio
                self.adv = None
                out("adv", self.now, "-")
                self.wake = ("watchdog", None)
                raise Reboot()
            self.now += ms
            self.budget = max(0, self.budget - ms)
        if op in self.faults:
            raise OSError(self.faults[op])

    def _sleep(self, ms, pins=(), frames=False):
        """Pass up to ms of device time; return a pin name on an edge, "frames" when an ack
        frame is waiting (if asked), None at the timeout."""
        deadline = None if ms is None else self.now + ms
        while True:
            if frames and self.frames:
                return "frames"
            if deadline is not None and self.now >= deadline:
                return None
            if self.budget > 0:
                step = self.budget if deadline is None else min(self.budget, deadline - self.now)
                # The host's accelerometer raises INT1 on its own clock, also mid-step.
                rise = self._host_int1_rise() if self.host_i2c else None
                if rise is not None and rise - self.now < step:
                    step = max(0, rise - self.now)
                if self.adv is not None:
                    time.sleep_ms(min(step, REALTIME_CAP_MS))
                self.now += step
                self.budget -= step
                if rise is not None and self.now >= rise:
                    before = self.pin("accel_int")
                    self.levels["accel_int"] = 1
                    if not before and "accel_int" in pins:
                        return "accel_int"
                continue
            out("idle", self.now, self.seq)
            cmd = sys.stdin.readline().split()
            if not cmd:
                continue
            if cmd[-1].startswith("#"):
                # Numbered, so the host matches each command with the idle that ends it.
                self.seq = int(cmd.pop()[1:])
            op = cmd[0]
            if op == "A":
                self.budget += int(cmd[1])
            elif op == "P":
                name, level = cmd[1], int(cmd[2])
                before = self.pin(name)
                self.levels[name] = level
                if level != before and name in pins:
                    return name
            elif op == "W":
                self.frames.append(unhexlify(cmd[1]))
            elif op == "B":
                self.battery = int(cmd[1])
            elif op == "C":
                self.on_charger = cmd[1] == "1"
            elif op == "R":
                out("rtc", hexlify(bytes(self._real.rtc_load())).decode() or "-")
            elif op == "X":
                if cmd[2] == "-":
                    self.faults.pop(cmd[1], None)
                else:
                    self.faults[cmd[1]] = ERRNO.get(cmd[2], 5)
            elif op == "H":
                self.hang = (None if cmd[1] == "-" else cmd[1], int(cmd[2]))
            elif op == "F":
                with open(cmd[1], "wb") as f:
                    f.write(unhexlify(cmd[2]) if len(cmd) > 2 else b"")
            elif op == "L":
                import os

                out("files", ",".join(sorted(e[0] for e in os.ilistdir() if e[1] == 0x8000))
                    or "-")
            elif op == "Q":
                raise Quit()

    def _host_int1_rise(self):
        out("int1", self.now)
        reply = _answer()
        self.levels["accel_int"] = int(reply[2])
        return None if reply[1] == "-" else int(reply[1])

    # -- inputs -------------------------------------------------------------------------
    def pin(self, name):
        # Logical levels as the test set them; an input never touched is idle (0), as on the
        # virtual board, whatever the unwired GPIO of a bare board reads.
        return self.levels.get(name, 0)

    def wait(self, timeout_ms, pins=()):
        self._call("wait")
        woke = self._sleep(timeout_ms, pins)
        self.wdt_fed = self.now  # the board's idle loop feeds it (board_esp32.wait)
        return woke

    def deep_sleep(self, ms, pins=()):
        self._call("deep_sleep")
        self.wdt = None  # deep sleep resets the chip, and the watchdog with it
        self.advertise(None)
        woke = None
        if self.now < self.show_until:  # as board_esp32.deep_sleep: the indication first
            woke = self._sleep(self.show_until - self.now, pins)
        out("sleep", self.now, "-" if ms is None else ms)
        if woke is None:
            woke = self._sleep(ms, pins)
        self.wake = ("pin", woke) if woke else ("timer", None)
        raise Reboot()

    def battery_mv(self):
        self._call("battery")
        return self.battery if self.battery is not None else self._real.battery_mv()

    def charging(self):
        self._call("charging")
        if self.on_charger is not None:
            return self.on_charger
        return bool(self.levels.get("charge", 0))  # the charger-detect input

    def receive(self, timeout_ms):
        self._call("receive")
        if not self.frames:
            self._sleep(timeout_ms, (), frames=True)
        got, self.frames = self.frames, []
        return got

    # -- outputs: the board's own, reported to the host as well ----------------------------
    def advertise(self, adv, interval_ms=100, connectable=False):
        if adv is not None or self.adv is not None:
            self._call("adv")
        if connectable:
            self._real.advertise(adv, interval_ms, connectable)
        else:
            self._real.advertise(adv, interval_ms)
        self.adv = adv
        out("adv", self.now, "-" if adv is None else hexlify(bytes(adv)).decode())

    def i2c(self):
        return _HostI2C(self) if self.host_i2c else self._real.i2c()

    def indicate(self, pattern):
        self._call("indicate")
        self._real.indicate(pattern)
        import board_esp32

        self.show_until = self.now + board_esp32.SHOW_MS.get(pattern, 0)
        out("ind", self.now, pattern)

    def log(self, msg):
        out("log", msg)


ERRNO = {"EIO": 5, "ENODEV": 19, "ETIMEDOUT": 110}


def _answer():
    reply = sys.stdin.readline().split()
    while not reply or reply[0] != "I":  # only the host's answer can come now
        reply = sys.stdin.readline().split()
    return reply


class _HostI2C:
    # machine.I2C's memory transfers, answered by the host's model of the devices on the bus.
    def __init__(self, hil):
        self.hil = hil

    def _transfer(self, op, addr, reg, arg):
        self.hil._call(op)
        out("i2c", op[4], self.hil.now, addr, reg, arg)
        reply = _answer()
        self.hil.levels["accel_int"] = int(reply[2])
        if reply[1].startswith("!"):
            raise OSError(int(reply[1][1:]))
        return unhexlify(reply[1]) if reply[1] != "-" else b""

    def readfrom_mem(self, addr, reg, n):
        return self._transfer("i2c_read", addr, reg, n)

    def readfrom_mem_into(self, addr, reg, buf):
        data = self._transfer("i2c_read", addr, reg, len(buf))
        buf[:len(data)] = data

    def writeto_mem(self, addr, reg, buf):
        self._transfer("i2c_write", addr, reg, hexlify(bytes(buf)).decode() or "-")


def run(now_ms=0, battery_mv=None, charging=None, levels=None, host_i2c=False, faults=None):
    # A second run in the same interpreter must wrap the board, not the previous wrapper.
    real_get_board = getattr(board_layer, "_hil_real_get_board", board_layer.get_board)
    board_layer._hil_real_get_board = real_get_board
    hil = HilBoard(real_get_board())
    hil.now = hil.boot_ms = hil.power_on_ms = now_ms
    hil.battery = battery_mv
    hil.on_charger = charging
    hil.levels = dict(levels or {})  # inputs keep their level through a power cycle
    hil.host_i2c = host_i2c
    hil.faults = {op: ERRNO.get(e, 5) for op, e in (faults or {}).items()}  # a broken part stays
    board_layer.get_board = lambda: hil
    base = set(sys.modules)
    boots = 0
    while True:
        for name in list(sys.modules):
            if name not in base:
                del sys.modules[name]
        boots += 1
        hil.boot_ms = hil.now
        out("boot", hil.now, hil.wake[0], hil.wake[1] or "-", boots)
        try:
            __import__("main")
        except Reboot:
            continue
        except Quit:
            return
        break
    out("halt", hil.now)
    try:
        while True:
            hil._sleep(None)
    except Quit:
        return
