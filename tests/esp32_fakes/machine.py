# Stand-ins for MicroPython's ESP32 `machine` module, for tests/test_firmware_board_esp32.py:
# the same names and call signatures as the real port (docs.micropython.org, esp32 quickref),
# recording what the board layer asked for. This machine has no ESP32; this is what it lacks.
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
PWRON_RESET = 1
DEEPSLEEP_RESET = 4
WDT_RESET = 3
calls = []
levels = {}
state = {"wake": 0, "reset": PWRON_RESET, "rtc": b""}


class Pin:
    IN = 1
    OUT = 3

    def __init__(self, num, mode=-1, value=None):
        self.num = num
        if value is not None:
            levels[num] = value

    def value(self, v=None):
        if v is None:
            return levels.get(self.num, 0)
        levels[self.num] = v

    def __repr__(self):
        return "Pin(%d)" % self.num


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        self.pin = pin

    def atten(self, a):
        calls.append(("atten", a))

    def read_uv(self):
        return 1500000


class RTC:
    def memory(self, data=None):
        if data is None:
            return state["rtc"]
        state["rtc"] = bytes(data)


class WDT:
    def __init__(self, timeout):
        calls.append(("wdt", timeout))

    def feed(self):
        pass


class Timer:
    ONE_SHOT = 0

    def __init__(self, n):
        pass

    def init(self, **kw):
        pass

    def deinit(self):
        pass


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        calls.append(("pwm", pin.num, freq))

    def deinit(self):
        pass


class I2C:
    def __init__(self, n, sda=None, scl=None, freq=0):
        calls.append(("i2c", sda.num, scl.num, freq))


def freq(f):
    calls.append(("freq", f))


def wake_reason():
    return state["wake"]


def reset_cause():
    return state["reset"]


def deepsleep(ms=0):
    calls.append(("deepsleep", ms))


def lightsleep(ms=0):
    calls.append(("lightsleep", ms))
