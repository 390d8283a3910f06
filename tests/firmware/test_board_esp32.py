"""firmware/board_esp32.py in real MicroPython on the port model (tests/esp32_fakes under
the virtual board): what the board layer does with wake sources, pins, the radio and the
charger, driven from outside at exact instants. Each test names the defect it guards."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import requires_node
from tools.sim.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[2]
# Another firmware tree to run the same tests on (to see a test fail on the old code).
FIRMWARE = Path(os.environ.get("TRYGGHEIM_FIRMWARE_DIR", ROOT / "firmware"))
pytestmark = requires_node

PRELUDE = """
import json, time, machine
import board_esp32, device
cfg = device.load_config()
b = board_esp32.Esp32Board()
b.configure(cfg)
"""


def board_script(tmp_path: Path, role: str, script: str, **kw: object) -> VirtualBoard:
    fw = tmp_path / "fw"
    fw.mkdir()
    for f in FIRMWARE.glob("*.py"):
        shutil.copy(f, fw / f.name)
    (fw / "main.py").write_text(PRELUDE + script + "\nprint('DONE')\n")
    return VirtualBoard({"id": "x", "role": role}, firmware_dir=fw, **kw)  # type: ignore[arg-type]


def run(b: VirtualBoard, ms: int = 60_000) -> list[str]:
    try:
        b.start()
        b.advance(ms)
    finally:
        b.stop()
    return b.log


def test_deep_sleep_without_a_timer_waits_for_the_input(tmp_path: Path) -> None:
    # Defect 11: deep_sleep(None) was machine.deepsleep(0), which wakes at once.
    b = board_script(tmp_path, "door", """
if b.wake_reason()[0] == "power_on":
    b.deep_sleep(None, ("door",))
print("woke", b.wake_reason(), b.pin("door"))
""")
    b.schedule(40_000, "door", 1)
    log = run(b)
    assert [t for t, _ in b.boots] == [0, 40_000]
    assert "woke ('pin', 'door') 1" in log


def test_inputs_get_pull_none_explicitly(tmp_path: Path) -> None:
    # Defect 11: without pull=None a pad keeps the pull it has at reset (it leaks).
    b = board_script(tmp_path, "wearable", "")
    assert "DONE" in run(b, 1000)
    inputs = [b.pin_map[n] for n in ("button", "charge", "accel_int")]
    assert all(b.pulls[n] is None for n in inputs), b.pulls


def test_on_the_charger_is_the_charger_input(tmp_path: Path) -> None:
    # Defect 5: the TP4056 CHRG output is released when charging ends, so a charged device
    # on the cradle read as off it. The "charge" input now senses the charger's 5 V.
    b = board_script(tmp_path, "pendant", """
print("off", b.charging())
time.sleep_ms(1000)
print("on", b.charging())
""")
    b.schedule(500, "charge", 1)  # on the cradle (charging or charged: the same input)
    log = run(b, 1800)
    assert "off False" in log and "on True" in log
    assert b.pin_map["charge"] == 26


def test_wait_with_the_radio_on_polls_and_sees_the_edge(tmp_path: Path) -> None:
    # Defect 2: light sleep with the BLE controller on is an error on the port.
    b = board_script(tmp_path, "pendant", """
b.advertise(b"\\x02\\x01\\x06", 100)
t = time.ticks_ms()
print("edge", b.wait(5000, ("button",)), time.ticks_diff(time.ticks_ms(), t))
b.advertise(None)
""")
    b.schedule(1234, "button", 1)
    log = run(b)
    assert any(line.startswith("edge button 12") for line in log), log
    assert b.usage.light_ms == 0


def test_after_an_armed_light_sleep_the_inputs_read_true_levels(tmp_path: Path) -> None:
    # Defect 3: armed pads read 0 until the Pin is constructed again.
    b = board_script(tmp_path, "wearable", """
print("woke", b.wait(10000, ("button", "charge", "accel_int")))
print("button", b.pin("button"), "charging", b.charging())
""")
    b.schedule(3000, "button", 1)
    log = run(b)
    assert b.usage.light_wakes >= 1  # it did light-sleep
    assert "woke button" in log and "button 1 charging False" in log


def test_a_held_button_is_not_left_armed_for_deep_sleep(tmp_path: Path) -> None:
    # Defect 4: wake_on_ext1(pins=None) keeps the old mask; a held (stuck) button left
    # armed wakes the device at once, over and over.
    b = board_script(tmp_path, "pendant", """
if b.wake_reason()[0] == "power_on":
    b.wait(1000, ("button", "charge"))  # arms the button on ext1 (it is up)
    while not b.pin("button"):
        time.sleep_ms(10)
    b.deep_sleep(60000, ("charge",))  # stuck button: sleep without it
print("woke", b.wake_reason())
""")
    b.schedule(2000, "button", 1)  # pressed and stuck
    run(b, 30_000)
    assert len(b.boots) == 1  # still asleep: the button is not armed any more


def test_advertising_resumes_after_the_central_disconnects(tmp_path: Path) -> None:
    # Defect 9: NimBLE stops advertising when a central connects.
    b = board_script(tmp_path, "pendant", """
b.advertise(b"\\x02\\x01\\x06\\x03\\x16\\xd2\\xfc", 50, True)
print("frames", b.receive(3000))
print("frames", b.receive(3000))
b.advertise(None)
""")
    b.hub_write(b"\x01first", at_ms=500)
    b.hub_write(b"\x01second", at_ms=2000)  # needs the device advertising again
    log = run(b)
    assert "frames [b'\\x01first']" in log and "frames [b'\\x01second']" in log, log


def test_wake_reasons_and_rtc_memory(tmp_path: Path) -> None:
    b = board_script(tmp_path, "pendant", """
r = b.wake_reason()
print("reason", r, b.rtc_load())
if r[0] == "power_on":
    b.rtc_save(b'{"n": 1}')
    b.deep_sleep(5000, ("button", "charge"))
if r[0] == "timer":
    b.deep_sleep(None, ("button", "charge"))
if r == ("pin", "button"):
    b.deep_sleep(None, ("button", "charge"))
""")
    b.schedule(10_000, "button", 1)
    b.schedule(10_100, "button", 0)
    b.schedule(20_000, "charge", 1)
    log = run(b)
    assert "reason ('power_on', None) b''" in log
    assert "reason ('timer', None) b'{\"n\": 1}'" in log
    assert "reason ('pin', 'button') b'{\"n\": 1}'" in log
    assert "reason ('pin', 'charge') b'{\"n\": 1}'" in log
