"""firmware/board_esp32.py in real MicroPython, on stand-ins for the ESP32's machine, esp32
and bluetooth modules (tests/esp32_fakes: what this machine lacks, with the port's names and
signatures). Checks what can be checked without a board: the wake-source setup for each kind
of input, wake reasons, RTC memory, polarity, the ack characteristic, the watchdog."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from protocols import ack
from tests.conftest import requires_node

ROOT = Path(__file__).resolve().parents[1]
pytestmark = requires_node

SCRIPT = r'''
import machine, esp32, bluetooth
import board_esp32

door = {"pins": {"door": 27, "led": 2, "battery": 35}, "outputs": ["led"], "active_low": []}
b = board_esp32.Esp32Board()
b.configure(door)
assert ("freq", 80000000) in machine.calls
assert b.wake_reason() == ("power_on", None)
assert b.battery_mv() == 3000  # 1.5 V at the pin, divider 2
# Door closed (0): ext0 wakes on the next edge up; the level is remembered in RTC memory.
b.rtc_save(b'{"door": 0}')
machine.calls.clear()
b.deep_sleep(5000, ("door",))
assert ("ext0", 27, esp32.WAKEUP_ANY_HIGH) in machine.calls, machine.calls
assert ("ext1", None, esp32.WAKEUP_ANY_HIGH) in machine.calls
assert machine.calls[-1] == ("deepsleep", 5000)
# Reboot: door opened (ext0), the app still sees only its own state in RTC memory.
machine.levels[27] = 1
machine.state["wake"] = machine.EXT0_WAKE
machine.state["reset"] = machine.DEEPSLEEP_RESET
b = board_esp32.Esp32Board()
b.configure(door)
assert b.rtc_load() == b'{"door": 0}', b.rtc_load()
assert b.wake_reason() == ("pin", "door")
# Door open (1): now ext0 must wake on the way down.
machine.calls.clear()
b.deep_sleep(0, ("door",))
assert ("ext0", 27, esp32.WAKEUP_ALL_LOW) in machine.calls
assert machine.calls[-1] == ("deepsleep", 1)  # 0 ms would mean "forever" to the port
b.deep_sleep(None, ())
assert ("ext0", None, esp32.WAKEUP_ANY_HIGH) in machine.calls  # nothing left armed
assert machine.calls[-1] == ("deepsleep", 0)

# Pendant: the charger's CHRG is active low; the button is on ext1, the charger on ext0.
pend = {"pins": {"button": 27, "charge": 26, "led": 2, "buzzer": 25, "battery": 35},
        "outputs": ["led", "buzzer"], "active_low": ["charge"]}
machine.state["wake"] = 0
machine.state["reset"] = machine.PWRON_RESET
machine.levels.clear()
machine.levels[26] = 1
b = board_esp32.Esp32Board()
b.configure(pend)
assert not b.charging() and b.pin("charge") == 0
machine.levels[26] = 0
assert b.charging() and b.pin("charge") == 1
machine.calls.clear()
b.deep_sleep(1000, ("button", "charge"))
assert ("ext0", 26, esp32.WAKEUP_ANY_HIGH) in machine.calls, machine.calls
assert ("ext1", [27], esp32.WAKEUP_ANY_HIGH) in machine.calls
# A tap shorter than the boot: the button is up again when the firmware looks.
machine.state["wake"] = machine.EXT1_WAKE
machine.state["reset"] = machine.DEEPSLEEP_RESET
b = board_esp32.Esp32Board()
b.configure(pend)
assert b.wake_reason() == ("pin", "button")
machine.state["wake"] = machine.EXT0_WAKE
assert b.wake_reason() == ("pin", "charge")
machine.levels[27] = 1  # button held while going to sleep: not armed (it would wake at once)
machine.calls.clear()
b.deep_sleep(1000, ("button", "charge"))
assert ("ext1", None, esp32.WAKEUP_ANY_HIGH) in machine.calls

# The ack characteristic: written by the hub while advertising connectable.
machine.calls.clear()
b.advertise(b"\x02\x01\x06", 50, True)
assert ("adv", 50000, True) in machine.calls
bluetooth.written[42] = b"\x01ack"
b._irq(3, (0, 42))
assert b.receive(0) == [b"\x01ack"] and b.receive(0) == []
b.indicate("received")
assert ("pwm", 25, 2700) in machine.calls  # the buzzer chirps
b.watchdog(20000)
assert ("wdt", 20000) in machine.calls
machine.state["reset"] = machine.WDT_RESET
assert board_esp32.Esp32Board().wake_reason() == ("watchdog", None)
print("OK")
'''


def test_board_esp32_on_micropython(tmp_path: Path) -> None:
    for f in (ROOT / "tests" / "esp32_fakes").glob("*.py"):
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(ROOT / "firmware" / "board_esp32.py", tmp_path / "board_esp32.py")
    # The board layer only needs the ack UUIDs from protocols/: the real values.
    (tmp_path / "protocols.py").write_text(
        f"class ack:\n    SERVICE_UUID = {ack.SERVICE_UUID!r}\n"
        f"    CHAR_UUID = {ack.CHAR_UUID!r}\n")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    r = subprocess.run(["node", str(ROOT / "tests" / "mp_run.mjs"), str(tmp_path), str(script)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
