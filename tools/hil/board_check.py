# Bench checks for the first real board: does the ESP32 port behave as the port model
# (tests/esp32_fakes) and the firmware assume? Run it ON the board with mpremote:
#
#   mpremote connect /dev/ttyUSB0 run tools/hil/board_check.py
#
# With the HIL fixture (hardware/hil_fixture.md) a jumper from OUT_GPIO to IN_GPIO lets the
# board drive one of its own inputs. Each check prints one line
#   PASS|FAIL <check> <figure>
# and the script ends with a summary. The last check deep-sleeps for a second and runs again
# after the wake (RTC memory carries the state): reconnect mpremote to see its line, or read
# it from the serial console. firmware/FIRMWARE.md says what each result means.
import time

import bluetooth
import esp32
import machine

OUT_GPIO = 25  # drives the jumper (hardware/hil_fixture.md)
IN_GPIO = 27  # the input under test: an RTC GPIO, as the firmware's wake inputs are
LOOPS = 1000
ADV = b"\x02\x01\x06\x03\x16\xd2\xfc"  # flags + empty BTHome service data
_MARK = b"board_check:"

results = []


def report(ok, name, figure):
    results.append(ok)
    print("%s %s %s" % ("PASS" if ok else "FAIL", name, figure))


def elapsed(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def check_advert_interval(ble):
    # 100 ms non-connectable (ADV_SCAN_IND) is what device.py uses; 50 ms is below the
    # Bluetooth 4.2 minimum and should be refused (the port model refuses it).
    try:
        ble.gap_advertise(100000, ADV, connectable=False)
        ok = True
    except OSError as e:
        ok = False
        print("  100 ms refused: %r" % (e,))
    ble.gap_advertise(None)  # pyright: ignore[reportArgumentType]
    try:
        ble.gap_advertise(50000, ADV, connectable=False)
        short = "50 ms accepted"
    except OSError:
        short = "50 ms refused"
    ble.gap_advertise(None)  # pyright: ignore[reportArgumentType]
    report(ok, "advert-interval", "100 ms accepted=%s, %s" % (ok, short))


def check_light_sleep_ble_loop(ble):
    # What the wearable does all day: radio on for an advert, off, light sleep, again.
    t0 = time.ticks_ms()
    done = 0
    try:
        for _ in range(LOOPS):
            ble.active(True)
            ble.gap_advertise(100000, ADV, connectable=False)
            time.sleep_ms(5)
            ble.gap_advertise(None)  # pyright: ignore[reportArgumentType]
            ble.active(False)
            machine.lightsleep(10)
            done += 1
    except OSError as e:
        print("  stopped at loop %d: %r" % (done, e))
    ms = elapsed(t0)
    report(done == LOOPS, "light-sleep-ble-loop",
           "%d/%d loops, %.1f ms each" % (done, LOOPS, ms / max(1, done)))


def check_pins_after_armed_light_sleep(drive):
    # An armed pad stays in the RTC domain after light sleep: expect a stale 0 until the Pin
    # is constructed again (rtc_gpio_deinit), then the true level.
    pin = machine.Pin(IN_GPIO, machine.Pin.IN, None)  # pyright: ignore[reportArgumentType]
    drive.value(1)
    time.sleep_ms(5)
    esp32.wake_on_ext1((pin,), esp32.WAKEUP_ANY_HIGH)
    machine.lightsleep(200)  # level high: wakes at once
    stale = pin.value()
    esp32.wake_on_ext1((), esp32.WAKEUP_ANY_HIGH)
    pin = machine.Pin(IN_GPIO, machine.Pin.IN, None)  # pyright: ignore[reportArgumentType]
    fresh = pin.value()
    drive.value(0)
    report(fresh == 1, "pins-after-armed-light-sleep",
           "read %d before re-creating the Pin, %d after (model: 0, then 1)" % (stale, fresh))


def check_ext1_disarm(drive):
    # ext1 armed, then disarmed with (): a high input must not end the light sleep. Then the
    # same with pins=None, which the port documents as keeping the mask.
    pin = machine.Pin(IN_GPIO, machine.Pin.IN, None)  # pyright: ignore[reportArgumentType]
    esp32.wake_on_ext1((pin,), esp32.WAKEUP_ANY_HIGH)
    esp32.wake_on_ext1((), esp32.WAKEUP_ANY_HIGH)
    drive.value(1)
    t0 = time.ticks_ms()
    machine.lightsleep(500)
    empty = elapsed(t0)
    drive.value(0)
    esp32.wake_on_ext1((pin,), esp32.WAKEUP_ANY_HIGH)
    esp32.wake_on_ext1(None, esp32.WAKEUP_ANY_HIGH)
    drive.value(1)
    t0 = time.ticks_ms()
    machine.lightsleep(500)
    kept = elapsed(t0)
    drive.value(0)
    esp32.wake_on_ext1((), esp32.WAKEUP_ANY_HIGH)
    machine.Pin(IN_GPIO, machine.Pin.IN, None)  # pyright: ignore[reportArgumentType]
    report(empty >= 450, "ext1-disarm",
           "slept %d ms with () (expect 500), %d ms with None (model: wakes at once)"
           % (empty, kept))


def check_wake_to_advert(rtc, ble):
    # Deep sleep 1 s; after the wake, the time from MicroPython's start to the first advert.
    # (ROM and bootloader time before MicroPython starts is not in ticks_ms: add ~30-60 ms,
    # or measure the current on a scope.) tools/sim/battery_model.py's boot_ms assumes 200 ms.
    rtc.memory(_MARK + bytes([results.count(True), results.count(False)]))
    print("deep sleep 1 s: the wake-to-advert line follows after the reboot")
    time.sleep_ms(100)
    machine.deepsleep(1000)


def after_wake(rtc, state):
    t = time.ticks_ms()  # since MicroPython started after the wake
    ble = bluetooth.BLE()
    ble.active(True)
    ble.gap_advertise(100000, ADV, connectable=False)
    t_adv = time.ticks_ms()
    ble.gap_advertise(None)  # pyright: ignore[reportArgumentType]
    ble.active(False)
    rtc.memory(b"")
    woke = machine.wake_reason() == machine.TIMER_WAKE
    results.extend([True] * state[0] + [False] * state[1])  # the checks before the sleep
    report(woke and t_adv < 1000, "wake-to-advert",
           "%d ms from MicroPython start to the advert (%d ms to the script), timer wake=%s"
           % (t_adv, t, woke))
    summary()


def summary():
    print("board_check: %d PASS, %d FAIL" % (results.count(True), results.count(False)))


def main():
    rtc = machine.RTC()
    state = bytes(rtc.memory())
    if state.startswith(_MARK):
        after_wake(rtc, state[len(_MARK):])
        return
    drive = machine.Pin(OUT_GPIO, machine.Pin.OUT, value=0)
    ble = bluetooth.BLE()
    ble.active(True)
    check_advert_interval(ble)
    ble.active(False)
    check_light_sleep_ble_loop(ble)
    check_pins_after_armed_light_sleep(drive)
    check_ext1_disarm(drive)
    check_wake_to_advert(rtc, ble)


main()
