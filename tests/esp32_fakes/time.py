# Simulated `time` of the ESP32 port (see _port.py): virtual time from the host; ticks_ms
# wraps at 2**30 as on the chip.
import _port

_PERIOD = 1 << 30
_MASK = _PERIOD - 1


def ticks_ms():
    return (_port.call("ticks")["t"] + _port.state["ticks0"]) & _MASK


def ticks_us():
    return (ticks_ms() * 1000) & _MASK


def ticks_diff(a, b):
    d = (a - b) & _MASK
    return d - _PERIOD if d >= _PERIOD // 2 else d


def ticks_add(t, delta):
    return (t + delta) & _MASK


def sleep_ms(ms):
    _port.idle(ms)


def sleep_us(us):
    _port.idle(us // 1000)


def sleep(s):
    _port.idle(int(s * 1000))


def time_ns():
    return _port.call("clock")["t"] * 1000000


def time():
    return _port.call("clock")["t"] // 1000
