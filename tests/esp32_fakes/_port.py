# The simulated ESP32 port: the state that machine, esp32, bluetooth and time share, and the
# link to the host world (tools/sim/vboard/board.py: virtual time, pin levels, the air).
#
# One model of the port, used by the virtual board and by every firmware test. It follows
# the port's rules (../shared/notes/esp32_port.md), not kinder ones:
# - light sleep ends only on an armed source (ext0/ext1) or its timer;
# - esp32.wake_on_ext1(pins=None) keeps the previous mask, pins=() disarms;
# - a pin armed for a light-sleep wake reads 0 until a Pin is constructed on it again;
# - machine.lightsleep() with the BLE controller active is an error;
# - Timer callbacks do not run during light sleep (they are late by the time slept);
# - machine.deepsleep(0) arms a 0 ms timer and wakes at once;
# - non-connectable adverts below 100 ms (and connectable below 20 ms) are rejected;
# - time.ticks_ms() wraps at 2**30;
# - RTC user memory holds 2048 bytes; GPIO 20, 24, 28-31 do not exist, 34-39 are input
#   only, 6-11 drive the SPI flash.
# The host sees port-level calls only (pins by GPIO number, wake sources, radio bytes).
import json
import sys

try:
    import simhost  # the WebAssembly runner registers it

    def _raw(line):
        return simhost.call(line)
except ImportError:  # the unix port: requests on stdout (marked), answers on stdin
    def _raw(line):
        sys.stdout.write("\x01" + line + "\n")
        return sys.stdin.readline()


class Reboot(BaseException):
    """The chip restarts (deep sleep wake, watchdog, reset): the runner re-imports main. A
    BaseException, so an application's `except Exception` cannot swallow a reset."""


def call(op, **args):
    args["op"] = op
    reply = json.loads(_raw(json.dumps(args)))
    if "_reset" in reply:  # the watchdog fired while the firmware was in this call
        raise Reboot()
    if "_error" in reply:  # an injected hardware fault
        raise OSError(reply["_error"])
    if "t" in reply:
        state["now"] = reply["t"]
    return reply


# now: ms since boot (unwrapped, the host's); ticks0: where ticks_ms started at this boot
state = {"now": 0, "ticks0": 0, "reset": "power_on", "wake": None, "ble": False,
         "ext0": None, "ext1": None, "rtc_pins": set(), "timers": [], "irq": None,
         "gatts": {}}
_boot = call("boot")
state["ticks0"] = _boot.get("ticks0", 0)
state["reset"] = _boot["reset"]
state["wake"] = _boot.get("wake")

RTC_GPIO = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)
INPUT_ONLY = (34, 35, 36, 37, 38, 39)
FLASH_GPIO = (6, 7, 8, 9, 10, 11)
GPIO = tuple(n for n in range(40) if n not in (20, 24, 28, 29, 30, 31))


def check_gpio(n, output=False):
    if n not in GPIO:
        raise ValueError("invalid pin")
    if n in FLASH_GPIO:
        # The port lets you, and the chip stops reading its program from flash.
        raise OSError("GPIO%d is wired to the SPI flash" % n)
    if output and n in INPUT_ONLY:
        raise ValueError("pin can only be input")


def run_timers():
    """Fire the Timer callbacks that are due (they run between bytecodes while awake)."""
    while True:
        due = [t for t in state["timers"] if t.due is not None and t.due <= state["now"]]
        if not due:
            return
        t = min(due, key=lambda x: x.due)
        t.fire()


def next_timer():
    dues = [t.due for t in state["timers"] if t.due is not None]
    return min(dues) if dues else None


def idle(ms):
    """time.sleep_ms: the CPU idles in FreeRTOS; timers fire, BLE events are delivered."""
    end = state["now"] + max(0, int(ms))
    while True:
        run_timers()
        left = end - state["now"]
        if left <= 0:
            return
        nt = next_timer()
        step = left if nt is None else max(0, min(left, nt - state["now"]))
        reply = call("sleep", ms=step)
        for ev in reply.get("ev", ()):
            _ble_event(ev)


def _ble_event(ev):
    kind = ev[0]
    handler = state["irq"]
    if kind == "write":
        state["gatts"][ev[2]] = bytes.fromhex(ev[3])
        args = (3, (ev[1], ev[2]))
    elif kind == "conn":
        args = (1, (ev[1], 0, b"\x00" * 6))
    elif kind == "disc":
        args = (2, (ev[1], 0, b"\x00" * 6))
    elif kind == "scan":
        args = (5, (0, bytes.fromhex(ev[1]), 0, -60, bytes.fromhex(ev[2])))
    elif kind == "scan_done":
        args = (6, ())
    else:
        return
    if handler is not None:
        handler(*args)


def wake_args():
    ext0 = state["ext0"]
    ext1 = state["ext1"]
    return ([ext0[0], 1 if ext0[1] else 0] if ext0 else None,
            [list(ext1[0]), 1 if ext1[1] else 0] if ext1 and ext1[0] else None)
