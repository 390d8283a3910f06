"""The simulated ESP32 port (tests/esp32_fakes, under the virtual board) follows the port's
rules (../shared/notes/esp32_port.md), not kinder ones: each rule is checked here in real
MicroPython, with the pins driven from the host at exact instants."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import requires_node
from tools.sim.vboard import VirtualBoard

pytestmark = requires_node
# GPIOs of the pendant's pin map: button 27 (active high), charge 26 (TP4056 CHRG).
CONFIG = {"id": "p", "role": "pendant"}
PRELUDE = """
import time, machine, esp32, bluetooth
button = machine.Pin(27, machine.Pin.IN, None)
def took(f, *a):
    t = time.ticks_ms()
    f(*a)
    return time.ticks_diff(time.ticks_ms(), t)
"""


def run(tmp_path: Path, script: str, **board: object) -> VirtualBoard:
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "main.py").write_text(PRELUDE + script + "\nprint('DONE')\n")
    b = VirtualBoard(CONFIG, firmware_dir=fw, **board)  # type: ignore[arg-type]
    return b


def finish(b: VirtualBoard, ms: int = 60_000) -> list[str]:
    try:
        b.start()
        b.advance(ms)
    finally:
        b.stop()
    assert "DONE" in b.log, "\n".join(b.log[-20:])
    return b.log


def test_light_sleep_ends_only_on_an_armed_source_or_its_timer(tmp_path: Path) -> None:
    b = run(tmp_path, """
esp32.wake_on_ext0(None)
esp32.wake_on_ext1(pins=())
print("unarmed", took(machine.lightsleep, 1000))
esp32.wake_on_ext1(pins=(button,), level=esp32.WAKEUP_ANY_HIGH)
print("armed", took(machine.lightsleep, 5000))
""")
    b.schedule(100, "button", 1)  # pressed at 100 ms: does not end the first sleep
    b.schedule(900, "button", 0)
    b.schedule(2000, "button", 1)  # ends the second, armed one
    log = finish(b)
    assert "unarmed 1000" in log
    assert "armed 1000" in log  # the second sleep started at 1000, woke at 2000


def test_a_wake_level_that_already_holds_ends_light_sleep_at_once(tmp_path: Path) -> None:
    b = run(tmp_path, """
esp32.wake_on_ext1(pins=(button,), level=esp32.WAKEUP_ANY_HIGH)
print("held", took(machine.lightsleep, 5000))
""")
    b.schedule(0, "button", 1)  # ext0/ext1 are level triggered
    assert "held 0" in finish(b)


def test_ext1_none_keeps_the_mask_and_empty_disarms(tmp_path: Path) -> None:
    b = run(tmp_path, """
esp32.wake_on_ext1(pins=(button,), level=esp32.WAKEUP_ANY_HIGH)
esp32.wake_on_ext1(pins=None, level=esp32.WAKEUP_ANY_HIGH)
print("none", took(machine.lightsleep, 3000))
button = machine.Pin(27, machine.Pin.IN, None)
while button.value():
    time.sleep_ms(10)
esp32.wake_on_ext1(pins=(), level=esp32.WAKEUP_ANY_HIGH)
print("empty", took(machine.lightsleep, 3000))
""")
    b.schedule(500, "button", 1)
    b.schedule(700, "button", 0)
    b.schedule(1500, "button", 1)
    b.schedule(1700, "button", 0)
    log = finish(b)
    assert "none 500" in log  # still armed: the press woke it
    assert "empty 3000" in log  # disarmed: the press at 1500 did not


def test_armed_pins_read_0_until_the_pin_is_constructed_again(tmp_path: Path) -> None:
    b = run(tmp_path, """
esp32.wake_on_ext1(pins=(button,), level=esp32.WAKEUP_ANY_HIGH)
machine.lightsleep(2000)
print("after", button.value())
esp32.wake_on_ext1(pins=())
again = machine.Pin(27, machine.Pin.IN, None)
print("recreated", again.value())
""")
    b.schedule(100, "button", 1)  # held through the reads
    log = finish(b)
    assert "after 0" in log and "recreated 1" in log


def test_light_sleep_with_ble_active_is_an_error(tmp_path: Path) -> None:
    b = run(tmp_path, """
ble = bluetooth.BLE()
ble.active(True)
try:
    machine.lightsleep(100)
    print("slept")
except OSError:
    print("refused")
ble.active(False)
machine.lightsleep(100)
print("off ok")
""")
    log = finish(b)
    assert "refused" in log and "slept" not in log and "off ok" in log


def test_timer_callbacks_do_not_run_during_light_sleep(tmp_path: Path) -> None:
    b = run(tmp_path, """
fired = []
t = machine.Timer(0)
t.init(period=100, mode=machine.Timer.PERIODIC, callback=lambda _: fired.append(1))
machine.lightsleep(1000)
print("light", len(fired))
time.sleep_ms(1000)
print("awake", len(fired))
t.deinit()
""")
    log = finish(b)
    assert "light 0" in log
    assert "awake 10" in log


def test_deepsleep_0_wakes_at_once_and_no_argument_sleeps_until_a_source(
        tmp_path: Path) -> None:
    b = run(tmp_path, """
rtc = machine.RTC()
n = len(rtc.memory())
rtc.memory(b"x" * (n + 1))
if n == 0:
    machine.deepsleep(0)
if n == 1:
    esp32.wake_on_ext0(button, esp32.WAKEUP_ANY_HIGH)
    machine.deepsleep()
""")
    b.schedule(50_000, "button", 1)
    finish(b, 100_000)
    assert [t for t, _ in b.boots] == [0, 0, 50_000]
    assert [k for _, k in b.boots] == ["power_on", "timer", "pin"]


@pytest.mark.parametrize(("interval_us", "connectable", "ok"), [
    (50_000, False, False), (100_000, False, True), (20_000, True, True), (10_000, True, False),
])
def test_an_advert_interval_below_the_legal_minimum_raises(
        tmp_path: Path, interval_us: int, connectable: bool, ok: bool) -> None:
    b = run(tmp_path, f"""
ble = bluetooth.BLE()
ble.active(True)
try:
    ble.gap_advertise({interval_us}, adv_data=b"\\x02\\x01\\x06", connectable={connectable})
    print("accepted")
except OSError:
    print("rejected")
""")
    log = finish(b)
    assert ("accepted" if ok else "rejected") in log


def test_ticks_wrap_at_2_pow_30(tmp_path: Path) -> None:
    b = run(tmp_path, """
a = time.ticks_ms()
time.sleep_ms(2000)
c = time.ticks_ms()
print("wrapped", c < a, time.ticks_diff(c, a), c - a < 0)
print("add", time.ticks_add(a, 2000) == c)
""", ticks0=2**30 - 1000)
    log = finish(b)
    assert "wrapped True 2000 True" in log and "add True" in log


def test_the_port_refuses_pins_the_chip_lacks(tmp_path: Path) -> None:
    b = run(tmp_path, """
for n, mode in ((24, machine.Pin.IN), (30, machine.Pin.IN), (34, machine.Pin.OUT),
                (7, machine.Pin.IN)):
    try:
        machine.Pin(n, mode)
        print("took", n)
    except (ValueError, OSError):
        print("refused", n)
try:
    esp32.wake_on_ext0(machine.Pin(21, machine.Pin.IN), esp32.WAKEUP_ANY_HIGH)
    print("woke on 21")
except ValueError:
    print("21 is no RTC GPIO")
""")
    log = finish(b)
    assert not [line for line in log if line.startswith("took")], log
    assert "21 is no RTC GPIO" in log
