# ESP32 board layer on MicroPython's machine/bluetooth modules. Pins come from the device
# config (written at provisioning from hardware/pinmap data), never hard-coded here.
import time

import bluetooth
import esp32
import machine

try:
    import cryptolib
except ImportError:
    cryptolib = None

_WAKE_NAMES = {}


class Esp32Board:
    def __init__(self, pins=None, battery_adc=None, divider=2.0, led_pin=None):
        self._pins = {}
        for name, num in (pins or {}).items():
            self._pins[name] = machine.Pin(num, machine.Pin.IN)
        self._adc = None
        if battery_adc is not None:
            self._adc = machine.ADC(machine.Pin(battery_adc))
            self._adc.atten(machine.ADC.ATTN_11DB)
        self._divider = divider
        self._led = machine.Pin(led_pin, machine.Pin.OUT) if led_pin is not None else None
        self._ble = bluetooth.BLE()
        self._ble.active(True)
        self._wdt = None
        self._rtc = machine.RTC()

    def configure(self, pins, battery_adc=None, divider=2.0, led_pin=None, watchdog_ms=30000):
        self.__init__(pins, battery_adc, divider, led_pin)
        self._wdt = machine.WDT(timeout=watchdog_ms)

    def ticks_ms(self):
        return time.ticks_ms()

    def wake_reason(self):
        cause = machine.wake_reason()
        if cause == machine.EXT0_WAKE or cause == machine.EXT1_WAKE:
            for name, pin in self._pins.items():
                if pin.value():
                    return ("pin", name)
            return ("pin", None)
        if cause == machine.TIMER_WAKE:
            return ("timer", None)
        return ("power_on", None)

    def pin(self, name):
        return self._pins[name].value()

    def wait(self, timeout_ms, pins=()):
        start = time.ticks_ms()
        levels = {n: self._pins[n].value() for n in pins}
        while timeout_ms is None or time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
            for n in pins:
                if self._pins[n].value() != levels[n]:
                    return n
            self.watchdog_feed()
            time.sleep_ms(10)
        return None

    def deep_sleep(self, ms, pins=()):
        wake = [self._pins[n] for n in pins]
        if wake:
            esp32.wake_on_ext1(pins=wake, level=esp32.WAKEUP_ANY_HIGH)
        self.advertise(None)
        machine.deepsleep(ms or 0)

    def battery_mv(self):
        if self._adc is None:
            return 0
        return int(self._adc.read_uv() * self._divider / 1000)

    def charging(self):
        return "charge" in self._pins and self._pins["charge"].value() == 0

    def advertise(self, adv, interval_ms=100):
        if adv is None:
            self._ble.gap_advertise(None)
        else:
            self._ble.gap_advertise(interval_ms * 1000, adv_data=adv, connectable=False)

    def scan(self, duration_ms):
        heard = []

        def irq(event, data):
            if event == 5:  # _IRQ_SCAN_RESULT
                addr_type, addr, adv_type, rssi, adv_data = data
                heard.append((bytes(addr), bytes(adv_data)))

        self._ble.irq(irq)
        self._ble.gap_scan(duration_ms, 30000, 30000)
        time.sleep_ms(duration_ms + 10)
        self._ble.irq(None)
        return heard

    def indicate(self, pattern):
        if self._led is not None:
            self._led.value(0 if pattern in ("off",) else 1)

    def rtc_load(self):
        return bytes(self._rtc.memory())

    def rtc_save(self, data):
        self._rtc.memory(data)

    def mac(self):
        return bytes(self._ble.config("mac")[1])

    def aes_ecb(self, key):
        return cryptolib.aes(key, 1)  # 1 = ECB; MODE_* constants are not built on ESP32

    def watchdog_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def i2c(self):
        return machine.I2C(0)

    def log(self, msg):
        print(msg)
