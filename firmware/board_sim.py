# Virtual board: forwards every board call to the host simulator (tools/vboard) over the
# `simhost` module that the WebAssembly runner registers. Virtual time lives on the host, so
# tests can advance hours in milliseconds and stimulate pins at exact instants.
import json

import simhost


class Reboot(Exception):
    """Raised after deep sleep: the runner re-imports main, as a real ESP32 reboots."""


def _call(op, **args):
    args["op"] = op
    reply = simhost.call(json.dumps(args))
    return json.loads(reply)


class _HostAes:
    # The WebAssembly port has no cryptolib; the host computes the same AES-ECB block
    # function, so the CCM code above it is still the firmware's own.
    def __init__(self, key):
        self._key = bytes(key).hex()

    def encrypt(self, block):
        return bytes.fromhex(_call("aes", key=self._key, block=bytes(block).hex())["out"])


class SimBoard:
    def __init__(self):
        boot = _call("boot")
        self._wake = (boot["wake"], boot.get("pin"))

    def ticks_ms(self):
        return _call("ticks")["t"]

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

    def advertise(self, adv, interval_ms=100):
        _call("adv", data=None if adv is None else bytes(adv).hex(), interval=interval_ms)

    def scan(self, duration_ms):
        heard = _call("scan", ms=duration_ms)["adverts"]
        return [(bytes.fromhex(m), bytes.fromhex(d)) for m, d in heard]

    def indicate(self, pattern):
        _call("indicate", pattern=pattern)

    def rtc_load(self):
        return bytes.fromhex(_call("rtc")["data"])

    def rtc_save(self, data):
        _call("rtc", data=bytes(data).hex())

    def mac(self):
        return bytes.fromhex(_call("mac")["mac"])

    def aes_ecb(self, key):
        return _HostAes(key)

    def watchdog_feed(self):
        pass

    def i2c(self):
        return None

    def log(self, msg):
        print(msg)
