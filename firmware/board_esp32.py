# ESP32 board layer on MicroPython's machine/bluetooth modules. Pins come from the device
# config (written at provisioning from hardware/pinmap.json), never hard-coded here.
# The port's rules this layer lives by (../shared/notes/esp32_port.md):
# - no light sleep while the BLE controller is on: the radio is switched on for an advert,
#   a scan or a connection and off again before any light sleep;
# - light sleep ends only on armed sources: a wait light-sleeps only when every watched
#   input can be armed for its next edge, else it polls;
# - armed pads stay in the RTC domain (read 0) until the Pin is constructed again;
# - wake_on_ext1(pins=None) keeps the old mask: disarm with ();
# - Timer callbacks do not run in light sleep: no light sleep while an LED pattern blinks;
# - deepsleep(0) wakes at once: "no timer" is deepsleep() without an argument.
import time

import bluetooth
import cryptolib
import esp32
import machine

from protocols import ack

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_SCAN_RESULT = 5
_FLAG_WRITE = 0x0008  # as in MicroPython's bluetooth docs (characteristic flags)
_ACK_SERVICE = (
    bluetooth.UUID(ack.SERVICE_UUID),
    ((bluetooth.UUID(ack.CHAR_UUID), _FLAG_WRITE),),
)
POLL_MS = 10  # how often a wait looks at its inputs when it cannot light-sleep
LIGHT_SLEEP_MAX_MS = 5000  # a light sleep wakes at least this often to feed the watchdog
# LED on/off ms per pattern; the buzzer chirps once when the resident must notice a change.
_PATTERNS = {
    "off": (0, 0), "sending": (100, 100), "received": (1000, 0), "help_coming": (200, 800),
    "not_received": (100, 1900), "cancelled": (50, 950), "config_error": (100, 300),
    "fault": (500, 500), "low_battery": (50, 4950), "fall_check": (250, 250),
}
# How long a pattern stays visible at least before the device may deep-sleep (its LED goes
# dark in deep sleep): two periods of a blink, one second of a steady light. FIRMWARE.md.
SHOW_MS = {
    "received": 1000, "not_received": 4000, "cancelled": 3000, "config_error": 30000,
    "fault": 5000, "low_battery": 5000,
}
_CHIRP = ("received", "help_coming", "not_received", "cancelled", "fall_check")
# Inputs that wake on their rising edge only (ext1 ANY_HIGH); the others on either edge.
_RISING = ("button", "accel_int")


class Esp32Board:
    def __init__(self):
        # Nothing here touches the radio or a pin: a fault in either is caught by main.
        self._pins = {}
        self._gpio = {}
        self._active_low = ()
        self._outputs = {}
        self._adc = None
        self._divider = 2.0
        self._i2c_cfg = None
        self._wdt = None
        self._rtc = machine.RTC()
        self._ble = None
        self._inbox = []
        self._conn = None
        self._adv = None  # (interval_us, data, connectable) while advertising
        self._ack_handle = None
        self._led_timer = None
        self._blinking = False
        self._show_until = None  # ticks: the current indication must stay visible until then
        self._scan = None
        self._mac = None

    # -- radio: on only while it is needed ------------------------------------------------
    def _radio(self):
        if self._ble is None:
            self._ble = bluetooth.BLE()
        if not self._ble.active():
            self._ble.active(True)
            ((self._ack_handle,),) = self._ble.gatts_register_services((_ACK_SERVICE,))
            self._ble.irq(self._irq)
        return self._ble

    def _radio_off(self):
        if self._ble is not None and self._ble.active():
            self._ble.active(False)
        self._adv = None
        self._conn = None

    def _radio_busy(self):
        return self._adv is not None or self._conn is not None or self._scan is not None

    def _irq(self, event, data):
        ble = self._ble
        if ble is None:
            return
        if event == _IRQ_CENTRAL_CONNECT:
            self._conn = data[0]
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self._conn = None
            # NimBLE stopped advertising when the central connected: start again.
            if self._adv is not None:
                interval, adv, connectable = self._adv
                ble.gap_advertise(interval, adv, connectable=connectable)
        elif event == _IRQ_GATTS_WRITE and data[1] == self._ack_handle:
            self._inbox.append(bytes(ble.gatts_read(data[1])))
        elif event == _IRQ_SCAN_RESULT and self._scan is not None:
            addr_type, addr, adv_type, rssi, adv_data = data
            self._scan.append((bytes(addr), bytes(adv_data)))

    # -- pins ---------------------------------------------------------------------------
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
                self._gpio[name] = num
                self._input(name)
        self._divider = cfg.get("divider", 2.0)
        if "sda" in cfg["pins"]:
            self._i2c_cfg = (cfg["pins"]["sda"], cfg["pins"]["scl"],
                             cfg.get("i2c", {}).get("freq", 400000))

    def configure_led(self, num):
        """Just the LED (a device without a valid config still shows that)."""
        if "led" not in self._outputs:
            self._outputs["led"] = machine.Pin(num, machine.Pin.OUT, value=0)

    def _input(self, name):
        # Constructing the Pin with a mode also takes an armed pad back from the RTC domain.
        # pull=None: the pull resistors are on the board (bom.md); an internal pull a pad
        # has at reset would leak in deep sleep.
        # (The stubs type pull as int; the port documents None as "no pull resistor".)
        self._pins[name] = machine.Pin(self._gpio[name], machine.Pin.IN,
                                       None)  # pyright: ignore[reportArgumentType]

    def _raw(self, name):
        return self._pins[name].value()

    def pin(self, name):
        v = self._pins[name].value()
        return 1 - v if name in self._active_low else v

    # -- time ---------------------------------------------------------------------------
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, t, delta):
        return time.ticks_add(t, delta)

    def clock_ms(self):
        # The RTC keeps time through deep sleep and resets; it restarts at power loss.
        return time.time_ns() // 1000000

    # -- sleep and wake -----------------------------------------------------------------
    def wake_reason(self):
        if machine.reset_cause() == machine.WDT_RESET:
            return ("watchdog", None)
        armed = self._rtc_armed()
        if "p" in armed:  # an input changed while an indication was being shown
            return ("pin", armed["p"][0])
        cause = machine.wake_reason()
        if cause == machine.EXT0_WAKE:
            return ("pin", armed.get("e", (None,))[0])
        if cause == machine.EXT1_WAKE:
            # A tap shorter than the boot is over by now: the pin still high wins, else the
            # armed one (INT1 stays high until read, so a low one was the button).
            names = armed.get("h", ())
            for name in names:
                if name in self._pins and self._raw(name):
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

    def _arm_wake(self, pins):
        """Arm ext0/ext1 for the next edge of every input in pins. ext0: one input, either
        edge (door, motion, mat, charger); ext1 ANY_HIGH: inputs that are low now and wake
        on their rising edge (buttons, INT1). Returns (ext0 names, ext1 names,
        names that could not be armed)."""
        either = [n for n in pins if n not in _RISING][:1]
        ext0 = None
        if either:
            ext0 = self._pins[either[0]]
        esp32.wake_on_ext0(ext0, esp32.WAKEUP_ALL_LOW if ext0 is not None and ext0.value()
                           else esp32.WAKEUP_ANY_HIGH)
        rest = [n for n in pins if n not in either]
        high = [n for n in rest if not self._raw(n)]
        # () disarms: pins=None would keep the previous mask armed.
        esp32.wake_on_ext1(tuple(self._pins[n] for n in high), esp32.WAKEUP_ANY_HIGH)
        return either, high, [n for n in rest if n not in high]

    def _disarm(self):
        esp32.wake_on_ext0(None, esp32.WAKEUP_ANY_HIGH)
        esp32.wake_on_ext1((), esp32.WAKEUP_ANY_HIGH)

    def wait(self, timeout_ms, pins=()):
        """Until an edge on one of pins or the timeout. Light sleep when the radio is off,
        no pattern blinks and every input can be armed; else poll every POLL_MS."""
        start = time.ticks_ms()
        levels = {n: self._raw(n) for n in pins}
        while True:
            for n in pins:
                if self._raw(n) != levels[n]:
                    return n
            elapsed = time.ticks_diff(time.ticks_ms(), start)
            if timeout_ms is not None and elapsed >= timeout_ms:
                return None
            left = LIGHT_SLEEP_MAX_MS if timeout_ms is None else timeout_ms - elapsed
            self.watchdog_feed()
            if not self._radio_busy():
                self._radio_off()
            if self._radio_busy() or self._blinking:
                time.sleep_ms(min(POLL_MS, left))
                continue
            ext0, ext1, rest = self._arm_wake(pins)
            if rest:
                self._disarm()
                time.sleep_ms(min(POLL_MS, left))
                continue
            machine.lightsleep(max(1, min(left, LIGHT_SLEEP_MAX_MS)))
            self._disarm()
            for n in ext0 + ext1:
                self._input(n)  # armed pads read 0 until the Pin is constructed again

    def _show_left(self):
        if self._show_until is None:
            return 0
        return max(0, time.ticks_diff(self._show_until, time.ticks_ms()))

    def deep_sleep(self, ms, pins=()):
        pins = [n for n in pins if n in self._pins]  # a fault may strike before configure
        self.advertise(None)
        changed = None
        left = self._show_left()
        if left:
            # Let the resident see the indication; an input that changes meanwhile wakes
            # the device at once, as it would have from deep sleep.
            changed = self.wait(left, pins)
        state = bytes(self._rtc.memory())
        if b"\x00L" in state:
            state = state[:state.rindex(b"\x00L")]
        if changed is not None:
            self._disarm()
            tail = changed + "p"
            ms = 1
        else:
            ext0, ext1, _ = self._arm_wake(pins)
            tail = ",".join([n + "e" for n in ext0] + [n + "h" for n in ext1])
        self._rtc.memory(state + b"\x00L" + tail.encode())
        self._radio_off()
        if ms is None:
            machine.deepsleep()  # no timer: only the armed inputs wake it
        else:
            machine.deepsleep(max(1, ms))  # deepsleep(0) would wake at once, not never

    def reset(self):
        machine.reset()

    # -- analog, charger ----------------------------------------------------------------
    def battery_mv(self):
        if self._adc is None:
            return 0
        return int(self._adc.read_uv() * self._divider / 1000)

    def charging(self):
        # The charger's input (pinmap.json): on the cradle, charging or already charged.
        return "charge" in self._pins and self.pin("charge") == 1

    # -- radio --------------------------------------------------------------------------
    def advertise(self, adv, interval_ms=100, connectable=False):
        if adv is None:
            if self._adv is not None and self._ble is not None:
                # (The stubs type interval_us as int; None stops advertising, as documented.)
                self._ble.gap_advertise(None)  # pyright: ignore[reportArgumentType]
            self._adv = None
        else:
            ble = self._radio()
            self._adv = (interval_ms * 1000, adv, connectable)
            ble.gap_advertise(interval_ms * 1000, adv, connectable=connectable)

    def receive(self, timeout_ms):
        start = time.ticks_ms()
        while not self._inbox and time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
            self.watchdog_feed()
            time.sleep_ms(POLL_MS)
        frames, self._inbox = self._inbox, []
        return frames

    def scan(self, duration_ms):
        ble = self._radio()
        self._scan = []
        ble.gap_scan(duration_ms, 30000, 30000)
        time.sleep_ms(duration_ms + 10)
        heard, self._scan = self._scan, None
        return heard

    # -- indications ----------------------------------------------------------------------
    def indicate(self, pattern):
        print("ind", pattern)  # the serial console says what the LED shows
        show = SHOW_MS.get(pattern, 0)
        self._show_until = time.ticks_add(time.ticks_ms(), show) if show else None
        led = self._outputs.get("led")
        if led is None:
            return
        if self._led_timer is not None:
            self._led_timer.deinit()
            self._led_timer = None
        self._blinking = False
        on, off = _PATTERNS.get(pattern, (0, 0))
        led.value(1 if on else 0)
        if on and off:
            state = [1]
            until = self._show_until

            def blink(t):
                if until is not None and time.ticks_diff(until, time.ticks_ms()) <= 0:
                    # Shown for its time: stop, so waits may light-sleep again (a Timer
                    # would freeze there anyway).
                    led.value(0)
                    self._blinking = False
                    return
                state[0] ^= 1
                led.value(state[0])
                t.init(period=on if state[0] else off, mode=machine.Timer.ONE_SHOT,
                       callback=blink)

            self._led_timer = machine.Timer(0)
            self._led_timer.init(period=on, mode=machine.Timer.ONE_SHOT, callback=blink)
            self._blinking = True
        buzzer = self._outputs.get("buzzer")
        if buzzer is not None and pattern in _CHIRP:
            pwm = machine.PWM(buzzer, freq=2700, duty_u16=32768)  # piezo resonance
            time.sleep_ms(120)
            pwm.deinit()

    # -- memory, identity, crypto, watchdog, bus --------------------------------------------
    def rtc_load(self):
        raw = bytes(self._rtc.memory())
        return raw[:raw.rindex(b"\x00L")] if b"\x00L" in raw else raw

    def rtc_save(self, data):
        self._rtc.memory(data)

    def mac(self):
        if self._mac is None:
            self._mac = bytes(self._radio().config("mac")[1])
        return self._mac

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
