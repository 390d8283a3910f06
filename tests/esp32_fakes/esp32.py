# Simulated `esp32` module of the port (see _port.py): deep/light sleep wake sources.
import _port

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True


def _rtc_pin(p):
    n = p if isinstance(p, int) else p.id
    if n not in _port.RTC_GPIO:
        raise ValueError("invalid pin for wake")
    return n


def wake_on_ext0(pin, level=WAKEUP_ALL_LOW):
    # pin=None disarms ext0 (modesp32.c esp32_wake_on_ext0).
    _port.state["ext0"] = None if pin is None else (_rtc_pin(pin), bool(level))


def wake_on_ext1(pins=None, level=WAKEUP_ALL_LOW):
    # pins=None keeps the previous mask (modesp32.c esp32_wake_on_ext1); () disarms.
    old = _port.state["ext1"]
    mask = old[0] if old else ()
    if pins is not None:
        mask = tuple(_rtc_pin(p) for p in pins)
    _port.state["ext1"] = (mask, bool(level))


def wake_on_touch(wake):
    pass


def raw_temperature():
    return 120
