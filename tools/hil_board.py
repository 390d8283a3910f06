# Hardware-in-the-loop driver: runs ON the board under test (a real ESP32, or the simulated
# serial board tools/rawrepl_sim.py), started by tools/hil_serial.py through the raw REPL.
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
#   Q                 stop
# each optionally followed by "#<n>", echoed in the idle line that ends it,
# and the board reports, one line each: "@hil boot|adv|ind|sleep|log|idle|halt ...".
#
# Device time is the host's, as on the virtual board: tests step through hours in moments.
# While an advert is on the air, time also passes for real (capped per step), so the hub's
# scanner really hears the burst. Deep sleep is emulated (the app is re-run with the wake
# reason) because a real deep sleep would drop the USB serial link the host drives; for the
# same reason the hardware watchdog is not started here.
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
        pass

    def watchdog_feed(self):
        pass

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
                if self.adv is not None:
                    time.sleep_ms(min(step, REALTIME_CAP_MS))
                self.now += step
                self.budget -= step
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
            elif op == "Q":
                raise Quit()

    # -- inputs -------------------------------------------------------------------------
    def pin(self, name):
        # Logical levels as the test set them; an input never touched is idle (0), as on the
        # virtual board, whatever the unwired GPIO of a bare board reads.
        return self.levels.get(name, 0)

    def wait(self, timeout_ms, pins=()):
        return self._sleep(timeout_ms, pins)

    def deep_sleep(self, ms, pins=()):
        self.advertise(None)
        out("sleep", self.now, "-" if ms is None else ms)
        woke = self._sleep(ms, pins)
        self.wake = ("pin", woke) if woke else ("timer", None)
        raise Reboot()

    def battery_mv(self):
        return self.battery if self.battery is not None else self._real.battery_mv()

    def charging(self):
        if self.on_charger is not None:
            return self.on_charger
        return bool(self.levels.get("charge", 0))  # the charger-detect input

    def receive(self, timeout_ms):
        if not self.frames:
            self._sleep(timeout_ms, (), frames=True)
        got, self.frames = self.frames, []
        return got

    # -- outputs: the board's own, reported to the host as well ----------------------------
    def advertise(self, adv, interval_ms=100, connectable=False):
        if connectable:
            self._real.advertise(adv, interval_ms, connectable)
        else:
            self._real.advertise(adv, interval_ms)
        self.adv = adv
        out("adv", self.now, "-" if adv is None else hexlify(bytes(adv)).decode())

    def indicate(self, pattern):
        self._real.indicate(pattern)
        out("ind", self.now, pattern)

    def log(self, msg):
        out("log", msg)


def run(now_ms=0, battery_mv=None, charging=None, levels=None):
    # A second run in the same interpreter must wrap the board, not the previous wrapper.
    real_get_board = getattr(board_layer, "_hil_real_get_board", board_layer.get_board)
    board_layer._hil_real_get_board = real_get_board
    hil = HilBoard(real_get_board())
    hil.now = hil.boot_ms = hil.power_on_ms = now_ms
    hil.battery = battery_mv
    hil.on_charger = charging
    hil.levels = dict(levels or {})  # inputs keep their level through a power cycle
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
