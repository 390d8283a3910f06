# Stand-in for MicroPython's `esp32` module (wake sources), see machine.py here.
import machine

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True


def wake_on_ext0(pin, level):
    machine.calls.append(("ext0", None if pin is None else pin.num, level))


def wake_on_ext1(pins, level):
    machine.calls.append(("ext1", None if pins is None else [p.num for p in pins], level))
