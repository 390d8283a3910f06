# Simulated `machine` module of the ESP32 port (see _port.py for the rules it follows).
import _port

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
EXT0_WAKE = PIN_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
_RESETS = {"power_on": PWRON_RESET, "watchdog": WDT_RESET, "deepsleep": DEEPSLEEP_RESET,
           "soft": SOFT_RESET}
_WAKES = {"ext0": EXT0_WAKE, "ext1": EXT1_WAKE, "timer": TIMER_WAKE}
_RTC_MEM_MAX = 2048


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        self.id = id
        self._mode = mode
        self._out = 0
        _port.check_gpio(id, output=mode in (Pin.OUT, Pin.OPEN_DRAIN))
        if mode != -1:
            # Constructing with a mode runs rtc_gpio_deinit(): the pad is a GPIO again.
            _port.state["rtc_pins"].discard(id)
            # pull=-1: the pad keeps its pull (some pads have one at reset, and it leaks).
            _port.call("pin_init", n=id, mode=mode, pull=pull)
        if value is not None:
            self.value(value)

    def init(self, mode=-1, pull=-1, *, value=None):
        self.__init__(self.id, mode, pull, value=value)

    def value(self, v=None):
        if v is None:
            if self._mode in (Pin.OUT,):
                return self._out
            if self.id in _port.state["rtc_pins"]:
                return 0  # still routed to the RTC domain after an armed light sleep
            return _port.call("pin", n=self.id)["v"]
        self._out = 1 if v else 0
        _port.call("pin_out", n=self.id, v=self._out)

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __repr__(self):
        return "Pin(%d)" % self.id


class ADC:
    ATTN_0DB = 0
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self._n = pin if isinstance(pin, int) else pin.id
        if self._n not in (32, 33, 34, 35, 36, 37, 38, 39):
            raise ValueError("invalid Pin for ADC")  # ADC1 only (ADC2 is the radio's)
        self._atten = atten

    def atten(self, a):
        self._atten = a

    def read_uv(self):
        uv = _port.call("adc", n=self._n)["uv"]
        if self._atten != ADC.ATTN_11DB:
            uv = min(uv, 950000)  # 0 dB: the input saturates near 1 V
        return uv

    def read_u16(self):
        return min(65535, self.read_uv() * 65535 // 3100000)


class RTC:
    def memory(self, data=None):
        if data is None:
            return bytes.fromhex(_port.call("rtc")["data"])
        if len(data) > _RTC_MEM_MAX:
            raise ValueError("buffer too long")
        _port.call("rtc", data=bytes(data).hex())


class WDT:
    def __init__(self, id=0, timeout=5000):
        import gc

        gc.collect()  # main starts the watchdog once booted: the heap the app starts with
        _port.call("wdt", ms=timeout, heap=gc.mem_alloc())

    def feed(self):
        _port.call("wdt_feed")


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id, **kw):
        self.id = id
        self.due = None
        self._cb = None
        self._period = 0
        self._mode = Timer.ONE_SHOT
        if kw:
            self.init(**kw)

    def init(self, mode=PERIODIC, period=-1, callback=None, freq=-1):
        self.deinit()
        self._mode = mode
        self._period = period
        self._cb = callback
        self.due = _port.state["now"] + max(0, period)
        _port.state["timers"].append(self)

    def deinit(self):
        self.due = None
        if self in _port.state["timers"]:
            _port.state["timers"].remove(self)

    def fire(self):
        cb = self._cb
        if self._mode == Timer.PERIODIC:
            self.due += max(1, self._period)
        else:
            self.deinit()
        if cb is not None:
            cb(self)


class PWM:
    def __init__(self, dest, freq=5000, duty_u16=0):
        self._n = dest.id
        _port.check_gpio(self._n, output=True)
        _port.call("pwm", n=self._n, freq=freq, duty=duty_u16)

    def duty_u16(self, d):
        _port.call("pwm", n=self._n, freq=0, duty=d)

    def deinit(self):
        _port.call("pwm", n=self._n, freq=0, duty=0)


class I2C:
    def __init__(self, id, *, scl=None, sda=None, freq=400000, timeout=50000):
        for p in (scl, sda):
            _port.check_gpio(p.id, output=True)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        reply = _port.call("i2c_read", addr=addr, reg=memaddr, n=nbytes)
        if "error" in reply:
            raise OSError(reply["error"])
        return bytes.fromhex(reply["data"])

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        data = self.readfrom_mem(addr, memaddr, len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        reply = _port.call("i2c_write", addr=addr, reg=memaddr, data=bytes(buf).hex())
        if "error" in reply:
            raise OSError(reply["error"])


def freq(hz=None):
    if hz is None:
        return 160000000
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")


def reset_cause():
    return _RESETS.get(_port.state["reset"], PWRON_RESET)


def wake_reason():
    return _WAKES.get(_port.state["wake"], 0)


def unique_id():
    return b"\xc0\xff\xee\x00\x00\x01"


def lightsleep(time_ms=None):
    if _port.state["ble"]:
        # ESP-IDF needs the Bluetooth controller off before light sleep (see _port.py).
        raise OSError("light sleep with the BLE controller active")
    ext0, ext1 = _port.wake_args()
    before = _port.state["now"]
    reply = _port.call("lightsleep", ms=time_ms, ext0=ext0, ext1=ext1)
    slept = _port.state["now"] - before
    for t in _port.state["timers"]:  # the CPU was stopped: timers are late by that much
        if t.due is not None:
            t.due += slept
    _port.state["wake"] = reply["cause"]
    armed = _port.state["rtc_pins"]
    if ext0:
        armed.add(ext0[0])
    if ext1:
        for n in ext1[0]:
            armed.add(n)


sleep = lightsleep


def deepsleep(time_ms=None):
    # deepsleep(0) arms a 0 ms timer (wakes at once, since 1.22); no argument: no timer.
    ext0, ext1 = _port.wake_args()
    _port.call("deepsleep", ms=time_ms, ext0=ext0, ext1=ext1)
    raise _port.Reboot()


def reset():
    _port.call("reset")
    raise _port.Reboot()


def soft_reset():
    reset()
