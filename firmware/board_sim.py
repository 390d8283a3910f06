# Virtual board: forwards every board call to the host simulator (tools/vboard) over the
# `simhost` module that the WebAssembly runner registers. Virtual time lives on the host, so
# tests can advance hours in milliseconds and stimulate pins at exact instants.
import json

import simhost


class Reboot(BaseException):
    """The chip restarts (deep sleep wake, watchdog): the runner re-imports main. A
    BaseException, so that an application's `except Exception` cannot swallow a reset."""


def _call(op, **args):
    args["op"] = op
    reply = json.loads(simhost.call(json.dumps(args)))
    if "_reset" in reply:  # the host's watchdog fired while we were in this call
        raise Reboot()
    if "_error" in reply:  # the test injected a hardware fault into this call
        raise OSError(reply["_error"])
    return reply


class _HostAes:
    # The WebAssembly port has no cryptolib; the host computes the same AES-ECB block
    # function, so the CCM code above it is still the firmware's own.
    def __init__(self, key):
        self._key = bytes(key).hex()

    def encrypt(self, block):
        return bytes.fromhex(_call("aes", key=self._key, block=bytes(block).hex())["out"])


class _HostI2C:
    # machine.I2C's memory-read/write calls; the host models the devices on the bus.
    def readfrom_mem(self, addr, reg, n):
        reply = _call("i2c_read", addr=addr, reg=reg, n=n)
        if "error" in reply:
            raise OSError(reply["error"])
        return bytes.fromhex(reply["data"])

    def readfrom_mem_into(self, addr, reg, buf):
        data = self.readfrom_mem(addr, reg, len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, reg, buf):
        reply = _call("i2c_write", addr=addr, reg=reg, data=bytes(buf).hex())
        if "error" in reply:
            raise OSError(reply["error"])


class SimBoard:
    def __init__(self):
        boot = _call("boot")
        self._wake = (boot["wake"], boot.get("pin"))

    def configure(self, cfg):
        _call("configure", pins=cfg.get("pins", {}))

    def ticks_ms(self):
        return _call("ticks")["t"]

    def clock_ms(self):
        return _call("clock")["t"]

    def wake_reason(self):
        return self._wake

    def pin(self, name):
        return _call("pin", name=name)["v"]

    def wait(self, timeout_ms, pins=()):
        return _call("wait", ms=timeout_ms, pins=list(pins))["pin"]

    def deep_sleep(self, ms, pins=()):
        _call("deep_sleep", ms=ms, pins=list(pins))
        raise Reboot()

    def battery_mv(self):
        return _call("battery")["mv"]

    def charging(self):
        return bool(_call("charging")["v"])

    def advertise(self, adv, interval_ms=100, connectable=False):
        _call("adv", data=None if adv is None else bytes(adv).hex(), interval=interval_ms,
              connectable=connectable)

    def receive(self, timeout_ms):
        frames = _call("receive", ms=timeout_ms)["frames"]
        return [bytes.fromhex(f) for f in frames]

    def scan(self, duration_ms):
        heard = _call("scan", ms=duration_ms)["adverts"]
        return [(bytes.fromhex(m), bytes.fromhex(d)) for m, d in heard]

    def indicate(self, pattern):
        _call("indicate", pattern=pattern)

    def sleep_ms(self, ms):
        _call("sleep", ms=ms)

    def rtc_load(self):
        return bytes.fromhex(_call("rtc")["data"])

    def rtc_save(self, data):
        _call("rtc", data=bytes(data).hex())

    def mac(self):
        return bytes.fromhex(_call("mac")["mac"])

    def aes_ecb(self, key):
        return _HostAes(key)

    def watchdog(self, timeout_ms):
        _call("wdt", ms=timeout_ms)

    def watchdog_feed(self):
        _call("wdt_feed")

    def i2c(self):
        return _HostI2C()

    def log(self, msg):
        print(msg)
