"""Device tests on the device-under-test interface (tools/hil/dut.py).

`dut(config, **board)` starts a device running the real firmware and stops it after the
test. The backend is the virtual board (real MicroPython in WebAssembly, virtual time); a
real-board backend plugs in here (HIL_PORT) without changing the tests.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import requires_node
from tools.hil import serial_board
from tools.hil.serial_board import pytest_runtest_makereport  # noqa: F401  (serial log on failure)
from tools.sim.vboard import VirtualBoard

KEY = "00112233445566778899aabbccddeeff"
MAC = "C0:FF:EE:00:00:42"

DutFactory = Callable[..., VirtualBoard]


def device_config(role: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"id": f"{role}-1", "role": role, "key": KEY, "heartbeat_s": 600}
    cfg.update(extra)
    return cfg


@pytest.fixture
def dut(request: pytest.FixtureRequest) -> Iterator[DutFactory]:
    started: list[VirtualBoard] = []
    request.node.hil_duts = started  # their logs go into a failing test's report

    def make(config: dict[str, Any] | None, **board: Any) -> VirtualBoard:
        if serial_board.hil_port():  # the real board on HIL_PORT (docs/INSTALLER.md)
            real = serial_board.make_board(config, **board)
            started.append(real)  # type: ignore[arg-type]
            return real.start()  # type: ignore[return-value]
        board.setdefault("mac", MAC)
        # VBOARD_RUNTIME=unix: the same suite in the MicroPython unix port, ESP32-sized heap
        board.setdefault("runtime", os.environ.get("VBOARD_RUNTIME", "wasm"))
        b = VirtualBoard(config, **board)
        started.append(b)
        return b.start()

    try:
        yield make
    finally:
        for b in started:
            b.stop()


# What a real board on the HIL fixture cannot be made to do from outside (FixtureBoard): a
# scripted accelerometer, injected faults and hangs, RTC memory or flash read mid-run, a
# power cycle, a dead sensor.
FIXTURE_LACKS = ("accel.feed", "fail_calls", "hang_next_call", ".rtc", "rtc_state",
                 "power_cycle", "accel_present", "write_flash", "flash_files", "set_battery")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    real = serial_board.hil_port()
    fixture = real and serial_board.stimulus_port()
    for item in items:
        if fixture and "tests/hil/" in str(item.fspath):
            src = inspect.getsource(getattr(item, "function", lambda: None))
            lacks = [w for w in FIXTURE_LACKS if w in src]
            if "low_battery" in item.name:
                lacks.append("a battery voltage set by the test")
            if lacks:
                item.add_marker(pytest.mark.skip(
                    reason=f"needs {', '.join(lacks)}: not on the HIL fixture (real board)"))
        if "tests/hil/" in str(item.fspath):
            item.add_marker(pytest.mark.hil)
            item.add_marker(requires_node)
            only = item.get_closest_marker("virtual_only")
            if real and only is not None:
                why = only.kwargs.get("reason") or (only.args[0] if only.args else "")
                item.add_marker(pytest.mark.skip(
                    reason=f"virtual_only ({why}): needs the virtual board, HIL_PORT is set"))
