# ESP32 board layer on MicroPython's machine/bluetooth modules. Pins come from the device
# config (written at provisioning from hardware/pinmap.json), never hard-coded here.
import time

import bluetooth
import esp32
import machine

from protocols import ack

try:
    import cryptolib
except ImportError:
    cryptolib = None

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_FLAG_WRITE = 0x0008  # as in MicroPython's bluetooth docs (characteristic flags)
_ACK_SERVICE = (
    bluetooth.UUID(ack.SERVICE_UUID),
    ((bluetooth.UUID(ack.CHAR_UUID), _FLAG_WRITE),),
)
# LED on/off ms per pattern; the buzzer chirps once when the resident must notice a change.
_PATTERNS = {
    "off": (0, 0), "sending": (100, 100), "received": (1000, 0), "help_coming": (200, 800),
    "not_received": (100, 1900), "cancelled": (50, 950), "config_error": (100, 300),
    "fault": (500, 500), "low_battery": (50, 4950), "fall_check": (250, 250),
}
_CHIRP = ("received", "help_coming", "not_received", "cancelled", "fall_check")


class Esp32Board:
    def __init__(self):
        self._pins = {}
        self._active_low = ()
        self._outputs = {}
        self._adc = None
        self._divider = 2.0
        self._i2c_cfg = None
        self._wdt = None
        self._rtc = machine.RTC()
        self._ble = bluetooth.BLE()
        self._ble.active(True)
        self._inbox = []
        self._conn = None
        ((self._ack_handle,),) = self._ble.gatts_register_services((_ACK_SERVICE,))
        self._ble.irq(self._irq)
        self._advertising = False
        self._led_timer = None

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self._conn = data[0]
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self._conn = None
        elif event == _IRQ_GATTS_WRITE and data[1] == self._ack_handle:
            self._inbox.append(bytes(self._ble.gatts_read(self._ack_handle)))

    def configure(self, cfg):
        # 80 MHz: the firmware mostly waits on the radio; halves the awake current vs 240 MHz.
        machine.freq(80000000)
        outputs = cfg.get("outputs", ())
        self._active_low = cfg.get("active_low", ())
        i2c_pins = ("sda", "scl")
        for name, num in cfg["pins"].items():
            if name in outputs:
                self._outputs[name] = machine.Pin(num, machine.Pin.OUT, value=0)
            elif name == "battery":
                self._adc = machine.ADC(machine.Pin(num))
                self._adc.atten(machine.ADC.ATTN_11DB)  # up to ~3.1 V at the pin
            elif name not in i2c_pins:
                # Pull resistors are on the board (bom.md): internal pulls leak in deep sleep.
                self._pins[name] = machine.Pin(num, machine.Pin.IN)
        self._divider = cfg.get("divider", 2.0)
        if "sda" in cfg["pins"]:
            self._i2c_cfg = (cfg["pins"]["sda"], cfg["pins"]["scl"],
                             cfg.get("i2c", {}).get("freq", 400000))

    def ticks_ms(self):
        return time.ticks_ms()

    def clock_ms(self):
        # The RTC keeps time through deep sleep and resets; it restarts at power loss.
        return time.time_ns() // 1000000

    def wake_reason(self):
        if machine.reset_cause() == machine.WDT_RESET:
            return ("watchdog", None)
        cause = machine.wake_reason()
        armed = self._rtc_armed()
        if cause == machine.EXT0_WAKE:
            return ("pin", armed.get("e", (None,))[0])
        if cause == machine.EXT1_WAKE:
            # A tap shorter than the boot is over by now: the pin still high wins, else the
            # armed one (INT1 stays high until read, so a low one was the button).
            names = armed.get("h", ())
            for name in names:
                if self.pin(name):
                    return ("pin", name)
            return ("pin", names[0] if names else None)
        if cause == machine.TIMER_WAKE:
            return ("timer", None)
        return ("power_on", None)

    def _rtc_armed(self):
        # Which inputs deep_sleep() armed on ext0 ("e") and ext1 ("h"), kept in the RTC
        # memory tail: machine.wake_reason() tells the source, not the pin.
        raw = bytes(self._rtc.memory())
        if b"\x00L" not in raw:
            return {}
        armed = {}
        for item in raw[raw.rindex(b"\x00L") + 2:].decode().split(","):
            if item:
                armed.setdefault(item[-1], []).append(item[:-1])
        return armed

    def pin(self, name):
        v = self._pins[name].value()
        return 1 - v if name in self._active_low else v

    def wait(self, timeout_ms, pins=()):
        start = time.ticks_ms()
        levels = {n: self.pin(n) for n in pins}
        while timeout_ms is None or time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
            for n in pins:
                if self.pin(n) != levels[n]:
                    return n
            self.watchdog_feed()
            if self._advertising or self._conn is not None:
                time.sleep_ms(10)  # the BLE stack needs the CPU
            else:
                left = 1000 if timeout_ms is None else timeout_ms - time.ticks_diff(
                    time.ticks_ms(), start)
                self._arm_wake(pins)
                machine.lightsleep(max(1, min(left, 5000)))  # RAM kept, wakes on the pins
        return None

    def _arm_wake(self, pins):
        # ext0: one input woken on its next edge either way (door, motion, mat, charger);
        # ext1 ANY_HIGH: active-high inputs that are low now (buttons, INT1).
        # Sources not wanted now are disarmed (None), or a wait's setup would outlive it.
        either = [n for n in pins if n not in ("button", "accel_int")]
        ext0 = None
        if either:
            ext0 = self._pins[either[0]]
        esp32.wake_on_ext0(pin=ext0, level=esp32.WAKEUP_ALL_LOW if ext0 is not None and
                           ext0.value() else esp32.WAKEUP_ANY_HIGH)
        high = [n for n in pins if n not in either[:1] and not self._pins[n].value()]
        esp32.wake_on_ext1(pins=[self._pins[n] for n in high] or None,
                           level=esp32.WAKEUP_ANY_HIGH)
        return either[:1], high

    def deep_sleep(self, ms, pins=()):
        self.advertise(None)
        ext0, ext1 = self._arm_wake(pins)
        state = bytes(self._rtc.memory())
        if b"\x00L" in state:
            state = state[:state.rindex(b"\x00L")]
        tail = ",".join([n + "e" for n in ext0] + [n + "h" for n in ext1])
        self._rtc.memory(state + b"\x00L" + tail.encode())
        self._ble.active(False)
        # 0 would mean "forever" to machine.deepsleep: a due timer is 1 ms.
        machine.deepsleep(0 if ms is None else max(1, ms))

    def battery_mv(self):
        if self._adc is None:
            return 0
        return int(self._adc.read_uv() * self._divider / 1000)

    def charging(self):
        return "charge" in self._pins and self.pin("charge") == 1

    def advertise(self, adv, interval_ms=100, connectable=False):
        if adv is None:
            self._ble.gap_advertise(None)
            self._advertising = False
        else:
            self._ble.gap_advertise(interval_ms * 1000, adv_data=adv, connectable=connectable)
            self._advertising = True

    def receive(self, timeout_ms):
        start = time.ticks_ms()
        while not self._inbox and time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
            self.watchdog_feed()
            time.sleep_ms(10)
        frames, self._inbox = self._inbox, []
        return frames

    def scan(self, duration_ms):
        heard = []

        def irq(event, data):
            if event == 5:  # _IRQ_SCAN_RESULT
                addr_type, addr, adv_type, rssi, adv_data = data
                heard.append((bytes(addr), bytes(adv_data)))
            else:
                self._irq(event, data)

        self._ble.irq(irq)
        self._ble.gap_scan(duration_ms, 30000, 30000)
        time.sleep_ms(duration_ms + 10)
        self._ble.irq(self._irq)
        return heard

    def indicate(self, pattern):
        led = self._outputs.get("led")
        if led is None:
            return
        if self._led_timer is not None:
            self._led_timer.deinit()
            self._led_timer = None
        on, off = _PATTERNS.get(pattern, (0, 0))
        led.value(1 if on else 0)
        if on and off:
            state = [1]

            def blink(t):
                state[0] ^= 1
                led.value(state[0])
                t.init(period=on if state[0] else off, mode=machine.Timer.ONE_SHOT,
                       callback=blink)

            self._led_timer = machine.Timer(0)
            self._led_timer.init(period=on, mode=machine.Timer.ONE_SHOT, callback=blink)
        buzzer = self._outputs.get("buzzer")
        if buzzer is not None and pattern in _CHIRP:
            pwm = machine.PWM(buzzer, freq=2700, duty_u16=32768)  # piezo resonance
            time.sleep_ms(120)
            pwm.deinit()

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def rtc_load(self):
        raw = bytes(self._rtc.memory())
        return raw[:raw.rindex(b"\x00L")] if b"\x00L" in raw else raw

    def rtc_save(self, data):
        self._rtc.memory(data)

    def mac(self):
        return bytes(self._ble.config("mac")[1])

    def aes_ecb(self, key):
        return cryptolib.aes(key, 1)  # 1 = ECB; MODE_* constants are not built on ESP32

    def watchdog(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def watchdog_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def i2c(self):
        if self._i2c_cfg is None:
            return None
        sda, scl, freq = self._i2c_cfg
        return machine.I2C(0, sda=machine.Pin(sda), scl=machine.Pin(scl), freq=freq)

    def log(self, msg):
        print(msg)
